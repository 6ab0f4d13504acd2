"""One conversion of arbitrary Python values into OpenTelemetry attribute values.

Used for log `extra` fields and the kit's own attributes, always on the export side. Nothing is
dropped and nothing warns: primitives pass through, homogeneous sequences of primitives stay
arrays, None becomes "null", and everything else becomes compact JSON (dataclasses as objects) or,
failing that, its `repr`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["to_attribute_value", "to_attributes"]

_PRIMITIVES = (str, bool, int, float)
MAX_ATTRIBUTE_LENGTH = 16 * 1024  # a single value never grows a record past Better Stack's 100 KiB advice
MAX_BODY_LENGTH = 64 * 1024
_MAX_ITEMS = 256
_INT64 = range(-(2**63), 2**63)


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not cost the whole record
        return f"<unrepresentable {type(value).__name__}>"


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=_safe_repr)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return _safe_repr(value)


def clip(text: str, limit: int = MAX_ATTRIBUTE_LENGTH) -> str:
    return text if len(text) <= limit else text[: limit - 14] + "...[truncated]"



def to_attribute_value(value: Any) -> str | bool | int | float | tuple[Any, ...]:
    if isinstance(value, _PRIMITIVES):
        if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
            return str(value)  # OTLP ints are 64-bit
        return clip(value) if isinstance(value, str) else value
    if value is None:
        return "null"
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)) and value:
        kinds = {type(item) for item in value}
        kind = next(iter(kinds))
        if len(kinds) == 1 and kind in _PRIMITIVES and len(value) <= _MAX_ITEMS:
            if kind is str:
                if sum(map(len, value)) <= MAX_ATTRIBUTE_LENGTH:
                    return tuple(value)
            elif kind is not int or all(item in _INT64 for item in value):
                return tuple(value)
    if not (isinstance(value, (Mapping, list, tuple, set, frozenset)) or dataclasses.is_dataclass(value)):
        return clip(_safe_repr(value))
    try:
        return clip(json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":")))
    except Exception:  # circular data, keys json cannot use...: fall back to the repr
        return clip(_safe_repr(value))


def to_attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key): to_attribute_value(value) for key, value in values.items()}
