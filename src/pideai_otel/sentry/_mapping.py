"""A Sentry delivery as the fields of one OTel log record.

Pure functions, run on the background path. Every read tolerates a missing or wrongly typed field;
only what `_payload` checked is guaranteed. No PII is copied: of `user` only the id is kept, and the
`user` tag is kept only when it is an id (Sentry fills it with `email:...` or `ip:...` otherwise).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    set_span_in_context,
)

from ._payload import Delivery

__all__ = ["LogFields", "to_log_fields"]

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
# The event's API url is the only place the project slug appears: /api/0/projects/{org}/{project}/events/
_PROJECT_IN_URL = re.compile(r"/projects/[^/]+/([^/]+)/events/")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")

_SEVERITY = {
    "fatal": (SeverityNumber.FATAL, "FATAL"),
    "error": (SeverityNumber.ERROR, "ERROR"),
    "warning": (SeverityNumber.WARN, "WARNING"),
    "info": (SeverityNumber.INFO, "INFO"),
    "debug": (SeverityNumber.DEBUG, "DEBUG"),
}
# Issue lifecycle notices are not errors themselves; `unresolved` is a regression and keeps the level.
_INFORMATIONAL_ISSUE_ACTIONS = frozenset({"resolved", "assigned", "archived", "ignored"})

# Attribute budget: the SDK keeps 128 per record and warns past that; fixed fields use about 25.
_MAX_TAGS = 64
_MAX_KEY = 128
_MAX_VALUE = 1024
_MAX_BODY = 4096
_MAX_FRAMES = 50
_MAX_STACK = 8192


@dataclass(frozen=True, slots=True)
class LogFields:
    body: str
    severity_number: SeverityNumber
    severity_text: str
    timestamp_ns: int
    context: Context
    attributes: dict[str, str | int | bool]
    correlated: bool
    event_name: str


def _str(value: Any, limit: int = _MAX_VALUE) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = str(value).strip()
    return text[:limit] if text else None


def _get(mapping: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def trace_context(event: dict[str, Any] | None) -> tuple[Context, bool]:
    """The event's `contexts.trace` as a remote parent context; (no-span context, False) without one."""
    trace_id = _str(_get(event, "contexts", "trace", "trace_id"))
    span_id = _str(_get(event, "contexts", "trace", "span_id"))
    trace_id = trace_id.lower() if trace_id else None
    if not trace_id or not _TRACE_ID.fullmatch(trace_id) or int(trace_id, 16) == 0:
        # INVALID_SPAN, not an empty Context: an empty one would fall back to the current context,
        # which may hold the span of the webhook request itself.
        return set_span_in_context(INVALID_SPAN), False
    span = 0
    if span_id and _SPAN_ID.fullmatch(span_id.lower()):
        span = int(span_id, 16)
    # Without a span id the record still carries the trace id and lands in the trace, unparented.
    span_context = SpanContext(
        trace_id=int(trace_id, 16),
        span_id=span,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return set_span_in_context(NonRecordingSpan(span_context)), True


def _timestamp_ns(event: dict[str, Any] | None, received_ns: int) -> int:
    value = _get(event, "timestamp")
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = value if isinstance(value, str) else _get(event, "datetime")
        if isinstance(text, str):
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
                # Sentry writes UTC; a naive string would otherwise be read as local time.
                seconds = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
            except (ValueError, OverflowError):
                seconds = None
    if seconds is None or not 0 < seconds < 4_102_444_800:  # before 2100
        return received_ns
    return int(seconds * 1e9)


def _tags(event: dict[str, Any] | None) -> dict[str, str]:
    raw = _get(event, "tags")
    pairs: list[tuple[Any, Any]] = []
    if isinstance(raw, list):
        pairs = [(item[0], item[1]) for item in raw if isinstance(item, (list, tuple)) and len(item) >= 2]
    elif isinstance(raw, dict):
        pairs = list(raw.items())
    tags: dict[str, str] = {}
    for key, value in pairs:
        name, text = _str(key, _MAX_KEY), _str(value)
        if name is None or text is None or name in tags:
            continue
        if len(tags) >= _MAX_TAGS:
            break
        tags[name] = text
    return tags


def _exception(event: dict[str, Any] | None) -> tuple[str | None, str | None, str | None]:
    values = _get(event, "exception", "values")
    if not isinstance(values, list) or not values or not isinstance(values[-1], dict):
        return _str(_get(event, "metadata", "type")), _str(_get(event, "metadata", "value")), None
    # Sentry lists chained exceptions oldest first; the last one is what was raised.
    outer = values[-1]
    kind, message = _str(outer.get("type")), _str(outer.get("value"))
    frames = _get(outer, "stacktrace", "frames")
    stack = None
    if isinstance(frames, list) and frames:
        lines = [f"{kind or 'Error'}: {message or ''}"]
        for frame in reversed(frames[-_MAX_FRAMES:]):  # newest first
            if not isinstance(frame, dict):
                continue
            where = _str(frame.get("filename")) or _str(frame.get("abs_path")) or _str(frame.get("module")) or "?"
            line = _str(frame.get("lineno"))
            lines.append(f"    at {_str(frame.get('function')) or '?'} ({where}{':' + line if line else ''})")
        stack = "\n".join(lines)[:_MAX_STACK]
    return kind, message, stack


def _body(event: dict[str, Any] | None, issue: dict[str, Any] | None, kind: str | None, message: str | None) -> str:
    source = event if event is not None else issue
    for candidate in (
        _get(source, "title"),
        _get(source, "message"),
        _get(source, "logentry", "formatted"),
        _get(source, "logentry", "message"),
    ):
        text = _str(candidate, _MAX_BODY)
        if text:
            return text
    if kind or message:
        return f"{kind or 'Error'}: {message or ''}".strip()
    return "Sentry event"


def _tenant(event: dict[str, Any] | None, tags: dict[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key in ("store_id", "user_id"):
        value = tags.get(key) or _str(_get(event, "user", key)) or _str(_get(event, "user", "data", key))
        if value:
            found[key] = value
    if "user_id" not in found:
        user_id = _str(_get(event, "user", "id"))
        user_tag = tags.get("user", "")
        if not user_id and user_tag.startswith("id:"):
            user_id = user_tag[3:] or None
        if user_id:
            found["user_id"] = user_id
    return found


def to_log_fields(delivery: Delivery, received_ns: int | None = None) -> LogFields:
    received = time.time_ns() if received_ns is None else received_ns
    event, issue = delivery.event, delivery.issue
    context, correlated = trace_context(event)

    level = (_str(_get(event if event is not None else issue, "level")) or "error").lower()
    severity_number, severity_text = _SEVERITY.get(level, _SEVERITY["error"])
    if issue is not None and delivery.action in _INFORMATIONAL_ISSUE_ACTIONS:
        severity_number, severity_text = _SEVERITY["info"]

    tags = _tags(event)
    kind, message, stack = _exception(event if event is not None else None)
    if issue is not None:
        kind = kind or _str(_get(issue, "metadata", "type"))
        message = message or _str(_get(issue, "metadata", "value"))

    attributes: dict[str, str | int | bool] = {
        "sentry.resource": delivery.resource,
        "sentry.action": delivery.action,
        "sentry.level": level,
    }

    def put(key: str, value: Any) -> None:
        text = _str(value)
        if text is not None:
            attributes[key] = text

    if event is not None:
        put("sentry.event_id", event.get("event_id"))
        put("sentry.issue_id", event.get("issue_id") or event.get("group_id"))
        put("sentry.web_url", event.get("web_url") or delivery.extra.get("web_url"))
        put("sentry.culprit", event.get("culprit"))
        put("sentry.release", event.get("release") or tags.get("release"))
        put("deployment.environment", event.get("environment") or tags.get("environment"))
        put("sentry.project_id", event.get("project"))
        api_url = event.get("url")
        slug = _PROJECT_IN_URL.search(api_url) if isinstance(api_url, str) else None
        put("sentry.project", slug.group(1) if slug else None)
        put("sentry.platform", event.get("platform"))
    if issue is not None:
        put("sentry.issue_id", issue.get("id"))
        put("sentry.issue.short_id", issue.get("shortId"))
        put("sentry.issue.status", issue.get("status"))
        put("sentry.web_url", delivery.extra.get("web_url") or issue.get("permalink"))
        put("sentry.culprit", issue.get("culprit"))
        put("sentry.project_id", _get(issue, "project", "id"))
        put("sentry.project", _get(issue, "project", "slug"))
    put("sentry.triggered_rule", delivery.extra.get("triggered_rule"))
    put("sentry.installation", delivery.extra.get("installation"))
    put("exception.type", kind)
    put("exception.message", message)
    if stack:
        attributes["exception.stacktrace"] = stack
    for key, value in tags.items():
        if key == "user" and not value.startswith("id:"):
            continue  # email:/ip:/username: forms are PII
        attributes[f"sentry.tag.{key}"] = value
    attributes.update(_tenant(event, tags))
    attributes["sentry.correlated"] = correlated

    return LogFields(
        body=_body(event, issue, kind, message),
        severity_number=severity_number,
        severity_text=severity_text,
        timestamp_ns=_timestamp_ns(event, received) if event is not None else received,
        context=context,
        attributes=attributes,
        correlated=correlated,
        event_name="sentry.issue" if issue is not None else "sentry.error",
    )
