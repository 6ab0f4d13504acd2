"""WhatsApp sends as messaging spans, and status webhooks logged inside the order's trace.

The WhatsApp stand-in and a webhook receiver (the kit's `webhook_endpoint`) run as real uvicorn
servers on loopback: the stand-in POSTs signed Cloud API status callbacks to the receiver.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.routing import Route

from pideai_otel.demo import thirdparty
from pideai_otel.domain import (
    AsyncWhatsAppClient,
    InMemoryLinkStore,
    MessageLink,
    SQLiteLinkStore,
    WhatsAppClient,
    WhatsAppError,
    WhatsAppStatusHandler,
    mask_phone,
    metric_views,
    order_pipeline,
    order_step,
    webhook_endpoint,
)
from pideai_otel.domain.metrics import FORBIDDEN_METRIC_KEYS

TOKEN = "EAAG-test-token-SECRET-9f8e7d"
APP_SECRET = "app-secret-for-signatures"
PHONE_NUMBER_ID = "106540352242922"


def _phone(i: int) -> str:
    return f"+52 1 55 1234 56{i:02d}"


class Capture:
    def __init__(self) -> None:
        self.span_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.span_exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader], views=metric_views())
        self.log_exporter = InMemoryLogRecordExporter()
        self.logger_provider = LoggerProvider()
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.log_exporter))

    @property
    def providers(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    def spans(self, name: str | None = None) -> list[Any]:
        return [s for s in self.span_exporter.get_finished_spans() if name is None or s.name == name]

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for readable in self.log_exporter.get_finished_logs():
            record = readable.log_record
            ctx = trace.get_current_span(record.context).get_span_context() if record.context else None
            valid = ctx is not None and ctx.is_valid
            out.append(
                {
                    "body": record.body,
                    "severity": record.severity_text,
                    "event_name": record.event_name,
                    "trace_id": ctx.trace_id if valid else None,
                    "span_id": ctx.span_id if valid else None,
                    "attributes": dict(record.attributes or {}),
                    "time_ns": record.timestamp,
                }
            )
        return out

    def points(self) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [
            (m.name, p)
            for rm in (data.resource_metrics if data else ())
            for sm in rm.scope_metrics
            for m in sm.metrics
            for p in m.data.data_points
        ]

    def total(self, name: str, **attributes: Any) -> float:
        return sum(
            p.value
            for n, p in self.points()
            if n == name and all(p.attributes.get(k) == v for k, v in attributes.items())
        )

    def serialized(self) -> str:
        data = self.reader.get_metrics_data()
        parts = [s.to_json() for s in self.span_exporter.get_finished_spans()]
        parts += [r.to_json() for r in self.log_exporter.get_finished_logs()]
        return "\n".join(parts) + (data.to_json() if data else "")


@pytest.fixture
def cap() -> Iterator[Capture]:
    capture = Capture()
    yield capture
    for _, point in capture.points():
        assert not FORBIDDEN_METRIC_KEYS & set(point.attributes), point.attributes
    capture.tracer_provider.shutdown()
    capture.meter_provider.shutdown()
    capture.logger_provider.shutdown()


@pytest.fixture(scope="module")
def whatsapp() -> Iterator[thirdparty.RunningServer]:
    with thirdparty.start("whatsapp", access_token=TOKEN) as server:
        yield server


class Receiver:
    """The app side of the webhook: a real server whose handler is swapped per test."""

    def __init__(self) -> None:
        self.handler = WhatsAppStatusHandler()
        endpoint = webhook_endpoint(self, app_secret=APP_SECRET, verify_token="verify-me")  # type: ignore[arg-type]
        self.server = thirdparty.RunningServer(
            Starlette(routes=[Route("/webhooks/whatsapp", endpoint, methods=["GET", "POST"])])
        )

    def handle(self, payload: Any) -> Any:  # the endpoint calls this; forwards to the test's handler
        return self.handler.handle(payload)

    @property
    def url(self) -> str:
        return f"{self.server.url}/webhooks/whatsapp"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    with hook.server:
        yield hook


@pytest.fixture
def wa(whatsapp: thirdparty.RunningServer, receiver: Receiver, cap: Capture) -> thirdparty.RunningServer:
    whatsapp.control("reset", {})
    whatsapp.control("webhook", {"url": receiver.url, "app_secret": APP_SECRET})
    receiver.handler = WhatsAppStatusHandler(
        links=InMemoryLinkStore(), logger_provider=cap.logger_provider, meter_provider=cap.meter_provider
    )
    return whatsapp


def _client(wa: thirdparty.RunningServer, receiver: Receiver, cap: Capture, **options: Any) -> WhatsAppClient:
    options.setdefault("timeout", 2.0)
    return WhatsAppClient(
        access_token=TOKEN,
        phone_number_id=PHONE_NUMBER_ID,
        base_url=wa.url,
        links=receiver.handler.links,
        **cap.providers,
        **options,
    )


def test_ten_sends_then_delivery_callbacks_land_in_each_orders_trace(
    wa: thirdparty.RunningServer, receiver: Receiver, cap: Capture
) -> None:
    message_ids: list[str] = []
    with _client(wa, receiver, cap) as client:
        for i in range(10):
            with order_pipeline(f"order-{i}", store_id="store-7", **cap.providers):
                with order_step("notified", **cap.providers):
                    message_ids.append(client.send_text(_phone(i), f"Tu pedido {i} está en camino").message_id)

    outcomes = ["delivered"] * 7 + ["read"] + ["failed"] * 2
    updates = [{"message_id": mid, "status": status} for mid, status in zip(message_ids, outcomes, strict=True)]
    answer = wa.control("status", {"updates": updates})
    assert answer == {"webhook_status": [200] * 10}

    # Metrics: exact counts per status; delivery success rate = (delivered + read) / sent.
    assert {s: cap.total("pideai.whatsapp.messages", status=s) for s in ("sent", "delivered", "read", "failed")} == {
        "sent": 10,
        "delivered": 7,
        "read": 1,
        "failed": 2,
    }
    assert cap.total("pideai.whatsapp.messages", store_id="store-7") == 20

    # Spans: one CLIENT send span per message, inside its order's trace.
    sends = {s.attributes["messaging.message.id"]: s for s in cap.spans("send whatsapp")}
    assert set(sends) == set(message_ids)
    pipelines = {s.attributes["order_id"]: s for s in cap.spans("process order")}
    for i, mid in enumerate(message_ids):
        send = sends[mid]
        assert send.kind.name == "CLIENT"
        assert send.attributes["messaging.system"] == "whatsapp"
        assert send.attributes["order_id"] == f"order-{i}"
        assert send.attributes["pideai.whatsapp.recipient"] == f"********{i:02d}"
        assert send.context.trace_id == pipelines[f"order-{i}"].context.trace_id

    # Logs: one record per callback, in the trace of the order, as a child of its send span.
    logs = cap.logs()
    assert len(logs) == 10
    assert Counter(r["attributes"]["pideai.whatsapp.status"] for r in logs) == {"delivered": 7, "read": 1, "failed": 2}
    for record in logs:
        send = sends[record["attributes"]["messaging.message.id"]]
        assert record["trace_id"] == send.context.trace_id
        assert record["span_id"] == send.context.span_id
        assert record["attributes"]["order_id"] == send.attributes["order_id"]
        assert record["attributes"]["store_id"] == "store-7"
        assert record["event_name"] == "pideai.whatsapp.status"
    failed = [r for r in logs if r["attributes"]["pideai.whatsapp.status"] == "failed"]
    assert all(r["severity"] == "WARN" and r["attributes"]["error.type"] == "131026" for r in failed)
    assert all(r["attributes"]["pideai.whatsapp.error_title"] == "Message undeliverable" for r in failed)

    exported = cap.serialized()
    for i in range(10):
        digits = "".join(ch for ch in _phone(i) if ch.isdigit())
        assert digits not in exported and digits[-10:] not in exported and _phone(i) not in exported
    assert TOKEN not in exported and "Tu pedido" not in exported


def test_each_message_counts_in_one_outcome_only(
    wa: thirdparty.RunningServer, receiver: Receiver, cap: Capture
) -> None:
    with _client(wa, receiver, cap) as client:
        first = client.send_text(_phone(1), "hola").message_id
        second = client.send_text(_phone(2), "hola").message_id
    updates = [
        {"message_id": first, "status": "sent"},
        {"message_id": first, "status": "delivered"},
        {"message_id": first, "status": "delivered"},  # Meta retries webhooks
        {"message_id": first, "status": "read"},
        {"message_id": second, "status": "read"},  # delivered callback never came
    ]
    wa.control("status", {"updates": updates})
    assert cap.total("pideai.whatsapp.messages", status="sent") == 2
    assert cap.total("pideai.whatsapp.messages", status="delivered") == 1
    assert cap.total("pideai.whatsapp.messages", status="read") == 1
    logs = cap.logs()
    assert [(r["attributes"]["pideai.whatsapp.status"], r["attributes"]["pideai.whatsapp.counted"]) for r in logs] == [
        ("sent", False),
        ("delivered", True),
        ("delivered", False),
        ("read", False),
        ("read", True),
    ]


def test_scripted_send_triggers_callbacks_by_itself(
    wa: thirdparty.RunningServer, receiver: Receiver, cap: Capture
) -> None:
    wa.control("script", [{"outcome": "ok", "statuses": ["sent", "delivered", "read"]}])
    with _client(wa, receiver, cap) as client:
        client.send_text(_phone(3), "listo")
    deadline = time.monotonic() + 10
    while len(cap.logs()) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [r["attributes"]["pideai.whatsapp.status"] for r in cap.logs()] == ["sent", "delivered", "read"]


def test_api_errors_are_span_errors_and_count_as_rejected(
    wa: thirdparty.RunningServer, receiver: Receiver, cap: Capture
) -> None:
    wa.control("script", ["invalid_recipient", "server_error", {"outcome": "timeout", "seconds": 10}])
    errors: list[WhatsAppError] = []
    with _client(wa, receiver, cap, timeout=0.5) as client:
        for i in range(3):
            with pytest.raises(WhatsAppError) as info:
                client.send_text(_phone(i), "hola", order_id=f"o-{i}")
            errors.append(info.value)
    assert [e.error_type for e in errors] == ["131030", "131000", "timeout"]
    assert (errors[0].status_code, errors[0].code) == (400, 131030) and errors[0].fbtrace_id
    spans = cap.spans("send whatsapp")
    assert [s.attributes["error.type"] for s in spans] == ["131030", "131000", "timeout"]
    assert all(s.status.status_code.name == "ERROR" for s in spans)
    assert spans[0].attributes["pideai.whatsapp.error_code"] == 131030
    assert "messaging.message.id" not in spans[0].attributes
    assert cap.total("pideai.whatsapp.messages", status="rejected") == 3
    assert cap.total("pideai.whatsapp.messages", status="rejected", **{"error.type": "timeout"}) == 1
    assert cap.total("pideai.whatsapp.messages", status="sent") == 0
    exported = cap.serialized()
    assert TOKEN not in exported
    assert all(TOKEN not in str(e) and e.__context__ is None for e in errors)


def test_async_client(wa: thirdparty.RunningServer, receiver: Receiver, cap: Capture) -> None:
    async def run() -> str:
        async with AsyncWhatsAppClient(
            access_token=TOKEN,
            phone_number_id=PHONE_NUMBER_ID,
            base_url=wa.url,
            links=receiver.handler.links,
            **cap.providers,
        ) as client:
            return (await client.send_text(_phone(5), "hola", order_id="o-async", store_id="s-1")).message_id

    message_id = asyncio.run(run())
    (span,) = cap.spans("send whatsapp")
    assert span.attributes["messaging.message.id"] == message_id and span.attributes["order_id"] == "o-async"
    link = receiver.handler.links.get(message_id)
    assert link is not None and link.span_id == span.context.span_id and link.store_id == "s-1"


def test_wrong_token_is_graph_error_190(wa: thirdparty.RunningServer, receiver: Receiver, cap: Capture) -> None:
    with WhatsAppClient(
        access_token="nope", phone_number_id=PHONE_NUMBER_ID, base_url=wa.url, **cap.providers
    ) as client:
        with pytest.raises(WhatsAppError) as info:
            client.send_text(_phone(1), "hola")
    assert info.value.error_type == "190" and info.value.status_code == 401


def test_webhook_checks_signature_and_answers_the_subscription_challenge(
    wa: thirdparty.RunningServer, receiver: Receiver, cap: Capture
) -> None:
    payload = thirdparty.status_callback_payload("wamid.unknown", "delivered", "5215500000000")
    bad = httpx.post(receiver.url, json=payload, headers={"x-hub-signature-256": "sha256=" + "0" * 64})
    missing = httpx.post(receiver.url, json=payload)
    assert bad.status_code == missing.status_code == 401
    assert cap.logs() == []
    ok = httpx.get(
        receiver.url, params={"hub.mode": "subscribe", "hub.verify_token": "verify-me", "hub.challenge": "1158201444"}
    )
    assert ok.status_code == 200 and ok.text == "1158201444"
    denied = httpx.get(
        receiver.url, params={"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"}
    )
    assert denied.status_code == 403


def test_callback_for_an_unknown_message_is_logged_without_trace_and_counted_once(cap: Capture) -> None:
    handler = WhatsAppStatusHandler(
        links=InMemoryLinkStore(), logger_provider=cap.logger_provider, meter_provider=cap.meter_provider
    )
    payload = thirdparty.status_callback_payload("wamid.elsewhere", "failed", "5215599999999", timestamp=1_700_000_000)
    (first,) = handler.handle(payload)
    (again,) = handler.handle(payload)
    assert (first.linked, first.counted, again.counted) == (False, True, False)
    assert first.error_code == 131026
    logs = cap.logs()
    assert [r["trace_id"] for r in logs] == [None, None]
    assert logs[0]["time_ns"] == 1_700_000_000 * 10**9
    assert logs[0]["attributes"]["pideai.whatsapp.recipient"] == "********99"
    assert cap.total("pideai.whatsapp.messages", status="failed") == 1
    assert handler.handle({"entry": "garbage"}) == [] and handler.handle(None) == []


def test_sqlite_links_survive_the_process(tmp_path: Path, wa: thirdparty.RunningServer, cap: Capture) -> None:
    db = tmp_path / "links.db"
    with SQLiteLinkStore(db) as store:
        with WhatsAppClient(
            access_token=TOKEN, phone_number_id=PHONE_NUMBER_ID, base_url=wa.url, links=store, **cap.providers
        ) as client:
            with order_pipeline("order-sql", store_id="store-3", **cap.providers):
                message_id = client.send_text(_phone(8), "hola").message_id
    (send,) = cap.spans("send whatsapp")

    # Another process (a restarted service, or another worker) handles the callback.
    script = textwrap.dedent(
        f"""
        import json
        from opentelemetry import trace
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
        from pideai_otel.demo.thirdparty import status_callback_payload
        from pideai_otel.domain import SQLiteLinkStore, WhatsAppStatusHandler

        exporter = InMemoryLogRecordExporter()
        provider = LoggerProvider()
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        with SQLiteLinkStore({str(db)!r}) as store:
            handler = WhatsAppStatusHandler(links=store, logger_provider=provider)
            (update,) = handler.handle(status_callback_payload({message_id!r}, "delivered", "5215500000008"))
            (again,) = handler.handle(status_callback_payload({message_id!r}, "read", "5215500000008"))
        (record, _) = [r.log_record for r in exporter.get_finished_logs()]
        ctx = trace.get_current_span(record.context).get_span_context()
        print(json.dumps({{"trace_id": ctx.trace_id, "span_id": ctx.span_id, "counted": [update.counted, again.counted],
                          "order_id": record.attributes["order_id"]}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {
        "trace_id": send.context.trace_id,
        "span_id": send.context.span_id,
        "counted": [True, False],
        "order_id": "order-sql",
    }
    with SQLiteLinkStore(db) as reopened:
        assert not reopened.claim_outcome(message_id, "failed")  # already claimed by the other process


def test_link_stores_are_bounded(tmp_path: Path) -> None:
    memory = InMemoryLinkStore(max_entries=3)
    for i in range(4):
        memory.put(MessageLink(f"m{i}", 1, 1, 1))
    assert memory.get("m0") is None and len(memory) == 3
    memory.get("m1")  # recently used: survives the next eviction
    memory.put(MessageLink("m4", 1, 1, 1))
    assert memory.get("m1") is not None and memory.get("m2") is None

    with SQLiteLinkStore(tmp_path / "bounded.db", max_entries=5) as store:
        for i in range(20):
            # m0..m2 are older than max_age; the rest are recent, and only the newest 5 may stay.
            store.put(MessageLink(f"m{i}", 1, 2, 1, created=1_000_000.0 + i if i < 3 else time.time() + i))
        assert store.prune() > 0
        assert len(store) == 5
        assert store.get("m19") is not None and store.get("m0") is None


def test_mask_keeps_only_the_last_two_digits() -> None:
    assert mask_phone("+52 1 55 1234 5678") == "********78"
    assert mask_phone("5215512345678") == "********78"
    assert mask_phone("") == "********"
