"""MQTT topic + payload bytes -> Sample or Reject; pure, no I/O."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from edgeml.config import StreamConfig
from edgeml.records import MAX_ABS_VALUE, Label, Reject, RejectReason, Sample

__all__ = ["DEFAULT_KEY", "MAX_ABS_VALUE", "MAX_AUTO_FEATURES", "Decoder", "parse", "topic_matches"]

DEFAULT_KEY = "default"
# With `features` omitted, a payload contributes at most this many numeric fields, and
# nested objects are followed this deep: a hostile payload must not create a huge model.
MAX_AUTO_FEATURES = 256
_MAX_DEPTH = 16
# Epoch numbers above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973).
_MS_THRESHOLD = 1e11
_MAX_TS = 1e10  # the year 2286: anything later is a broken clock, not a reading time
_MAX_LABEL = 64
_KEY_OK = re.compile(r"^[^/+#\x00-\x1f]{1,64}$")


class _Missing:
    pass


_MISSING = _Missing()


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (`+` one level, `#` the rest); `$` topics never match wildcards."""
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels) or (f != "+" and f != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


def parse(payload: bytes, max_bytes: int) -> Any | Reject:
    """Bytes -> a JSON value, or a Reject with the stream left empty (filled in by the caller)."""
    if len(payload) > max_bytes:
        return Reject("", RejectReason.TOO_LARGE, f"{len(payload)} bytes > {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Reject("", RejectReason.NOT_UTF8, str(exc)[:120])
    try:
        return json.loads(text)
    except RecursionError:
        return Reject("", RejectReason.TOO_DEEP, "JSON nested too deeply")
    except ValueError as exc:
        return Reject("", RejectReason.NOT_JSON, str(exc)[:120])


def _get(obj: dict[str, Any], path: str) -> Any:
    """A dotted path into nested objects; a key that itself contains dots is tried first."""
    if path in obj:
        return obj[path]
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _number(value: Any) -> float | RejectReason:
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
    return RejectReason.NON_NUMERIC


def _timestamp(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            ts = float(value)
        except OverflowError:
            return None
        if ts > _MS_THRESHOLD:
            ts /= 1000.0
        if ts > _MAX_TS:
            return None
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ts = dt.timestamp()
        if ts > _MAX_TS:
            return None
    else:
        return None
    return ts if math.isfinite(ts) and ts > 0 else None


class Decoder:
    """Decodes the payloads of one `[[stream]]`; holds only precomputed config, no state."""

    def __init__(self, stream: StreamConfig, max_payload_bytes: int = 65536) -> None:
        self.stream = stream
        self.name = stream.name
        self.max_payload_bytes = max_payload_bytes
        self._excluded = set(stream.excluded)
        self._numeric_target = stream.task in ("regression", "forecast")
        self._binary = stream.model == "logistic"

    def matches(self, topic: str) -> bool:
        return topic_matches(self.stream.topic, topic)

    def decode(self, topic: str, payload: bytes, arrival: float) -> Sample | Reject:
        value = parse(payload, self.max_payload_bytes)
        if isinstance(value, Reject):
            return Reject(self.name, value.reason, value.detail)
        return self.extract(topic, value, arrival)

    def extract(self, topic: str, value: Any, arrival: float) -> Sample | Reject:
        """A parsed JSON value -> Sample or Reject (the JSON is parsed once for every stream)."""
        s = self.stream
        if not isinstance(value, dict):
            return self._bare(topic, value, arrival)
        key = self._key(topic, value)
        if isinstance(key, Reject):
            return key
        y: float | None = None
        label: Label | None = None
        if self._numeric_target:
            assert s.target is not None  # the config requires it for these tasks
            target = _get(value, s.target)
            if target is _MISSING or target is None:
                return self._reject(RejectReason.MISSING_TARGET, s.target)
            number = _number(target)
            if isinstance(number, RejectReason):
                return self._reject(number, s.target)
            y = number
        else:
            # A classifier's label and an anomaly stream's ground truth may be absent: the
            # reading is still predicted (scored), and learned from as far as it can be.
            field = s.target if s.task == "classification" else s.label
            raw = _MISSING if field is None else _get(value, field)
            if raw is not _MISSING and raw is not None:
                checked = self._label(raw)
                if isinstance(checked, Reject):
                    return checked
                label = checked
        ts = arrival
        if s.timestamp is not None:
            raw_ts = _get(value, s.timestamp)
            if raw_ts is not _MISSING and raw_ts is not None:
                parsed = _timestamp(raw_ts)
                if parsed is None:
                    return self._reject(
                        RejectReason.BAD_TIMESTAMP, f"{s.timestamp}={raw_ts!r}"[:80]
                    )
                ts = parsed
        if s.features is None:
            x = self._auto_features(value)
            if isinstance(x, Reject):
                return x
        else:
            x = {}
            for path in s.features:
                raw = _get(value, path)
                if raw is _MISSING or raw is None:
                    return self._reject(RejectReason.MISSING_FEATURE, path)
                v = _number(raw)
                if isinstance(v, RejectReason):
                    return self._reject(v, path)
                x[path] = v
        return Sample(s.name, key, ts, x, y, label)

    def _label(self, raw: Any) -> Label | Reject:
        """true/false, an integer or a short string; binary (0/1 is bool) where it must be."""
        field = self.stream.target or self.stream.label or ""
        if self.stream.task == "anomaly" or self._binary:
            if isinstance(raw, bool) or (isinstance(raw, int) and raw in (0, 1)):
                return bool(raw)
            why = "not true/false or 0/1"
        elif (
            isinstance(raw, bool)
            or (isinstance(raw, int) and abs(raw) <= MAX_ABS_VALUE)
            or (isinstance(raw, str) and 0 < len(raw) <= _MAX_LABEL)
        ):
            return raw
        else:
            why = "not a bool, an integer or a short string"
        return self._reject(RejectReason.BAD_LABEL, f"{field}={raw!r}"[:60] + f": {why}")

    def _bare(self, topic: str, value: Any, arrival: float) -> Sample | Reject:
        """A bare number (`21.5`, `true`) is the target of a stream that has no features."""
        s = self.stream
        if (
            not isinstance(value, int | float)
            or s.features
            or s.key_field
            or not self._numeric_target
        ):
            return self._reject(RejectReason.NOT_OBJECT, type(value).__name__)
        y = _number(value)
        if isinstance(y, RejectReason):
            return self._reject(y, "payload")
        key = self._key(topic, {})
        if isinstance(key, Reject):
            return key
        return Sample(s.name, key, arrival, {}, y)

    def _key(self, topic: str, obj: dict[str, Any]) -> str | Reject:
        s = self.stream
        if s.key_level is not None:
            levels = topic.split("/")
            if s.key_level >= len(levels):
                return self._reject(
                    RejectReason.BAD_KEY, f"topic {topic!r} has no level {s.key_level}"
                )
            key = levels[s.key_level]
        elif s.key_field is not None:
            raw = _get(obj, s.key_field)
            if isinstance(raw, bool) or not isinstance(raw, str | int):
                return self._reject(RejectReason.BAD_KEY, f"{s.key_field} missing or not a string")
            key = str(raw)
        else:
            return DEFAULT_KEY
        if not _KEY_OK.match(key):
            return self._reject(RejectReason.BAD_KEY, f"{key[:40]!r} cannot be a topic level")
        return key

    def _auto_features(self, obj: dict[str, Any]) -> dict[str, float] | Reject:
        x: dict[str, float] = {}
        stack: list[tuple[str, dict[str, Any], int]] = [("", obj, 0)]
        while stack and len(x) < MAX_AUTO_FEATURES:
            prefix, node, depth = stack.pop()
            for name, raw in node.items():
                path = f"{prefix}{name}"
                if path in self._excluded:
                    continue
                if isinstance(raw, dict):
                    if depth < _MAX_DEPTH:
                        stack.append((f"{path}.", raw, depth + 1))
                    continue
                if not isinstance(raw, bool | int | float):
                    continue  # strings, lists and nulls are not features unless listed
                v = _number(raw)
                if isinstance(v, RejectReason):
                    return self._reject(v, path)
                x[path] = v
                if len(x) >= MAX_AUTO_FEATURES:
                    break
        return x

    def _reject(self, reason: RejectReason, detail: str) -> Reject:
        return Reject(self.name, reason, detail)
