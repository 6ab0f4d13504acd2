"""Pieces shared by the domain helpers: scope name, tenant look-up, secret scrubbing, timing."""

from __future__ import annotations

import contextvars
import re
import time
from collections.abc import Iterable
from typing import Protocol, Self

import httpx
from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

# Instrumentation scope of every span, metric and log record the domain helpers make.
SCOPE = "pideai_otel.domain"

REDACTED_API_KEY = "[REDACTED:api_key]"
REDACTED_TOKEN = "[REDACTED:token]"

# Query parameters and header-ish pairs that carry credentials, in URLs and exception text.
_SECRET_PAIR = re.compile(r"(?i)\b(key|api_key|apikey|access_token|token|x-goog-api-key)(=|:\s*)([^&\s'\",;]+)")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with the given secret values and any credential-looking pairs replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED_API_KEY)
    text = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED_API_KEY}", text)
    return _BEARER.sub(f"Bearer {REDACTED_TOKEN}", text)


class _OrderScope(Protocol):
    order_id: str
    store_id: str | None


# The order pipeline in force (set by orders.order_pipeline), so that a WhatsApp send or a payment
# inside it knows its order and store without being told.
current_order_scope: contextvars.ContextVar[_OrderScope | None] = contextvars.ContextVar("pideai_order", default=None)


def tenant_value(key: str, explicit: str | None = None, ctx: Context | None = None) -> str | None:
    """An explicit value, else the enclosing order pipeline's, else the tenant key from W3C baggage
    (where `tenant_context` puts it)."""
    if explicit is not None:
        return str(explicit)
    order = current_order_scope.get()
    if order is not None and key in ("order_id", "store_id"):
        found = getattr(order, key)
        if found is not None:
            return str(found)
    value = baggage.get_baggage(key, ctx)
    return None if value is None else str(value)


def span_context_from_ids(trace_id: int, span_id: int, trace_flags: int) -> Context:
    """A context whose parent is the (possibly long finished) span with these ids."""
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(trace_flags))
    return trace.set_span_in_context(NonRecordingSpan(parent))


class Stopwatch:
    """Monotonic elapsed time; `seconds` and `ms` read it without stopping it."""

    __slots__ = ("_start",)

    def __init__(self) -> None:
        self._start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._start

    @property
    def ms(self) -> float:
        return round(self.seconds * 1000.0, 3)


def qualified_name(exc: BaseException) -> str:
    """`error.type` for an exception: its fully qualified class name (builtins unqualified)."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class SyncHttpOwner:
    """Closes the httpx client a domain client made for itself (never one it was given)."""

    _http: httpx.Client
    _own_http: bool

    def _adopt_http(self, client: httpx.Client | None) -> None:
        self._own_http = client is None
        self._http = client or httpx.Client()

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncHttpOwner:
    """The asyncio twin of `SyncHttpOwner`."""

    _http: httpx.AsyncClient
    _own_http: bool

    def _adopt_http(self, client: httpx.AsyncClient | None) -> None:
        self._own_http = client is None
        self._http = client or httpx.AsyncClient()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class DomainError(Exception):
    """A failed third-party call. `error_type` is the low-cardinality reason recorded on the span."""

    def __init__(self, error_type: str, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status_code = status_code
