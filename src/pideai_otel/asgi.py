"""Inbound ASGI middleware: continue the caller's trace, adopt its tenant, log unhandled errors once.

`TelemetryMiddleware(app)` wraps the contrib `OpenTelemetryMiddleware` (server span, traceparent and
baggage extraction) around a small layer of the kit's own that enters `tenant_context` with the
allow-listed baggage keys and turns an unhandled exception into exactly one ERROR log record in the
request's trace, plus a 500 if no response was started. The exception is not re-raised: the server
would log it a second time, outside the trace.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.trace import Status, StatusCode

from ._tenant import tenant_context, tenant_from_baggage

__all__ = ["TelemetryMiddleware"]

_log = logging.getLogger("pideai_otel.asgi")

Scope = dict[str, Any]
Receive = Any
Send = Any


class _TenantAndErrors:
    def __init__(self, app: Any, trust_baggage: bool) -> None:
        self.app = app
        self.trust_baggage = trust_baggage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with tenant_context(**(tenant_from_baggage() if self.trust_baggage else {})):
            try:
                await self.app(scope, receive, tracking_send)
            except Exception as exc:
                span = trace.get_current_span()
                if span.is_recording():  # already ended if the app sent its own 500 before raising
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                _log.error(
                    "unhandled %s in %s %s", type(exc).__name__, scope.get("method", ""), scope.get("path", ""),
                    exc_info=exc, extra={"http.route": scope.get("path", "")},
                )
                if scope["type"] == "http" and not started:
                    await send({"type": "http.response.start", "status": 500,
                                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
                    await send({"type": "http.response.body", "body": b"Internal Server Error"})


class TelemetryMiddleware:
    """ASGI middleware for any framework (Starlette, FastAPI, plain ASGI).

    `trust_baggage=False` for a service that browsers or other outside clients call directly: it
    still continues their traceparent, but never takes store_id/user_id from a header anyone can
    write; the handler sets the tenant from what it has authenticated.
    """

    def __init__(self, app: Any, *, trust_baggage: bool = True, excluded_urls: str | None = None,
                 **contrib_options: Any) -> None:
        # One span per request: the per-message "http send/receive" spans add volume, not insight.
        contrib_options.setdefault("exclude_spans", ["receive", "send"])
        self.app = OpenTelemetryMiddleware(_TenantAndErrors(app, trust_baggage), excluded_urls=excluded_urls,
                                           **contrib_options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
