"""Redaction: one policy object, applied in the export pipeline (never on the caller's thread).

`RedactionPolicy` finds secrets and personal data in span names, attributes, events, status
descriptions, log bodies and log attributes, and replaces each with a marker that says why
(`[REDACTED:email]`), so a reader of the data knows something was removed. `NO_REDACTION` is its
no-op twin. The exporter wrappers at the bottom apply a policy to each batch before it is sent.
The collector applies a second, independent layer (otel-collector.yaml).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status

__all__ = ["RedactionPolicy", "NO_REDACTION", "RedactingSpanExporter", "RedactingLogExporter"]

DEFAULT_SECRET_PARAMS = frozenset(
    {"key", "api_key", "apikey", "token", "access_token", "refresh_token", "id_token", "sig",
     "signature", "password", "passwd", "secret", "client_secret", "code", "auth", "session"}
)
# Attribute names whose whole value is a credential, matched case-insensitively as substrings.
DEFAULT_CREDENTIAL_KEYS = (
    "authorization", "cookie", "api-key", "api_key", "apikey", "x-goog-api-key", "password",
    "secret", "access_token", "refresh_token", "client_secret",
)
# Keys never inspected: ids and numbers that would otherwise look like phones or card numbers.
DEFAULT_SAFE_KEYS = frozenset(
    {"store_id", "user_id", "order_id", "session_id", "request_id", "tenant_plan", "trace_id",
     "span_id", "http.status_code", "http.response.status_code", "server.port", "net.peer.port",
     "messaging.message.id", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
     "code.line.number", "code.lineno", "thread.id", "process.pid", "sentry.event_id", "sentry.issue_id",
     # The bridge's code location comes from the source tree, never from users.
     "code.file.path", "code.function.name", "logger.name", "thread.name"}
)
# Keys whose digits-only values are phone numbers (WhatsApp wa_id, recipients).
_PHONE_KEY = re.compile(r"phone|msisdn|wa_id|recipient|(^|[._])to$|mobile", re.IGNORECASE)

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]+(?::[^/\s@]*)?@")
_BEARER = re.compile(r"\b(?P<scheme>Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)
# International: +country then 7-14 more digits with optional separators. Local: groups of digits
# joined by separators, optionally with an area code in parentheses (0414-555-1234, (212) 555 1234).
_PHONE = re.compile(
    r"(?<![\w.+])(?:\+\d{1,3}[\s.-]?(?:\(?\d{1,4}\)?[\s.-]?)?\d{2,4}[\s.-]?\d{2,4}(?:[\s.-]?\d{2,4})?"
    r"|(?:\(\d{2,4}\)\s?|\d{3,4}[\s.-])\d{3,4}[\s.-]\d{2,4}(?:[\s.-]\d{2,4})?)(?![\w.])"
)
_DIGITS_PHONE = re.compile(r"^\+?\d{8,15}$")
# A credential-named field inside serialized data (JSON, a dict's repr): "password": "...".
_QUOTED_CREDENTIAL = re.compile(
    r"""(?i)(?P<key>["'][^"'\n]{0,40}?(?:password|passwd|secret|token|api[-_]?key|cookie|authorization)"""
    r"""[^"'\n]{0,40}?["']\s*:\s*)(?P<q>["'])(?:\\.|(?!(?P=q)).){0,4096}?(?P=q)"""
)
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
# One cheap scan that says whether the token, card or phone detectors could match at all: they need
# a scheme word, or 7+ digits and separators between two digits. Most values have neither.
_MAYBE_TOKEN_OR_NUMBER = re.compile(r"\d[\d\s().+-]{5,}\d|(?i:bearer|basic|token)\s")
_SAFE, _CREDENTIAL, _PHONE_VALUE, _TEXT = range(4)
# Bounded caches: attribute keys are few and short values repeat (routes, methods, span names).
_MAX_KEYS = 4096
_MEMO_SIZE = 4096
_MEMO_MAX_TEXT = 256


def _luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _redact_phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    low, high = (8, 15) if text.startswith("+") else (7, 12)  # E.164 allows 15; local numbers are shorter
    return "[REDACTED:phone]" if low <= digits <= high else text


def _redact_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[REDACTED:card]" if 13 <= len(digits) <= 19 and _luhn_ok(digits) else match.group(0)


@dataclass(frozen=True)
class RedactionPolicy:
    """What to remove before telemetry leaves the process.

    `secret_params`: URL query parameters whose values are secrets (extended, not replaced, by
    `extra_secret_params`). `credential_keys`: attribute-name fragments whose whole value is a
    credential. `safe_keys`: attributes never inspected. The flags switch whole detectors.
    """

    extra_secret_params: Iterable[str] = ()
    secret_params: frozenset[str] = DEFAULT_SECRET_PARAMS
    credential_keys: Sequence[str] = DEFAULT_CREDENTIAL_KEYS
    safe_keys: frozenset[str] = DEFAULT_SAFE_KEYS
    emails: bool = True
    phones: bool = True
    cards: bool = True
    enabled: bool = True
    _query: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _key_kinds: dict[str, int] = field(init=False, repr=False, compare=False)
    _memo: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = sorted({p.lower() for p in self.secret_params} | {p.lower() for p in self.extra_secret_params})
        alternatives = "|".join(re.escape(n) for n in names)
        # Matches `name=value` inside a query string or a form-encoded body.
        pattern = re.compile(rf"(?P<lead>(?:^|[?&;\s])(?:{alternatives})=)[^&#;\s\"']*", re.IGNORECASE)
        object.__setattr__(self, "_query", pattern)
        object.__setattr__(self, "credential_keys", tuple(k.lower() for k in self.credential_keys))
        object.__setattr__(self, "_key_kinds", {})
        object.__setattr__(self, "_memo", {})

    # -- text and values --------------------------------------------------------------------
    def redact_text(self, text: str) -> str:
        if not self.enabled or not text:
            return text
        done = self._memo.get(text)
        if done is None:
            done = self._redact_text(text)
            if len(text) <= _MEMO_MAX_TEXT:
                if len(self._memo) >= _MEMO_SIZE:
                    self._memo.clear()
                self._memo[text] = done
        return done

    def _redact_text(self, text: str) -> str:
        if "=" in text:
            text = self._query.sub(r"\g<lead>[REDACTED:secret]", text)
        if "://" in text:
            text = _USERINFO.sub(r"\g<scheme>[REDACTED:userinfo]@", text)
        if ":" in text and ('"' in text or "'" in text):
            text = _QUOTED_CREDENTIAL.sub(r"\g<key>\g<q>[REDACTED:credential]\g<q>", text)
        if not _MAYBE_TOKEN_OR_NUMBER.search(text):
            return _EMAIL.sub("[REDACTED:email]", text) if self.emails and "@" in text else text
        text = _BEARER.sub(lambda m: f"{m.group('scheme')} [REDACTED:token]", text)
        if self.emails and "@" in text:
            text = _EMAIL.sub("[REDACTED:email]", text)
        if self.cards:
            text = _CARD.sub(_redact_card, text)
        if self.phones:
            text = _PHONE.sub(_redact_phone, text)
        return text

    def _kind(self, key: str) -> int:
        kind = self._key_kinds.get(key)
        if kind is None:
            if key in self.safe_keys:
                kind = _SAFE
            elif any(fragment in key.lower() for fragment in self.credential_keys):
                kind = _CREDENTIAL
            elif _PHONE_KEY.search(key):
                kind = _PHONE_VALUE
            else:
                kind = _TEXT
            if len(self._key_kinds) < _MAX_KEYS:
                self._key_kinds[key] = kind
        return kind

    def redact_value(self, key: str, value: Any) -> Any:
        if not self.enabled:
            return value
        kind = self._kind(key)
        if kind == _SAFE:
            return value
        if kind == _CREDENTIAL:
            return "[REDACTED:credential]"
        if isinstance(value, str):
            if kind == _PHONE_VALUE and self.phones and _DIGITS_PHONE.match(value.strip()):
                return "[REDACTED:phone]"
            return self.redact_text(value)
        if isinstance(value, (tuple, list)):
            return tuple(self.redact_value(key, item) for item in value)
        if isinstance(value, Mapping):
            return {k: self.redact_value(str(k), v) for k, v in value.items()}
        return value

    def redact_attributes(self, attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """A redacted copy, or None when nothing had to change (the caller keeps the original).

        The common case (a known key, a short string seen before) is inlined: this runs for every
        attribute of every exported span and log record.
        """
        if not attributes or not self.enabled:
            return None
        kinds, memo = self._key_kinds, self._memo
        result: dict[str, Any] | None = None
        # .copy() on the SDK's attribute view is one locked copy; iterating it takes the lock per item.
        items = attributes.copy() if hasattr(attributes, "copy") else attributes
        for key, value in items.items():
            kind = kinds.get(key)
            if kind is None:
                kind = self._kind(key)
            if kind == _SAFE:
                continue
            if kind == _TEXT and value.__class__ is str:
                new = memo.get(value)
                if new is None:
                    new = self.redact_text(value)
            elif kind == _TEXT and isinstance(value, (bool, int, float)):
                continue
            else:
                new = self.redact_value(key, value)
            if new is not value and new != value:
                if result is None:
                    result = dict(attributes)
                result[key] = new
        return result


NO_REDACTION = RedactionPolicy(enabled=False)


# -- the export side ----------------------------------------------------------------------------
def _redact_span(span: ReadableSpan, policy: RedactionPolicy) -> ReadableSpan:
    attributes = policy.redact_attributes(span.attributes)
    name = policy.redact_text(span.name)
    status = span.status
    description = policy.redact_text(status.description) if status.description else status.description
    events = span.events
    new_events = []
    events_changed = False
    for event in events:
        redacted = policy.redact_attributes(event.attributes)
        if redacted is None:
            new_events.append(event)
        else:
            events_changed = True
            new_events.append(Event(event.name, redacted, event.timestamp))
    if attributes is None and name == span.name and description == status.description and not events_changed:
        return span
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes if attributes is None else attributes,
        events=tuple(new_events),
        links=span.links,
        kind=span.kind,
        status=Status(status.status_code, description),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _redact_log(readable: ReadableLogRecord, policy: RedactionPolicy) -> ReadableLogRecord:
    record = readable.log_record
    body = record.body
    if isinstance(body, str):
        new_body: Any = policy.redact_text(body)
    elif isinstance(body, Mapping):
        new_body = policy.redact_value("body", body)
    else:
        new_body = body
    attributes = policy.redact_attributes(record.attributes)
    if attributes is None and new_body == body:
        return readable
    copy = LogRecord(
        timestamp=record.timestamp,
        observed_timestamp=record.observed_timestamp,
        context=record.context,
        # Explicitly: the exporters read these fields, and `context` alone does not always carry them.
        trace_id=record.trace_id,
        span_id=record.span_id,
        trace_flags=record.trace_flags,
        severity_text=record.severity_text,
        severity_number=record.severity_number,
        body=new_body,
        attributes=record.attributes if attributes is None else attributes,
        event_name=record.event_name,
    )
    return ReadableLogRecord(copy, readable.resource, readable.instrumentation_scope, readable.limits)


class RedactingSpanExporter(SpanExporter):
    """Applies a policy to each batch on the export thread, then hands it to the real exporter."""

    def __init__(self, inner: SpanExporter, policy: RedactionPolicy) -> None:
        self._inner = inner
        self._policy = policy

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([_redact_span(span, self._policy) for span in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class RedactingLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, policy: RedactionPolicy) -> None:
        self._inner = inner
        self._policy = policy

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return self._inner.export([_redact_log(record, self._policy) for record in batch])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
