"""Tenant context: who the current work is for (store_id, user_id, order_id...).

Set once per request with `tenant_context(...)` (the inbound middleware does it from W3C baggage),
stamped on every span and log record, carried downstream in W3C baggage, and never sent to hosts
outside the baggage allowlist (third-party APIs). Values live in a ContextVar, so threads and asyncio
tasks each see their own. Metrics never get them: their cardinality is unbounded.
"""

from __future__ import annotations

import contextvars
import fnmatch
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import CarrierT, Setter, default_setter
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

__all__ = ["TENANT_KEYS", "tenant_context", "current_tenant", "tenant_from_baggage"]

TENANT_KEYS: tuple[str, ...] = ("store_id", "user_id", "order_id", "session_id", "request_id", "tenant_plan")
_ALLOWED = frozenset(TENANT_KEYS)
_EMPTY: Mapping[str, str] = MappingProxyType({})
_current: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("pideai_tenant", default=_EMPTY)


def current_tenant() -> Mapping[str, str]:
    """The tenant keys in force here (read-only)."""
    return _current.get()


@contextmanager
def tenant_context(**values: Any) -> Iterator[Mapping[str, str]]:
    """Add tenant keys for the duration of the block; nested blocks add to (or override) outer ones.

    Only the allow-listed keys (`TENANT_KEYS`) are accepted; None values are ignored.
    """
    unknown = set(values) - _ALLOWED
    if unknown:
        raise ValueError(f"unknown tenant key(s) {sorted(unknown)}; allowed: {', '.join(TENANT_KEYS)}")
    new = {key: str(value) for key, value in values.items() if value is not None}
    merged = MappingProxyType({**_current.get(), **new})
    # The span already running (typically the request's server span, started before the handler
    # knew the store) gets the keys too, so the whole request is findable by tenant.
    active = trace.get_current_span()
    if new and active.is_recording():
        active.set_attributes(new)
    ctx = otel_context.get_current()
    for key, value in new.items():
        ctx = baggage.set_baggage(key, value, ctx)
    token = _current.set(merged)
    otel_token = otel_context.attach(ctx)
    try:
        yield merged
    finally:
        otel_context.detach(otel_token)
        _current.reset(token)


def tenant_from_baggage(ctx: Context | None = None) -> dict[str, str]:
    """The allow-listed tenant keys found in W3C baggage (what an upstream service sent)."""
    return {k: str(v) for k, v in baggage.get_all(ctx).items() if k in _ALLOWED}


class TenantSpanProcessor(SpanProcessor):
    """Stamps the tenant keys on every span when it starts (one ContextVar read on the hot path)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        tenant = _current.get()
        if tenant:
            span.set_attributes(tenant)

    def on_end(self, span: ReadableSpan) -> None:
        pass


class TenantLogProcessor(LogRecordProcessor):
    """Stamps tenant keys on log records emitted through the OpenTelemetry Logs API on this thread.

    Records from the logging bridge already carry the tenant captured at the log call; keys already
    present on a record are never overwritten.
    """

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        tenant = _current.get()
        if not tenant:
            return
        record = log_record.log_record
        existing = record.attributes or {}
        missing = {k: v for k, v in tenant.items() if k not in existing}
        if missing:
            record.attributes = {**existing, **missing}

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class HostAllowlist:
    """Host patterns: exact names, or '*.example.com' for any subdomain of example.com."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self._exact = frozenset(p for p in patterns if "*" not in p)
        self._wildcards = tuple(p for p in patterns if "*" in p)

    def allows(self, host: str | None) -> bool:
        if not host:
            return False
        host = host.lower().strip("[]")
        return host in self._exact or any(fnmatch.fnmatchcase(host, p) for p in self._wildcards)


# Set by the httpx request hook just before the instrumentation injects headers; read once.
_suppress_next_baggage: contextvars.ContextVar[bool] = contextvars.ContextVar("pideai_no_baggage", default=False)


def suppress_baggage_for_next_injection(suppress: bool) -> None:
    _suppress_next_baggage.set(suppress)


class GuardedBaggagePropagator(W3CBaggagePropagator):
    """W3C baggage that is withheld from requests to hosts outside the allowlist.

    The httpx instrumentation calls its request hook and then `inject`, in the same context; the
    hook records whether the destination is allowed, and this propagator consumes that verdict.
    """

    def inject(self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = default_setter) -> None:
        if _suppress_next_baggage.get():
            _suppress_next_baggage.set(False)
            return
        super().inject(carrier, context, setter)
