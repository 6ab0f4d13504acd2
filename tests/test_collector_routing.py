"""What goes where: severity routing, debug dropping, trace-consistent sampling, span metrics, redaction."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from test_collector_helpers import (
    log_record,
    logs_request,
    new_trace_id,
    sender_for,
    span,
    stored_ids,
    traces_request,
    wait_for_ids,
)

from pideai_otel.collector import CollectorProcess
from pideai_otel.local import StandInProcess

pytest_plugins = ("test_collector_helpers",)
pytestmark = pytest.mark.collector

TRACES = 100


def _kept_by_proportional(trace_id: bytes, percent: float) -> bool:
    """OpenTelemetry consistent sampling: keep when the trace id's 56 random bits reach the threshold."""
    randomness = int.from_bytes(trace_id[9:16], "big")
    return randomness >= round((1 - percent / 100) * 2**56)


def _mix(prefix: str) -> tuple[list, dict[str, bytes]]:
    """A known mix of records per trace; ids say what each is (prefix-kind-n)."""
    records, trace_of = [], {}
    for n in range(TRACES):
        t = new_trace_id()
        for kind, severity, body, attrs in (
            ("debug", "DEBUG", "cache miss", {}),
            ("trace", "TRACE", "entering", {}),
            ("info", "INFO", "order placed", {"url.path": "/orders"}),
            ("healthz", "INFO", "ok", {"url.path": "/healthz"}),
            ("static", "INFO", "GET /static/app.js 200", {}),
            ("favicon", "INFO", "served", {"http.target": "/favicon.ico"}),
            ("warnhealth", "WARN", "slow health check", {"url.path": "/healthz"}),
            ("error", "ERROR", "payment failed", {}),
            ("fatal", "FATAL", "worker died", {}),
            ("errorhealth", "ERROR", "health check failed", {"url.path": "/healthz"}),
        ):
            tid = f"{prefix}-{kind}-{n}"
            trace_of[tid] = t
            records.append(log_record(body, severity, t, {"tid": tid, **attrs}))
        records.append(log_record("no severity", None, b"", {"tid": f"{prefix}-nosev-{n}"}))
        records.append(log_record("GET /healthz 200", "INFO", b"", {"tid": f"{prefix}-untraced-{n}"}))
    return records, trace_of


def _kinds(ids: list[str]) -> Counter[str]:
    return Counter(tid.split("-")[1] for tid in ids)


def test_routing_dropping_and_trace_consistent_sampling(
    make_collector: Callable[..., CollectorProcess],
    standin_process: StandInProcess,
) -> None:
    collector = make_collector(OTELCOL_LOW_VALUE_SAMPLE_PERCENT="50")
    sender = sender_for(collector)
    # Spans first: span metrics are flushed every 15 s, checked at the end.
    spans = [span("POST /orders", attributes={"tid": f"sp-{i}"}) for i in range(20)]
    for s in spans[:5]:
        s.status.code = Status.STATUS_CODE_ERROR
    sender.deliver("traces", traces_request(spans, service="checkout"))
    records, trace_of = _mix("m")
    for start in range(0, len(records), 500):
        sender.deliver("logs", logs_request(records[start : start + 500]))
    sender.close()

    errors_expected = {tid for tid in trace_of if tid.split("-")[1] in ("error", "fatal", "errorhealth")}
    kept_traces = {t for t in trace_of.values() if _kept_by_proportional(t, 50)}
    low_value = {tid for tid in trace_of if tid.split("-")[1] in ("healthz", "static", "favicon")}
    default_expected = (
        {tid for tid in trace_of if tid.split("-")[1] in ("info", "warnhealth")}
        | {f"m-nosev-{n}" for n in range(TRACES)}
        | {tid for tid in low_value if trace_of[tid] in kept_traces}
    )
    errors = wait_for_ids(standin_process, "logs", errors_expected, 30, source="errors")
    default = wait_for_ids(standin_process, "logs", default_expected, 30, source="default")
    time.sleep(2)  # anything that should NOT arrive has had time to
    errors, default = (
        stored_ids(standin_process, "logs", source="errors"),
        stored_ids(standin_process, "logs", source="default"),
    )
    print(f"errors source: {dict(_kinds(errors))}")
    print(f"default source: {dict(_kinds(default))}")
    print(f"low-value sampling at 50%: {len(kept_traces)} of {TRACES} traces kept")

    assert sorted(errors) == sorted(errors_expected)  # exact, no duplicates
    assert sorted(default) == sorted(default_expected)
    assert 0 < len(kept_traces) < TRACES
    # All-or-none per trace: a trace keeps all three of its low-value logs or none.
    per_trace = Counter(trace_of[tid] for tid in default if tid in low_value)
    assert set(per_trace.values()) == {3} and set(per_trace) == kept_traces

    # Span metrics: request and error counts and latency per service and span name, in the default
    # source. A new cumulative `calls` series starts at 0 (its count shows one flush later), so the
    # counts are read from the latency histogram, which carries them from its first point.
    durations = standin_process.wait_for(
        "SELECT attributes FROM metrics WHERE source = 'default' AND service = 'checkout' "
        "AND name = 'traces.span.metrics.duration'",
        timeout=40,
    )
    counts = {
        a["status.code"]: a["_histogram"]["count"]
        for a in (json.loads(r["attributes"]) for r in durations)
        if a["span.name"] == "POST /orders"
    }
    print(f"span metrics for checkout 'POST /orders', requests per status: {counts}")
    assert counts == {"STATUS_CODE_ERROR": 5, "STATUS_CODE_UNSET": 15}
    calls = standin_process.query(
        "SELECT count(*) AS n FROM metrics WHERE service = 'checkout' AND name = 'traces.span.metrics.calls'"
    )
    assert calls[0]["n"] >= 2


