"""The documented webhook shapes, checked just enough to find the event and its dedupe key.

Internal-integration envelope: `{action, installation: {uuid}, data: {...}, actor}`; the resource
comes from the `Sentry-Hook-Resource` header. `error` carries the full event in `data.error`,
`event_alert` in `data.event`, `issue` only the group in `data.issue` (no event, no trace id). The
legacy WebHooks plugin posts `{id, project, level, culprit, message, url, triggering_rules, event}`.
Anything beyond the few fields below is read leniently later: a wrong type there means "absent".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["KNOWN_RESOURCES", "Delivery", "PayloadError", "parse_delivery", "parse_legacy"]

KNOWN_RESOURCES = frozenset({"error", "event_alert", "issue"})

_MAX_ID_LENGTH = 128


class PayloadError(ValueError):
    """The body is not JSON or not the documented shape (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    resource: str  # error | event_alert | issue | legacy
    action: str
    dedupe_key: str
    event: dict[str, Any] | None  # the Sentry event, when the resource carries one
    issue: dict[str, Any] | None  # the group, for `issue` deliveries
    extra: dict[str, Any]  # envelope fields worth keeping (web_url, triggered_rule, installation)


def _load_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise PayloadError("body is not JSON") from exc
    if not isinstance(document, dict):
        raise PayloadError("body is not a JSON object")
    return document


def _object(parent: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise PayloadError(f"{where}.{key} is missing or not an object")
    return value


def _identifier(parent: dict[str, Any], key: str, where: str) -> str:
    value = parent.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PayloadError(f"{where}.{key} is missing")
    text = str(value)
    if not text or len(text) > _MAX_ID_LENGTH:
        raise PayloadError(f"{where}.{key} is empty or too long")
    return text


def parse_delivery(resource: str, body: bytes) -> Delivery:
    """An internal-integration delivery of a known resource, or PayloadError."""
    document = _load_object(body)
    action = document.get("action")
    if not isinstance(action, str) or not action:
        raise PayloadError("action is missing")
    data = _object(document, "data", "body")
    installation = document.get("installation")
    extra: dict[str, Any] = {}
    if isinstance(installation, dict) and isinstance(installation.get("uuid"), str):
        extra["installation"] = installation["uuid"]

    if resource == "issue":
        issue = _object(data, "issue", "data")
        issue_id = _identifier(issue, "id", "data.issue")
        for key in ("web_url", "url"):
            if isinstance(data.get(key), str):
                extra["web_url"] = data[key]
                break
        # A group has no event id; its lifecycle step is what a retry repeats.
        return Delivery(resource, action, f"issue:{issue_id}:{action}", None, issue, extra)

    key = "error" if resource == "error" else "event"
    event = _object(data, key, "data")
    event_id = _identifier(event, "event_id", f"data.{key}")
    if resource == "event_alert" and isinstance(data.get("triggered_rule"), str):
        extra["triggered_rule"] = data["triggered_rule"]
    # The same event may arrive as `error` and as one or more alert rules: one record per event.
    return Delivery(resource, action, f"event:{event_id}", event, None, extra)


def parse_legacy(body: bytes) -> Delivery:
    """A legacy WebHooks-plugin delivery (unsigned), or PayloadError."""
    document = _load_object(body)
    event = _object(document, "event", "body")
    event_id = _identifier(event, "event_id", "body.event")
    event = dict(event)
    # The plugin puts group-level fields next to the event; fold them in where the event lacks them.
    for source, target in (("culprit", "culprit"), ("level", "level"), ("message", "message")):
        if target not in event and isinstance(document.get(source), (str, int)):
            event[target] = document[source]
    if "issue_id" not in event and isinstance(document.get("id"), (str, int)):
        event["issue_id"] = str(document["id"])
    extra: dict[str, Any] = {}
    if isinstance(document.get("url"), str):
        extra["web_url"] = document["url"]
    rules = document.get("triggering_rules")
    if isinstance(rules, list) and rules and all(isinstance(rule, str) for rule in rules):
        extra["triggered_rule"] = ", ".join(rules)
    return Delivery("legacy", "triggered", f"event:{event_id}", event, None, extra)
