"""Values inside a payload: paths with array indices, numbers and text states, plain-value
payloads, timestamps and their time zone. Pure, no I/O; the decoder's building blocks.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

from edgeml.config.payloads import DEFAULT_VALUE_MAP, MISSING_VALUES
from edgeml.records import MAX_ABS_VALUE, RejectReason

__all__ = [
    "MISSING",
    "Path",
    "compile_path",
    "get",
    "number",
    "parse_value",
    "timestamp",
    "value_map",
    "zone",
]

# Epoch numbers above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973).
_MS_THRESHOLD = 1e11
_MAX_TS = 1e10  # the year 2286: anything later is a broken clock, not a reading time
_INDEXED = re.compile(r"^([^\[\]]*)((?:\[\d{1,9}\])+)$")
_INDEX = re.compile(r"\[(\d{1,9})\]")
_INT_TEXT = re.compile(r"^[+-]?[0-9]{1,16}$")
# Longer text is never a number, a state or a missing value: not worth lower-casing.
_MAX_STATE_LEN = 64


class _Missing:
    pass


MISSING: Any = _Missing()

# A dotted path as written, and its parts: names, and list indices from `[N]`.
Path = tuple[str, tuple[str | int, ...]]


def compile_path(path: str) -> Path:
    """`ENERGY.Power[1]` -> ("ENERGY", "Power", 1); `ENERGY.Power.1` also reads index 1."""
    parts: list[str | int] = []
    for part in path.split("."):
        m = _INDEXED.match(part)
        if m is None:
            parts.append(part)
            continue
        if m.group(1):
            parts.append(m.group(1))
        parts.extend(int(i) for i in _INDEX.findall(m.group(2)))
    return path, tuple(parts)


def get(obj: dict[str, Any], path: Path) -> Any:
    """The value at `path`, or MISSING; a key that itself contains dots is tried first."""
    whole, parts = path
    if whole in obj:
        return obj[whole]
    node: Any = obj
    for part in parts:
        if isinstance(node, dict):
            if part not in node:
                return MISSING
            node = node[part]
        elif isinstance(node, list):
            if isinstance(part, int):
                index = part
            elif part.isascii() and part.isdigit() and len(part) <= 9:
                index = int(part)
            else:
                return MISSING
            if index >= len(node):
                return MISSING
            node = node[index]
        else:
            return MISSING
    return node


def value_map(extra: Mapping[str, float], defaults: bool) -> dict[str, float]:
    """The text states of a stream, lower-case: the defaults (unless replaced) and its own."""
    out = dict(DEFAULT_VALUE_MAP) if defaults else {}
    out.update({k.strip().lower(): float(v) for k, v in extra.items()})
    return out


def _text(text: str, states: Mapping[str, float]) -> float | RejectReason:
    if len(text) > _MAX_STATE_LEN:
        return RejectReason.NON_NUMERIC
    t = text.strip().lower()
    if t in MISSING_VALUES:
        return RejectReason.MISSING_VALUE
    v = states.get(t)
    return RejectReason.NON_NUMERIC if v is None else v


def number(value: Any, states: Mapping[str, float]) -> float | RejectReason:
    """A finite float within range, or why not; text states go through `states`."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        try:
            f = float(value)
        except OverflowError:
            return RejectReason.NON_FINITE
        if not math.isfinite(f):
            return RejectReason.NON_FINITE
        return f if abs(f) <= MAX_ABS_VALUE else RejectReason.OUT_OF_RANGE
    if isinstance(value, str):
        return _text(value, states)
    return RejectReason.NON_NUMERIC


def parse_value(
    payload: bytes, max_bytes: int, states: Mapping[str, float]
) -> int | float | str | tuple[RejectReason, str]:
    """A plain-value payload (`21.5`, `ON`, `nan`) -> a number, a text (a class label), or
    (reason, detail). Integers stay integers, so they can be class labels.
    """
    if len(payload) > max_bytes:
        return RejectReason.TOO_LARGE, f"{len(payload)} bytes > {max_bytes}"
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        return RejectReason.NOT_UTF8, str(exc)[:120]
    if len(text) <= _MAX_STATE_LEN:
        lower = text.lower()
        if lower in MISSING_VALUES:
            return RejectReason.MISSING_VALUE, repr(text)
        state = states.get(lower)
        if state is not None:
            return state
        if _INT_TEXT.match(text):
            return int(text)
        if "_" not in text:  # float() reads 1_000 as 1000: not a reading
            try:
                return float(text)
            except ValueError:
                pass
    return text


def timestamp(value: Any, tz: tzinfo | None) -> float | None:
    """Epoch s or ms, or ISO 8601; a naive ISO time is in `tz` (None: the machine's zone)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            ts = float(value)
        except OverflowError:
            return None
        if ts > _MS_THRESHOLD:
            ts /= 1000.0
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
            if dt.tzinfo is None:
                dt = dt.astimezone() if tz is None else dt.replace(tzinfo=tz)
            ts = dt.timestamp()
        except (ValueError, OverflowError, OSError):
            return None
    else:
        return None
    return ts if math.isfinite(ts) and 0 < ts <= _MAX_TS else None


def zone(name: str) -> tzinfo | None:
    """`timestamp_tz` -> the tzinfo for naive times (None: the machine's local zone)."""
    if name == "UTC":
        return UTC
    if name == "local":
        return None
    return zoneinfo.ZoneInfo(name)
