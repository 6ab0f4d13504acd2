"""`pideai-otel sentry-bridge`: serve the bridge alone, exporting through the kit's telemetry."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import socket
import sys
from typing import Any

__all__ = ["register"]

_DEFAULT_PORT = 4391


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sentry-bridge",
        help="receive Sentry webhooks and log each error inside its backend trace",
        description=(
            "Serve the Sentry webhook bridge. The integration's Client Secret is read from "
            "SENTRY_CLIENT_SECRET (never from the command line). Records go out through the kit's "
            "OTLP exporter to the sidecar collector."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=_DEFAULT_PORT, help="port, 0 for any free one (default: %(default)s)")
    parser.add_argument("--max-body-bytes", type=int, default=1024 * 1024, help="larger bodies get 413 (default: %(default)s)")
    parser.add_argument(
        "--timestamp-tolerance", type=float, default=300.0, metavar="SECONDS",
        help="accepted Sentry-Hook-Timestamp skew (default: %(default)s)",
    )
    parser.add_argument(
        "--legacy", action="store_true",
        help="also accept the unsigned legacy WebHooks plugin on /sentry/legacy (token from SENTRY_LEGACY_TOKEN)",
    )
    parser.set_defaults(func=_run)


def _init_telemetry() -> Any:
    """The kit's init when it exists; otherwise whatever global providers are installed."""
    kit = importlib.import_module("pideai_otel")
    init = getattr(kit, "init_telemetry", None)
    if init is not None:
        return init(service_name="sentry-bridge")
    from opentelemetry import _logs

    if type(_logs.get_logger_provider()).__name__.startswith(("Proxy", "NoOp")):
        print("sentry-bridge: no telemetry SDK configured; records will be dropped", file=sys.stderr)
    return None


def _listen(host: str, port: int) -> socket.socket:
    from ..cli import CommandError

    from .._net import listening_socket

    try:
        return listening_socket(host, port)
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --host/--port") from exc


async def _serve(server: Any, sock: socket.socket, host: str) -> None:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if server.started:
        print(f"sentry-bridge ready on http://{host}:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
    await task


def _run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from ._config import BridgeConfig

    try:
        config = BridgeConfig.from_env(
            max_body_bytes=args.max_body_bytes,
            timestamp_tolerance_s=args.timestamp_tolerance,
            legacy_enabled=args.legacy,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from exc

    import uvicorn

    from ._app import create_app

    sock = _listen(args.host, args.port)
    try:
        handle = _init_telemetry()
    except ValueError as exc:  # the kit's ConfigError names the variable and the value
        sock.close()
        raise CommandError(str(exc)) from exc
    # uvicorn re-raises the stop signal once it has drained; with the default SIGTERM action that
    # would end the process before the records still in the batch processor are flushed below.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        app = create_app(config)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        asyncio.run(_serve(server, sock, args.host))
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
        if handle is not None:
            handle.shutdown()
    return 0
