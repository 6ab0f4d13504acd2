"""The SDK side in one process: bridge, tenant stamping, baggage allowlist, idempotence."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry import trace

import pideai_otel
from pideai_otel._logging import BridgeHandler
from pideai_otel.testing import TelemetryCapture, capture_telemetry

log = logging.getLogger("tests.kit")
tracer = trace.get_tracer("tests.kit")


@pytest.fixture
def cap() -> TelemetryCapture:
    # Installed once per process and cleared per test: module-level tracers (like the one above)
    # keep working, as they do in a real service.
    return capture_telemetry()


def test_second_init_is_a_no_op_with_one_handler_and_one_record(cap: TelemetryCapture) -> None:
    again = pideai_otel.init_telemetry(service_name="other-name")
    assert again is cap.handle
    bridges = [h for h in logging.getLogger().handlers if isinstance(h, BridgeHandler)]
    assert len(bridges) == 1
    log.warning("exactly once")
    assert [r["body"] for r in cap.logs()].count("exactly once") == 1


def test_log_records_carry_trace_context_severity_and_exception(cap: TelemetryCapture) -> None:
    with tracer.start_as_current_span("work") as span:
        try:
            raise ValueError("bad input 42")
        except ValueError:
            log.exception("failed to %s", "process")
    ids = span.get_span_context()
    (record,) = [r for r in cap.logs() if r["body"] == "failed to process"]
    assert record["trace_id"] == format(ids.trace_id, "032x")
    assert record["span_id"] == format(ids.span_id, "016x")
    assert record["severity_text"] == "ERROR" and record["severity_number"] == 17
    assert record["attributes"]["exception.type"] == "ValueError"
    assert record["attributes"]["exception.message"] == "bad input 42"
    assert "raise ValueError" in record["attributes"]["exception.stacktrace"]
    assert record["attributes"]["code.function.name"] == "test_log_records_carry_trace_context_severity_and_exception"


@dataclasses.dataclass
class Dish:
    name: str
    price: float


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


def test_extra_values_of_any_type_are_kept_without_warnings(cap: TelemetryCapture) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log.info("values", extra={"none": None, "mapping": {"a": [1, 2]}, "dish": Dish("arepa", 4.5),
                                  "thing": Opaque(), "tags": ["x", "y"]})
        (record,) = [r for r in cap.logs() if r["body"] == "values"]
    attrs = record["attributes"]
    assert attrs["none"] == "null"
    assert json.loads(attrs["mapping"]) == {"a": [1, 2]}
    assert json.loads(attrs["dish"]) == {"name": "arepa", "price": 4.5}
    assert attrs["thing"] == "<Opaque thing>"
    assert attrs["tags"] == ["x", "y"]


def test_debug_below_the_bridge_level_is_not_exported(cap: TelemetryCapture) -> None:
    log.debug("too chatty")
    log.info("kept")
    bodies = [r["body"] for r in cap.logs()]
    assert "kept" in bodies and "too chatty" not in bodies


def test_tenant_keys_are_stamped_on_spans_and_logs_but_validated(cap: TelemetryCapture) -> None:
    with pideai_otel.tenant_context(store_id="store-1", user_id="u-1"):
        with pideai_otel.tenant_context(order_id="o-9"):
            with tracer.start_as_current_span("inner"):
                log.info("stamped")
    (span,) = cap.spans(name="inner")
    assert {k: span["attributes"][k] for k in ("store_id", "user_id", "order_id")} == {
        "store_id": "store-1", "user_id": "u-1", "order_id": "o-9"}
    (record,) = [r for r in cap.logs() if r["body"] == "stamped"]
    assert record["attributes"]["order_id"] == "o-9"
    with pytest.raises(ValueError, match="unknown tenant key"):
        with pideai_otel.tenant_context(email="a@b.c"):
            pass


def _work(store: str) -> None:
    with pideai_otel.tenant_context(store_id=store):
        with tracer.start_as_current_span(f"job {store}"):
            threading.Event().wait(0.002)
            log.info("job for %s", store)


def test_fifty_threads_never_swap_store_ids(cap: TelemetryCapture) -> None:
    stores = [f"store-{n}" for n in range(50)]
    with ThreadPoolExecutor(max_workers=50) as pool:
        list(pool.map(_work, stores))
    _assert_no_swaps(cap, stores)


def test_fifty_asyncio_tasks_never_swap_store_ids(cap: TelemetryCapture) -> None:
    stores = [f"store-{n}" for n in range(50)]

    async def job(store: str) -> None:
        with pideai_otel.tenant_context(store_id=store):
            with tracer.start_as_current_span(f"job {store}"):
                await asyncio.sleep(0.01)
                log.info("job for %s", store)

    async def main() -> None:
        await asyncio.gather(*(job(s) for s in stores))

    asyncio.run(main())
    _assert_no_swaps(cap, stores)


def _assert_no_swaps(cap: TelemetryCapture, stores: list[str]) -> None:
    spans = {s["name"]: s["attributes"]["store_id"] for s in cap.spans() if s["name"].startswith("job ")}
    assert spans == {f"job {s}": s for s in stores}
    logs = {r["body"]: r["attributes"]["store_id"] for r in cap.logs() if r["body"].startswith("job for")}
    assert logs == {f"job for {s}": s for s in stores}


class _EchoHeaders(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("0.0.0.0", 0), _EchoHeaders)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_baggage_goes_only_to_allowed_hosts(cap: TelemetryCapture, echo_server: int) -> None:
    with pideai_otel.tenant_context(store_id="store-7", user_id="u-3"):
        internal = httpx.get(f"http://127.0.0.1:{echo_server}/").json()
        # 127.0.0.2 is loopback too, but not on the allowlist: it plays a third-party API here.
        external = httpx.get(f"http://127.0.0.2:{echo_server}/").json()
        again = httpx.get(f"http://localhost:{echo_server}/").json()
    assert "store_id=store-7" in internal["baggage"] and "user_id=u-3" in internal["baggage"]
    assert "baggage" not in external
    assert "traceparent" in external and "traceparent" in internal
    assert "store_id=store-7" in again["baggage"]


def test_metrics_do_not_get_tenant_keys(cap: TelemetryCapture) -> None:
    counter = pideai_otel.init_telemetry().meter_provider.get_meter("t").create_counter("kit.test.count")
    with pideai_otel.tenant_context(store_id="s", user_id="u"):
        counter.add(1, {"route": "/x"})
        counter.add(1, {"route": "/x", "user_id": "u-1", "order_id": "o-1"})  # the default View drops these
    (metric,) = cap.metrics(name="kit.test.count")
    assert metric["points"] == [{"attributes": {"route": "/x"}, "value": 2}]


def test_asgi_unhandled_exception_is_one_error_record_in_the_request_trace(cap: TelemetryCapture) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route

    async def boom(_: object) -> None:
        raise RuntimeError("kaput")

    async def plain_asgi(scope: dict, receive: object, send: object) -> None:  # no framework error handling
        raise KeyError("raw")

    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for app, path, exc_name in ((Starlette(routes=[Route("/boom", boom)]), "/boom", "RuntimeError"),
                                (plain_asgi, "/raw", "KeyError")):
        wrapped = pideai_otel.TelemetryMiddleware(app)
        transport = httpx.ASGITransport(app=wrapped, raise_app_exceptions=False)

        async def call() -> int:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return (await client.get(path, headers={"traceparent": traceparent})).status_code

        assert asyncio.run(call()) == 500
        errors = [r for r in cap.logs(min_severity=17) if r["attributes"].get("exception.type") == exc_name]
        assert len(errors) == 1
        assert errors[0]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_a_redacted_log_record_keeps_its_trace_context_in_the_otlp_encoding(cap: TelemetryCapture) -> None:
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

    with tracer.start_as_current_span("s") as span:
        log.warning("mail bob@example.com")
    cap.handle.flush()
    (readable,) = [r for r in cap._logs.get_finished_logs() if "REDACTED" in str(r.log_record.body)]
    (encoded,) = encode_logs([readable]).resource_logs[0].scope_logs[0].log_records
    assert encoded.trace_id.hex() == format(span.get_span_context().trace_id, "032x")


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


def test_hostile_extra_values_never_cost_the_record(cap: TelemetryCapture) -> None:
    loop: dict[str, object] = {}
    loop["self"] = loop
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log.info("x" * 200_000, extra={"nested_bad": {"inner": BadRepr()}, "bad": BadRepr(), "loop": loop,
                                       "big_ints": [2**70, 2**71], "huge": "y" * 100_000, "many": ["z" * 100_000] * 50})
        (record,) = [r for r in cap.logs() if r["body"].startswith("xxx")]
    attrs = record["attributes"]
    assert len(record["body"]) <= 64 * 1024
    assert "unrepresentable BadRepr" in attrs["nested_bad"] and attrs["bad"] == "<unrepresentable BadRepr>"
    assert "self" in attrs["loop"]
    assert "1180591620717411303424" in attrs["big_ints"]
    assert len(attrs["huge"]) <= 16 * 1024
    assert len(str(attrs["many"])) <= 60 * 1024


def test_an_edge_service_ignores_tenant_baggage_from_outside(cap: TelemetryCapture) -> None:
    seen: list[dict[str, str]] = []

    async def app(scope: dict, receive: object, send: object) -> None:
        seen.append(dict(pideai_otel.current_tenant()))
        await send({"type": "http.response.start", "status": 204, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    async def call(trust: bool) -> None:
        transport = httpx.ASGITransport(app=pideai_otel.TelemetryMiddleware(app, trust_baggage=trust))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.get("/", headers={"baggage": "store_id=evil-store,user_id=admin"})

    asyncio.run(call(trust=False))
    asyncio.run(call(trust=True))
    assert seen == [{}, {"store_id": "evil-store", "user_id": "admin"}]
