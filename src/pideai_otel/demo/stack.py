"""The whole demo as one object: stand-in, collector, third-party stand-ins and three services.

`DemoStack` is used by `pideai-otel demo` and by the end-to-end tests, so what the tests check is
exactly what a user runs. Every part is a real process on loopback.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.instrumentation.utils import suppress_http_instrumentation

from pideai_otel import _process
from pideai_otel._net import listening_socket, url_of
from pideai_otel.collector import CollectorProcess
from pideai_otel.local import StandInProcess

SERVICES = ("storefront", "orders", "notifications")
THIRD_PARTIES = ("gemini", "whatsapp", "payments")


def new_traceparent() -> tuple[str, str]:
    """A browser-style root: a fresh trace id and parent span id, sampled. Returns (header, trace_id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id


_READY = re.compile(r" ready on (http://127\.0\.0\.1:\d+)")


class _Proc:
    """A child process that binds port 0 itself and announces `... ready on URL` in its log.

    Letting the child pick its port (instead of handing it one that was free a moment ago) means
    two stacks started side by side can never answer each other's requests.
    """

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path, health_path: str) -> None:
        self.name, self.argv, self.env, self.health_path = name, argv, dict(env), health_path
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([*self.argv, "--port", "0"], env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            if not self.url:
                with self.log_path.open("rb") as log:
                    log.seek(self._offset)
                    found = _READY.search(log.read().decode("utf-8", "replace"))
                self.url = found.group(1) if found else ""
            if self.url:
                try:
                    if httpx.get(self.url + self.health_path, timeout=1.0).status_code == 200:
                        return self.url
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not become ready in {timeout:.0f} s; see {self.log_path}")

    def stop(self, timeout: float = 10.0) -> None:
        _process.terminate(self.process, timeout)


class DemoStack:
    """Start everything, place orders, find them again."""

    def __init__(self, workdir: Path, *, standin_port: int = 0, standin_db: Path | None = None,
                 service_env: Mapping[str, str] | None = None, with_collector: bool = True,
                 collector_tokens: Mapping[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.log_dir = self.workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.tokens = {"default": "demo-default-token", "errors": "demo-errors-token"}
        self.standin = StandInProcess(self.workdir / "standin", sources=self.tokens, port=standin_port, db_path=standin_db)
        self.collector: CollectorProcess | None = None
        self._with_collector = with_collector
        self._collector_tokens = dict(collector_tokens or self.tokens)
        self._service_env = dict(service_env or {})
        self.urls: dict[str, str] = {}
        self._procs: dict[str, _Proc] = {}

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> DemoStack:
        self.standin.start()
        if self._with_collector:
            self.collector = CollectorProcess(self.workdir / "collector", standin_url=self.standin.url, tokens=self._collector_tokens)
            self.collector.start()
        for name in THIRD_PARTIES:
            self._spawn(name, [sys.executable, "-m", "pideai_otel.demo.thirdparty", name], "/_control/health")
        for name in THIRD_PARTIES:
            self.urls[name] = self._procs[name].wait_ready()
        env = self._telemetry_env()
        env.update({
            "PIDEAI_DEMO_GEMINI_URL": self.url("gemini"),
            "PIDEAI_DEMO_WHATSAPP_URL": self.url("whatsapp"),
            "PIDEAI_DEMO_PAYMENTS_URL": self.url("payments"),
            "PIDEAI_DEMO_DB": str(self.workdir / "orders.sqlite3"),
        })
        # Downstream first, so each caller starts knowing where its callee listens.
        for name, env_var in (("notifications", "PIDEAI_DEMO_NOTIFICATIONS_URL"), ("orders", "PIDEAI_DEMO_ORDERS_URL"),
                              ("storefront", None)):
            self._spawn(name, [sys.executable, "-m", "pideai_otel.demo.services", name], "/healthz", env=env)
            self.urls[name] = self._procs[name].wait_ready()
            if env_var:
                env[env_var] = self.urls[name]
        self._configure_whatsapp_webhook()
        return self

    def stop(self) -> None:
        for name in (*SERVICES, *THIRD_PARTIES):
            if name in self._procs:
                self._procs[name].stop()
        if self.collector is not None:
            self.collector.close()
        self.standin.close()

    def __enter__(self) -> DemoStack:
        if self.urls:  # already started
            return self
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- pieces ------------------------------------------------------------------------------------
    def url(self, name: str) -> str:
        return self.urls[name]

    def _spawn(self, name: str, argv: list[str], health_path: str, env: Mapping[str, str] | None = None) -> None:
        # The services' telemetry settings come from the stack alone, not from the caller's shell.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PIDEAI_OTEL_"))}
        proc = _Proc(name, argv, {**inherited, **(env or {}), **self._service_env}, self.log_dir, health_path)
        proc.start()
        self._procs[name] = proc

    def _telemetry_env(self) -> dict[str, str]:
        env = {"OTEL_METRIC_EXPORT_INTERVAL": "1000", "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200"}
        if self.collector is not None:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.collector.grpc_endpoint
            env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"
        else:  # the "collector down" case: a port that was bound and closed, so nothing listens
            with listening_socket("127.0.0.1", 0) as sock:
                env["OTEL_EXPORTER_OTLP_ENDPOINT"] = url_of(sock)
        return env

    def _configure_whatsapp_webhook(self) -> None:
        httpx.post(f"{self.url('whatsapp')}/_control/webhook",
                   json={"url": f"{self.url('notifications')}/webhooks/whatsapp"}, timeout=5.0).raise_for_status()

    def script(self, third_party: str, outcomes: Iterable[Any]) -> None:
        """Make a third-party stand-in answer its next calls with these outcomes."""
        httpx.post(f"{self.url(third_party)}/_control/script", json=list(outcomes), timeout=5.0).raise_for_status()

    def report_whatsapp_deliveries(self, statuses: Iterable[str] = ("delivered",)) -> int:
        """Have the WhatsApp stand-in call back with a status for every message sent so far.

        Cycles through `statuses` (e.g. delivered, read, failed); returns how many callbacks went out.
        """
        sent = httpx.get(f"{self.url('whatsapp')}/_control/messages", timeout=10.0).json()
        updates = [{"message_id": m["id"], "status": status} for m, status in zip(sent, itertools.cycle(statuses))]
        for update in updates:
            if update["status"] == "failed":
                update["errors"] = [{"code": 131026, "title": "Message undeliverable"}]
        httpx.post(f"{self.url('whatsapp')}/_control/status", json={"updates": updates}, timeout=30.0).raise_for_status()
        return len(updates)

    # -- traffic -------------------------------------------------------------------------------------
    def place_order(self, store_id: str, user_id: str, *, items: list[dict[str, Any]] | None = None,
                    client: httpx.Client | None = None, **extra: Any) -> tuple[str, httpx.Response]:
        """POST an order to the storefront as a browser would; returns (trace id, response)."""
        traceparent, trace_id = new_traceparent()
        body = {"store_id": store_id, "user_id": user_id,
                "items": items or [{"menu_item_id": "arepa-1", "name": "arepa", "qty": 2, "price": 4.5}], **extra}
        sender = client or httpx
        # A browser's request: if this process instruments httpx, it must not re-parent the trace.
        with suppress_http_instrumentation():
            response = sender.post(f"{self.url('storefront')}/orders", json=body,
                                   headers={"traceparent": traceparent}, timeout=30.0)
        return trace_id, response

    def wait_for_trace(self, trace_id: str, *, services: Iterable[str] = SERVICES, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll the stand-in until spans from every named service of this trace have arrived."""
        wanted = set(services)
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.standin.query(f"SELECT * FROM spans WHERE trace_id = '{trace_id}'")
            if wanted <= {row["service"] for row in rows}:
                return rows
            time.sleep(0.25)
        raise TimeoutError(f"trace {trace_id}: got spans from {sorted({r['service'] for r in rows})}, wanted {sorted(wanted)}")
