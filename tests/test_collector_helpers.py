"""Shared helpers for the collector tests: raw OTLP senders and collector/stand-in fixtures.

No tests live here; test modules load it with `pytest_plugins = ("test_collector_helpers",)`. Payloads are built from the OTLP protobuf messages directly (no SDK), so what
the collector receives is exactly what a test planted, secrets included.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import (
    TraceServiceStub,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pideai_otel.collector import CollectorProcess, ensure_built
from pideai_otel.local import StandInProcess

TOKENS = {"default": "tok-default", "errors": "tok-errors"}

SEVERITY = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}


@pytest.fixture(scope="session")
def otelcol_bin() -> Path:
    """The collector binary, built once per manifest (cached across runs)."""
    return ensure_built()


@pytest.fixture
def standin_process(tmp_path: Path) -> Iterator[StandInProcess]:
    with StandInProcess(tmp_path / "standin", sources=TOKENS) as process:
        yield process


@pytest.fixture
def make_collector(
    tmp_path: Path, otelcol_bin: Path, standin_process: StandInProcess
) -> Iterator[Callable[..., CollectorProcess]]:
    """Factory: `make_collector(**env)` starts a collector pointed at the stand-in."""
    started: list[CollectorProcess] = []

    def make(tokens: Mapping[str, str] = TOKENS, **env: str) -> CollectorProcess:
        collector = CollectorProcess(
            tmp_path / f"collector{len(started)}",
            standin_url=standin_process.url,
            tokens=dict(tokens),
            binary=otelcol_bin,
            **env,
        )
        started.append(collector)
        return collector.start()

    yield make
    # Senders left open by a failing test are closed here, so no socket outlives its test.
    while _open_senders:
        _open_senders.pop().close()
    for collector in started:
        collector.close()


# --- OTLP payloads -------------------------------------------------------------------------------


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    return AnyValue(string_value=str(value))


def key_values(attributes: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


def new_trace_id() -> bytes:
    return secrets.token_bytes(16)


def log_record(
    body: str,
    severity: str | None = "INFO",
    trace_id: bytes = b"",
    attributes: Mapping[str, Any] | None = None,
) -> LogRecord:
    now = time.time_ns()
    return LogRecord(
        time_unix_nano=now,
        observed_time_unix_nano=now,
        severity_number=SEVERITY[severity] if severity else 0,  # type: ignore[arg-type]
        severity_text=severity or "",
        body=AnyValue(string_value=body),
        trace_id=trace_id,
        span_id=secrets.token_bytes(8) if trace_id else b"",
        attributes=key_values(attributes or {}),
    )


def span(name: str, trace_id: bytes | None = None, attributes: Mapping[str, Any] | None = None,
         events: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> Span:  # fmt: skip
    end = time.time_ns()
    return Span(
        trace_id=trace_id or new_trace_id(),
        span_id=secrets.token_bytes(8),
        name=name,
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=end - 2_000_000,
        end_time_unix_nano=end,
        attributes=key_values(attributes or {}),
        events=[Span.Event(name=n, time_unix_nano=end, attributes=key_values(a)) for n, a in events],
    )


def logs_request(records: Sequence[LogRecord], service: str = "collector-test") -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend(key_values({"service.name": service}))
    resource_logs.scope_logs.add().log_records.extend(records)
    return request


def traces_request(spans: Sequence[Span], service: str = "collector-test") -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(key_values({"service.name": service}))
    resource_spans.scope_spans.add().spans.extend(spans)
    return request


# --- senders -------------------------------------------------------------------------------------


@dataclass
class Sender:
    """Sends OTLP to a collector; `deliver` retries one request until the collector accepts it,
    which is what an SDK exporter does (and what makes "accepted" mean "must arrive")."""

    http_endpoint: str
    grpc_endpoint: str
    timeout: float = 5.0
    attempts: int = 0
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._http = httpx.Client(timeout=self.timeout)
        # Reconnect quickly after the collector restarts (gRPC's default backoff grows to 2 min).
        self._channel = grpc.insecure_channel(
            self.grpc_endpoint.removeprefix("http://"),
            options=[("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)],
        )
        self._traces = TraceServiceStub(self._channel)

    def post(self, signal: str, message: Any) -> httpx.Response:
        self.attempts += 1
        return self._http.post(
            f"{self.http_endpoint}/v1/{signal}",
            content=message.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )

    def export_spans_grpc(self, request: ExportTraceServiceRequest) -> None:
        self.attempts += 1
        self._traces.Export(request, timeout=self.timeout)

    def deliver(self, signal: str, message: Any, *, via: str = "http", deadline: float = 120.0) -> int:
        """Send until accepted; returns the number of attempts it took."""
        give_up = time.monotonic() + deadline
        tries = 0
        while True:
            tries += 1
            try:
                if via == "grpc":
                    self.export_spans_grpc(message)
                    return tries
                response = self.post(signal, message)
                if response.status_code == 200:
                    return tries
                self.failures.append(f"HTTP {response.status_code}")
            except (httpx.TransportError, grpc.RpcError) as exc:
                self.failures.append(type(exc).__name__)
            if time.monotonic() > give_up:
                raise TimeoutError(f"collector did not accept {signal} within {deadline:g} s: {self.failures[-5:]}")
            time.sleep(0.2)

    def close(self) -> None:
        self._http.close()
        self._channel.close()


_open_senders: list[Sender] = []


def sender_for(collector: CollectorProcess) -> Sender:
    sender = Sender(collector.http_endpoint, collector.grpc_endpoint)
    _open_senders.append(sender)
    return sender


# --- reading the stand-in --------------------------------------------------------------------------


def stored_ids(standin: StandInProcess, table: str, key: str = "tid", source: str | None = None) -> list[str]:
    """The `key` attribute of every stored row (duplicates kept)."""
    where = f"WHERE source = '{source}'" if source else ""
    rows = standin.query(f"SELECT json_extract(attributes, '$.{key}') AS id FROM {table} {where}")
    return [row["id"] for row in rows if row["id"] is not None]


def wait_for_ids(
    standin: StandInProcess, table: str, expected: set[str], timeout: float, source: str | None = None
) -> list[str]:
    """Poll until every expected id is stored (or the timeout); return all stored ids."""
    deadline = time.monotonic() + timeout
    while True:
        ids = stored_ids(standin, table, source=source)
        if expected <= set(ids) or time.monotonic() > deadline:
            return ids
        time.sleep(0.5)


def report(label: str, expected: set[str], stored: list[str]) -> tuple[int, int]:
    """Print sent / arrived / missing / duplicate counts; return (missing, duplicates)."""
    ours = [tid for tid in stored if tid in expected]
    distinct = set(ours)
    missing = len(expected - distinct)
    duplicates = len(ours) - len(distinct)
    print(
        f"{label}: sent {len(expected)}, stored rows {len(ours)}, distinct {len(distinct)}, "
        f"missing {missing}, duplicates {duplicates}"
    )
    return missing, duplicates


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
