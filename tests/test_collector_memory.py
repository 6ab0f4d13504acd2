"""Overload: a flood beyond the memory limit is refused (senders retry), the collector survives."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest
from test_collector_helpers import (
    log_record,
    logs_request,
    report,
    sender_for,
    wait_for_ids,
)

from pideai_otel.collector import CollectorProcess
from pideai_otel.local import StandInProcess

pytest_plugins = ("test_collector_helpers",)
pytestmark = pytest.mark.collector


def test_flood_beyond_memory_limit_is_refused_and_survived(
    make_collector: Callable[..., CollectorProcess],
    standin_process: StandInProcess,
) -> None:
    # A tiny heap budget: refusing starts at 40 - 10 = 30 MiB of heap.
    collector = make_collector(OTELCOL_MEMORY_LIMIT_MIB="40", OTELCOL_MEMORY_SPIKE_LIMIT_MIB="10")
    # ~3 MiB per request (1,500 records with 2 KiB bodies); pdata decoding multiplies that.
    payload = logs_request(
        [log_record("x" * 2048, "INFO", attributes={"tid": f"flood-{i}"}) for i in range(1500)]
    ).SerializeToString()
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + 12

    def flood() -> None:
        with httpx.Client(timeout=10) as client:
            while time.monotonic() < stop_at:
                try:
                    code = client.post(
                        f"{collector.http_endpoint}/v1/logs",
                        content=payload,
                        headers={"Content-Type": "application/x-protobuf"},
                    ).status_code
                except httpx.TransportError:
                    code = 0
                with lock:
                    statuses[code] = statuses.get(code, 0) + 1

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()
    health_during: list[int] = []
    while any(thread.is_alive() for thread in threads):
        health_during.append(httpx.get(collector.health_url, timeout=5).status_code)
        time.sleep(0.5)
    status = collector.status()
    refused = status.refused("log_records")
    print(
        f"flood: responses {statuses}, receiver refused {refused:.0f} log records, "
        f"memory_limiter refused {status.memory_limiter_refused}, health during flood {set(health_during)}"
    )
    assert collector.running, collector.log_text()[-2000:]
    assert refused > 0 and statuses.get(503, 0) > 0  # retryable: the SDK exporter backs off and resends
    assert set(health_during) == {200}

    # Once the flood stops, ordinary traffic is accepted and delivered again.
    sender = sender_for(collector)
    ids = {f"after-{i}" for i in range(50)}
    tries = sender.deliver(
        "logs", logs_request([log_record("calm", "INFO", attributes={"tid": t}) for t in ids]), deadline=60
    )
    sender.close()
    missing, _ = report(
        f"after the flood (accepted on try {tries})", ids, wait_for_ids(standin_process, "logs", ids, 120)
    )
    assert missing == 0
