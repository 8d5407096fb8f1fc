"""Devices that go quiet: a key that sends nothing for `silent_after` raises a `silent` event,
and its next reading a `back` event.

By arrival time (a silent device sends no timestamps). `silent_after = "auto"` learns each
key's typical interval (a moving average of the gaps between its readings) and calls it
silent after 10 of them, and never sooner than a minute. The state is per live key and
kept in memory only: after a restart, a key is watched again from its next reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeml.config import StreamConfig, parse_duration

__all__ = ["SilenceWatch"]

AUTO_INTERVALS = 10  # auto: silent after this many typical intervals ...
AUTO_FLOOR_S = 60.0  # ... and never sooner than this
_SMOOTHING = 0.1  # weight of the newest gap in the typical interval


@dataclass(slots=True)
class _Key:
    last: float  # arrival time of the newest reading
    interval: float | None = None  # the typical gap between readings (auto)
    silent_since: float | None = None


class SilenceWatch:
    def __init__(self, streams: dict[str, StreamConfig]) -> None:
        self.streams = streams
        self._keys: dict[tuple[str, str], _Key] = {}

    def seen(self, stream: str, key: str, arrival: float) -> dict[str, Any] | None:
        """A reading arrived; the fields of a `back` event if the key was silent."""
        k = self._keys.get((stream, key))
        if k is None:
            self._keys[(stream, key)] = _Key(arrival)
            return None
        gap = arrival - k.last
        back = None
        if k.silent_since is not None:
            back = {"stream": stream, "key": key, "seq": None, "ts": arrival,
                    "silent_for": round(gap, 1), "silent_since": k.silent_since}  # fmt: skip
            k.silent_since = None
        elif gap > 0:
            k.interval = gap if k.interval is None else k.interval + _SMOOTHING * (gap - k.interval)
        k.last = arrival
        return back

    def forget(self, stream: str, key: str) -> None:
        """An evicted key is not watched (bounded by max_live)."""
        self._keys.pop((stream, key), None)

    def check(self, now: float) -> list[dict[str, Any]]:
        """The fields of a `silent` event for each key that has just fallen silent."""
        events = []
        for (stream, key), k in self._keys.items():
            limit = self._limit(stream, k)
            if k.silent_since is None and limit is not None and now - k.last > limit:
                k.silent_since = now
                events.append({"stream": stream, "key": key, "seq": None, "ts": now,
                               "last_seen": k.last, "silent_after": round(limit, 1)})  # fmt: skip
        return events

    def _limit(self, stream: str, k: _Key) -> float | None:
        cfg = self.streams.get(stream)
        setting = "off" if cfg is None else cfg.silent_after
        if setting == "off":
            return None
        if setting != "auto":
            return parse_duration(setting)
        if k.interval is None:
            return None  # one reading only: no interval to judge by yet
        return max(AUTO_FLOOR_S, AUTO_INTERVALS * k.interval)
