"""`dedupe = "identical"`: a reading equal to its key's previous one is a `duplicate`.

zigbee2mqtt (with `cache_state`) re-sends every attribute in each message, and Home
Assistant re-publishes every state when it restarts: the same reading arrives again. A
sample is a repeat when its target, label and features equal the previous sample of its
stream/key and its timestamp does not advance; for a stream without a `timestamp` field the
time is the arrival time, which says nothing about the device, so equal values decide.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from edgeml.config import StreamConfig
from edgeml.records import Label, Reject, RejectReason, Sample

__all__ = ["Repeats"]

_Last = tuple[float, dict[str, float], float | None, Label | None]


class Repeats:
    """The last learned reading of each stream/key, at most `limit` of them (the least
    recently seen is forgotten first: its next repeat is learned once more).
    """

    def __init__(self, streams: Iterable[StreamConfig], limit: int) -> None:
        # The streams with dedupe = "identical" -> whether they read a timestamp field.
        self.streams = {s.name: s.timestamp is not None for s in streams
                        if s.dedupe == "identical"}  # fmt: skip
        self.limit = limit
        self._last: collections.OrderedDict[tuple[str, str], _Last] = collections.OrderedDict()

    def mark(self, results: list[Sample | Reject | None]) -> list[Sample | Reject | None]:
        """Each sample that repeats its key's last one becomes a `duplicate` reject; nothing
        is remembered here (`note` does that once the sample is learned).
        """
        return [self._check(r) for r in results]

    def _check(self, r: Sample | Reject | None) -> Sample | Reject | None:
        if r is None:
            return r
        by_time = self.streams.get(r.stream)
        if isinstance(r, Sample) and by_time is not None and self.is_repeat(r, by_time):
            return Reject(r.stream, RejectReason.DUPLICATE, f"{r.key[:40]}: the same reading")
        return r

    def __len__(self) -> int:
        return len(self._last)

    def is_repeat(self, s: Sample, by_time: bool) -> bool:
        """`by_time`: the stream reads a timestamp field, which must not advance."""
        last = self._last.get((s.stream, s.key))
        if last is None:
            return False
        ts, x, y, label = last
        if s.y != y or s.label != label or s.x != x:
            return False
        return not by_time or s.ts <= ts

    def note(self, s: Sample) -> None:
        """Remember a learned sample (of a stream that dedupes)."""
        if s.stream not in self.streams:
            return
        sk = (s.stream, s.key)
        self._last[sk] = (s.ts, s.x, s.y, s.label)
        self._last.move_to_end(sk)
        while len(self._last) > self.limit:
            self._last.popitem(last=False)
