"""Three instrumented demo services, each meant to run in its own process.

storefront  POST /orders      the public API a browser calls (sends a traceparent);
   │                          POST /sentry/webhook: Sentry errors, logged inside their trace
   │  httpx
   ▼
orders      POST /orders      placed -> validated -> paid (payment gateway) -> stored (SQLite) ->
   │  httpx                   image enhanced (Gemini) -> notified (asks notifications)
   ▼
notifications POST /notify    sends the WhatsApp message; POST /webhooks/whatsapp takes status callbacks

Run one with `python -m pideai_otel.demo.services NAME --port N`; downstream URLs come from the
environment (see `_ENV`). `pideai-otel demo` starts them all.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

import pideai_otel
from pideai_otel.domain import (
    AsyncGeminiImageClient,
    AsyncPaymentGatewayClient,
    AsyncWhatsAppClient,
    GeminiError,
    PaymentError,
    WhatsAppError,
    WhatsAppStatusHandler,
    count_http_request,
    order_pipeline,
    order_step,
    webhook_endpoint,
)
from pideai_otel.sentry import BridgeConfig
from pideai_otel.sentry import create_app as create_sentry_bridge

log = logging.getLogger("pideai.demo")

_ENV = {
    "orders_url": "PIDEAI_DEMO_ORDERS_URL",
    "notifications_url": "PIDEAI_DEMO_NOTIFICATIONS_URL",
    "gemini_url": "PIDEAI_DEMO_GEMINI_URL",
    "whatsapp_url": "PIDEAI_DEMO_WHATSAPP_URL",
    "payments_url": "PIDEAI_DEMO_PAYMENTS_URL",
    "db_path": "PIDEAI_DEMO_DB",
}


def _env(name: str) -> str:
    var = _ENV[name]
    value = os.environ.get(var)
    if not value:
        raise SystemExit(f"{var} is not set; start the demo with `pideai-otel demo`")
    return value


async def _health(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


# -- storefront -------------------------------------------------------------------------------------
def storefront_app() -> Starlette:
    orders_url = _env("orders_url")
    client = httpx.AsyncClient(timeout=30.0)

    async def place_order(request: Request) -> Response:
        body = await request.json()
        store_id, user_id = body.get("store_id"), body.get("user_id")
        if not store_id or not body.get("items"):
            return JSONResponse({"error": "store_id and items are required"}, status_code=400)
        with pideai_otel.tenant_context(store_id=store_id, user_id=user_id):
            count_http_request(store_id=store_id, route="/orders")
            # Logging the customer's contact details is the kind of careless line redaction is for.
            log.info("order received with %d item(s)", len(body["items"]), extra={"customer": body.get("customer")})
            response = await client.post(f"{orders_url}/orders", json=body)
            if response.status_code >= 400:
                log.warning("orders service answered %s", response.status_code)
            return JSONResponse(response.json(), status_code=response.status_code)

    async def boom(_: Request) -> Response:
        raise RuntimeError("storefront exploded on purpose")

    # The Sentry webhook bridge, mounted in the service: browser errors land in the backend's trace.
    sentry = create_sentry_bridge(BridgeConfig(client_secret=os.environ.get("SENTRY_CLIENT_SECRET", "demo-sentry-secret")))
    return Starlette(routes=[
        Route("/orders", place_order, methods=["POST"]),
        Route("/boom", boom),
        Route("/healthz", _health),
        Mount("/", app=sentry),
    ])


# -- orders -----------------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY, store_id TEXT NOT NULL, user_id TEXT, status TEXT NOT NULL,
    total REAL NOT NULL, created_at REAL NOT NULL
)"""


