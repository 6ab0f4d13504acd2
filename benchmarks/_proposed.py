"""A faster redaction policy, proposed for pideai_otel._redaction and measured here as `kit+proposed`.

Not used by the kit: P1 and P2 pass it to `_init(policy=...)` in an extra variant so the effect of
the change is measured in the same interleaved rounds as the shipped code. It produces the same
output as `RedactionPolicy` (checked by `python -m benchmarks._proposed`, a randomized comparison),
with four changes:
  1. each attribute key is classified once (safe / credential / phone / text) and remembered, instead
     of lower-casing it and scanning every credential fragment on every value;
  2. one cheap scan decides whether the token, card and phone detectors can match at all (they need
     a token scheme word, or a run of 7+ digits and separators); most values have neither;
  3. the result for a short text is remembered in a bounded memo (values repeat: routes, methods,
     span names, enum-like fields), so a repeated value costs one dict lookup;
  4. the kit's own code-location attributes (code.file.path, code.function.name, logger.name,
     thread.name) are safe keys: they come from the source tree, never from users.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pideai_otel import _redaction as R
from pideai_otel._redaction import DEFAULT_SAFE_KEYS, RedactionPolicy

CODE_LOCATION_KEYS = frozenset({"code.file.path", "code.function.name", "logger.name", "thread.name"})
# A scheme word the token detector looks for, or 7+ chars of digits/separators between two digits
# (the shortest phone or card the detectors accept has 7 digits).
_MAYBE_TOKEN_OR_NUMBER = re.compile(r"\d[\d\s().+-]{5,}\d|(?i:bearer|basic|token)\s")
_SAFE, _CREDENTIAL, _PHONE_KEY, _TEXT = range(4)
_MAX_KEYS = 4096  # bounded: attribute keys are few, but a careless caller could make them unbounded
# Redacted text is remembered: routes, methods, span names and enum-like values repeat constantly.
# Only short texts, and the memo is emptied when full, so memory stays bounded (~4096 x 2 x 256 chars).
_MEMO_SIZE = 4096
_MEMO_MAX_TEXT = 256


class ProposedRedactionPolicy(RedactionPolicy):
    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "_key_kinds", {})
        object.__setattr__(self, "_memo", {})

    def _kind(self, key: str) -> int:
        kind = self._key_kinds.get(key)
        if kind is None:
            lowered = key.lower()
            if key in self.safe_keys:
                kind = _SAFE
            elif any(fragment in lowered for fragment in self.credential_keys):
                kind = _CREDENTIAL
            elif R._PHONE_KEY.search(key):
                kind = _PHONE_KEY
            else:
                kind = _TEXT
            if len(self._key_kinds) < _MAX_KEYS:
                self._key_kinds[key] = kind
        return kind

    def redact_text(self, text: str) -> str:
        if not self.enabled or not text:
            return text
        memo = self._memo
        done = memo.get(text)
        if done is None:
            done = self._redact_text(text)
            if len(text) <= _MEMO_MAX_TEXT:
                if len(memo) >= _MEMO_SIZE:
                    memo.clear()
                memo[text] = done
        return done

    def _redact_text(self, text: str) -> str:
        if "=" in text:
            text = self._query.sub(r"\g<lead>[REDACTED:secret]", text)
        if "://" in text:
            text = R._USERINFO.sub(r"\g<scheme>[REDACTED:userinfo]@", text)
        if not _MAYBE_TOKEN_OR_NUMBER.search(text):
            return R._EMAIL.sub("[REDACTED:email]", text) if self.emails and "@" in text else text
        text = R._BEARER.sub(lambda m: f"{m.group('scheme')} [REDACTED:token]", text)
        if self.emails and "@" in text:
            text = R._EMAIL.sub("[REDACTED:email]", text)
        if self.cards:
            text = R._CARD.sub(R._redact_card, text)
        if self.phones:
            text = R._PHONE.sub(R._redact_phone, text)
        return text

    def redact_value(self, key: str, value: Any) -> Any:
        if not self.enabled:
            return value
        kind = self._kind(key)
        if kind == _SAFE:
            return value
        if kind == _CREDENTIAL:
            return "[REDACTED:credential]"
        if isinstance(value, str):
            if kind == _PHONE_KEY and self.phones and R._DIGITS_PHONE.match(value.strip()):
                return "[REDACTED:phone]"
            return self.redact_text(value)
        if isinstance(value, (tuple, list)):
            return tuple(self.redact_value(key, item) for item in value)
        if isinstance(value, Mapping):
            return {k: self.redact_value(str(k), v) for k, v in value.items()}
        return value


def proposed_policy() -> ProposedRedactionPolicy:
    return ProposedRedactionPolicy(safe_keys=DEFAULT_SAFE_KEYS | CODE_LOCATION_KEYS)


def _compare(cases: int = 200_000) -> int:
    """Randomized check that the proposal redacts text exactly as the shipped policy does."""
    import random

    pieces = ["Bearer ", "basic ", "TOKEN ", "token=", "+", "(", ")", " ", "-", ".", "/", "a", "x", "@", "b.com", "=",
              "key=", "://", "u:p@", "4111", "1111", "0", "9", "58", "414", "555", "1234", "\n", "\t", "abcdefgh", "é"]  # fmt: skip
    keys = ["phone", "wa_id", "to", "x.to", "authorization", "note", "store_id", "Cookie", "mobile", "url.full", "msg"]
    shipped, proposed = RedactionPolicy(), ProposedRedactionPolicy()
    rng = random.Random(7)
    mismatches = 0
    for _ in range(cases):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 16)))
        key = rng.choice(keys)
        if shipped.redact_text(text) != proposed.redact_text(text) or shipped.redact_value(key, text) != proposed.redact_value(key, text):
            mismatches += 1
            if mismatches <= 5:
                print(f"mismatch for {key}={text!r}: {shipped.redact_value(key, text)!r} != {proposed.redact_value(key, text)!r}")
    print(f"{cases} random values, {mismatches} mismatches")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(_compare())
