"""State topics for people: a retained summary per stream/key, at most once per interval.

With its first state since the start, a key's retained `availability` topic says `online`
(the daemon says `offline` there when the key falls silent, and `online` when it is back).

The prediction topic carries every reading (for machines); Home Assistant's recorder would
store each one, so HA reads `<prefix>/<node>/<stream>/<key>/state` instead: the latest
value, error, model version, sample count and last reading, sent when a reading arrives at
least `state_interval` after the key's last state, else held back and sent by `due()` once
the interval has passed (so the newest value always arrives). Pure: the caller passes the
clock (monotonic seconds) and sends what is returned.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from edgeml.config import Config
from edgeml.core.homeassistant import key_topic
from edgeml.core.messages import Outgoing
from edgeml.core.models import SeriesKey
from edgeml.learn import Learner
from edgeml.records import Outcome

__all__ = ["StateTopics"]

_compact = json.JSONEncoder(separators=(",", ":")).encode


class StateTopics:
    """Rate-limited state messages of every stream/key."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.interval = cfg.homeassistant.state_interval_s
        self.sent_at: dict[SeriesKey, float] = {}
        # Held back: the learner and the newest value, built into a message when due.
        self.pending: dict[SeriesKey, tuple[Learner, float | None, float]] = {}
        self.latest: dict[SeriesKey, Outgoing] = {}  # the last state sent, for re-announcing
        self.available: dict[SeriesKey, bool] = {}  # as last said on the availability topic
        self.sent = 0

    def observe(
        self, sk: SeriesKey, outcome: Outcome, learner: Learner, now: float, out: list[Outgoing]
    ) -> None:
        """A reading of `sk` was learned: send its state now, or hold it until due."""
        value = outcome.forecast[0] if outcome.forecast else outcome.y_pred
        self.pending[sk] = (learner, value, outcome.sample.ts)
        if now - self.sent_at.get(sk, -math.inf) >= self.interval:
            self._send(sk, now, out)

    def due(self, now: float, out: list[Outgoing]) -> None:
        """Send the held-back states whose interval has passed."""
        ready = [sk for sk in self.pending if now - self.sent_at[sk] >= self.interval]
        for sk in ready:
            self._send(sk, now, out)

    def availability(self, sk: SeriesKey, online: bool, out: list[Outgoing]) -> None:
        """Say on the key's retained availability topic whether it sends (silent, back)."""
        self.available[sk] = online
        out.append(self._availability(sk))

    def _availability(self, sk: SeriesKey) -> Outgoing:
        payload = b"online" if self.available[sk] else b"offline"
        return Outgoing(key_topic(self.cfg, *sk, "availability"), payload, 1, True)

    def states(self) -> list[Outgoing]:
        """The availability and last state of every key that has one (for a re-announce)."""
        return [m for sk, state in self.latest.items() for m in (self._availability(sk), state)]

    def _send(self, sk: SeriesKey, now: float, out: list[Outgoing]) -> None:
        learner, value, ts = self.pending.pop(sk)
        doc = {
            "value": value,
            "error": _error(learner),
            "model_version": learner.model_version,
            "samples": learner.samples,
            "last_seen": dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds"),
            "ts": ts,
        }
        message = Outgoing(key_topic(self.cfg, sk[0], sk[1], "state"), _compact(doc).encode(),
                           1, True)  # fmt: skip
        if sk not in self.available:  # its first state since the start: it sends
            self.availability(sk, True, out)
        self.sent_at[sk] = now
        self.latest[sk] = message
        self.sent += 1
        out.append(message)


def _error(learner: Learner) -> float | None:
    """The task's rolling error: mean absolute error, the error rate of a classifier, the
    share of readings an anomaly detector flagged.
    """
    m: dict[str, Any] = learner.metrics()
    if "rolling_mae" in m:
        return _finite(m["rolling_mae"])
    if "rolling_accuracy" in m:
        acc = m["rolling_accuracy"]
        return None if acc is None else _finite(1.0 - acc)
    return _finite(m.get("anomaly_rate"))


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)
