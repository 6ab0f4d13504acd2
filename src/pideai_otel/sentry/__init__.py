"""Sentry errors next to the backend trace: a signed-webhook bridge to OTel log records.

`create_app(BridgeConfig(client_secret=...))` is an ASGI app to mount in a service or serve with
`pideai-otel sentry-bridge`. See docs/sentry.md for the Sentry side of the setup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._cli import register
from ._config import BridgeConfig

if TYPE_CHECKING:
    from ._app import create_app

__all__ = ["BridgeConfig", "create_app", "register"]


def __getattr__(name: str) -> Any:
    # Starlette is imported only when the app is wanted, so `pideai-otel --help` stays quick.
    if name == "create_app":
        from ._app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
