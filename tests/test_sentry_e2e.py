"""Sentry error -> bridge (CLI subprocess) -> real collector -> stand-in, inside the backend's trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from pideai_otel.collector import CollectorProcess, ensure_built
from pideai_otel.local import StandInProcess, search
from pideai_otel.sentry.testing import error_event, error_payload, signed_delivery

pytestmark = pytest.mark.collector

SECRET = "e2e-secret-2f6c1a9b8d7e"
TOKENS = {"default": "tok-default", "errors": "tok-errors"}
TRACE_ID = "5b8efff798038103d269b633813fc60c"
BROWSER_SPAN_ID = "eee19b7ec3c1b174"  # the browser's fetch span: the backend span's remote parent
CLI = str(Path(sys.executable).with_name("pideai-otel"))


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[tuple[StandInProcess, CollectorProcess]]:
    binary = ensure_built()
    with StandInProcess(tmp_path / "standin", sources=TOKENS) as standin:
        collector = CollectorProcess(tmp_path / "collector", standin_url=standin.url, tokens=TOKENS, binary=binary)
        with collector:
            yield standin, collector


@pytest.fixture
def bridge(tmp_path: Path, pipeline: tuple[StandInProcess, CollectorProcess]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    _, collector = pipeline
    log_path = tmp_path / "bridge.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "SENTRY_CLIENT_SECRET": SECRET,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen([CLI, "sentry-bridge", "--port", "0"], stdout=subprocess.DEVNULL, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 30
        url = ""
        while not url:
            text = log_path.read_text(errors="replace")
            url = next((line.rsplit(" ", 1)[1] for line in text.splitlines() if "sentry-bridge ready on" in line), "")
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sentry-bridge did not start:\n{text}")
            time.sleep(0.05)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def export_backend_span(collector: CollectorProcess) -> str:
    """A backend span of TRACE_ID, as the API would record it after the browser's traceparent."""
    provider = TracerProvider(resource=Resource.create({"service.name": "orders-api", "service.namespace": "pideai"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=collector.grpc_endpoint, insecure=True)))
    browser = trace.NonRecordingSpan(
        trace.SpanContext(int(TRACE_ID, 16), int(BROWSER_SPAN_ID, 16), is_remote=True, trace_flags=trace.TraceFlags(1))
    )
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("POST /orders", context=trace.set_span_in_context(browser)) as span:
        span_id = f"{span.get_span_context().span_id:016x}"
    provider.shutdown()
    return span_id


def wait_for_rows(standin: StandInProcess, sql: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = standin.query(sql)
        if rows:
            return rows
        time.sleep(0.25)
    raise AssertionError(f"nothing for {sql!r} in {timeout} s")


def walk(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in nodes:
        yield node
        yield from walk(node["children"])


def test_sentry_error_arrives_inside_the_backend_trace(
    pipeline: tuple[StandInProcess, CollectorProcess], bridge: tuple[str, subprocess.Popen[bytes]]
) -> None:
    standin, collector = pipeline
    bridge_url, process = bridge
    backend_span_id = export_backend_span(collector)
    # The error was captured while the backend span was active (sentry-python + OTLPIntegration).
    event = error_event(trace_id=TRACE_ID, span_id=backend_span_id, tags={"store_id": "store-42"}, user={"id": "u-7"})
    body, headers = signed_delivery(SECRET, "error", error_payload(event))

    with httpx.Client(base_url=bridge_url) as client:
        for _ in range(3):  # a delivery and two retries: still one record
            response = client.post("/sentry/webhook", content=body, headers=headers)
            assert response.status_code == 200

    rows = wait_for_rows(standin, f"SELECT * FROM logs WHERE trace_id = '{TRACE_ID}'")
    wait_for_rows(standin, f"SELECT * FROM spans WHERE trace_id = '{TRACE_ID}'")
    time.sleep(1.0)  # a wrong second record would have had time to arrive
    rows = standin.query(f"SELECT * FROM logs WHERE trace_id = '{TRACE_ID}'")
    assert len(rows) == 1
    (row,) = rows
    assert row["span_id"] == backend_span_id
    assert row["severity_number"] == 17
    assert row["source"] == "errors"  # ERROR and above are routed to the errors source
    assert row["store_id"] == "store-42" and row["user_id"] == "u-7"
    assert json.loads(row["attributes"])["sentry.event_id"] == event["event_id"]
    assert json.loads(row["resource"])["service.name"] == "sentry-bridge"

    tree = search.trace(TRACE_ID, url=standin.url)
    assert tree is not None
    (span,) = [node for node in walk(tree["spans"]) if node["span_id"] == backend_span_id]
    assert span["name"] == "POST /orders"
    assert [log["body"] for log in span["logs"]] == ["TypeError: order.items is undefined"]
    assert set(tree["services"]) >= {"orders-api", "sentry-bridge"}

    # Stopping the bridge right after a delivery flushes the record still in the batch processor.
    late = error_event(trace_id=TRACE_ID, span_id=backend_span_id, exc_value="late")
    body, headers = signed_delivery(SECRET, "error", error_payload(late))
    assert httpx.post(f"{bridge_url}/sentry/webhook", content=body, headers=headers).status_code == 200
    process.terminate()
    assert process.wait(timeout=15) == 0
    wait_for_rows(standin, f"SELECT * FROM logs WHERE attributes LIKE '%{late['event_id']}%'")
