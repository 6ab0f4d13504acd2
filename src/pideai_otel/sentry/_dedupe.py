"""A bounded memory of recently seen delivery keys (LRU order, each entry expiring after a TTL)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["Deduper"]


class Deduper:
    """`first_time(key)` is True once per key per TTL; at most `max_entries` keys are remembered."""

    __slots__ = ("_clock", "_lock", "_max", "_seen", "_ttl")

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()  # key -> expiry, oldest first
        self._lock = threading.Lock()

    def first_time(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            expiry = self._seen.get(key)
            if expiry is not None and expiry > now:
                return False
            self._seen[key] = now + self._ttl
            self._seen.move_to_end(key)
            # Same TTL for all, so insertion order is expiry order: expired keys sit at the front.
            while self._seen:
                oldest_key, oldest_expiry = next(iter(self._seen.items()))
                if oldest_expiry > now and len(self._seen) <= self._max:
                    break
                del self._seen[oldest_key]
            return True

    def __len__(self) -> int:
        return len(self._seen)
