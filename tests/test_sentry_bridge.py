"""The Sentry webhook bridge, end to end through HTTP, with the records captured in memory."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from starlette.applications import Starlette
from starlette.routing import Mount

from pideai_otel.sentry import BridgeConfig, create_app
from pideai_otel.sentry.testing import (
    encode,
    error_event,
    error_payload,
    event_alert_payload,
    issue_payload,
    legacy_payload,
    sign,
    signed_delivery,
    webhook_headers,
)

SECRET = "b7c2f0e1d4a5968712ab34cd56ef7890b7c2f0e1d4a5968712ab34cd56ef7890"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
URL = "/sentry/webhook"


@dataclass
class Capture:
    exporter: InMemoryLogRecordExporter
    reader: InMemoryMetricReader
    logger_provider: LoggerProvider
    meter_provider: MeterProvider

    def records(self) -> Sequence[ReadableLogRecord]:
        return self.exporter.get_finished_logs()

    def counter(self, name: str) -> dict[tuple[tuple[str, Any], ...], int]:
        data = self.reader.get_metrics_data()
        points: dict[tuple[tuple[str, Any], ...], int] = {}
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            assert isinstance(point, NumberDataPoint)
                            points[tuple(sorted((point.attributes or {}).items()))] = int(point.value)
        return points

    def wait_for_records(self, count: int, timeout: float = 10.0) -> Sequence[ReadableLogRecord]:
        deadline = time.monotonic() + timeout
        while len(self.records()) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.records()


@pytest.fixture
def capture() -> Iterator[Capture]:
    exporter = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Capture(exporter, reader, logger_provider, meter_provider)
    logger_provider.shutdown()
    meter_provider.shutdown()


def make_app(capture: Capture, **config: Any) -> Starlette:
    return create_app(
        BridgeConfig(client_secret=SECRET, **config),
        logger_provider=capture.logger_provider,
        meter_provider=capture.meter_provider,
    )


def post(app: Starlette, path: str, content: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    """In-process request; ASGITransport returns only after background tasks ran, so the
    absence of a record right after the reply is meaningful."""

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge") as client:
            return await client.post(path, content=content, headers=headers or {})

    return asyncio.run(send())


class ServedApp:
    """The app on a real uvicorn server on a free loopback port, in a thread of this process."""

    def __init__(self, app: Starlette) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="sentry-bridge-test", daemon=True)
        self.url = ""

    def __enter__(self) -> ServedApp:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def signed_error(**event: Any) -> tuple[bytes, dict[str, str]]:
    return signed_delivery(SECRET, "error", error_payload(error_event(**event)))


# --- the main path, over a real server ------------------------------------------------------------


def test_signed_error_becomes_an_error_record_inside_its_trace(capture: Capture) -> None:
    event_ts = time.time() - 42.5
    event = error_event(
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        timestamp=event_ts,
        tags={"store_id": "store-17", "browser": "Chrome 139", "user": "email:ana@example.com"},
        user={"id": "user-5", "email": "ana@example.com", "ip_address": "203.0.113.9"},
    )
    body, headers = signed_delivery(SECRET, "error", error_payload(event))

    with ServedApp(make_app(capture)) as served, httpx.Client(base_url=served.url) as client:
        started = time.monotonic()
        response = client.post(URL, content=body, headers=headers)
        assert time.monotonic() - started < 1.0
        assert response.status_code == 200
        assert response.json() == {"status": "accepted"}
        (record,) = capture.wait_for_records(1)
        stats = client.get("/sentry/stats").json()

    log = record.log_record
    assert f"{log.trace_id:032x}" == TRACE_ID
    assert f"{log.span_id:016x}" == SPAN_ID
    assert log.trace_flags == 1
    assert log.severity_number is SeverityNumber.ERROR
    assert log.severity_text == "ERROR"
    assert log.body == "TypeError: order.items is undefined"
    assert log.timestamp == int(event_ts * 1e9)
    assert log.observed_timestamp is not None and log.observed_timestamp > log.timestamp
    assert record.instrumentation_scope is not None
    assert record.instrumentation_scope.name == "pideai_otel.sentry"
    attributes = dict(log.attributes or {})
    assert attributes["sentry.event_id"] == event["event_id"]
    assert attributes["sentry.issue_id"] == "4507"
    assert attributes["sentry.web_url"] == event["web_url"]
    assert attributes["sentry.culprit"] == "checkout/submitOrder"
    assert attributes["sentry.release"] == "shop-web@1.4.2"
    assert attributes["deployment.environment"] == "production"
    assert attributes["sentry.tag.browser"] == "Chrome 139"
    assert attributes["sentry.tag.store_id"] == "store-17"
    assert attributes["exception.type"] == "TypeError"
    assert attributes["exception.message"] == "order.items is undefined"
    assert "submitOrder (app/checkout.js:42)" in str(attributes["exception.stacktrace"])
    assert attributes["store_id"] == "store-17"
    assert attributes["user_id"] == "user-5"
    assert "sentry.tag.user" not in attributes
    assert "ana@example.com" not in json.dumps(attributes)
    assert "203.0.113.9" not in json.dumps(attributes)

    assert stats["accepted"] == {"error": 1}
    assert stats["emitted"] == {"correlated": {"error": 1}}
    assert capture.counter("pideai.sentry.events") == {(("correlated", True), ("resource", "error")): 1}


def test_reply_does_not_wait_for_a_slow_exporter(capture: Capture) -> None:
    class SlowExporter(LogRecordExporter):
        def __init__(self) -> None:
            self.exported: list[ReadableLogRecord] = []

        def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
            time.sleep(1.5)
            self.exported.extend(batch)
            return LogRecordExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    slow = SlowExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(slow))
    app = create_app(BridgeConfig(client_secret=SECRET), logger_provider=provider, meter_provider=capture.meter_provider)
    try:
        with ServedApp(app) as served, httpx.Client(base_url=served.url, timeout=5) as client:
            for _ in range(2):
                body, headers = signed_error(trace_id=TRACE_ID, span_id=SPAN_ID)
                started = time.monotonic()
                assert client.post(URL, content=body, headers=headers).status_code == 200
                assert time.monotonic() - started < 1.0
            deadline = time.monotonic() + 10
            while len(slow.exported) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert len(slow.exported) == 2
    finally:
        provider.shutdown()


def test_a_delivery_retried_three_times_yields_one_record(capture: Capture) -> None:
    event = error_event(trace_id=TRACE_ID, span_id=SPAN_ID)
    payload = error_payload(event)
    with ServedApp(make_app(capture)) as served, httpx.Client(base_url=served.url) as client:
        statuses = []
        for attempt in range(4):  # the first delivery and Sentry's three retries
            body, headers = signed_delivery(SECRET, "error", payload, timestamp=time.time() - attempt)
            statuses.append(client.post(URL, content=body, headers=headers).json()["status"])
        # The same event through an alert rule is the same error: still one record.
        body, headers = signed_delivery(SECRET, "event_alert", event_alert_payload(event))
        statuses.append(client.post(URL, content=body, headers=headers).json()["status"])
        time.sleep(0.3)  # give any (wrong) extra background emit time to land
        stats = client.get("/sentry/stats").json()
    assert statuses == ["accepted", "duplicate", "duplicate", "duplicate", "duplicate"]
    assert len(capture.records()) == 1
    assert stats["duplicates"] == {"error": 3, "event_alert": 1}


def test_concurrent_retries_still_yield_one_record(capture: Capture) -> None:
    app = make_app(capture)
    body, headers = signed_error(trace_id=TRACE_ID)

    async def deliver_four_at_once() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge") as client:
            responses = await asyncio.gather(*(client.post(URL, content=body, headers=headers) for _ in range(4)))
        return sorted(r.status_code for r in responses)

    assert asyncio.run(deliver_four_at_once()) == [200, 200, 200, 200]
    assert len(capture.records()) == 1


# --- every bad input: its status, and nothing emitted ---------------------------------------------


def _bad_requests() -> Iterator[tuple[str, int, bytes, dict[str, str]]]:
    body, good = signed_error(trace_id=TRACE_ID)
    without = lambda name: {k: v for k, v in good.items() if k != name}

    yield "no signature", 401, body, without("Sentry-Hook-Signature")
    yield "empty signature", 401, body, {**good, "Sentry-Hook-Signature": ""}
    yield "wrong secret", 401, body, {**good, "Sentry-Hook-Signature": sign("other-secret", body)}
    yield "sha256= prefix", 401, body, {**good, "Sentry-Hook-Signature": "sha256=" + sign(SECRET, body)}
    yield "truncated signature", 401, body, {**good, "Sentry-Hook-Signature": sign(SECRET, body)[:-2]}
    yield "body changed after signing", 401, body.replace(b"TypeError", b"TypoError"), good
    reserialised = json.dumps(json.loads(body)).encode()  # the docs' snippet mistake: ", " separators
    yield "signature over re-serialised JSON", 401, reserialised, good
    yield "no timestamp", 401, body, without("Sentry-Hook-Timestamp")
    yield "timestamp not a number", 401, body, {**good, "Sentry-Hook-Timestamp": "yesterday"}
    yield "timestamp NaN", 401, body, {**good, "Sentry-Hook-Timestamp": "nan"}
    yield "timestamp too old", 401, body, webhook_headers(SECRET, body, "error", timestamp=time.time() - 310)
    yield "timestamp in the future", 401, body, webhook_headers(SECRET, body, "error", timestamp=time.time() + 310)

    def signed(raw: bytes, resource: str = "error") -> tuple[bytes, dict[str, str]]:
        return raw, webhook_headers(SECRET, raw, resource)

    yield "not JSON", 400, *signed(b"{not json")
    yield "not UTF-8", 400, *signed(b"\xff\xfe{}")
    yield "JSON array", 400, *signed(b"[1,2,3]")
    yield "deeply nested", 400, *signed(b"[" * 100_000 + b"]" * 100_000)
    yield "no action", 400, *signed(encode({"data": {"error": error_event()}}))
    yield "no data", 400, *signed(encode({"action": "created"}))
    yield "data.error missing", 400, *signed(encode({"action": "created", "data": {"event": error_event()}}))
    no_id = error_event()
    del no_id["event_id"]
    yield "no event_id", 400, *signed(encode(error_payload(no_id)))
    yield "event_id not a string", 400, *signed(encode(error_payload({**error_event(), "event_id": {"x": 1}})))
    yield "issue without id", 400, *signed(encode({"action": "created", "data": {"issue": {}}}), "issue")
    yield "alert without event", 400, *signed(encode({"action": "triggered", "data": {}}), "event_alert")
    yield "no resource header", 400, body, without("Sentry-Hook-Resource")
    big = encode(error_payload(error_event(exc_value="x" * 1_100_000)))
    yield "over 1 MiB", 413, *signed(big)


# Built when each test runs, not at collection: the signed timestamps must be fresh.
BAD_CASES = [case for case, *_ in _bad_requests()]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_gets_its_status_and_emits_nothing(capture: Capture, case: str) -> None:
    status, body, headers = next((s, b, h) for c, s, b, h in _bad_requests() if c == case)
    response = post(make_app(capture), URL, body, headers)
    assert response.status_code == status, response.text
    assert capture.records() == ()
    assert capture.counter("pideai.sentry.events") == {}
    assert sum(capture.counter("pideai.sentry.rejected").values()) == 1


def test_oversize_streamed_body_without_length_is_cut_off(capture: Capture) -> None:
    chunks_sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(10_000):  # 640 MB if the app read it all
            chunks_sent += 1
            yield b"x" * 65536

    app = make_app(capture, max_body_bytes=1024 * 1024)
    response = post(app, URL, endless(), {"Sentry-Hook-Signature": "0" * 64, "Sentry-Hook-Resource": "error"})
    assert response.status_code == 413
    assert chunks_sent < 10_000
    assert capture.records() == ()


@pytest.mark.parametrize("resource", ["installation", "metric_alert", "comment", "seer"])
def test_unknown_resource_is_acknowledged_and_ignored(capture: Capture, resource: str) -> None:
    raw = encode({"action": "created", "data": {"installation": {"uuid": "x"}}})
    response = post(make_app(capture), URL, raw, webhook_headers(SECRET, raw, resource))
    assert response.status_code == 202
    assert response.json()["status"] == "ignored"
    assert capture.records() == ()


def test_unknown_resource_with_a_bad_signature_is_still_refused(capture: Capture) -> None:
    raw = b"{}"
    headers = {**webhook_headers(SECRET, raw, "installation"), "Sentry-Hook-Signature": "0" * 64}
    assert post(make_app(capture), URL, raw, headers).status_code == 401


# --- uncorrelated deliveries ----------------------------------------------------------------------


def test_issue_without_an_event_is_logged_uncorrelated_and_counted(capture: Capture) -> None:
    app = make_app(capture)
    body, headers = signed_delivery(SECRET, "issue", issue_payload("4507", "created", level="fatal"))
    assert post(app, URL, body, headers).status_code == 200

    (record,) = capture.records()
    log = record.log_record
    assert log.trace_id == 0 and log.span_id == 0
    assert log.severity_number is SeverityNumber.FATAL
    assert log.body == "TypeError: order.items is undefined"
    attributes = dict(log.attributes or {})
    assert attributes["sentry.issue_id"] == "4507"
    assert attributes["sentry.web_url"] == "https://pideai.sentry.io/issues/4507/"
    assert attributes["sentry.action"] == "created"
    assert attributes["sentry.correlated"] is False
    assert capture.counter("pideai.sentry.events") == {(("correlated", False), ("resource", "issue")): 1}


def test_issue_lifecycle_notices_are_info_and_each_action_counts_once(capture: Capture) -> None:
    app = make_app(capture)
    for action in ("created", "resolved", "resolved", "unresolved"):
        body, headers = signed_delivery(SECRET, "issue", issue_payload("88", action))
        assert post(app, URL, body, headers).status_code == 200
    severities = [(r.log_record.attributes or {})["sentry.action"] for r in capture.records()]
    assert severities == ["created", "resolved", "unresolved"]
    assert [r.log_record.severity_number for r in capture.records()] == [
        SeverityNumber.ERROR,
        SeverityNumber.INFO,
        SeverityNumber.ERROR,
    ]


@pytest.mark.parametrize(
    "trace",
    [None, {"trace_id": "not-hex"}, {"trace_id": "0" * 32, "span_id": SPAN_ID}, {"span_id": SPAN_ID}],
    ids=["no trace context", "bad trace id", "all-zero trace id", "span id only"],
)
def test_event_without_a_usable_trace_id_is_logged_uncorrelated(capture: Capture, trace: dict[str, str] | None) -> None:
    event = error_event()
    if trace is not None:
        event["contexts"]["trace"] = trace
    body, headers = signed_delivery(SECRET, "error", error_payload(event))
    assert post(make_app(capture), URL, body, headers).status_code == 200
    (record,) = capture.records()
    assert record.log_record.trace_id == 0
    assert capture.counter("pideai.sentry.events") == {(("correlated", False), ("resource", "error")): 1}


def test_trace_id_without_span_id_still_lands_in_the_trace(capture: Capture) -> None:
    body, headers = signed_error(trace_id=TRACE_ID.upper())
    assert post(make_app(capture), URL, body, headers).status_code == 200
    (record,) = capture.records()
    assert f"{record.log_record.trace_id:032x}" == TRACE_ID
    assert record.log_record.span_id == 0


def test_uncorrelated_record_does_not_adopt_the_webhook_requests_own_span(capture: Capture) -> None:
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    app = make_app(capture)
    body, headers = signed_delivery(SECRET, "issue", issue_payload())
    outer = trace.NonRecordingSpan(
        trace.SpanContext(int("11" * 16, 16), int("22" * 8, 16), is_remote=False, trace_flags=trace.TraceFlags(1))
    )
    token = otel_context.attach(trace.set_span_in_context(outer))
    try:
        assert post(app, URL, body, headers).status_code == 200
    finally:
        otel_context.detach(token)
    (record,) = capture.records()
    assert record.log_record.trace_id == 0


# --- other shapes and details ---------------------------------------------------------------------


def test_event_alert_carries_the_rule(capture: Capture) -> None:
    event = error_event(trace_id=TRACE_ID, span_id=SPAN_ID, level="warning")
    body, headers = signed_delivery(SECRET, "event_alert", event_alert_payload(event, rule="Checkout errors"))
    assert post(make_app(capture), URL, body, headers).status_code == 200
    (record,) = capture.records()
    assert record.log_record.severity_number is SeverityNumber.WARN
    attributes = dict(record.log_record.attributes or {})
    assert attributes["sentry.triggered_rule"] == "Checkout errors"
    assert attributes["sentry.resource"] == "event_alert"


def test_many_tags_are_capped_without_dropping_fixed_attributes(capture: Capture) -> None:
    tags = {f"tag{i:03d}": f"v{i}" for i in range(300)}
    body, headers = signed_error(trace_id=TRACE_ID, tags=tags)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the SDK warns when it drops attributes over its limit
        assert post(make_app(capture), URL, body, headers).status_code == 200
    attributes = dict(capture.records()[0].log_record.attributes or {})
    assert 0 < sum(key.startswith("sentry.tag.") for key in attributes) <= 64
    assert attributes["sentry.event_id"]


def test_legacy_endpoint_exists_only_when_enabled(capture: Capture) -> None:
    raw = encode(legacy_payload(error_event(trace_id=TRACE_ID, span_id=SPAN_ID)))
    assert post(make_app(capture), "/sentry/legacy", raw).status_code == 404
    assert capture.records() == ()

    app = make_app(capture, legacy_enabled=True)
    assert post(app, "/sentry/legacy", raw, {"Content-Type": "application/json"}).status_code == 200
    assert post(app, "/sentry/legacy", raw).json() == {"status": "duplicate"}
    assert post(app, "/sentry/legacy", b'{"id": "1"}').status_code == 400
    (record,) = capture.records()
    assert f"{record.log_record.trace_id:032x}" == TRACE_ID
    attributes = dict(record.log_record.attributes or {})
    assert attributes["sentry.resource"] == "legacy"
    assert attributes["sentry.issue_id"] == "4507"
    assert attributes["sentry.triggered_rule"] == "Checkout errors"


def test_legacy_token_when_configured(capture: Capture) -> None:
    app = make_app(capture, legacy_enabled=True, legacy_token="callback-token-1")
    raw = encode(legacy_payload(error_event()))
    assert post(app, "/sentry/legacy", raw).status_code == 401
    assert post(app, "/sentry/legacy?token=wrong", raw).status_code == 401
    assert capture.records() == ()
    assert post(app, "/sentry/legacy?token=callback-token-1", raw).status_code == 200
    assert len(capture.records()) == 1


def test_mounted_inside_a_service(capture: Capture) -> None:
    service = Starlette(routes=[Mount("/hooks", app=make_app(capture, path_prefix=""))])
    body, headers = signed_error(trace_id=TRACE_ID)
    assert post(service, "/hooks/webhook", body, headers).status_code == 200
    assert len(capture.records()) == 1


def test_stats_endpoint_counts_by_outcome(capture: Capture) -> None:
    app = make_app(capture)
    good_body, good_headers = signed_error(trace_id=TRACE_ID)
    post(app, URL, good_body, good_headers)
    post(app, URL, good_body, good_headers)
    post(app, URL, good_body, {**good_headers, "Sentry-Hook-Signature": "0" * 64})
    post(app, URL, b"[]", webhook_headers(SECRET, b"[]", "error"))
    post(app, URL, b"{}", webhook_headers(SECRET, b"{}", "installation"))
    body, headers = signed_delivery(SECRET, "issue", issue_payload())
    post(app, URL, body, headers)

    async def get() -> dict[str, Any]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge") as client:
            return (await client.get("/sentry/stats")).json()

    assert asyncio.run(get()) == {
        "requests": 6,
        "accepted": {"error": 1, "issue": 1},
        "duplicates": {"error": 1},
        "rejected": {"400": 1, "401": 1},
        "ignored": 1,
        "emitted": {"correlated": {"error": 1}, "uncorrelated": {"issue": 1}},
        "dedupe_entries": 2,
    }


def test_a_failing_log_pipeline_never_fails_the_delivery(capture: Capture, capfd: pytest.CaptureFixture[str]) -> None:
    from opentelemetry.sdk._logs import LogRecordProcessor

    class Broken(LogRecordProcessor):
        def on_emit(self, log_record: Any) -> None:
            raise RuntimeError("processor on fire")

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    provider = LoggerProvider()
    provider.add_log_record_processor(Broken())
    app = create_app(BridgeConfig(client_secret=SECRET), logger_provider=provider, meter_provider=capture.meter_provider)
    body, headers = signed_error(trace_id=TRACE_ID)
    try:
        assert post(app, URL, body, headers).status_code == 200
    finally:
        provider.shutdown()
    assert app.state.sentry_bridge.stats.get("emit_errors") == 1
    assert "processor on fire" in capfd.readouterr().err


def test_config_refuses_an_empty_secret() -> None:
    with pytest.raises(ValueError, match="SENTRY_CLIENT_SECRET"):
        BridgeConfig(client_secret="")
    with pytest.raises(ValueError, match="SENTRY_CLIENT_SECRET"):
        BridgeConfig.from_env({})
    config = BridgeConfig.from_env({"SENTRY_CLIENT_SECRET": "abc"}, timestamp_tolerance_s=60)
    assert config.timestamp_tolerance_s == 60
    assert "abc" not in repr(config)


def test_signature_is_hmac_sha256_hex_of_the_raw_body() -> None:
    body = b'{"action":"created"}'
    assert sign("secret", body) == hmac.new(b"secret", body, hashlib.sha256).hexdigest()


def test_dedupe_memory_is_bounded_and_expires() -> None:
    from pideai_otel.sentry._dedupe import Deduper

    now = [0.0]
    dedupe = Deduper(ttl_s=10, max_entries=3, clock=lambda: now[0])
    assert all(dedupe.first_time(key) for key in "abcd")
    assert len(dedupe) == 3
    assert dedupe.first_time("a")  # evicted as the oldest
    assert not dedupe.first_time("d")
    now[0] = 11
    assert dedupe.first_time("d")  # expired
    assert len(dedupe) <= 3



def test_global_providers_by_default(otel_capture: Any) -> None:
    """Without providers passed in, records and counters go through the kit's global pipeline."""
    app = create_app(BridgeConfig(client_secret=SECRET))
    body, headers = signed_error(trace_id=TRACE_ID, span_id=SPAN_ID, tags={"store_id": "store-3"})
    assert post(app, URL, body, headers).status_code == 200

    (record,) = [r for r in otel_capture.logs() if r["scope"] == "pideai_otel.sentry"]
    assert (record["trace_id"], record["span_id"]) == (TRACE_ID, SPAN_ID)
    assert record["severity_number"] == 17
    assert record["attributes"]["store_id"] == "store-3"
    assert otel_capture.metric_total("pideai.sentry.events", correlated=True, resource="error") == 1


def test_public_surface_is_pinned() -> None:
    import pideai_otel.sentry as sentry

    assert sorted(sentry.__all__) == ["BridgeConfig", "create_app", "register"]
    assert all(getattr(sentry, name) is not None for name in sentry.__all__)
