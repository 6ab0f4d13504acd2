"""In-process counters behind GET /sentry/stats (the OTel counters carry the same facts out)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

__all__ = ["BridgeStats"]


class BridgeStats:
    """Thread-safe: requests count on the event loop, emits on the background thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, Any]:
        """Flat `a.b` names become nested objects: {"rejected": {"401": 3}, ...}."""
        with self._lock:
            items = sorted(self._counts.items())
        tree: dict[str, Any] = {}
        for name, value in items:
            *parents, leaf = name.split(".")
            node = tree
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return tree
