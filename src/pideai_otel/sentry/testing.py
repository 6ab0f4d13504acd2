"""Build Sentry webhook deliveries in the documented shape, signed like Sentry signs them.

For tests and demos: `body, headers = signed_delivery(secret, "error", error_payload(...))`.
The bytes are compact JSON, as Sentry sends them, and the signature covers exactly those bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

__all__ = [
    "encode",
    "error_event",
    "error_payload",
    "event_alert_payload",
    "issue_payload",
    "legacy_payload",
    "sign",
    "signed_delivery",
    "webhook_headers",
]


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def webhook_headers(secret: str, body: bytes, resource: str, *, timestamp: float | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Request-ID": uuid.uuid4().hex,
        "Sentry-Hook-Resource": resource,
        "Sentry-Hook-Timestamp": str(int(time.time() if timestamp is None else timestamp)),
        "Sentry-Hook-Signature": sign(secret, body),
    }


def signed_delivery(
    secret: str, resource: str, payload: dict[str, Any], *, timestamp: float | None = None
) -> tuple[bytes, dict[str, str]]:
    body = encode(payload)
    return body, webhook_headers(secret, body, resource, timestamp=timestamp)


def error_event(
    *,
    event_id: str | None = None,
    trace_id: str | None = None,
    span_id: str | None = None,
    level: str = "error",
    exc_type: str = "TypeError",
    exc_value: str = "order.items is undefined",
    tags: dict[str, str] | None = None,
    user: dict[str, Any] | None = None,
    release: str | None = "shop-web@1.4.2",
    environment: str | None = "production",
    timestamp: float | None = None,
    issue_id: str = "4507",
) -> dict[str, Any]:
    """An event as Sentry's `event.as_dict()` plus the webhook's `web_url` / `issue_id`."""
    event_id = event_id or uuid.uuid4().hex
    ts = time.time() if timestamp is None else timestamp
    all_tags = {"level": level, "environment": environment or "", "release": release or "", **(tags or {})}
    event: dict[str, Any] = {
        "event_id": event_id,
        "project": 1,
        "release": release,
        "dist": None,
        "platform": "javascript",
        "message": "",
        "datetime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + "+00:00",
        "timestamp": ts,
        "tags": [[k, v] for k, v in all_tags.items() if v],
        "level": level,
        "culprit": "checkout/submitOrder",
        "title": f"{exc_type}: {exc_value}",
        "location": "app/checkout.js",
        "metadata": {"type": exc_type, "value": exc_value, "filename": "app/checkout.js"},
        "exception": {
            "values": [
                {
                    "type": exc_type,
                    "value": exc_value,
                    "mechanism": {"type": "onerror", "handled": False},
                    "stacktrace": {
                        "frames": [
                            {"filename": "app/main.js", "function": "onClick", "lineno": 10},
                            {"filename": "app/checkout.js", "function": "submitOrder", "lineno": 42},
                        ]
                    },
                }
            ]
        },
        "contexts": {},
        "url": f"https://sentry.io/api/0/projects/pideai/shop-web/events/{event_id}/",
        "web_url": f"https://pideai.sentry.io/issues/{issue_id}/events/{event_id}/",
        "issue_url": f"https://sentry.io/api/0/organizations/pideai/issues/{issue_id}/",
        "issue_id": issue_id,
    }
    if environment is not None:
        event["environment"] = environment
    if user is not None:
        event["user"] = user
    if trace_id is not None:
        trace: dict[str, Any] = {"trace_id": trace_id, "op": "pageload", "type": "trace"}
        if span_id is not None:
            trace["span_id"] = span_id
        event["contexts"]["trace"] = trace
    return event


def _envelope(action: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "action": action,
        "installation": {"uuid": "7a485448-a9e2-4c85-8a3c-4f44175783c9"},
        "data": data,
        "actor": {"type": "application", "id": "sentry", "name": "Sentry"},
    }


def error_payload(event: dict[str, Any]) -> dict[str, Any]:
    return _envelope("created", {"error": event})


def event_alert_payload(event: dict[str, Any], rule: str = "Checkout errors") -> dict[str, Any]:
    return _envelope("triggered", {"event": event, "triggered_rule": rule})


def issue_payload(issue_id: str = "4507", action: str = "created", level: str = "error") -> dict[str, Any]:
    issue = {
        "id": issue_id,
        "shortId": "SHOP-WEB-3",
        "title": "TypeError: order.items is undefined",
        "culprit": "checkout/submitOrder",
        "level": level,
        "status": "resolved" if action == "resolved" else "unresolved",
        "project": {"id": "1", "name": "shop-web", "slug": "shop-web"},
        "metadata": {"type": "TypeError", "value": "order.items is undefined"},
        "firstSeen": "2026-08-01T10:00:00.000000Z",
        "lastSeen": "2026-08-01T10:05:00.000000Z",
    }
    return _envelope(
        action,
        {
            "issue": issue,
            "url": f"https://sentry.io/api/0/organizations/pideai/issues/{issue_id}/",
            "web_url": f"https://pideai.sentry.io/issues/{issue_id}/",
            "project_url": "https://pideai.sentry.io/issues/?project=1",
        },
    )


def legacy_payload(event: dict[str, Any]) -> dict[str, Any]:
    """The legacy WebHooks plugin body: group fields next to the raw event."""
    return {
        "id": str(event.get("issue_id", "4507")),
        "project": "shop-web",
        "project_name": "shop-web",
        "project_slug": "shop-web",
        "logger": None,
        "level": event.get("level", "error"),
        "culprit": event.get("culprit"),
        "message": event.get("title"),
        "url": "https://pideai.sentry.io/issues/4507/?referrer=webhooks_plugin",
        "triggering_rules": ["Checkout errors"],
        "event": event,
    }
