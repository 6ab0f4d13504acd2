"""WhatsApp Cloud API sends as messaging spans, and delivery statuses back inside the order's trace.

A send (`POST {base}/{version}/{phone_number_id}/messages`) is a CLIENT span `send whatsapp` with
`messaging.system=whatsapp` and the returned `messaging.message.id`. The recipient's number is
never recorded: only a mask keeping its last two digits. The message id is stored with the send
span's context (a `MessageLinkStore`: in-memory LRU by default, SQLite to survive restarts and be
shared between processes) so that when Meta's status webhook arrives, minutes or days later and
in another request, `WhatsAppStatusHandler` emits its log record inside the original trace.

Counting (`pideai.whatsapp.messages`, by `status`): `sent` when the API accepts a message;
`rejected` when it does not (HTTP error, timeout, network); then each message lands in at most ONE
of `delivered`, `read`, `failed`: the first of those callbacks to arrive for it. So
`(delivered + read) / sent` is the delivery success rate, and `sent - delivered - read - failed`
the messages still pending. Later callbacks for the same message are logged but not counted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import httpx
from opentelemetry import _logs, trace
from opentelemetry import context as otel_context
from opentelemetry._logs import LoggerProvider, SeverityNumber
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from pideai_otel._diagnostics import guarded

from ._common import (
    SCOPE,
    AsyncHttpOwner,
    DomainError,
    Stopwatch,
    SyncHttpOwner,
    qualified_name,
    scrub,
    span_context_from_ids,
    tenant_value,
)
from .metrics import domain_metrics

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_API_VERSION",
    "MessageLink",
    "MessageLinkStore",
    "InMemoryLinkStore",
    "SQLiteLinkStore",
    "default_link_store",
    "SentMessage",
    "StatusUpdate",
    "WhatsAppError",
    "WhatsAppClient",
    "AsyncWhatsAppClient",
    "WhatsAppStatusHandler",
    "mask_phone",
    "verify_signature",
    "webhook_endpoint",
]

DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v21.0"
SYSTEM = "whatsapp"
SPAN_NAME = "send whatsapp"
STATUS_EVENT = "pideai.whatsapp.status"
_OUTCOMES = frozenset({"delivered", "read", "failed"})
_MAX_MESSAGE = 300
# Digit runs long enough to be a phone number, with the usual separators.
_PHONE_LIKE = re.compile(r"\+?\d[\d ()-]{6,}\d")


def mask_phone(number: object) -> str:
    """A phone number reduced to its last two digits: '********78'. Fixed width, so length leaks nothing."""
    digits = "".join(ch for ch in str(number) if ch.isdigit())
    return "********" + digits[-2:] if len(digits) >= 2 else "********"


def _scrub_text(text: str, secrets: list[str | None]) -> str:
    text = scrub(text, secrets)
    return _PHONE_LIKE.sub(lambda m: mask_phone(m.group(0)), text)[:_MAX_MESSAGE]


def verify_signature(raw_body: bytes, signature_header: str | None, app_secret: str) -> bool:
    """Check Meta's `X-Hub-Signature-256: sha256=<hex>` over the raw request body."""
    if not signature_header or not signature_header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature_header.removeprefix("sha256="))


# --- message id -> trace context ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageLink:
    """Where a sent message's telemetry belongs: its send span, order and store."""

    message_id: str
    trace_id: int
    span_id: int
    trace_flags: int
    order_id: str | None = None
    store_id: str | None = None
    created: float = field(default_factory=time.time)

    @property
    def traced(self) -> bool:
        return self.trace_id != 0 and self.span_id != 0


class MessageLinkStore(Protocol):
    """Where message links live. Implementations must be safe to call from several threads."""

    def put(self, link: MessageLink) -> None: ...

    def get(self, message_id: str) -> MessageLink | None: ...

    def claim_outcome(self, message_id: str, outcome: str) -> bool:
        """Record `outcome` as the message's first outcome; False if it already had one.

        An unknown message id is remembered with this outcome (so a retried webhook is not
        counted twice) and the claim succeeds.
        """
        ...


