"""Delivery under faults: kill -9 of the collector, backend outages, throttling, a wrong token.

Senders retry a request until the collector accepts it (as SDK exporters do), so every accepted
record must reach the stand-in exactly by id; duplicates (at-least-once) are counted separately.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from test_collector_helpers import (
    Sender,
    log_record,
    logs_request,
    report,
    sender_for,
    span,
    traces_request,
    wait_for_ids,
)

from pideai_otel.collector import CollectorProcess
from pideai_otel.local import StandInProcess

pytest_plugins = ("test_collector_helpers",)
pytestmark = pytest.mark.collector


def _send_batches(
    sender: Sender, prefix: str, batches: int, size: int, *, error_every: int = 10
) -> dict[str, set[str]]:
    """Send `batches` of `size` logs over HTTP and as many spans over gRPC; return ids per table."""
    sent: dict[str, set[str]] = {"logs": set(), "spans": set()}
    for b in range(batches):
        ids = [f"{prefix}-{b}-{i}" for i in range(size)]
        records = [
            log_record(f"record {tid}", "ERROR" if i % error_every == 0 else "INFO", attributes={"tid": tid})
            for i, tid in enumerate(ids)
        ]
        sender.deliver("logs", logs_request(records))
        sent["logs"].update(ids)
        sender.deliver(
            "traces", traces_request([span(f"op {tid}", attributes={"tid": tid}) for tid in ids]), via="grpc"
        )
        sent["spans"].update(ids)
    return sent


def _assert_all_arrived(backend: StandInProcess, sent: dict[str, set[str]], label: str, timeout: float = 90) -> None:
    for table, ids in sent.items():
        stored = wait_for_ids(backend, table, ids, timeout)
        missing, _ = report(f"{label} {table}", ids, stored)
        assert missing == 0


def test_kill_9_mid_stream_loses_nothing(
    make_collector: Callable[..., CollectorProcess],
    standin_process: StandInProcess,
) -> None:
    collector = make_collector()
    sender = sender_for(collector)
    batches, size = 50, 200  # 10,000 logs over HTTP and 10,000 spans over gRPC
    done = threading.Event()
    sent: dict[str, set[str]] = {}
    error: list[BaseException] = []

    def stream() -> None:
        try:
            sent.update(_send_batches(sender, "k9", batches, size))
        except BaseException as exc:  # noqa: BLE001  (re-raised by the main thread's assert)
            error.append(exc)
        finally:
            done.set()

    # A slow backend (each request held 0.3 s) keeps a backlog in the disk queue, so the kills
    # hit queued, in-flight and just-received data alike.
    standin_process.fault(stall=0.3)
    worker = threading.Thread(target=stream, daemon=True)
    worker.start()
    backlog: list[float] = []
    # Kill twice while the stream is flowing: once early, once in the middle.
    for threshold in (batches * size // 4, batches * size // 2):
        deadline = time.monotonic() + 60
        while sender.attempts < threshold * 2 // size and not done.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not done.is_set(), "the stream finished before the kill; make it longer"
        backlog.append(sum(collector.status().exporters["otlp_http/default"].queue_size.values()))
        collector.kill()
        time.sleep(0.5)
        collector.start()
    worker.join(180)
    sender.close()
    standin_process.fault()
    assert not error, error
    print(f"kill -9 x2: {sender.attempts} requests, {len(sender.failures)} refused while down, "
          f"queued bytes at each kill {backlog}")  # fmt: skip
    assert all(size > 0 for size in backlog), "nothing was queued when the collector was killed"
    assert sender.failures, "the sender never saw the collector down: the kill did not hit mid-stream"
    _assert_all_arrived(standin_process, sent, "kill -9")
    # Routing held through the crashes: exactly the ERROR records are in the errors source.
    expected_errors = {tid for tid in sent["logs"] if int(tid.rsplit("-", 1)[1]) % 10 == 0}
    assert set(wait_for_ids(standin_process, "logs", expected_errors, 30, source="errors")) == expected_errors


@pytest.mark.parametrize(
    "outage",
    [pytest.param(15, id="15s"), pytest.param(60, id="60s", marks=pytest.mark.slow)],
)
def test_backend_503_outage_then_recovery(
    outage: int,
    make_collector: Callable[..., CollectorProcess],
    standin_process: StandInProcess,
) -> None:
    collector = make_collector()
    standin_process.fault(status=503, seconds=outage)
    sender = sender_for(collector)
    started = time.monotonic()
    sent = _send_batches(sender, f"o{outage}", 10, 100)
    send_time = time.monotonic() - started
    sender.close()
    print(f"503 outage {outage}s: 2,000 records accepted by the collector in {send_time:.1f} s")
    assert send_time < 10, "the sender was slowed by the backend outage"
    time.sleep(max(0.0, outage - (time.monotonic() - started) - 2))
    assert standin_process.stats()["responses"].get("503", 0) > 0
    _assert_all_arrived(standin_process, sent, f"503 outage {outage}s", timeout=outage + 90)


def test_backend_down_then_restarted(
    make_collector: Callable[..., CollectorProcess],
    standin_process: StandInProcess,
) -> None:
    collector = make_collector()
    standin_process.stop()  # connections refused from here on
    sender = sender_for(collector)
    sent = _send_batches(sender, "down", 10, 100)
    sender.close()
    time.sleep(5)
    status = collector.status()
    print(f"backend down: queue {status.exporters['otlp_http/default'].queue_size}, "
          f"send_failed {status.exporters['otlp_http/default'].send_failed}")  # fmt: skip
    assert status.health_status == 200
    standin_process.start()
    _assert_all_arrived(standin_process, sent, "backend restarted")


def test_429_retry_after_is_honoured(
    make_collector: Callable[..., CollectorProcess],
    standin_process: StandInProcess,
) -> None:
    collector = make_collector()
    standin_process.fault(status=429, retry_after=2, seconds=7)
    fault_set = time.time_ns()
    sender = sender_for(collector)
    # One small batch, so exactly one export request is in flight and retried.
    ids = {f"r-{i}" for i in range(10)}
    sender.deliver("logs", logs_request([log_record("throttled", "INFO", attributes={"tid": tid}) for tid in ids]))
    sender.close()
    stored = wait_for_ids(standin_process, "logs", ids, 60)
    missing, _ = report("429", ids, stored)
    assert missing == 0
    attempts = standin_process.query(
        f"SELECT status, received_ns FROM requests WHERE path = '/v1/logs' AND received_ns >= {fault_set} ORDER BY received_ns"
    )
    statuses = [row["status"] for row in attempts]
    gaps = [(b["received_ns"] - a["received_ns"]) / 1e9 for a, b in itertools.pairwise(attempts)]
    print(f"429: attempts {statuses}, gaps {[round(g, 2) for g in gaps]} s")
    assert statuses[-1] == 200 and statuses.count(429) >= 2
    # Retry-After: 2 beats the exporter's own 1 s initial backoff.
    assert all(gap >= 1.9 for gap in gaps), gaps


def test_wrong_token_is_reported_and_sender_unaffected(
    make_collector: Callable[..., CollectorProcess],
    standin_process: StandInProcess,
) -> None:
    collector = make_collector(tokens={"default": "wrong-token", "errors": "tok-errors"})
    sender = sender_for(collector)
    started = time.monotonic()
    for b in range(5):
        response = sender.post("logs", logs_request([log_record("hello", "INFO", attributes={"tid": f"w{b}"})]))
        assert response.status_code == 200
    elapsed = time.monotonic() - started
    sender.close()
    deadline = time.monotonic() + 30
    while "401" not in collector.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    failures = [line for line in collector.log_text().splitlines() if "401" in line]
    print(f"401: sender took {elapsed:.2f} s for 5 requests; collector said: {failures[:1]}"[:1200])
    assert elapsed < 5
    # The operator sees which exporter failed, the status, and that the data was dropped.
    assert failures and '"otlp_http/default"' in failures[0] and "Dropping data" in failures[0]
    assert standin_process.stats()["responses"].get("401", 0) >= 1
    # The collector stays healthy; a permanent error is dropped, not retried forever.
    assert httpx.get(collector.health_url, timeout=5).status_code == 200
