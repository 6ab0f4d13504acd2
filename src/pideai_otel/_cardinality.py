"""The metric cardinality guard: unbounded identifiers never become a metric attribute.

`init_telemetry` installs `metric_views()` by default; the domain helpers also filter their own
attributes with FORBIDDEN_METRIC_KEYS before recording.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from opentelemetry.sdk.metrics.view import View

__all__ = ["FORBIDDEN_METRIC_KEYS", "metric_views"]

# Unbounded identifiers: never a metric attribute.
FORBIDDEN_METRIC_KEYS: frozenset[str] = frozenset(
    {"user_id", "order_id", "session_id", "request_id", "enduser.id", "messaging.message.id"}
)


class _AllKeysExcept:
    """Stands in for View(attribute_keys=...): holds every key except the forbidden ones.

    The SDK's View only takes an allowlist, applied as `key in attribute_keys`; this object answers
    that test as a denylist, so one wildcard View can guard every instrument without knowing its
    keys. tests/test_domain_metrics.py pins this behaviour against the installed SDK.
    """

    __slots__ = ("_denied",)

    def __init__(self, denied: frozenset[str]) -> None:
        self._denied = denied

    def __contains__(self, key: object) -> bool:
        return key not in self._denied

    def __repr__(self) -> str:
        return f"<all attribute keys except {sorted(self._denied)}>"


def metric_views(denied: Sequence[str] = tuple(FORBIDDEN_METRIC_KEYS)) -> list[View]:
    """SDK Views that strip the forbidden keys from every instrument's attributes.

    One wildcard View matches all instruments. The SDK makes one stream per matching View, so any
    other View the kit installs would add a second, unguarded stream for the instruments it
    matches: install these alone (bucket choices travel as instrument advice instead).
    """
    keys = cast(set[str], _AllKeysExcept(frozenset(denied)))
    return [View(instrument_name="*", attribute_keys=keys)]
