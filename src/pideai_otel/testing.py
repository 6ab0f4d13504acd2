"""Test kit for services that use pideai-otel: capture spans, logs and metrics in memory.

    def test_order_is_traced(otel_capture):
        place_order(store_id="s1")
        (span,) = otel_capture.spans(name="order.placed")
        assert span["attributes"]["store_id"] == "s1"

The `otel_capture` fixture (registered as a pytest plugin by the package) installs the kit once per
process with in-memory exporters instead of OTLP, then clears what was captured before each test.
Everything else is the real kit: tenant stamping, the logging bridge, redaction, value conversion.
OpenTelemetry's globals can only be set once per process, so the first capture's settings (service
name...) stay for the session; use `reset_telemetry()` when a test needs its own `init_telemetry`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from . import _diagnostics, _setup
from ._config import resolve_settings

__all__ = ["TelemetryCapture", "capture_telemetry", "reset_telemetry", "otel_capture"]


def _hex(value: int, width: int) -> str | None:
    return format(value, f"0{width}x") if value else None


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.context
    return {
        "name": span.name,
        "trace_id": _hex(ctx.trace_id, 32) if ctx else None,
        "span_id": _hex(ctx.span_id, 16) if ctx else None,
        "parent_span_id": _hex(span.parent.span_id, 16) if span.parent else None,
        "kind": span.kind.name,
        "status": span.status.status_code.name,
        "status_description": span.status.description,
        "attributes": _plain(dict(span.attributes or {})),
        "events": [{"name": e.name, "attributes": _plain(dict(e.attributes or {}))} for e in span.events],
        "resource": dict(span.resource.attributes),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
    }


def log_to_dict(readable: ReadableLogRecord) -> dict[str, Any]:
    record = readable.log_record
    span_context = trace.get_current_span(record.context).get_span_context() if record.context else None
    return {
        "body": record.body,
        "severity_text": record.severity_text,
        "severity_number": record.severity_number.value if record.severity_number else None,
        "trace_id": _hex(span_context.trace_id, 32) if span_context and span_context.is_valid else None,
        "span_id": _hex(span_context.span_id, 16) if span_context and span_context.is_valid else None,
        "attributes": _plain(dict(record.attributes or {})),
        "resource": dict(readable.resource.attributes),
        "scope": readable.instrumentation_scope.name if readable.instrumentation_scope else None,
        "time_ns": record.timestamp,
    }


class TelemetryCapture:
    """What the kit exported during a test, as plain dicts."""

    def __init__(self, handle: _setup.Telemetry, spans: InMemorySpanExporter, logs: InMemoryLogRecordExporter,
                 reader: InMemoryMetricReader) -> None:
        self.handle = handle
        self._spans = spans
        self._logs = logs
        self._reader = reader
        self._metric_baseline: dict[tuple[str, str], float] = {}

    def clear(self) -> None:
        self.handle.flush()
        self._spans.clear()
        self._logs.clear()
        self._metric_baseline = {
            (m["name"], json.dumps(p["attributes"], sort_keys=True)): p["value"]
            for m in self._collect() for p in m["points"]
        }

    def spans(self, *, name: str | None = None) -> list[dict[str, Any]]:
        self.handle.flush()
        found = [span_to_dict(s) for s in self._spans.get_finished_spans()]
        return [s for s in found if name is None or s["name"] == name]

    def logs(self, *, min_severity: int = 0) -> list[dict[str, Any]]:
        self.handle.flush()
        found = [log_to_dict(r) for r in self._logs.get_finished_logs()]
        return [r for r in found if (r["severity_number"] or 0) >= min_severity]

    def _collect(self) -> list[dict[str, Any]]:
        data = self._reader.get_metrics_data()
        out: list[dict[str, Any]] = []
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    points = []
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:  # histogram: count is what tests compare; sum alongside
                            value = point.count
                        entry = {"attributes": dict(point.attributes or {}), "value": value}
                        if hasattr(point, "sum") and hasattr(point, "count"):
                            entry.update(sum=point.sum, count=point.count)
                        points.append(entry)
                    out.append({"name": metric.name, "unit": metric.unit, "points": points})
        return out

    def metrics(self, *, name: str | None = None) -> list[dict[str, Any]]:
        """Metric points recorded since the last clear (cumulative values minus the baseline)."""
        result = []
        for metric in self._collect():
            if name is not None and metric["name"] != name:
                continue
            points = []
            for point in metric["points"]:
                key = (metric["name"], json.dumps(point["attributes"], sort_keys=True))
                value = point["value"] - self._metric_baseline.get(key, 0)
                if value:
                    points.append({**point, "value": value})
            if points:
                result.append({**metric, "points": points})
        return result

    def metric_total(self, name: str, **attributes: Any) -> float:
        """Sum of a metric's points whose attributes include `attributes`."""
        return sum(
            p["value"] for m in self.metrics(name=name) for p in m["points"]
            if all(p["attributes"].get(k) == v for k, v in attributes.items())
        )


_capture: TelemetryCapture | None = None


def capture_telemetry(**settings: Any) -> TelemetryCapture:
    """Install the kit with in-memory exporters (once per process) and return the capture, cleared."""
    global _capture
    current = _setup.current_handle()
    if _capture is None or current is not _capture.handle:
        if current is not None:
            raise RuntimeError("init_telemetry() already ran in this process; call reset_telemetry() first")
        spans, logs, reader = InMemorySpanExporter(), InMemoryLogRecordExporter(), InMemoryMetricReader()
        defaults = {"service_name": "test-service", "instrument_httpx": True}
        handle = _setup._init(
            resolve_settings({**defaults, **settings}, environ={}),
            span_exporter=spans, log_exporter=logs, metric_reader=reader,
            span_processor=SimpleSpanProcessor, log_processor=SimpleLogRecordProcessor,
            metric_views=settings.get("metric_views"),
        )
        _capture = TelemetryCapture(handle, spans, logs, reader)
    _capture.clear()
    return _capture


def reset_telemetry() -> None:
    """Shut the kit down and clear OpenTelemetry's process-wide providers (tests only)."""
    global _capture
    handle = _setup.current_handle()
    if handle is not None:
        handle.shutdown(timeout=2.0)
    _capture = None
    _setup._installed_once = False
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    _logs._internal._LOGGER_PROVIDER_SET_ONCE = Once()
    _logs._internal._LOGGER_PROVIDER = None
    metrics._internal._METER_PROVIDER_SET_ONCE = Once()
    metrics._internal._METER_PROVIDER = None


@contextmanager
def strict_diagnostics() -> Iterator[None]:
    _diagnostics.set_strict(True)
    try:
        yield
    finally:
        _diagnostics.set_strict(False)


@pytest.fixture
def otel_capture() -> Iterator[TelemetryCapture]:
    """Spans, logs and metrics the kit exported during this test (see the module doc)."""
    with strict_diagnostics():
        yield capture_telemetry()
