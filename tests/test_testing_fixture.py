"""The `otel_capture` fixture exactly as a service's own test suite would use it."""

import logging

from opentelemetry import trace

import pideai_otel
from pideai_otel.testing import TelemetryCapture


def place_order(store_id: str) -> None:
    with pideai_otel.tenant_context(store_id=store_id):
        with trace.get_tracer("shop").start_as_current_span("order.placed"):
            logging.getLogger("shop").info("order placed", extra={"items": 2})


def test_spans_and_logs_are_plain_dicts(otel_capture: TelemetryCapture) -> None:
    place_order("s1")
    (span,) = otel_capture.spans(name="order.placed")
    assert span["attributes"]["store_id"] == "s1"
    (record,) = [r for r in otel_capture.logs() if r["body"] == "order placed"]
    assert record["trace_id"] == span["trace_id"] and record["attributes"]["items"] == 2


def test_each_test_starts_empty(otel_capture: TelemetryCapture) -> None:
    assert otel_capture.spans() == [] and otel_capture.logs() == []
    meter = pideai_otel.init_telemetry().meter_provider.get_meter("shop")
    meter.create_counter("shop.orders").add(3, {"store_id": "s2"})
    assert otel_capture.metric_total("shop.orders", store_id="s2") == 3
