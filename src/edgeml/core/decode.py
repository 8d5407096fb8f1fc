"""MQTT topic + payload bytes -> Sample or Reject; pure, no I/O.

A payload is a JSON object (fields by dotted paths, `core.values`) or, for a
`payload = "value"` stream, one plain value whose field the topic names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from edgeml.config import StreamConfig
from edgeml.core.values import (
    MISSING,
    compile_path,
    get,
    number,
    parse_value,
    timestamp,
    value_map,
    zone,
)
from edgeml.records import MAX_ABS_VALUE, Label, Reject, RejectReason, Sample

__all__ = [
    "DEFAULT_KEY",
    "MAX_ABS_VALUE",
    "MAX_AUTO_FEATURES",
    "Decoder",
    "Partial",
    "decode_all",
    "output_key",
    "parse",
    "topic_matches",
]

DEFAULT_KEY = "default"
# With `features` omitted, a payload contributes at most this many numeric fields, and
# nested objects are followed this deep: a hostile payload must not create a huge model.
MAX_AUTO_FEATURES = 256
_MAX_DEPTH = 16
_MAX_LABEL = 64
_KEY_OK = re.compile(r"^[^/+#\x00-\x1f]{1,64}$")
# A key taken by a regex may hold `/` (zigbee2mqtt's `kitchen/floor_light`).
_REGEX_KEY_OK = re.compile(r"^[^+#\x00-\x1f]{1,64}$")


class Partial(NamedTuple):
    """What one message gives a stream that joins (`join_window`): some of its fields,
    each checked already (a number, or a label), waiting to be joined by `core.join`.
    """

    stream: str
    key: str
    ts: float
    fields: dict[str, float | Label]


def output_key(key: str) -> str:
    """A key as one level of an outgoing topic: each `/` becomes `__`."""
    return key.replace("/", "__") if "/" in key else key


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


class Decoder:
    """Decodes the payloads of one `[[stream]]`; holds only precomputed config, no state."""

    def __init__(self, stream: StreamConfig, max_payload_bytes: int = 65536) -> None:
        s = self.stream = stream
        self.name = stream.name
        self.max_payload_bytes = max_payload_bytes
        self.plain = stream.payload == "value"
        self.skip_retained = stream.retained == "skip"
        self._excluded = set(stream.excluded)
        self._numeric_target = stream.task in ("regression", "forecast")
        self._binary = stream.model == "logistic"
        self._states = value_map(stream.value_map, stream.value_map_defaults)
        self._tz = zone(stream.timestamp_tz)
        self._target = None if s.target is None else compile_path(s.target)
        label = s.target if s.task == "classification" else s.label
        self._label = None if label is None else compile_path(label)
        self._timestamp = None if s.timestamp is None else compile_path(s.timestamp)
        self._features = None if s.features is None else [compile_path(f) for f in s.features]
        self._key_path = None if s.key_field is None else compile_path(s.key_field)
        self._key_regex = _regex(s.key)
        self._field_regex = _regex(s.field)
        self._field_level = _level(s.field)
        self._value_name = s.target or "value"
        self.joins = s.join_window_s > 0
        self._filters = s.topics
        self._filter = s.topics[0] if len(s.topics) == 1 else None

    def matches(self, topic: str) -> bool:
        if self._filter is not None:
            return topic_matches(self._filter, topic)
        return any(topic_matches(f, topic) for f in self._filters)

    def decode(self, topic: str, payload: bytes, arrival: float) -> Sample | Partial | Reject:
        if self.plain:
            return self._plain(topic, payload, arrival)
        value = parse(payload, self.max_payload_bytes)
        if isinstance(value, Reject):
            return Reject(self.name, value.reason, value.detail)
        return self.extract(topic, value, arrival)

    def extract(self, topic: str, value: Any, arrival: float) -> Sample | Partial | Reject:
        """A parsed JSON value -> Sample or Reject (the JSON is parsed once for every stream);
        a Partial for a stream that joins.
        """
        s = self.stream
        if not isinstance(value, dict):
            return self._bare(topic, value, arrival)
        key = self._key(topic, value)
        if isinstance(key, Reject):
            return key
        if self.joins:
            return self._partial(key, value, arrival)
        y: float | None = None
        label: Label | None = None
        if self._numeric_target:
            assert self._target is not None  # the config requires it for these tasks
            whole = self._target[0]
            target = value[whole] if whole in value else get(value, self._target)
            if target is MISSING or target is None:
                return self._reject(RejectReason.MISSING_TARGET, self._target[0])
            y_or_why = number(target, self._states)
            if isinstance(y_or_why, RejectReason):
                return self._reject(y_or_why, self._target[0])
            y = y_or_why
        elif self._label is not None:
            # A classifier's label and an anomaly stream's ground truth may be absent: the
            # reading is still predicted (scored), and learned from as far as it can be.
            raw = get(value, self._label)
            if raw is not MISSING and raw is not None:
                checked = self._check_label(raw)
                if isinstance(checked, Reject):
                    return checked
                label = checked
        ts = arrival if self._timestamp is None else self._ts(value, arrival)
        if isinstance(ts, Reject):
            return ts
        if self._features is None:
            auto = self._auto_features(value)
            if isinstance(auto, Reject):
                return auto
            return Sample(s.name, key, ts, auto, y, label)
        x: dict[str, float] = {}
        for path in self._features:  # inline: this runs for every reading of every stream
            whole = path[0]
            raw = value[whole] if whole in value else get(value, path)
            if raw is MISSING or raw is None:
                return self._reject(RejectReason.MISSING_FEATURE, whole)
            v = number(raw, self._states)
            if isinstance(v, RejectReason):
                return self._reject(v, whole)
            x[whole] = v
        return Sample(s.name, key, ts, x, y, label)

    def _ts(self, value: dict[str, Any], arrival: float) -> float | Reject:
        if self._timestamp is None:
            return arrival
        raw_ts = get(value, self._timestamp)
        if raw_ts is MISSING or raw_ts is None:
            return arrival
        parsed = timestamp(raw_ts, self._tz)
        if parsed is None:
            return self._reject(RejectReason.BAD_TIMESTAMP, f"{self._timestamp[0]}={raw_ts!r}"[:80])
        return parsed

    def _partial(self, key: str, value: dict[str, Any], arrival: float) -> Partial | Reject:
        """The stream's fields this message holds, each checked; the rest come by the join."""
        ts = self._ts(value, arrival)
        if isinstance(ts, Reject):
            return ts
        fields: dict[str, float | Label] = {}
        wanted = [(self._target, self._numeric_target), (self._label, False)]
        wanted += [(path, True) for path in self._features or ()]
        for path, numeric in wanted:
            raw = MISSING if path is None else get(value, path)
            if raw is MISSING or raw is None or path is None:
                continue
            v = number(raw, self._states) if numeric else self._check_label(raw)
            if isinstance(v, Reject):
                return v
            if isinstance(v, RejectReason):
                return self._reject(v, path[0])
            fields[path[0]] = v
        if not fields:
            return self._reject(RejectReason.MISSING_FEATURE, "none of the stream's fields")
        return Partial(self.name, key, ts, fields)

    def _check_label(self, raw: Any) -> Label | Reject:
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
        y = number(value, self._states)
        if isinstance(y, RejectReason):
            return self._reject(y, "payload")
        key = self._key(topic, {})
        if isinstance(key, Reject):
            return key
        return Sample(s.name, key, arrival, {}, y)

    def _plain(self, topic: str, payload: bytes, arrival: float) -> Sample | Partial | Reject:
        """`payload = "value"`: one value (`21.5`, `ON`, `nan`), its field named by the topic."""
        raw = parse_value(payload, self.max_payload_bytes, self._states)
        if isinstance(raw, tuple):
            return self._reject(*raw)
        name = self._field(topic)
        if isinstance(name, Reject):
            return name
        # A class label or anomaly flag: `ON` (1.0) and `1.0` are the integer 1.
        label = self._label is not None and name == self._label[0]
        if label and isinstance(raw, float) and raw.is_integer() and abs(raw) <= MAX_ABS_VALUE:
            raw = int(raw)
        return self.extract(topic, {name: raw}, arrival)

    def _field(self, topic: str) -> str | Reject:
        """The field a plain value feeds: a topic level, a regex group, or the target."""
        if self._field_level is not None:
            levels = topic.split("/")
            if self._field_level < len(levels) and levels[self._field_level]:
                return levels[self._field_level]
        elif self._field_regex is not None:
            m = self._field_regex.search(topic)
            if m is not None and m.group("field"):
                return str(m.group("field"))
        else:
            return self._value_name
        return self._reject(RejectReason.MISSING_TARGET, f"topic {topic[:60]!r} names no field")

    def _key(self, topic: str, obj: dict[str, Any]) -> str | Reject:
        s = self.stream
        ok = _KEY_OK
        level = s.key_level  # a property that parses `key`: read it once
        if level is not None:
            levels = topic.split("/")
            if level >= len(levels):
                return self._reject(
                    RejectReason.BAD_KEY, f"topic {topic[:60]!r} has no level {level}"
                )
            key = levels[level]
        elif self._key_path is not None:
            raw = get(obj, self._key_path)
            if isinstance(raw, bool) or not isinstance(raw, str | int):
                return self._reject(RejectReason.BAD_KEY, f"{s.key_field} missing or not a string")
            key = str(raw)
        elif self._key_regex is not None:
            m = self._key_regex.search(topic)
            if m is None or m.group("key") is None:
                return self._reject(RejectReason.BAD_KEY, f"topic {topic[:60]!r}: no key")
            key, ok = m.group("key"), _REGEX_KEY_OK
        else:
            return DEFAULT_KEY
        if not ok.match(key):
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
                v = number(raw, self._states)
                if isinstance(v, RejectReason):
                    return self._reject(v, path)
                x[path] = v
                if len(x) >= MAX_AUTO_FEATURES:
                    break
        return x

    def _reject(self, reason: RejectReason, detail: str) -> Reject:
        return Reject(self.name, reason, detail)


def _regex(spec: str | None) -> re.Pattern[str] | None:
    return re.compile(spec[6:]) if spec and spec.startswith("regex:") else None


def _level(spec: str | None) -> int | None:
    return int(spec[6:]) if spec and spec.startswith("topic:") else None


def decode_all(
    decoders: Sequence[Decoder], topic: str, payload: bytes, arrival: float, retained: bool
) -> tuple[bool, list[Sample | Partial | Reject]]:
    """Every stream the topic matches -> its Sample or Reject (the JSON is parsed once);
    False first when no stream's filter matches.
    """
    value: Any = None
    parsed = False
    results: list[Sample | Partial | Reject] = []
    for decoder in decoders:
        if not decoder.matches(topic):
            continue
        if retained and decoder.skip_retained:
            results.append(Reject(decoder.name, RejectReason.RETAINED, "a retained state"))
        elif decoder.plain:
            results.append(decoder.decode(topic, payload, arrival))
        else:
            if not parsed:
                parsed = True
                value = parse(payload, decoder.max_payload_bytes)
            if isinstance(value, Reject):
                results.append(Reject(decoder.name, value.reason, value.detail))
            else:
                results.append(decoder.extract(topic, value, arrival))
    return bool(results), results
