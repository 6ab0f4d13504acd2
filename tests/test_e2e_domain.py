"""PideAI's own flows end to end: demo services -> real collector -> stand-in, checked at the stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.instrumentation.utils import suppress_http_instrumentation

from pideai_otel.demo.stack import DemoStack

pytestmark = pytest.mark.collector


@pytest.fixture(autouse=True)
def _as_a_browser() -> Iterator[None]:
    """Requests here play the browser: an instrumented httpx (other tests install the kit in this
    process) would replace their traceparent with one of its own."""
    with suppress_http_instrumentation():
        yield

GEMINI_KEY = "AIzaSyTEST-planted-gemini-key-0001"
WHATSAPP_TOKEN = "EAAGplantedWhatsappToken0002"
EMAIL = "maria.planted@example.com"
PHONE = "+58 414 555 0199"
CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    env = {"GEMINI_API_KEY": GEMINI_KEY, "PIDEAI_DEMO_GEMINI_AUTH": "query", "PIDEAI_DEMO_GEMINI_TIMEOUT": "2",
           "WHATSAPP_TOKEN": WHATSAPP_TOKEN}
    with DemoStack(tmp_path_factory.mktemp("domain"), service_env=env) as running:
        yield running


def _until(fetch: Any, done: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.5)
        value = fetch()
    return value


def _latest_metric(stack: DemoStack, name: str, key: str) -> dict[str, float]:
    """The newest cumulative value of a counter, per value of attribute `key`, summed over series."""
    rows = stack.standin.query(f"SELECT attributes, value, time_ns, resource FROM metrics WHERE name = '{name}'")
    newest: dict[str, tuple[int, float]] = {}
    for row in rows:
        attrs = json.loads(row["attributes"])
        series = json.dumps([row["resource"], attrs], sort_keys=True)
        if series not in newest or row["time_ns"] > newest[series][0]:
            newest[series] = (row["time_ns"], row["value"])
    totals: dict[str, float] = {}
    for series, (_, value) in newest.items():
        label = str(json.loads(series)[1].get(key))
        totals[label] = totals.get(label, 0) + value
    return totals


def test_gemini_mix_and_whatsapp_deliveries_arrive_exactly(stack: DemoStack) -> None:
    stack.script("gemini", ["ok", "safety_block", "ok", "429", "ok", "500", "ok", {"outcome": "timeout", "seconds": 4},
                            "ok", "ok"])
    traces = []
    for n in range(10):
        trace_id, response = stack.place_order(f"store-g{n}", f"user-{n}")
        assert response.status_code == 201, response.text  # a failed image never fails the order
        traces.append(trace_id)
    for trace_id in traces:
        stack.wait_for_trace(trace_id)
    listed = ",".join(f"'{t}'" for t in traces)
    spans = _until(lambda: stack.standin.query(
        f"SELECT * FROM spans WHERE name LIKE 'generate_content%' AND trace_id IN ({listed})"), lambda r: len(r) == 10)
    assert len(spans) == 10
    errors = sorted(json.loads(s["attributes"]).get("error.type") for s in spans if s["status_code"] == "ERROR")
    assert errors == ["INTERNAL", "RESOURCE_EXHAUSTED", "safety_block", "timeout"]
    ok = [json.loads(s["attributes"]) for s in spans if s["status_code"] != "ERROR"]
    assert len(ok) == 6
    for attrs in ok:
        assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
        assert attrs["pideai.ai.api_cost_usd"] > 0
        assert attrs["gen_ai.request.model"] == "gemini-2.5-flash-image"
    images = _until(lambda: _latest_metric(stack, "pideai.ai.images_generated", "gen_ai.request.model"),
                    lambda t: sum(t.values()) >= 6)
    assert sum(images.values()) == 6
    ai_errors = _until(lambda: _latest_metric(stack, "pideai.ai.errors", "error.type"), lambda t: sum(t.values()) >= 4)
    assert ai_errors == {"INTERNAL": 1, "RESOURCE_EXHAUSTED": 1, "safety_block": 1, "timeout": 1}

    # The ten orders sent ten WhatsApp messages; Meta now calls back: 7 delivered, 1 read, 2 failed.
    assert stack.report_whatsapp_deliveries(["delivered"] * 7 + ["read"] + ["failed"] * 2) == 10
    callbacks = _until(lambda: stack.standin.query(
        f"SELECT trace_id, body FROM logs WHERE body LIKE 'WhatsApp message%' AND trace_id IN ({listed})"),
        lambda r: len(r) == 10)
    assert sorted(r["body"].split()[2].rstrip(":") for r in callbacks) == ["delivered"] * 7 + ["failed"] * 2 + ["read"]
    assert {r["trace_id"] for r in callbacks} == set(traces)  # each callback sits in its own order's trace
    statuses = _until(lambda: _latest_metric(stack, "pideai.whatsapp.messages", "status"),
                      lambda t: t.get("failed", 0) >= 2 and t.get("delivered", 0) >= 7)
    assert {k: statuses.get(k) for k in ("sent", "delivered", "read", "failed")} == {
        "sent": 10, "delivered": 7, "read": 1, "failed": 2}


def test_planted_secrets_never_reach_any_stored_byte(stack: DemoStack) -> None:
    trace_id, response = stack.place_order(
        "store-secret", "user-s", customer={"email": EMAIL, "phone": PHONE, "card": CARD},
        phone=PHONE, payment_source=CARD)
    assert response.status_code == 201
    stack.wait_for_trace(trace_id)
    logs = _until(lambda: stack.standin.query(f"SELECT attributes FROM logs WHERE trace_id = '{trace_id}' "
                                              "AND body LIKE 'order received%'"), bool)
    assert "[REDACTED:email]" in logs[0]["attributes"] and "[REDACTED:phone]" in logs[0]["attributes"]
    time.sleep(2)  # let metrics and late batches land too
    stored = b"".join(p.read_bytes() for p in Path(stack.standin.db_path).parent.glob("standin.sqlite3*"))
    for secret in (GEMINI_KEY, WHATSAPP_TOKEN, EMAIL, PHONE, PHONE.replace(" ", ""), CARD, CARD.replace(" ", "")):
        assert secret.encode() not in stored, secret


def test_metric_series_never_carry_user_or_order_ids(stack: DemoStack) -> None:
    stack.place_order("store-m", "user-m")
    rows = _until(lambda: stack.standin.query("SELECT name, attributes FROM metrics"), bool)
    assert rows
    leaking = [r for r in rows if {"user_id", "order_id"} & set(json.loads(r["attributes"]))]
    assert leaking == []


def test_extra_values_of_any_type_arrive_at_the_backend(stack: DemoStack) -> None:
    assert stack.collector is not None
    script = textwrap.dedent("""
        import dataclasses, logging
        import pideai_otel

        @dataclasses.dataclass
        class Dish:
            name: str
            price: float

        class Thing:
            def __repr__(self):
                return "<Thing 7>"

        handle = pideai_otel.init_telemetry(service_name="extra-values")
        logging.getLogger("x").warning("four values", extra={"v_none": None, "v_dict": {"a": 1}, "v_dc": Dish("arepa", 4.5),
                                                             "v_obj": Thing()})
        handle.shutdown()
    """)
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": stack.collector.grpc_endpoint}
    proc = subprocess.run([sys.executable, "-W", "error", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Invalid type" not in proc.stderr, proc.stderr
    rows = _until(lambda: stack.standin.query("SELECT attributes FROM logs WHERE service = 'extra-values'"), bool)
    attrs = json.loads(rows[0]["attributes"])
    assert attrs["v_none"] == "null"
    assert json.loads(attrs["v_dict"]) == {"a": 1}
    assert json.loads(attrs["v_dc"]) == {"name": "arepa", "price": 4.5}
    assert attrs["v_obj"] == "<Thing 7>"
