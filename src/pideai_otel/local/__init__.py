"""The local Better Stack stand-in (OTLP/HTTP ingest into SQLite) and the search over it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["StandInProcess", "create_app", "serve"]

if TYPE_CHECKING:
    from pideai_otel.local.standin import StandInProcess, create_app, serve


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m pideai_otel.local.cli` and light imports do not pull in uvicorn.
    if name in __all__:
        from pideai_otel.local import standin

        return getattr(standin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
