"""The spine, end to end: browser traceparent -> three services -> real collector -> stand-in -> search.

Every part is a real process on loopback; what is asserted is what arrived at the stand-in.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from opentelemetry.instrumentation.utils import suppress_http_instrumentation

from pideai_otel.collector import CollectorProcess
from pideai_otel.demo.stack import SERVICES, DemoStack, new_traceparent
from pideai_otel.local import StandInProcess
from pideai_otel.local.search import connect

pytestmark = pytest.mark.collector


@pytest.fixture(autouse=True)
def _as_a_browser() -> Iterator[None]:
    """Requests here play the browser: an instrumented httpx (other tests install the kit in this
    process) would replace their traceparent with one of its own."""
    with suppress_http_instrumentation():
        yield


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    with DemoStack(tmp_path_factory.mktemp("demo")) as running:
        yield running


def _logs_of(stack: DemoStack, trace_id: str) -> list[dict]:
    return stack.standin.query(f"SELECT * FROM logs WHERE trace_id = '{trace_id}'")


def _wait(predicate, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def test_one_order_is_one_trace_across_three_services(stack: DemoStack) -> None:
    traceparent, trace_id = new_traceparent()
    browser_span_id = traceparent.split("-")[2]
    response = httpx.post(f"{stack.url('storefront')}/orders", headers={"traceparent": traceparent}, timeout=30,
                          json={"store_id": "store-quito", "user_id": "u-17",
                                "items": [{"menu_item_id": "m-1", "name": "empanada", "qty": 3, "price": 2.0}]})
    assert response.status_code == 201, response.text
    order_id = response.json()["order_id"]

    spans = stack.wait_for_trace(trace_id)
    by_id = {s["span_id"]: s for s in spans}
    roots = [s for s in spans if s["parent_span_id"] == browser_span_id]
    assert [(r["service"], r["kind"]) for r in roots] == [("storefront", "SERVER")]  # child of the browser
    for span in spans:
        assert span["parent_span_id"] == browser_span_id or span["parent_span_id"] in by_id, span["name"]
    # Each downstream service's server span hangs under an httpx CLIENT span of its caller.
    for callee, caller in (("orders", "storefront"), ("notifications", "orders")):
        server = next(s for s in spans if s["service"] == callee and s["kind"] == "SERVER")
        parent = by_id[server["parent_span_id"]]
        assert (parent["service"], parent["kind"]) == (caller, "CLIENT")
    assert {s["store_id"] for s in spans if s["service"] in SERVICES} == {"store-quito"}

    logs = _wait(lambda: (rows := _logs_of(stack, trace_id)) and {r["service"] for r in rows} >= set(SERVICES) and rows)
    assert logs, "every service should have logged inside the trace"
    assert {r["store_id"] for r in logs} == {"store-quito"}
    assert order_id in {r["order_id"] for r in logs}

    with connect(stack.standin.url) as search:
        tree = search.trace(trace_id)
        assert tree is not None
        assert any(s["trace_id"] == trace_id for s in search.find_spans(store_id="store-quito"))
    cli = subprocess.run([sys.executable, "-m", "pideai_otel.cli", "search", "trace", "--url", stack.standin.url, trace_id],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    for service in SERVICES:
        assert service in cli.stdout + cli.stderr


def test_unhandled_exception_yields_one_correlated_error_record(stack: DemoStack) -> None:
    traceparent, trace_id = new_traceparent()
    response = httpx.get(f"{stack.url('storefront')}/boom", headers={"traceparent": traceparent}, timeout=30)
    assert response.status_code == 500
    errors = _wait(lambda: [r for r in _logs_of(stack, trace_id) if r["severity_number"] >= 17])
    time.sleep(2)  # a duplicate would arrive in the same batch or the next one
    errors = [r for r in _logs_of(stack, trace_id) if r["severity_number"] >= 17]
    assert len(errors) == 1, errors
    assert "RuntimeError" in errors[0]["body"] and "storefront exploded on purpose" in errors[0]["attributes"]
    assert errors[0]["source"] == "errors"  # retention routing: ERROR records go to the 90-day source


def test_fifty_concurrent_orders_never_swap_store_ids(stack: DemoStack) -> None:
    def place(n: int) -> tuple[str, str, int]:
        store = f"store-t{n}"
        trace_id, response = stack.place_order(store, f"user-{n}")
        return store, trace_id, response.status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        threaded = list(pool.map(place, range(50)))

    async def place_async() -> list[tuple[str, str, int]]:
        async with httpx.AsyncClient(timeout=60) as client:
            async def one(n: int) -> tuple[str, str, int]:
                store = f"store-a{n}"
                traceparent, trace_id = new_traceparent()
                r = await client.post(f"{stack.url('storefront')}/orders", headers={"traceparent": traceparent},
                                      json={"store_id": store, "user_id": f"u{n}", "items": [{"price": 1, "qty": 1}]})
                return store, trace_id, r.status_code
            return await asyncio.gather(*(one(n) for n in range(50)))

    placed = threaded + asyncio.run(place_async())
    assert {status for _, _, status in placed} == {201}
    for store, trace_id, _ in placed:
        spans = stack.wait_for_trace(trace_id)
        assert {s["store_id"] for s in spans if s["service"] in SERVICES} == {store}, trace_id


def test_wrong_token_is_refused_reported_and_the_app_is_unaffected(tmp_path: Path) -> None:
    with DemoStack(tmp_path, collector_tokens={"default": "wrong", "errors": "wrong"}) as stack:
        trace_id, response = stack.place_order("store-x", "u-1")
        assert response.status_code == 201
        assert stack.collector is not None
        refused = _wait(lambda: stack.standin.query("SELECT count(*) AS n FROM requests WHERE status = 401")[0]["n"])
        assert refused
        assert not stack.standin.query("SELECT * FROM spans")
        assert _wait(lambda: "401" in stack.collector.log_text())
        # Still serving, still fast enough for a person.
        started = time.monotonic()
        assert stack.place_order("store-x", "u-1")[1].status_code == 201
        assert time.monotonic() - started < 5


def test_no_collector_requests_succeed_and_services_exit_in_bound(tmp_path: Path) -> None:
    with DemoStack(tmp_path, with_collector=False) as stack:
        for n in range(5):
            assert stack.place_order(f"store-{n}", "u")[1].status_code == 201
        proc = stack._procs["storefront"].process
        assert proc is not None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert time.monotonic() - started < 10  # the 5 s shutdown bound, plus uvicorn's own stop


def test_forked_worker_exports_its_own_telemetry(tmp_path: Path) -> None:
    tokens = {"default": "t1", "errors": "t2"}
    with StandInProcess(tmp_path / "s", sources=tokens) as standin, \
         CollectorProcess(tmp_path / "c", standin_url=standin.url, tokens=tokens) as collector:
        script = textwrap.dedent("""
            import os, sys, logging
            import pideai_otel
            from opentelemetry import trace
            handle = pideai_otel.init_telemetry(service_name="forking")
            tracer = trace.get_tracer("fork-test")
            with tracer.start_as_current_span("parent-before-fork"):
                pass
            handle.flush()
            pid = os.fork()
            role = "child" if pid == 0 else "parent"
            with tracer.start_as_current_span(f"{role}-after-fork"):
                logging.getLogger("w").warning("hello from %s %d", role, os.getpid())
            handle.shutdown()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        """)
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        names = _wait(lambda: {r["name"] for r in standin.query("SELECT name FROM spans WHERE service = 'forking'")}
                      >= {"parent-before-fork", "parent-after-fork", "child-after-fork"}
                      and {r["name"] for r in standin.query("SELECT name FROM spans WHERE service = 'forking'")})
        assert names == {"parent-before-fork", "parent-after-fork", "child-after-fork"}
        bodies = _wait(lambda: len(b := {r["body"].split()[2] for r in standin.query(
            "SELECT body FROM logs WHERE service = 'forking'")}) == 2 and b)
        assert bodies == {"parent", "child"}


def test_a_sentry_error_from_the_browser_lands_inside_the_backend_trace(stack: DemoStack) -> None:
    from pideai_otel.sentry.testing import error_event, error_payload, signed_delivery

    trace_id, response = stack.place_order("store-sentry", "u-5")
    assert response.status_code == 201
    spans = stack.wait_for_trace(trace_id)
    server = next(s for s in spans if s["service"] == "storefront" and s["kind"] == "SERVER")
    event = error_event(trace_id=trace_id, span_id=server["span_id"], exc_type="TypeError",
                        exc_value="cart.total is undefined")
    body, headers = signed_delivery("demo-sentry-secret", "error", error_payload(event))
    for _ in range(3):  # Sentry retries; one record all the same
        answer = httpx.post(f"{stack.url('storefront')}/sentry/webhook", content=body, headers=headers, timeout=10)
        assert answer.status_code in (200, 202), answer.text
    rows = _wait(lambda: stack.standin.query(
        f"SELECT * FROM logs WHERE trace_id = '{trace_id}' AND attributes LIKE '%sentry.event_id%'"))
    time.sleep(1.5)
    rows = stack.standin.query(f"SELECT * FROM logs WHERE trace_id = '{trace_id}' AND attributes LIKE '%sentry.event_id%'")
    assert len(rows) == 1
    assert rows[0]["severity_number"] >= 17 and rows[0]["span_id"] == server["span_id"]
    assert rows[0]["source"] == "errors"
    cli = subprocess.run([sys.executable, "-m", "pideai_otel.cli", "search", "trace", "--url", stack.standin.url, trace_id],
                         capture_output=True, text=True, timeout=60)
    assert "cart.total is undefined" in cli.stdout + cli.stderr