def test_switches_from_the_environment(
    make_collector: Callable[..., CollectorProcess],
    standin_process: StandInProcess,
) -> None:
    collector = make_collector(
        OTELCOL_DROP_DEBUG="false", OTELCOL_LOW_VALUE_PATTERN="/ping([^a-z]|$)", OTELCOL_LOW_VALUE_SAMPLE_PERCENT="0"
    )
    t = new_trace_id()
    records = [
        log_record("cache miss", "DEBUG", t, {"tid": "e-debug-0"}),
        log_record("GET /ping 200", "INFO", t, {"tid": "e-ping-0"}),
        log_record("ok", "INFO", t, {"tid": "e-healthz-0", "url.path": "/healthz"}),
    ]
    sender = sender_for(collector)
    sender.deliver("logs", logs_request(records))
    sender.close()
    expected = {"e-debug-0", "e-healthz-0"}
    wait_for_ids(standin_process, "logs", expected, 30)
    time.sleep(2)
    stored = stored_ids(standin_process, "logs")
    print(f"DROP_DEBUG=false, pattern /ping, 0%: stored {sorted(stored)}")
    assert sorted(stored) == sorted(expected)


# --- redaction -----------------------------------------------------------------------------------

SECRETS = {
    "url_key": "AKIAQUERYSECRET1",
    "url_token": "tok_QuerySecret2",
    "userinfo": "hunter2pass",
    "bearer": "eyJhbGciOiJIUzI1NiJ9.bearer-secret.sig",
    "header_key": "hdr-api-key-secret-3",
    "goog_key": "AIzaSyD3adb33fC0ffee0123456789abcdefghi",
    "cookie": "sessionid=cookie-secret-4",
    "email": "jane.doe@example.com",
    "email2": "carlos.ruiz@tienda.mx",
    "phone_intl": "+52 55 1234 5678",
    "phone_us": "(415) 555-0132",
    "phone_bare": "5215512345678",
}


def test_planted_secrets_never_reach_the_backend(
    make_collector: Callable[..., CollectorProcess],
    standin_process: StandInProcess,
) -> None:
    collector = make_collector()
    s = SECRETS
    attrs = {
        "tid": "red-1",
        "url.full": f"https://api.example.com/v1/items?api_key={s['url_key']}&page=2&access_token={s['url_token']}",
        "http.url": f"https://user:{s['userinfo']}@db.example.com/x",
        "http.request.header.authorization": [f"Bearer {s['bearer']}"],
        "http.request.header.x-api-key": [s["header_key"]],
        "http.request.header.x_goog_api_key": s["goog_key"],
        "http.request.header.cookie": [s["cookie"]],
        "enduser.email": s["email"],
        "whatsapp.to": s["phone_intl"],
        "customer.phone": s["phone_bare"],
        "note": f"call {s['phone_us']} or write {s['email2']}",
    }
    body = (
        f"POST /checkout?token={s['url_token']} by {s['email']} phone {s['phone_intl']} "
        f"auth Bearer {s['bearer']} key {s['goog_key']}"
    )
    trace = new_trace_id()
    sender = sender_for(collector)
    sender.deliver("logs", logs_request([
        log_record(body, "INFO", trace, attrs),
        log_record(f"charge declined for {s['email2']} ({s['phone_us']})", "ERROR", trace, {"tid": "red-2"}),
    ]))  # fmt: skip
    sender.deliver("traces", traces_request([
        span("GET /items", trace, {**attrs, "tid": "red-3"},
             events=[("exception", {"exception.message": f"no account for {s['email']} / {s['phone_intl']}",
                                    "exception.stacktrace": f"token={s['url_token']}"})]),
    ]))  # fmt: skip
    sender.close()
    wait_for_ids(standin_process, "logs", {"red-1", "red-2"}, 30)
    wait_for_ids(standin_process, "spans", {"red-3"}, 30)

    stored_text = json.dumps(
        [standin_process.query(f"SELECT * FROM {table}") for table in ("logs", "spans", "metrics", "requests")]
    )
    db_bytes = b"".join(
        Path(f"{standin_process.db_path}{suffix}").read_bytes()
        for suffix in ("", "-wal", "-shm")
        if Path(f"{standin_process.db_path}{suffix}").exists()
    )
    leaked = {name: value for name, value in s.items() if value in stored_text or value.encode() in db_bytes}
    kinds = ("secret", "userinfo", "token", "api_key", "credential", "email", "phone")
    markers = {kind: stored_text.count(f"[REDACTED:{kind}]") for kind in kinds}
    print(f"redaction: searched {len(db_bytes)} db bytes and {len(stored_text)} chars of rows; "
          f"markers {markers}; leaked {leaked}")  # fmt: skip
    assert not leaked
    assert all(markers.values()), markers
    # The shape of the data survives: the URL keeps its host, path and harmless parameters.
    assert "https://api.example.com/v1/items?api_key=[REDACTED:secret]&page=2" in stored_text
