"""The Starlette app: verify, parse, dedupe, enqueue, reply; the record is emitted after the reply.

Sentry counts a reply slower than one second as a failure, so nothing on the request path waits
for the exporter: the emit runs as a background task, and the SDK's batch processor and the
collector's persistent queue carry the record from there.
"""

from __future__ import annotations

import hmac
import time

from opentelemetry import _logs, metrics
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._config import BridgeConfig
from ._dedupe import Deduper
from ._emitter import Emitter
from ._payload import KNOWN_RESOURCES, Delivery, PayloadError, parse_delivery, parse_legacy
from ._stats import BridgeStats
from ._verify import BodyTooLarge, read_body, signature_matches, timestamp_fresh

__all__ = ["create_app"]


class _Bridge:
    def __init__(self, config: BridgeConfig, emitter: Emitter) -> None:
        self.config = config
        self.emitter = emitter
        self.stats = emitter.stats
        self.deduper = Deduper(config.dedupe_ttl_s, config.dedupe_max_entries)
        self._secret = config.client_secret.encode("utf-8")

    def _reject(self, status: int, reason: str, message: str) -> Response:
        self.emitter.reject(status, reason)
        return JSONResponse({"message": message}, status_code=status)

    async def _body(self, request: Request) -> bytes | Response:
        try:
            return await read_body(request.stream(), self.config.max_body_bytes, request.headers.get("content-length"))
        except BodyTooLarge:
            return self._reject(413, "too_large", f"body over {self.config.max_body_bytes} bytes")
        except ClientDisconnect:
            return self._reject(400, "disconnected", "client went away")

    async def webhook(self, request: Request) -> Response:
        received_ns = time.time_ns()
        self.stats.add("requests")
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        headers = request.headers
        if not signature_matches(self._secret, body, headers.get("sentry-hook-signature")):
            return self._reject(401, "signature", "missing or wrong Sentry-Hook-Signature")
        if not timestamp_fresh(headers.get("sentry-hook-timestamp"), self.config.timestamp_tolerance_s):
            return self._reject(401, "timestamp", "Sentry-Hook-Timestamp missing or outside the window")
        resource = headers.get("sentry-hook-resource", "").strip()
        if not resource:
            return self._reject(400, "shape", "Sentry-Hook-Resource header missing")
        if resource not in KNOWN_RESOURCES:
            self.stats.add("ignored")  # installation, metric_alert, comment, ...: signed but not ours
            return JSONResponse({"status": "ignored", "resource": resource[:64]}, status_code=202)
        try:
            delivery = parse_delivery(resource, body)
        except PayloadError as exc:
            return self._reject(400, "shape", str(exc))
        return self._accept(delivery, received_ns)

    async def legacy(self, request: Request) -> Response:
        received_ns = time.time_ns()
        self.stats.add("requests")
        token = self.config.legacy_token
        if token is not None:
            given = request.query_params.get("token", "")
            if not hmac.compare_digest(token.encode("utf-8"), given.encode("utf-8")):
                return self._reject(401, "legacy_token", "missing or wrong token")
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        try:
            delivery = parse_legacy(body)
        except PayloadError as exc:
            return self._reject(400, "shape", str(exc))
        return self._accept(delivery, received_ns)

    def _accept(self, delivery: Delivery, received_ns: int) -> Response:
        # Check-and-mark runs on the event loop without an await in between: concurrent retries
        # of one delivery cannot both pass.
        if not self.deduper.first_time(delivery.dedupe_key):
            self.stats.add(f"duplicates.{delivery.resource}")
            return JSONResponse({"status": "duplicate"})
        self.stats.add(f"accepted.{delivery.resource}")
        return JSONResponse(
            {"status": "accepted"}, background=BackgroundTask(self.emitter.emit, delivery, received_ns)
        )

    async def stats_endpoint(self, request: Request) -> Response:
        snapshot = self.stats.snapshot()
        snapshot["dedupe_entries"] = len(self.deduper)
        return JSONResponse(snapshot)


def create_app(
    config: BridgeConfig | None = None,
    *,
    logger_provider: _logs.LoggerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> Starlette:
    """The bridge as an ASGI app; mount it in a service or serve it alone.

    Routes (under `config.path_prefix`, default `/sentry`): POST `/webhook` for the internal
    integration, POST `/legacy` for the unsigned plugin (only if enabled), GET `/stats`.
    `config=None` reads the secret from SENTRY_CLIENT_SECRET. Providers default to the globals.
    """
    config = BridgeConfig.from_env() if config is None else config
    bridge = _Bridge(config, Emitter(BridgeStats(), logger_provider, meter_provider))
    prefix = config.path_prefix
    routes = [
        Route(f"{prefix}/webhook", bridge.webhook, methods=["POST"]),
        Route(f"{prefix}/stats", bridge.stats_endpoint, methods=["GET"]),
    ]
    if config.legacy_enabled:
        routes.append(Route(f"{prefix}/legacy", bridge.legacy, methods=["POST"]))
    app = Starlette(routes=routes)
    app.state.sentry_bridge = bridge
    return app
