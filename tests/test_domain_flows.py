"""Order pipeline, payments, business-metric guards, structured log events, and the stand-ins' runner.

Most tests use their own SDK providers passed to the helpers; the last ones run with the whole kit
installed globally (`otel_capture`), the way a service uses these helpers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.metrics import Observation
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pideai_otel import tenant_context
from pideai_otel._logging import BridgeHandler
from pideai_otel.demo import thirdparty
from pideai_otel.domain import (
    GeminiImageClient,
    PaymentError,
    PaymentGatewayClient,
    count_http_request,
    current_order,
    log_event,
    metric_views,
    order_pipeline,
    order_step,
    payment_call,
)
from pideai_otel.domain.metrics import FORBIDDEN_METRIC_KEYS, DomainMetrics, bounded
from pideai_otel.domain.payments import to_minor_units
from pideai_otel.testing import TelemetryCapture

GATEWAY_KEY = "sk_test_gateway_SECRET_51Hx"
CARD_TOKEN = "tok_visa_4242"


class Capture:
    def __init__(self, *, views: bool = True) -> None:
        self.span_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.span_exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader], views=metric_views() if views else ())
        self.log_exporter = InMemoryLogRecordExporter()
        self.logger_provider = LoggerProvider()
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.log_exporter))

    @property
    def providers(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    def spans(self, name: str | None = None) -> list[Any]:
        return [s for s in self.span_exporter.get_finished_spans() if name is None or s.name == name]

    def metrics(self) -> dict[str, Any]:
        data = self.reader.get_metrics_data()
        return {
            m.name: m for rm in (data.resource_metrics if data else ()) for sm in rm.scope_metrics for m in sm.metrics
        }

    def points(self, name: str) -> list[Any]:
        metric = self.metrics().get(name)
        return list(metric.data.data_points) if metric else []

    def total(self, name: str, **attributes: Any) -> float:
        return sum(
            getattr(p, "value", None) if hasattr(p, "value") else p.count
            for p in self.points(name)
            if all(p.attributes.get(k) == v for k, v in attributes.items())
        )

    def serialized(self) -> str:
        data = self.reader.get_metrics_data()
        parts = [s.to_json() for s in self.span_exporter.get_finished_spans()]
        parts += [r.to_json() for r in self.log_exporter.get_finished_logs()]
        return "\n".join(parts) + (data.to_json() if data else "")

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.logger_provider.shutdown()


@pytest.fixture
def cap() -> Iterator[Capture]:
    capture = Capture()
    yield capture
    for metric in capture.metrics().values():
        for point in metric.data.data_points:
            assert not FORBIDDEN_METRIC_KEYS & set(point.attributes), (metric.name, point.attributes)
    capture.shutdown()


# --- order pipeline -------------------------------------------------------------------------------


def test_pipeline_steps_are_child_spans_and_the_order_is_counted(cap: Capture) -> None:
    with order_pipeline("order-1", store_id="store-5", **cap.providers) as order:
        for step in ("placed", "validated", "paid", "stored", "notified"):
            with order_step(step, **cap.providers):
                assert current_order() is order
    assert current_order() is None

    (parent,) = cap.spans("process order")
    steps = [s for s in cap.spans() if s.name.startswith("order ")]
    assert [s.name for s in steps] == [
        "order placed",
        "order validated",
        "order paid",
        "order stored",
        "order notified",
    ]
    for span in steps:
        assert span.parent is not None and span.parent.span_id == parent.context.span_id
        assert span.attributes["order_id"] == "order-1" and span.attributes["store_id"] == "store-5"
        assert span.attributes["pideai.order.status"] == span.attributes["pideai.order.step"]
        assert span.status.status_code.name == "UNSET"
    assert parent.attributes["pideai.order.status"] == "notified"
    assert parent.attributes["pideai.order.outcome"] == "completed"
    assert cap.total("pideai.orders", outcome="completed", store_id="store-5") == 1
    assert cap.total("pideai.order.duration", outcome="completed") == 1  # one histogram point


def test_a_failing_step_fails_the_order(cap: Capture) -> None:
    with pytest.raises(LookupError):
        with order_pipeline("order-2", store_id="store-5", **cap.providers):
            with order_step("placed", **cap.providers):
                pass
            with order_step("validated", **cap.providers):
                raise LookupError("menu item 12 is sold out")

    (validated,) = cap.spans("order validated")
    (parent,) = cap.spans("process order")
    assert validated.status.status_code.name == "ERROR"
    assert validated.attributes["pideai.order.status"] == "failed"
    assert validated.attributes["error.type"] == "LookupError"
    assert [e.name for e in validated.events] == ["exception"]
    assert parent.status.status_code.name == "ERROR"
    assert parent.attributes["pideai.order.status"] == "failed"
    assert parent.attributes["pideai.order.failed_step"] == "validated"
    assert cap.total("pideai.orders", outcome="failed", **{"pideai.order.failed_step": "validated"}) == 1
    assert cap.total("pideai.orders", outcome="completed") == 0


def test_fail_without_raising_and_later_steps_keep_the_order_failed(cap: Capture) -> None:
    with order_pipeline("order-3", **cap.providers) as order:
        with order_step("paid", **cap.providers) as step:
            step.fail("declined")
        with order_step("notified", **cap.providers):  # the customer is told about the decline
            pass
    assert order.failed and order.failed_step == "paid"
    (paid,) = cap.spans("order paid")
    assert paid.attributes["pideai.order.failure_reason"] == "declined"
    assert cap.spans("order notified")[0].status.status_code.name == "UNSET"
    (parent,) = cap.spans("process order")
    assert parent.attributes["pideai.order.status"] == "failed"
    assert cap.total("pideai.orders", outcome="failed", **{"pideai.order.failed_step": "paid"}) == 1


def test_a_step_outside_a_pipeline_takes_ids_from_baggage_and_counts_its_failure(cap: Capture) -> None:
    ctx = baggage.set_baggage("order_id", "order-bag", baggage.set_baggage("store_id", "store-bag"))
    token = otel_context.attach(ctx)
    try:
        with pytest.raises(ValueError):
            with order_step("stored", **cap.providers):
                raise ValueError("disk full")
    finally:
        otel_context.detach(token)
    (span,) = cap.spans("order stored")
    assert span.attributes["order_id"] == "order-bag" and span.attributes["store_id"] == "store-bag"
    assert cap.total("pideai.orders", outcome="failed", store_id="store-bag") == 1


def test_order_step_as_a_decorator_on_sync_and_async_functions(cap: Capture) -> None:
    @order_step("validated", **cap.providers)
    def validate(total: float) -> bool:
        return total > 0

    @order_step("stored", **cap.providers)
    async def store(order_id: str) -> str:
        await asyncio.sleep(0)
        return order_id

    async def run() -> str:
        with order_pipeline("order-4", **cap.providers):
            assert validate(10.0) and validate(5.0)
            return await store("order-4")

    assert asyncio.run(run()) == "order-4"
    assert [s.name for s in cap.spans()] == ["order validated", "order validated", "order stored", "process order"]
    assert all(s.attributes["order_id"] == "order-4" for s in cap.spans())


def test_unknown_steps_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown order step"):
        order_step("teleported")


# --- payments -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway() -> Iterator[thirdparty.RunningServer]:
    with thirdparty.start("payments", api_key=GATEWAY_KEY) as server:
        yield server


def test_gateway_calls_are_spans_with_outcomes_and_no_card_data(
    gateway: thirdparty.RunningServer, cap: Capture
) -> None:
    gateway.control("reset", {})
    gateway.control(
        "script",
        [
            "approve",
            {"outcome": "decline", "decline_code": "insufficient_funds"},
            "error",
            {"outcome": "timeout", "seconds": 10},
        ],
    )
    outcomes: list[str] = []
    with PaymentGatewayClient(base_url=gateway.url, api_key=GATEWAY_KEY, timeout=0.5, **cap.providers) as client:
        with order_pipeline("order-pay", store_id="store-2", **cap.providers):
            for amount in ("149.90", "89.50", "10", "12.34"):
                with order_step("paid", **cap.providers):
                    try:
                        outcomes.append(client.charge(amount, "mxn", CARD_TOKEN).outcome)
                    except PaymentError as exc:
                        outcomes.append(exc.error_type)
    assert outcomes == ["approved", "declined", "502", "timeout"]

    spans = cap.spans("charge standin")
    assert [s.attributes["payment.outcome"] for s in spans] == ["approved", "declined", "error", "error"]
    assert [s.status.status_code.name for s in spans] == ["UNSET", "UNSET", "ERROR", "ERROR"]
    assert [s.attributes.get("error.type") for s in spans] == [None, None, "502", "timeout"]
    assert spans[0].attributes["payment.amount"] == 149.9 and spans[0].attributes["payment.currency"] == "MXN"
    assert spans[0].attributes["payment.gateway"] == "standin" and spans[0].attributes["payment.id"].startswith("ch_")
    assert spans[1].attributes["payment.decline_code"] == "insufficient_funds"
    assert all(s.kind.name == "CLIENT" and s.attributes["order_id"] == "order-pay" for s in spans)
    assert cap.total("pideai.payments", **{"payment.outcome": "approved"}) == 1
    assert cap.total("pideai.payments", **{"payment.outcome": "declined"}) == 1
    assert cap.total("pideai.payments", **{"payment.outcome": "error"}, store_id="store-2") == 2
    exported = cap.serialized()
    assert CARD_TOKEN not in exported and GATEWAY_KEY not in exported


def test_payment_call_records_exception_types_but_not_their_messages(cap: Capture) -> None:
    with pytest.raises(RuntimeError):
        with payment_call("acme", amount=25, currency="COP", **cap.providers):
            raise RuntimeError("card 4242424242424242 exp 12/30 refused")
    (span,) = cap.spans("charge acme")
    assert span.attributes["error.type"] == "RuntimeError" and span.status.status_code.name == "ERROR"
    exported = cap.serialized()
    assert "4242424242424242" not in exported and "12/30" not in exported


def test_minor_units_follow_the_currency_exponent() -> None:
    assert to_minor_units("149.905", "MXN") == 14991
    assert to_minor_units(1500, "CLP") == 1500
    assert to_minor_units("1.2345", "KWD") == 1235


# --- metric guards --------------------------------------------------------------------------------


def test_views_drop_forbidden_keys_from_every_kind_of_instrument() -> None:
    capture = Capture(views=True)
    meter = capture.meter_provider.get_meter("someone.else")
    attrs = {"store_id": "s1", "user_id": "u1", "order_id": "o1", "session_id": "x", "http.route": "/menu"}
    meter.create_counter("library.calls").add(1, attrs)
    meter.create_up_down_counter("library.active").add(2, attrs)
    meter.create_histogram("library.latency", unit="s").record(0.2, attrs)
    meter.create_observable_gauge("library.queue", callbacks=[lambda options: [Observation(3, attrs)]])
    for metric in capture.metrics().values():
        (point,) = metric.data.data_points
        assert dict(point.attributes) == {"store_id": "s1", "http.route": "/menu"}, metric.name
    assert len(capture.metrics()) == 4
    capture.shutdown()


def test_helpers_filter_forbidden_keys_even_without_the_views() -> None:
    capture = Capture(views=False)
    m = DomainMetrics(capture.meter_provider)
    m.add(m.orders, 1, {"outcome": "completed", "store_id": "s1", "order_id": "o1", "user_id": "u1"})
    (point,) = capture.points("pideai.orders")
    assert dict(point.attributes) == {"outcome": "completed", "store_id": "s1"}
    assert bounded({"user_id": "u", "a": None, "b": 1}) == {"b": 1}
    capture.shutdown()


def test_instrument_names_units_and_buckets(cap: Capture) -> None:
    m = DomainMetrics(cap.meter_provider)
    m.record(m.generation_duration, 3.0, {"gen_ai.request.model": "x"})
    m.record(m.order_duration, 0.3, {"outcome": "completed"})
    count_http_request(
        "store-9", method="GET", route="/stores/{store_id}/menu", status_code=200, meter_provider=cap.meter_provider
    )
    for instrument in vars(m).values():
        name = instrument.name
        assert re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+", name), name
        assert not name.endswith("_total") and instrument.unit, name
    # Advisory buckets (seconds, not the SDK's millisecond defaults) survive the guard View.
    (generation,) = cap.points("pideai.ai.generation.duration")
    assert generation.explicit_bounds[:3] == (0.25, 0.5, 1.0)
    assert cap.metrics()["pideai.ai.generation.duration"].unit == "s"
    (request,) = cap.points("pideai.http.requests")
    assert dict(request.attributes) == {
        "store_id": "store-9",
        "http.request.method": "GET",
        "http.route": "/stores/{store_id}/menu",
        "http.response.status_code": 200,
    }


# --- structured log events ------------------------------------------------------------------------


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def event_logger() -> Iterator[tuple[logging.Logger, _ListHandler]]:
    logger = logging.getLogger("tests.domain.events")
    handler = _ListHandler()
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, handler
    logger.removeHandler(handler)
    logger.propagate = True


def test_log_event_puts_sections_in_extra_with_the_callers_location(
    event_logger: tuple[logging.Logger, _ListHandler],
) -> None:
    logger, handler = event_logger
    log_event(
        logger, "image enhanced", context={"store_id": "s-3"}, metrics={"duration_ms": 812.4}, metadata={"tags": ["a"]}
    )
    log_event(logging.LoggerAdapter(logger, {"service": "menu"}), "via adapter", context={"store_id": "s-4"})
    log_event(logger, "debug detail", level=logging.DEBUG)
    logger.setLevel(logging.WARNING)
    log_event(logger, "filtered", context={"x": 1})
    first, second, third = handler.records
    assert first.getMessage() == "image enhanced" and first.levelno == logging.INFO
    assert getattr(first, "context.store_id") == "s-3"
    assert getattr(first, "metrics.duration_ms") == 812.4
    assert getattr(first, "metadata.tags") == ["a"]
    assert first.funcName == "test_log_event_puts_sections_in_extra_with_the_callers_location"
    assert second.service == "menu" and getattr(second, "context.store_id") == "s-4"
    assert third.getMessage() == "debug detail" and third.levelno == logging.DEBUG


def test_log_event_through_the_kits_bridge_becomes_flat_attributes(cap: Capture) -> None:
    logger = logging.getLogger("tests.domain.bridge")
    bridge = BridgeHandler(cap.logger_provider)
    logger.addHandler(bridge)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        log_event(
            logger,
            "order stored",
            context={"store_id": "s-1", "route": "/orders"},
            metrics={"duration_ms": 12.5, "items": 3},
            metadata={"flags": {"beta": True}, "note": None, "retry": False},
            level=logging.WARNING,
        )
        assert bridge.flush(5.0)
    finally:
        logger.removeHandler(bridge)
        logger.propagate = True
        bridge.stop(2.0)
    (record,) = [r.log_record for r in cap.log_exporter.get_finished_logs()]
    attrs = dict(record.attributes or {})
    assert record.body == "order stored" and record.severity_text == "WARNING"
    assert attrs["context.store_id"] == "s-1" and attrs["context.route"] == "/orders"
    assert attrs["metrics.duration_ms"] == 12.5 and attrs["metrics.items"] == 3
    assert json.loads(attrs["metadata.flags"]) == {"beta": True}
    assert attrs["metadata.note"] == "null" and attrs["metadata.retry"] is False
    assert attrs["code.function.name"] == "test_log_event_through_the_kits_bridge_becomes_flat_attributes"


# --- the stand-ins as processes -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_stand_in_runs_as_a_subprocess() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pideai_otel.demo.thirdparty", "payments", "--port", str(port), "--api-key", "k"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 30)
        assert ready, "no ready line within 30 s"
        assert proc.stderr.readline().strip() == f"payments stand-in ready on http://127.0.0.1:{port}"
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/charges",
            json={"amount": 100, "currency": "MXN", "source": "t"},
            headers={"authorization": "Bearer k"},
        )
        assert answer.status_code == 200 and answer.json()["status"] == "approved"
        denied = httpx.post(f"http://127.0.0.1:{port}/v1/charges", json={"amount": 100, "currency": "MXN"})
        assert denied.status_code == 401
    finally:
        proc.terminate()
        code = proc.wait(timeout=15)
        if proc.stderr is not None:
            proc.stderr.close()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it so the exit status tells the truth.
    assert code in (0, -signal.SIGTERM)


# --- with the kit installed globally --------------------------------------------------------------


def test_helpers_use_the_global_providers_the_kit_installs(otel_capture: TelemetryCapture) -> None:
    key = "AIzaSy-global-SECRET-key"
    with thirdparty.start("gemini", api_key=key) as gemini:
        with tenant_context(store_id="store-g", user_id="user-g"):
            with order_pipeline("order-g"):
                with order_step("placed"):
                    pass
                with GeminiImageClient(api_key=key, base_url=gemini.url, auth="query") as client:
                    image = client.generate_image("mole poblano", menu_item_id="item-1")
    assert image.image.startswith(b"\x89PNG")

    spans = otel_capture.spans()
    names = [s["name"] for s in spans]
    assert {"process order", "order placed", "generate_content gemini-2.5-flash-image"} <= set(names)
    (genai,) = [s for s in spans if s["name"].startswith("generate_content")]
    (parent,) = [s for s in spans if s["name"] == "process order"]
    assert genai["trace_id"] == parent["trace_id"] and genai["attributes"]["store_id"] == "store-g"
    http_spans = [s for s in spans if s["parent_span_id"] == genai["span_id"]]
    assert http_spans, f"expected the instrumented httpx span under the GenAI span, got {names}"
    assert otel_capture.metric_total("pideai.ai.images_generated", store_id="store-g") == 1
    assert otel_capture.metric_total("pideai.orders", outcome="completed", store_id="store-g") == 1
    everything = json.dumps([spans, otel_capture.logs(), otel_capture.metrics()], default=str)
    assert key not in everything
    for metric in otel_capture.metrics():
        for point in metric["points"]:
            assert not FORBIDDEN_METRIC_KEYS & set(point["attributes"]), (metric["name"], point["attributes"])


def test_public_surface_is_pinned() -> None:
    import pideai_otel.domain as domain

    assert sorted(domain.__all__) == sorted(
        [
            "AsyncGeminiImageClient", "AsyncPaymentGatewayClient", "AsyncWhatsAppClient", "ChargeResult",
            "FORBIDDEN_METRIC_KEYS", "GeminiError", "GeminiImage", "GeminiImageClient", "GeminiSafetyBlock",
            "GeminiTimeout", "GeminiUsage", "InMemoryLinkStore", "MessageLink", "MessageLinkStore", "ModelPrice",
            "ORDER_STEPS", "PaymentError", "PaymentGatewayClient", "SQLiteLinkStore", "SentMessage", "StatusUpdate",
            "WhatsAppClient", "WhatsAppError", "WhatsAppStatusHandler", "count_http_request", "current_order",
            "log_event", "mask_phone", "metric_views", "order_pipeline", "order_step", "payment_call",
            "verify_signature", "webhook_endpoint",
        ]
    )  # fmt: skip
    assert all(hasattr(domain, name) for name in domain.__all__)
