"""Checks that run before a byte of the body is trusted: size, signature, timestamp.

Sentry signs the exact bytes it sends (compact JSON), so the HMAC is computed over the raw body;
re-serialising parsed JSON would not reproduce them. The timestamp header is not covered by the
signature, which makes the window a cheap filter against stale replays, not a proof; the event-id
dedupe is what stops a replay inside the window from producing a second record.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import AsyncIterator

__all__ = ["BodyTooLarge", "read_body", "signature_matches", "timestamp_fresh"]

# Bytes read and thrown away after deciding 413, so the client sees the answer instead of a
# connection reset (closing a socket with unread data makes the kernel send RST).
_DRAIN_LIMIT = 8 * 1024 * 1024


class BodyTooLarge(Exception):
    pass


async def read_body(stream: AsyncIterator[bytes], limit: int, declared_length: str | None) -> bytes:
    """The whole body, or BodyTooLarge as soon as more than `limit` bytes have arrived."""
    if declared_length is not None:
        try:
            declared = int(declared_length)
        except ValueError:
            declared = -1
        if declared > limit:
            await _drain(stream)
            raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            chunks.clear()
            await _drain(stream)
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _drain(stream: AsyncIterator[bytes]) -> None:
    drained = 0
    async for chunk in stream:
        drained += len(chunk)
        if drained > _DRAIN_LIMIT:
            return


def signature_matches(secret: bytes, body: bytes, header: str | None) -> bool:
    if not header:
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    # compare_digest wants both sides ASCII when given str; compare bytes so any header is safe.
    return hmac.compare_digest(expected.encode("ascii"), header.strip().lower().encode("utf-8", "replace"))


def timestamp_fresh(header: str | None, tolerance_s: float, now: float | None = None) -> bool:
    """Sentry sends `str(int(time()))`: Unix seconds. Missing or unparseable counts as stale."""
    if not header:
        return False
    try:
        sent = float(header.strip())
    except ValueError:
        return False
    if math.isnan(sent):
        return False
    current = time.time() if now is None else now
    return abs(current - sent) <= tolerance_s