class InMemoryLinkStore:
    """Least-recently-used links, at most `max_entries` (one process, lost on restart)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[MessageLink, str | None]] = OrderedDict()

    def put(self, link: MessageLink) -> None:
        with self._lock:
            self._entries[link.message_id] = (link, None)
            self._entries.move_to_end(link.message_id)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def get(self, message_id: str) -> MessageLink | None:
        with self._lock:
            found = self._entries.get(message_id)
            if found is None:
                return None
            self._entries.move_to_end(message_id)
            return found[0]

    def claim_outcome(self, message_id: str, outcome: str) -> bool:
        with self._lock:
            found = self._entries.get(message_id)
            if found is not None and found[1] is not None:
                return False
            link = found[0] if found is not None else MessageLink(message_id, 0, 0, 0)
            self._entries[message_id] = (link, outcome)
            self._entries.move_to_end(message_id)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
            return True

    def __len__(self) -> int:
        return len(self._entries)


class SQLiteLinkStore:
    """Links in a SQLite file: shared by processes on one host and kept across restarts.

    Bounded by count (oldest first) and by age: Cloud API statuses can come days after the send.
    A write takes well under a millisecond; when another process holds the write lock, a call
    waits at most `busy_timeout` seconds, then the link is given up (reported, never raised).
    """

    _SCHEMA = """
        CREATE TABLE IF NOT EXISTS whatsapp_message_links (
            message_id TEXT PRIMARY KEY,
            trace_id TEXT NOT NULL,
            span_id TEXT NOT NULL,
            trace_flags INTEGER NOT NULL,
            order_id TEXT,
            store_id TEXT,
            outcome TEXT,
            created REAL NOT NULL
        )"""

    def __init__(
        self,
        path: str | Path,
        *,
        max_entries: int = 100_000,
        max_age_seconds: float = 31 * 24 * 3600,
        busy_timeout: float = 2.0,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.path = Path(path)
        self._max = max_entries
        self._max_age = max_age_seconds
        self._lock = threading.Lock()
        self._writes = 0
        self._db = sqlite3.connect(self.path, timeout=busy_timeout, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(self._SCHEMA)
        self._db.execute("CREATE INDEX IF NOT EXISTS whatsapp_links_created ON whatsapp_message_links(created)")

    def put(self, link: MessageLink) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO whatsapp_message_links VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                (
                    link.message_id,
                    format(link.trace_id, "032x"),
                    format(link.span_id, "016x"),
                    link.trace_flags,
                    link.order_id,
                    link.store_id,
                    link.created,
                ),
            )
            self._after_write()

    def get(self, message_id: str) -> MessageLink | None:
        with self._lock:
            row = self._db.execute(
                "SELECT trace_id, span_id, trace_flags, order_id, store_id, created "
                "FROM whatsapp_message_links WHERE message_id = ?",
                (message_id,),
            ).fetchone()
        if row is None:
            return None
        return MessageLink(message_id, int(row[0], 16), int(row[1], 16), row[2], row[3], row[4], row[5])

    def claim_outcome(self, message_id: str, outcome: str) -> bool:
        with self._lock:
            # One statement each way, so two processes racing on one message cannot both win.
            claimed = self._db.execute(
                "UPDATE whatsapp_message_links SET outcome = ? WHERE message_id = ? AND outcome IS NULL",
                (outcome, message_id),
            ).rowcount
            if claimed:
                return True
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO whatsapp_message_links VALUES (?, ?, ?, 0, NULL, NULL, ?, ?)",
                (message_id, "0" * 32, "0" * 16, outcome, time.time()),
            ).rowcount
            if inserted:
                self._after_write()
            return bool(inserted)

    def _after_write(self) -> None:
        # Pruning costs a scan of the index: do it every 256 writes, so the table may briefly
        # exceed max_entries by that much.
        self._writes += 1
        if self._writes % 256 == 0:
            self._prune()

    def prune(self) -> int:
        """Drop links past max_age_seconds and beyond max_entries (oldest first); returns how many."""
        with self._lock:
            return self._prune()

    def _prune(self) -> int:
        removed = self._db.execute(
            "DELETE FROM whatsapp_message_links WHERE created < ?", (time.time() - self._max_age,)
        ).rowcount
        removed += self._db.execute(
            "DELETE FROM whatsapp_message_links WHERE message_id IN ("
            " SELECT message_id FROM whatsapp_message_links ORDER BY created DESC LIMIT -1 OFFSET ?)",
            (self._max,),
        ).rowcount
        return removed

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM whatsapp_message_links").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SQLiteLinkStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_default_links = InMemoryLinkStore()


def default_link_store() -> InMemoryLinkStore:
    """The process-wide store used by clients and handlers given no `links`."""
    return _default_links


# --- sending --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SentMessage:
    message_id: str
    wa_id: str | None  # the recipient's WhatsApp id, as the API returned it


class WhatsAppError(DomainError):
    """The Cloud API did not accept a message. `error_type`: Graph error code, HTTP status, or 'timeout'."""

    def __init__(
        self,
        error_type: str,
        message: str,
        *,
        status_code: int | None = None,
        code: int | None = None,
        subcode: int | None = None,
        fbtrace_id: str | None = None,
    ) -> None:
        super().__init__(error_type, message, status_code=status_code)
        self.code = code
        self.subcode = subcode
        self.fbtrace_id = fbtrace_id


@dataclass(frozen=True, slots=True)
class _Prepared:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    attributes: dict[str, Any]
    order_id: str | None
    store_id: str | None


class _WhatsAppConfig:
    def __init__(
        self,
        *,
        access_token: str,
        phone_number_id: str,
        base_url: str = DEFAULT_BASE_URL,
        api_version: str = DEFAULT_API_VERSION,
        timeout: float = 10.0,
        links: MessageLinkStore | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._token = access_token
        self.phone_number_id = phone_number_id
        self._base_url = base_url.rstrip("/")
        self.api_version = api_version
        self.timeout = timeout
        self.links: MessageLinkStore = links if links is not None else _default_links
        self._tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        self._metrics = domain_metrics(meter_provider)
        parsed = httpx.URL(self._base_url)
        self._server = {
            "server.address": parsed.host,
            "server.port": parsed.port or (443 if parsed.scheme == "https" else 80),
        }

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}(base_url={self._base_url!r}, phone_number_id={self.phone_number_id!r})"

    def _prepare(self, to: str, message: Mapping[str, Any], order_id: str | None, store_id: str | None) -> _Prepared:
        body = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, **message}
        order = tenant_value("order_id", order_id)
        store = tenant_value("store_id", store_id)
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
            **self._server,
            "pideai.whatsapp.phone_number_id": self.phone_number_id,
            "pideai.whatsapp.recipient": mask_phone(to),
            "pideai.whatsapp.message_type": str(message.get("type", "text")),
        }
        if order is not None:
            attributes["order_id"] = order
        if store is not None:
            attributes["store_id"] = store
        url = f"{self._base_url}/{self.api_version}/{self.phone_number_id}/messages"
        headers = {"authorization": f"Bearer {self._token}"}
        return _Prepared(url, headers, body, attributes, order, store)


class _SendCall:
    def __init__(self, client: _WhatsAppConfig, prepared: _Prepared) -> None:
        self._client = client
        self._prepared = prepared
        self._span: trace.Span = trace.INVALID_SPAN
        self._token: object | None = None
        self._watch = Stopwatch()
        self.result: SentMessage | None = None

    def __enter__(self) -> _SendCall:
        self._span = self._client._tracer.start_span(
            SPAN_NAME, kind=SpanKind.CLIENT, attributes=self._prepared.attributes
        )
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        self._watch = Stopwatch()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
        try:
            self._finish(exc)
        finally:
            self._span.end()

    def transport_error(self, exc: httpx.HTTPError) -> WhatsAppError:
        message = _scrub_text(str(exc) or type(exc).__name__, [self._client._token])
        if isinstance(exc, httpx.TimeoutException):
            return WhatsAppError("timeout", f"no answer within {self._client.timeout:g} s ({message})")
        return WhatsAppError(f"httpx.{type(exc).__name__}", message)

    def parse(self, response: httpx.Response) -> SentMessage:
        self._span.set_attribute("http.response.status_code", response.status_code)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 400:
            raise self._graph_error(response.status_code, payload)
        messages = payload.get("messages") if isinstance(payload, dict) else None
        first = messages[0] if isinstance(messages, list) and messages and isinstance(messages[0], dict) else {}
        message_id = first.get("id")
        if not isinstance(message_id, str) or not message_id:
            raise WhatsAppError(
                "invalid_response", "the answer has no messages[0].id", status_code=response.status_code
            )
        contacts = payload.get("contacts") if isinstance(payload, dict) else None
        contact = contacts[0] if isinstance(contacts, list) and contacts and isinstance(contacts[0], dict) else {}
        wa_id = contact.get("wa_id")
        self.result = SentMessage(message_id, str(wa_id) if wa_id is not None else None)
        return self.result

    def _graph_error(self, status: int, payload: Any) -> WhatsAppError:
        error = payload.get("error") if isinstance(payload, dict) else None
        error = error if isinstance(error, dict) else {}
        code = error.get("code") if isinstance(error.get("code"), int) else None
        subcode = error.get("error_subcode") if isinstance(error.get("error_subcode"), int) else None
        trace_id = error.get("fbtrace_id") if isinstance(error.get("fbtrace_id"), str) else None
        detail = _scrub_text(str(error.get("message") or ""), [self._client._token])
        return WhatsAppError(
            str(code) if code is not None else str(status),
            f"WhatsApp Cloud API answered HTTP {status}: {detail}".rstrip(": "),
            status_code=status,
            code=code,
            subcode=subcode,
            fbtrace_id=trace_id,
        )

    @guarded("domain.whatsapp.send")
    def _finish(self, exc: BaseException | None) -> None:
        span = self._span
        p = self._prepared
        m = self._client._metrics
        span.set_attribute("pideai.whatsapp.duration_ms", self._watch.ms)
        if exc is None and self.result is not None:
            span.set_attribute("messaging.message.id", self.result.message_id)
            m.add(m.whatsapp_messages, 1, {"status": "sent", "store_id": p.store_id})
            ctx = span.get_span_context()
            self._client.links.put(
                MessageLink(
                    self.result.message_id,
                    ctx.trace_id,
                    ctx.span_id,
                    int(ctx.trace_flags),
                    order_id=p.order_id,
                    store_id=p.store_id,
                )
            )
            return
        if exc is None:
            return
        if isinstance(exc, WhatsAppError):
            error_type, message = exc.error_type, exc.message
            optional = {
                "pideai.whatsapp.error_code": exc.code,
                "pideai.whatsapp.error_subcode": exc.subcode,
                "pideai.whatsapp.fbtrace_id": exc.fbtrace_id,
            }
            span.set_attributes({k: v for k, v in optional.items() if v is not None})
        else:
            error_type = qualified_name(exc)
            message = _scrub_text(str(exc), [self._client._token])
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, message))
        span.add_event("exception", {"exception.type": qualified_name(exc), "exception.message": message})
        m.add(m.whatsapp_messages, 1, {"status": "rejected", "error.type": error_type, "store_id": p.store_id})


def _text_message(text: str, preview_url: bool) -> dict[str, Any]:
    return {"type": "text", "text": {"body": text, "preview_url": preview_url}}


class WhatsAppClient(_WhatsAppConfig, SyncHttpOwner):
    """Blocking Cloud API client. Close it (or use `with`) unless you pass `http_client`."""

    def __init__(self, *, http_client: httpx.Client | None = None, **config: Any) -> None:
        super().__init__(**config)
        self._adopt_http(http_client)

    def send_text(
        self, to: str, text: str, *, order_id: str | None = None, store_id: str | None = None, preview_url: bool = False
    ) -> SentMessage:
        return self.send(to, _text_message(text, preview_url), order_id=order_id, store_id=store_id)

    def send(
        self, to: str, message: Mapping[str, Any], *, order_id: str | None = None, store_id: str | None = None
    ) -> SentMessage:
        """Send any message object ({"type": "template", "template": {...}}...). Raises WhatsAppError."""
        prepared = self._prepare(to, message, order_id, store_id)
        with _SendCall(self, prepared) as call:
            error: WhatsAppError | None = None
            try:
                response = self._http.post(
                    prepared.url, json=prepared.body, headers=prepared.headers, timeout=self.timeout
                )
            except httpx.HTTPError as exc:
                error = call.transport_error(exc)
            if error is not None:
                raise error  # outside the handler: the httpx exception is not chained
            return call.parse(response)


class AsyncWhatsAppClient(_WhatsAppConfig, AsyncHttpOwner):
    """asyncio Cloud API client. `await aclose()` (or use `async with`) unless you pass `http_client`."""

    def __init__(self, *, http_client: httpx.AsyncClient | None = None, **config: Any) -> None:
        super().__init__(**config)
        self._adopt_http(http_client)

    async def send_text(
        self, to: str, text: str, *, order_id: str | None = None, store_id: str | None = None, preview_url: bool = False
    ) -> SentMessage:
        return await self.send(to, _text_message(text, preview_url), order_id=order_id, store_id=store_id)

    async def send(
        self, to: str, message: Mapping[str, Any], *, order_id: str | None = None, store_id: str | None = None
    ) -> SentMessage:
        prepared = self._prepare(to, message, order_id, store_id)
        with _SendCall(self, prepared) as call:
            error: WhatsAppError | None = None
            try:
                response = await self._http.post(
                    prepared.url, json=prepared.body, headers=prepared.headers, timeout=self.timeout
                )
            except httpx.HTTPError as exc:
                error = call.transport_error(exc)
            if error is not None:
                raise error
            return call.parse(response)


# --- delivery statuses ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """One status from a webhook, as handled."""

    message_id: str
    status: str
    timestamp: int | None  # unix seconds, from the webhook
    linked: bool  # its send was found, so the log record sits in the order's trace
    counted: bool  # it was this message's first outcome and went into pideai.whatsapp.messages
    error_code: int | None = None
    error_title: str | None = None


class WhatsAppStatusHandler:
    """Turns Cloud API status webhooks into log records in the original trace, and delivery metrics."""

    def __init__(
        self,
        *,
        links: MessageLinkStore | None = None,
        logger_provider: LoggerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.links: MessageLinkStore = links if links is not None else _default_links
        self._logger_provider = logger_provider
        self._meter_provider = meter_provider

    def handle(self, payload: Any) -> list[StatusUpdate]:
        """Handle a parsed webhook body; returns what was done for each status in it.

        Never raises for a malformed body (Meta retries non-2xx answers for days): unknown shapes
        are skipped.
        """
        updates: list[StatusUpdate] = []
        for status in _statuses(payload):
            update = self._handle_one(status)
            if update is not None:
                updates.append(update)
        return updates

    @guarded("domain.whatsapp.status")
    def _handle_one(self, raw: Mapping[str, Any]) -> StatusUpdate | None:
        message_id, status = raw.get("id"), raw.get("status")
        if not isinstance(message_id, str) or not isinstance(status, str):
            return None
        link = self.links.get(message_id)
        counted = status in _OUTCOMES and self.links.claim_outcome(message_id, status)
        timestamp = _int(raw.get("timestamp"))
        errors = raw.get("errors")
        first_error = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        error_code = _int(first_error.get("code"))
        error_title = first_error.get("title") if isinstance(first_error.get("title"), str) else None

        store_id = link.store_id if link is not None else None
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.message.id": message_id,
            "pideai.whatsapp.status": status,
            "pideai.whatsapp.counted": counted,
        }
        optional = {
            "pideai.whatsapp.recipient": mask_phone(raw["recipient_id"]) if raw.get("recipient_id") else None,
            "order_id": link.order_id if link is not None else None,
            "store_id": store_id,
            "pideai.whatsapp.error_code": error_code,
            "pideai.whatsapp.error_title": error_title,
            "error.type": str(error_code) if status == "failed" and error_code is not None else None,
        }
        attributes.update({k: v for k, v in optional.items() if v is not None})
        context = span_context_from_ids(link.trace_id, link.span_id, link.trace_flags) if link and link.traced else None
        failed = status == "failed"
        now = time.time_ns()
        _logs.get_logger(SCOPE, logger_provider=self._logger_provider).emit(
            timestamp=timestamp * 1_000_000_000 if timestamp is not None else now,
            observed_timestamp=now,
            context=context,
            severity_number=SeverityNumber.WARN if failed else SeverityNumber.INFO,
            severity_text="WARN" if failed else "INFO",
            body=f"WhatsApp message {status}" + (f": {error_title}" if failed and error_title else ""),
            attributes=attributes,
            event_name=STATUS_EVENT,
        )
        if counted:
            m = domain_metrics(self._meter_provider)
            m.add(m.whatsapp_messages, 1, {"status": status, "store_id": store_id})
        return StatusUpdate(
            message_id,
            status,
            timestamp,
            linked=link is not None and link.traced,
            counted=counted,
            error_code=error_code,
            error_title=error_title,
        )


def _statuses(payload: Any) -> Iterator[Mapping[str, Any]]:
    """`entry[].changes[].value.statuses[]` of a webhook body, skipping anything malformed."""
    entries = payload.get("entry") if isinstance(payload, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        for change in changes if isinstance(changes, list) else []:
            value = change.get("value") if isinstance(change, dict) else None
            statuses = value.get("statuses") if isinstance(value, dict) else None
            for status in statuses if isinstance(statuses, list) else []:
                if isinstance(status, dict):
                    yield status


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def webhook_endpoint(
    handler: WhatsAppStatusHandler, *, app_secret: str | None = None, verify_token: str | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint for Meta's webhook: GET answers the subscription check, POST handles statuses.

    With `app_secret`, a POST whose X-Hub-Signature-256 does not match is refused with 401.
        Route("/webhooks/whatsapp", webhook_endpoint(handler, app_secret=...), methods=["GET", "POST"])
    """

    async def endpoint(request: Request) -> Response:
        if request.method == "GET":
            params = request.query_params
            if (
                verify_token is not None
                and params.get("hub.mode") == "subscribe"
                and hmac.compare_digest(params.get("hub.verify_token", ""), verify_token)
            ):
                return PlainTextResponse(params.get("hub.challenge", ""))
            return PlainTextResponse("forbidden", status_code=403)
        raw = await request.body()
        if app_secret is not None and not verify_signature(raw, request.headers.get("x-hub-signature-256"), app_secret):
            return JSONResponse({"error": "bad signature"}, status_code=401)
        try:
            payload = json.loads(raw)
        except ValueError:
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        updates = await run_in_threadpool(handler.handle, payload)  # a SQLite store may block briefly
        return JSONResponse({"statuses": len(updates)})

    return endpoint
