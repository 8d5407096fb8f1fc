"""What a stream reads: topic filters, key and field specs, value maps, time zones.

The checks behind `StreamConfig`'s payload keys (`topic`, `key`, `payload`, `field`,
`value_map`, `timestamp_tz`); each raises ValueError with the message the loader shows.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from typing import Any

__all__ = [
    "DEFAULT_VALUE_MAP",
    "MISSING_VALUES",
    "check_field",
    "check_filter",
    "check_filters",
    "check_key",
    "check_payload_rules",
    "check_timezone",
    "check_value_map",
]

# Text states devices publish, read case-insensitively; a stream can extend or replace it.
DEFAULT_VALUE_MAP: dict[str, float] = {
    "on": 1.0, "off": 0.0, "true": 1.0, "false": 0.0, "online": 1.0, "offline": 0.0,
    "open": 1.0, "closed": 0.0,
}  # fmt: skip
# What a device sends when it has no value (compared lower-case); the empty payload too.
MISSING_VALUES = frozenset({"nan", "unavailable", "unknown", "none", "null", ""})
# The decoder's range (edgeml.records.MAX_ABS_VALUE, which config must not import).
_MAX_ABS = 1e15
_MAX_MAP_ENTRIES = 1000
_MAX_TOPICS = 32


def check_filter(topic: str) -> str:
    """Validate an MQTT topic filter (wildcards allowed) by the rules of MQTT 3.1.1 §4.7."""
    if not topic or len(topic.encode()) > 65535 or "\0" in topic:
        raise ValueError(f"{topic!r} is not a valid MQTT topic filter")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"{topic!r}: '#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise ValueError(f"{topic!r}: '+' must be a whole level")
    return topic


def check_filters(v: str | tuple[str, ...]) -> str | tuple[str, ...]:
    """One filter, or a list of them (a stream that joins fields from several topics)."""
    if isinstance(v, str):
        return check_filter(v)
    if not 1 <= len(v) <= _MAX_TOPICS or len(set(v)) != len(v):
        raise ValueError(f"a list of 1 to {_MAX_TOPICS} different topic filters")
    for topic in v:
        check_filter(topic)
    return v


def _regex(pattern: str, group: str) -> None:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
    if group not in compiled.groupindex:
        raise ValueError(f"{pattern!r} has no named group (?P<{group}>...)")


def check_key(v: str | None) -> str | None:
    """`topic:N`, `field:NAME` or `regex:PATTERN` with a group named `key`."""
    if v is None:
        return v
    kind, _, arg = v.partition(":")
    if (kind == "topic" and arg.isdigit()) or (kind == "field" and arg):
        return v
    if kind == "regex" and arg:
        _regex(arg, "key")
        return v
    raise ValueError(
        f"{v!r} must be 'topic:N' (topic level N, from 0), 'field:NAME' or "
        "'regex:PATTERN' (a group named key, e.g. 'regex:zigbee2mqtt/(?P<key>.+)$')"
    )


def check_field(v: str | None) -> str | None:
    """`topic:N` or `regex:PATTERN` with a group named `field`: what a value payload feeds."""
    if v is None:
        return v
    kind, _, arg = v.partition(":")
    if kind == "topic" and arg.isdigit():
        return v
    if kind == "regex" and arg:
        _regex(arg, "field")
        return v
    raise ValueError(
        f"{v!r} must be 'topic:N' (topic level N names the field) or 'regex:PATTERN' "
        "(a group named field)"
    )


def check_value_map(v: dict[str, Any]) -> dict[str, Any]:
    if len(v) > _MAX_MAP_ENTRIES:
        raise ValueError(f"at most {_MAX_MAP_ENTRIES} entries")
    lowered: dict[str, Any] = {}
    for text, number in v.items():
        if not text.strip():
            raise ValueError("an empty text cannot be mapped (an empty payload is missing_value)")
        if text.strip().lower() in MISSING_VALUES:
            raise ValueError(f"{text!r} is a missing value and cannot be mapped to a number")
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise ValueError(f"{text!r} = {number!r}: a text state must map to a number")
        if not math.isfinite(number) or abs(number) > _MAX_ABS:
            raise ValueError(f"{text!r} = {number!r}: must be finite, within ±1e15")
        if text.strip().lower() in lowered:
            raise ValueError(f"{text!r} is mapped twice (the map ignores case)")
        lowered[text.strip().lower()] = number
    return v


def check_timezone(v: str) -> str:
    if v in ("UTC", "local"):
        return v
    try:
        zoneinfo.ZoneInfo(v)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{v!r} is not 'UTC', 'local' or an IANA time zone such as 'Europe/Berlin'"
        ) from None
    return v


def _level_check(name: str, spec: str | None, topic: str) -> None:
    if spec and spec.startswith("topic:"):
        level = int(spec[6:])
        levels = topic.split("/")
        if level >= len(levels) and "#" not in levels:
            raise ValueError(f"{name} {spec!r}: topic {topic!r} has only {len(levels)} levels")


def check_payload_rules(s: Any) -> None:
    """Rules across keys (`s`: the StreamConfig): topic levels, what a `payload = "value"`
    stream may name, and what a join needs.
    """
    for topic in s.topics:
        _level_check("key", s.key, topic)
        _level_check("field", s.field, topic)
    joins = s.join_window_s > 0
    if joins:
        if s.features is None:
            raise ValueError("features: a stream that joins (join_window) must list them")
        if s.task == "anomaly" and s.join_on != "any":
            raise ValueError('join_on: an anomaly stream has no target: use join_on = "any"')
    if s.payload == "json":
        if s.field is not None:
            raise ValueError('field: only a payload = "value" stream names its field by topic')
        return
    if s.key is not None and s.key.startswith("field:"):
        raise ValueError('key: a payload = "value" stream has no fields to key by')
    if s.timestamp is not None:
        raise ValueError('timestamp: a payload = "value" stream has no timestamp field')
    if s.features and not joins:
        raise ValueError(
            'features: a payload = "value" message carries one field: join them (join_window)'
        )
    if s.field is None and (s.task == "anomaly" or joins):
        raise ValueError("field: name the field of each value (topic:N or regex:...)")
