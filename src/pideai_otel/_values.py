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
_MAX_TEXT = 16 * 1024  # a single attribute never grows a record past Better Stack's 100 KiB advice


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return repr(value)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 14] + "...[truncated]"


def to_attribute_value(value: Any) -> str | bool | int | float | tuple[Any, ...]:
    if isinstance(value, _PRIMITIVES):
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            return str(value)  # OTLP ints are 64-bit
        return _clip(value) if isinstance(value, str) else value
    if value is None:
        return "null"
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)) and value:
        kinds = {type(item) for item in value}
        if len(kinds) == 1 and next(iter(kinds)) in _PRIMITIVES:
            return tuple(value)
    if not (isinstance(value, (Mapping, list, tuple, set, frozenset)) or dataclasses.is_dataclass(value)):
        try:
            return _clip(repr(value))
        except Exception:
            return f"<unrepresentable {type(value).__name__}>"
    try:
        return _clip(json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":")))
    except (TypeError, ValueError, RecursionError):
        try:
            return _clip(repr(value))
        except Exception:
            return f"<unrepresentable {type(value).__name__}>"


def to_attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key): to_attribute_value(value) for key, value in values.items()}
