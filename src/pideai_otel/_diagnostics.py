"""The kit's own voice: rate-limited lines on stderr, never through the bridged logger.

Telemetry failures (collector down, exporter errors, a bug in a processor) must never raise into,
block or log through the application. Everything the kit or the OpenTelemetry SDK wants to say goes
here instead: at most `burst` lines per key per `window` seconds, then one summary of what was
suppressed. Under pytest (`strict` mode, set by `pideai_otel.testing`) internal errors raise.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["report", "guarded", "install_sdk_log_handler", "set_strict"]

_F = TypeVar("_F", bound=Callable[..., Any])


class _RateLimiter:
    def __init__(self, burst: int = 2, window: float = 60.0) -> None:
        self._burst = burst
        self._window = window
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, int]] = {}  # key -> (window start, lines in window)

    def allow(self, key: str) -> tuple[bool, int]:
        """(may print now, how many were suppressed in the window that just closed)."""
        now = time.monotonic()
        with self._lock:
            start, count = self._state.get(key, (now, 0))
            suppressed = 0
            if now - start >= self._window:
                suppressed = max(0, count - self._burst)
                start, count = now, 0
            count += 1
            self._state[key] = (start, count)
            return count <= self._burst, suppressed


_limiter = _RateLimiter()
_strict = False


def set_strict(strict: bool) -> None:
    global _strict
    _strict = strict


def report(key: str, message: str) -> None:
    """Print one line to stderr unless this key has spoken too often lately."""
    allowed, suppressed = _limiter.allow(key)
    if not allowed:
        return
    stream = sys.__stderr__ or sys.stderr
    try:
        if suppressed:
            stream.write(f"pideai-otel: ({suppressed} similar messages suppressed) [{key}]\n")
        stream.write(f"pideai-otel: {message}\n")
        stream.flush()
    except (OSError, ValueError):  # stderr closed at interpreter exit
        pass


def guarded(key: str) -> Callable[[_F], _F]:
    """Wrap a callback the kit installs in the app: errors become a report, or raise when strict."""

    def decorate(func: _F) -> _F:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                if _strict:
                    raise
                report(key, f"internal error in {func.__qualname__}: {type(exc).__name__}: {exc}")
                return None

        wrapper.__name__ = func.__name__
        wrapper.__qualname__ = func.__qualname__
        wrapper.__doc__ = func.__doc__
        return wrapper  # type: ignore[return-value]

    return decorate


_MUTE_SECONDS = 60.0


def _mute(logger_name: str) -> None:
    """Silence one SDK logger's warnings for a while.

    With the collector down the batch processors warn once per dropped item, on the app's thread:
    even rate-limited, each call costs the app tens of microseconds.
    """
    logger = logging.getLogger(logger_name)
    logger.setLevel(logging.ERROR)
    timer = threading.Timer(_MUTE_SECONDS, logger.setLevel, args=(logging.NOTSET,))
    timer.daemon = True
    timer.start()


class _StderrHandler(logging.Handler):
    """Receives the OpenTelemetry SDK's own log records (exporter failures and the like)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed SDK log call must not escape either
            message = str(record.msg)
        if "Queue full" in message or "queue is full" in message.lower():
            _mute(record.name)
            report(f"{record.name}:queue-full", f"telemetry queue full, dropping records ({message}); "
                   f"drop warnings muted for {_MUTE_SECONDS:.0f} s")
            return
        if record.exc_info and record.exc_info[1] is not None:
            message = f"{message}: {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        report(f"{record.name}:{record.levelname}", f"{record.levelname.lower()} [{record.name}] {message}")


_sdk_handler = _StderrHandler(level=logging.WARNING)


def install_sdk_log_handler() -> None:
    """Route the `opentelemetry` loggers to rate-limited stderr, never to the app's handlers.

    The exporters log every failed export; if those records reached the bridge they would be
    exported through the very pipeline that is failing (recursion, and a deadlock risk).
    """
    sdk_logger = logging.getLogger("opentelemetry")
    if _sdk_handler not in sdk_logger.handlers:
        sdk_logger.addHandler(_sdk_handler)
    sdk_logger.propagate = False
