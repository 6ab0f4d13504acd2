"""The stdlib `logging` bridge.

On the caller's thread, `BridgeHandler.emit` does the least it can: format the message, note the
active span context and the tenant, and append to a bounded queue. A worker thread turns queued
records into OpenTelemetry log records (severity, code location, exception, `extra` values
converted) and emits them through the LoggerProvider, whose batch processor exports them.

Re-entrancy: records from the OpenTelemetry SDK, gRPC and the kit itself, and any record logged on
the worker thread, are never bridged, so a failing exporter cannot loop through its own pipeline.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import traceback
import weakref
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import Logger, LoggerProvider, SeverityNumber
from opentelemetry.trace import NonRecordingSpan, SpanContext

from . import _diagnostics
from ._tenant import current_tenant
from ._values import MAX_BODY_LENGTH, clip, to_attribute_value

__all__ = ["BridgeHandler", "severity_of"]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_IGNORED_PREFIXES = ("opentelemetry", "grpc", "pideai_otel._", "urllib3.connectionpool")
_SEVERITIES = (
    (logging.CRITICAL, SeverityNumber.FATAL),
    (logging.ERROR, SeverityNumber.ERROR),
    (logging.WARNING, SeverityNumber.WARN),
    (logging.INFO, SeverityNumber.INFO),
    (logging.DEBUG, SeverityNumber.DEBUG),
)


def severity_of(levelno: int) -> SeverityNumber:
    """Map a stdlib level to OTel severity; levels between the named ones step up within the range."""
    for base, number in _SEVERITIES:
        if levelno >= base:
            return SeverityNumber(min(number.value + (levelno - base) // 3, number.value + 3))
    return SeverityNumber.TRACE


class _Queued:
    __slots__ = ("record", "message", "span_context", "tenant", "time_ns")

    def __init__(self, record: logging.LogRecord, message: str, span_context: SpanContext, tenant: Mapping[str, str]) -> None:
        self.record = record
        self.message = message
        self.span_context = span_context
        self.tenant = tenant
        self.time_ns = int(record.created * 1e9)


class BridgeHandler(logging.Handler):
    """A logging handler that exports through OpenTelemetry without doing the work on the caller."""

    def __init__(self, provider: LoggerProvider, *, level: int = logging.INFO, max_queue: int = 10_000,
                 wake_at: int = 512, interval: float = 0.1) -> None:
        super().__init__(level=level)
        self._provider = provider
        self._loggers: dict[str, Logger] = {}
        self._max_queue = max_queue
        self._wake_at = wake_at
        self._interval = interval
        self._queue: collections.deque[_Queued] = collections.deque()
        self.dropped = 0
        self._stopped = False
        self._start_worker()
        this = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (h := this()) is not None and h._after_fork())

    # -- caller's thread ---------------------------------------------------------------------
    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.name.startswith(_IGNORED_PREFIXES) or threading.get_ident() == self._worker_ident:
                return
            queue = self._queue
            if len(queue) >= self._max_queue:
                self.dropped += 1
                return
            queue.append(_Queued(record, record.getMessage(), trace.get_current_span().get_span_context(), current_tenant()))
            if len(queue) >= self._wake_at:
                self._wake.set()
        except Exception as exc:  # never let logging raise into the app
            _diagnostics.report("bridge.emit", f"could not bridge a log record: {type(exc).__name__}: {exc}")

    # -- worker thread -----------------------------------------------------------------------
    def _start_worker(self) -> None:
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._stopping = False
        self._worker = threading.Thread(target=self._run, name="pideai-otel-log-bridge", daemon=True)
        self._worker_ident: int | None = None
        self._worker.start()

    def _run(self) -> None:
        self._worker_ident = threading.get_ident()
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._drain()
            if self._stopping:
                return

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            try:
                item = queue.popleft()
            except IndexError:
                break
            try:
                self._export_one(item)
            except Exception as exc:
                _diagnostics.report("bridge.convert", f"could not convert a log record: {type(exc).__name__}: {exc}")
        self._idle.set()

    def _logger(self, name: str) -> Logger:
        logger = self._loggers.get(name)
        if logger is None:
            logger = self._loggers[name] = self._provider.get_logger(name or "root")
        return logger

    def _export_one(self, item: _Queued) -> None:
        record = item.record
        attributes: dict[str, Any] = {
            "code.file.path": record.pathname,
            "code.function.name": record.funcName,
            "code.line.number": record.lineno,
            "logger.name": record.name,
        }
        if record.threadName and record.threadName != "MainThread":
            attributes["thread.name"] = record.threadName
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                attributes[key] = to_attribute_value(value)
        attributes.update(item.tenant)
        if record.exc_info and record.exc_info[1] is not None:
            exc_type, exc, tb = record.exc_info
            attributes["exception.type"] = exc_type.__qualname__ if exc_type else type(exc).__qualname__
            attributes["exception.message"] = str(exc)
            attributes["exception.stacktrace"] = "".join(traceback.format_exception(exc_type, exc, tb))
        context = None
        if item.span_context.is_valid:
            context = trace.set_span_in_context(NonRecordingSpan(item.span_context))
        self._logger(record.name).emit(
            timestamp=item.time_ns,
            observed_timestamp=time.time_ns(),
            context=context,
            severity_number=severity_of(record.levelno),
            severity_text=record.levelname,
            body=clip(item.message, MAX_BODY_LENGTH),
            attributes=attributes,
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def flush(self, timeout: float = 5.0) -> bool:
        """Hand every queued record to the provider; True if that finished in time.

        Waits for a whole drain to end after the wake-up, so a record the worker had already taken
        off the queue (and is still converting) is included.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._idle.clear()
            self._wake.set()
            finished = self._idle.wait(max(0.0, deadline - time.monotonic()))
            if finished and not self._queue:
                return True
            if time.monotonic() >= deadline:
                return False

    def stop(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        self._stopped = True
        self._stopping = True
        self._wake.set()
        self._worker.join(timeout=max(0.0, timeout))

    def _after_fork(self) -> None:
        # The parent's queued records are the parent's to export; the child starts empty.
        if self._stopped:
            return
        self._queue = collections.deque()
        self._start_worker()