class _OrderDB:
    """The orders service's own database (real SQLite), one connection per thread."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._local = threading.local()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(self._path, timeout=10)
        return conn

    def insert(self, order_id: str, store_id: str, user_id: str | None, status: str, total: float) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO orders (order_id, store_id, user_id, status, total, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (order_id, store_id, user_id, status, total, time.time()),
            )

    def set_status(self, order_id: str, status: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE orders SET status = ? WHERE order_id = ?", (status, order_id))


class _StepFailed(Exception):
    """A pipeline step could not complete; the order is marked failed at that step."""


def orders_app() -> Starlette:
    db = _OrderDB(_env("db_path"))
    notifications_url = _env("notifications_url")
    client = httpx.AsyncClient(timeout=30.0)
    gemini = AsyncGeminiImageClient(
        base_url=_env("gemini_url"), api_key=os.environ.get("GEMINI_API_KEY", "demo-gemini-key"),
        timeout=float(os.environ.get("PIDEAI_DEMO_GEMINI_TIMEOUT", "10")),
        auth="query" if os.environ.get("PIDEAI_DEMO_GEMINI_AUTH") == "query" else "header",
    )
    payments = AsyncPaymentGatewayClient(base_url=_env("payments_url"), api_key=os.environ.get("PAYMENTS_API_KEY", "demo-pay-key"))

    async def create_order(request: Request) -> Response:
        body = await request.json()
        order_id = body.get("order_id") or f"ord-{uuid.uuid4().hex[:12]}"
        store_id = pideai_otel.current_tenant().get("store_id") or body.get("store_id")
        items = body.get("items") or []
        total = round(sum(float(i.get("price", 0)) * int(i.get("qty", 1)) for i in items), 2)
        with pideai_otel.tenant_context(order_id=order_id):
            try:
                with order_pipeline(order_id, store_id=store_id) as pipeline:
                    await _run_pipeline(order_id, store_id, body, items, total)
            except _StepFailed as exc:
                log.error("order failed: %s", exc)
        if pipeline.failed:
            db.set_status(order_id, "failed")
            return JSONResponse({"order_id": order_id, "status": "failed", "step": pipeline.failed_step}, status_code=502)
        return JSONResponse({"order_id": order_id, "status": "completed", "total": total}, status_code=201)

    async def _run_pipeline(order_id: str, store_id: str | None, body: dict[str, Any], items: list[dict[str, Any]],
                            total: float) -> None:
        with order_step("placed"):
            log.info("order placed", extra={"order.items": len(items)})
        with order_step("validated"):
            if total <= 0:
                raise _StepFailed("order total must be positive")
        with order_step("paid"):
            try:
                await payments.charge(total, body.get("currency", "USD"), body.get("payment_source", "tok_demo_visa"),
                                      order_id=order_id, store_id=store_id)
            except PaymentError as exc:
                raise _StepFailed(f"payment {exc.error_type}") from exc
        with order_step("stored"):
            db.insert(order_id, store_id or "unknown", pideai_otel.current_tenant().get("user_id"), "placed", total)
            log.info("order stored", extra={"order.total": total})
        first = items[0] if items else {}
        try:  # an enhanced image is nice to have; the order goes on without it
            await gemini.generate_image(
                f"Make the {first.get('name', 'dish')} look appetizing", image=b"\x89PNG demo image",
                image_mime_type="image/png", style=body.get("style", "studio"), aspect_ratio="1:1",
                menu_item_id=first.get("menu_item_id"),
            )
        except GeminiError as exc:
            log.warning("image enhancement failed: %s", exc.error_type)
        with order_step("notified"):
            response = await client.post(f"{notifications_url}/notify",
                                         json={"order_id": order_id, "phone": body.get("phone", "+584141234567")})
            if response.status_code >= 400:
                raise _StepFailed(f"notifications answered {response.status_code}")
        db.set_status(order_id, "completed")

    return Starlette(routes=[Route("/orders", create_order, methods=["POST"]), Route("/healthz", _health)])


# -- notifications ----------------------------------------------------------------------------------
def notifications_app() -> Starlette:
    whatsapp = AsyncWhatsAppClient(base_url=_env("whatsapp_url"), phone_number_id="1000001",
                                   access_token=os.environ.get("WHATSAPP_TOKEN", "demo-wa-token"))

    async def notify(request: Request) -> Response:
        body = await request.json()
        try:
            sent = await whatsapp.send_text(body["phone"], f"Your order {body['order_id']} is confirmed",
                                            order_id=body["order_id"])
        except WhatsAppError as exc:
            log.error("whatsapp send failed: %s", exc)
            return JSONResponse({"error": "whatsapp send failed"}, status_code=502)
        log.info("customer notified", extra={"messaging.message.id": sent.message_id})
        return JSONResponse({"message_id": sent.message_id})

    return Starlette(routes=[
        Route("/notify", notify, methods=["POST"]),
        Route("/webhooks/whatsapp", webhook_endpoint(WhatsAppStatusHandler()), methods=["GET", "POST"]),
        Route("/healthz", _health),
    ])


APPS: dict[str, Callable[[], Starlette]] = {
    "storefront": storefront_app,
    "orders": orders_app,
    "notifications": notifications_app,
}


def serve(name: str, port: int, host: str = "127.0.0.1") -> None:
    """Serve one demo service; port 0 picks a free port, announced as `NAME ready on URL`."""
    import uvicorn

    from pideai_otel._net import listening_socket, url_of

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sock = listening_socket(host, port)
    pideai_otel.init_telemetry(service_name=name, service_version="demo")
    # The storefront faces browsers: it continues their trace but sets the tenant itself.
    app: Any = pideai_otel.TelemetryMiddleware(APPS[name](), excluded_urls="healthz", trust_baggage=name != "storefront")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    print(f"{name} ready on {url_of(sock)}", file=sys.stderr, flush=True)
    server.run(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one pideai-otel demo service.")
    parser.add_argument("name", choices=sorted(APPS))
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    args = parser.parse_args(argv)
    serve(args.name, args.port)


if __name__ == "__main__":
    main()
