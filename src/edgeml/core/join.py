"""Joins across messages (`join_window`): fields that arrive apart become one sample.

ESPHome sends temperature and humidity on two topics; zigbee2mqtt sensors may send three
messages for one reading. Per stream/key the newest value of each of the stream's fields is
kept; when the target arrives (or, with `join_on = "any"`, any field) a sample is made of the
fields that arrived no longer than `join_window` before it (arrival time), or the message is
a `missing_feature` (or `missing_target`) reject as without a join.

Nothing is lost to a crash: a message whose fields wait in a join and that made no sample is
*held*, not acknowledged, as long as one of its fields may still be used (until it is
superseded by a newer value, falls out of the window, or its key is evicted). Killed with
kill -9, the daemon forgets the join, and the broker delivers the held messages again: the
join is rebuilt from them. A sample is stored with every field it used (the log holds what
the join used), so it is never made twice. A field whose message did make a sample (a JSON
message with the target and some features) is not held: after a crash it is missing until
its next value arrives.

Bounded: per key only the stream's own fields, at most `max_keys` keys (the models'
`max_live`; the least recently seen is forgotten first), and at most `max_held` held
messages (half the broker's in-flight window, so held messages never stall it; beyond it the
oldest is acknowledged and its fields stay, no longer crash-safe).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from edgeml.config import StreamConfig
from edgeml.core.decode import Partial
from edgeml.records import Label, Reject, RejectReason, Sample

__all__ = ["Joins"]


@dataclass(eq=False, slots=True)
class _Hold:
    """A delivery not acknowledged while fields it brought may still be joined."""

    token: Any
    dedup: int | None
    fingerprint: int | None
    refs: int = 0
    done: bool = False


@dataclass(slots=True)
class _Field:
    value: float | Label
    at: float  # arrival time
    hold: _Hold | None


@dataclass(frozen=True, slots=True)
class _Spec:
    window: float
    on_any: bool
    target: str | None
    numeric: bool  # the target is `y` (regression, forecast), else a class label
    label: str | None  # anomaly: the ground-truth field
    features: tuple[str, ...]


class Joins:
    def __init__(self, streams: Iterable[StreamConfig], max_keys: int, max_held: int) -> None:
        self.specs = {
            s.name: _Spec(s.join_window_s, s.join_on == "any", s.target,
                          s.task in ("regression", "forecast"), s.label, s.features or ())
            for s in streams
            if s.join_window_s > 0
        }  # fmt: skip
        self.max_keys = max_keys
        self.max_held = max(1, max_held)
        self._state: collections.OrderedDict[tuple[str, str], dict[str, _Field]] = (
            collections.OrderedDict()
        )
        self._held: dict[_Hold, None] = {}  # insertion order: the oldest first
        self._released: list[tuple[Any, int | None, int | None]] = []

    @property
    def keys(self) -> int:
        return len(self._state)

    @property
    def held(self) -> int:
        return len(self._held)

    def offer(
        self, results: Sequence[Sample | Partial | Reject], arrival: float
    ) -> list[Sample | Reject | None]:
        """Each Partial -> the Sample it completes, the Reject it makes, or None (kept for
        later). Changes nothing: `keep` does, once the delivery is handled.
        """
        return [self._join(r, arrival) if isinstance(r, Partial) else r for r in results]

    def _join(self, p: Partial, arrival: float) -> Sample | Reject | None:
        spec = self.specs[p.stream]
        if not spec.on_any and spec.target not in p.fields:
            return None
        state = self._state.get((p.stream, p.key), {})
        fresh = {n: f.value for n, f in state.items() if arrival - f.at <= spec.window}
        fresh.update(p.fields)
        if spec.target is not None and spec.target not in fresh:
            return Reject(p.stream, RejectReason.MISSING_TARGET, spec.target)
        x: dict[str, float] = {}
        for name in spec.features:
            v = fresh.get(name)
            if not isinstance(v, float):  # numbers were checked and made floats by decode
                return Reject(p.stream, RejectReason.MISSING_FEATURE, name)
            x[name] = v
        y: float | None = None
        label: Label | None = None
        if spec.target is not None:
            if spec.numeric:
                y = float(fresh[spec.target])
            else:
                label = cast(Label, fresh[spec.target])  # checked by decode
        elif spec.label is not None:
            label = cast(Label | None, fresh.get(spec.label))
        return Sample(p.stream, p.key, p.ts, x, y, label)

    def keep(
        self,
        partials: Sequence[Partial],
        arrival: float,
        token: Any,
        dedup: int | None = None,
        fingerprint: int | None = None,
    ) -> bool:
        """Keep the fields of the delivery's Partials; True if its ack `token` is now held
        (None: nothing to hold, e.g. the delivery made a sample)."""
        hold = None if token is None else _Hold(token, dedup, fingerprint)
        for p in partials:
            self._keep(p, arrival, hold)
        while len(self._state) > self.max_keys:
            _, evicted = self._state.popitem(last=False)
            for f in evicted.values():
                self._unref(f.hold)
        if hold is None or not hold.refs:
            return False
        self._held[hold] = None
        while len(self._held) > self.max_held:
            self._release(next(iter(self._held)))
        return not hold.done

    def _keep(self, p: Partial, arrival: float, hold: _Hold | None) -> None:
        spec = self.specs[p.stream]
        sk = (p.stream, p.key)
        state = self._state.get(sk)
        if state is None:
            state = self._state[sk] = {}
        else:
            self._state.move_to_end(sk)
        for name in [n for n, f in state.items() if arrival - f.at > spec.window]:
            self._unref(state.pop(name).hold)
        for name, value in p.fields.items():
            if name == spec.target and not spec.on_any:
                continue  # a target makes its sample at once and never waits
            old = state.get(name)
            if old is not None:
                self._unref(old.hold)
            state[name] = _Field(value, arrival, hold)
            if hold is not None:
                hold.refs += 1
        if not state:
            del self._state[sk]

    def _unref(self, hold: _Hold | None) -> None:
        if hold is None or hold.done:
            return
        hold.refs -= 1
        if hold.refs <= 0:
            self._release(hold)

    def _release(self, hold: _Hold) -> None:
        hold.done = True
        self._held.pop(hold, None)
        self._released.append((hold.token, hold.dedup, hold.fingerprint))

    def released(self) -> list[tuple[Any, int | None, int | None]]:
        """Held deliveries none of whose fields can be used any more: (ack token, dedup
        id, fingerprint) each, to be acknowledged with the next commit.
        """
        out, self._released = self._released, []
        return out
