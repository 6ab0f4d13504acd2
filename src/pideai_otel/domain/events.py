"""Structured log events: `context`, `metrics` and `metadata`, flattened into stable attribute keys.

    log_event(logger, "image enhanced",
              context={"store_id": "s-3", "menu_item_id": "m-9"},
              metrics={"duration_ms": 812.4, "image_size_kb": 96},
              metadata={"model": "gemini-2.5-flash-image", "retry": False})

goes through stdlib logging with `extra`, so the kit's logging bridge exports the record with the
attributes `context.store_id`, `context.menu_item_id`, `metrics.duration_ms`, `metrics.image_size_kb`,
`metadata.model`, `metadata.retry`. Keys are flat (one level: a nested dict is one attribute,
exported as JSON) and values may be of any type: the bridge converts them on its own thread.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["SECTIONS", "log_event", "event_extra"]

SECTIONS: tuple[str, ...] = ("context", "metrics", "metadata")


def event_extra(
    *,
    context: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `extra=` dict for one event: `{"context.<key>": value, "metrics.<key>": value, ...}`."""
    extra: dict[str, Any] = {}
    for section, values in (("context", context), ("metrics", metrics), ("metadata", metadata)):
        if values:
            for key, value in values.items():
                extra[f"{section}.{key}"] = value
    return extra


def log_event(
    logger: logging.Logger | logging.LoggerAdapter[Any],
    message: str,
    *,
    context: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    level: int = logging.INFO,
    exc_info: Any = None,
) -> None:
    """Log `message` with the three sections as flat attributes (see the module doc).

    The record's code location is the caller's, not this function's. With a LoggerAdapter its
    `extra` is merged in (its `process()` is not called). `message` is the log body
    as given: put variable parts in the sections, so that records of one event share one body.
    """
    if not logger.isEnabledFor(level):
        return
    extra = event_extra(context=context, metrics=metrics, metadata=metadata)
    if isinstance(logger, logging.LoggerAdapter):
        # LoggerAdapter.process() would replace our extra with its own: merge, adapter's first.
        extra = {**(logger.extra or {}), **extra}
        logger = logger.logger
    logger.log(level, message, extra=extra, exc_info=exc_info, stacklevel=2)
