"""Self-calibrating anomaly detectors: robust z-scores (`robust`, the default preset) and
HalfSpaceTrees behind robust scaling and the same kind of threshold (`halfspace`).

Both are River anomaly detectors (`score_one`, `learn_one`) with one more method,
`judge_one(x, ts=None)`, which says per reading what an episode layer needs, a `Judgement`:

- `severity`: how far beyond normal the reading is, in units of the detector's own calibrated
  threshold (1.0 = exactly at it; unbounded, so "twice as severe" is twice the number);
- `flag`: `severity > 1` (strict: tied scores never flag in bulk), once the detector has seen
  `min_readings` readings;
- `field`: the feature whose severity is the largest (the one that fired);
- `z`: the robust z-score behind the severity (robust standard deviations from normal);
- `score`: `severity / (1 + severity)`, in [0, 1) and exactly 0.5 at the threshold: what
  `score_one` returns and what is published and stored as the anomaly score.

A threshold calibrates itself on the stream: max(`floor`, `factor` x the `quantile` of its own
robust z over the last `calibration` readings) (defaults 4, 1.5, 0.995, 5,000). Every reading is
learned and calibrates, flagged or not: no feedback loop between what is flagged and what is
learned. A spike cannot squeeze normal readings into a corner (median and MAD ignore a few
outliers) nor raise a threshold (fewer than 0.5 % of the readings cannot move its quantile);
a pattern that recurs more often than that does raise it.

`RobustZ`, per feature, three robust z-scores, each over its own threshold:
- of the value: against the median and MAD of the last `window` values (576: two days of
  5-minute readings, so that the scale sees a daily cycle twice);
- of persistence: of the median of the last 3 readings, against the same median and MAD or,
  when the series has two levels (a compressor on and off), against the level at hand
  (edgeml.learn.levels). A single spike cannot move it, so its threshold stays low on a spiky
  series and it sees a moderate change that lasts, and a new level of a two-level series;
- seasonal (when readings carry timestamps): of the reading's deviation from that median,
  against its deviation in the same 5-minute slot of the day a day earlier (median and MAD of
  the last `window` such differences). It sees what a plain z cannot (a daily peak missing or
  at the wrong time), and is used only while it predicts better than the recent median (its
  scale is smaller), so noise and a compressor's wandering cycle are left to the plain z.
The reading's severity is the largest over features and kinds. (A z of the step from the
previous reading, as in the issue's prototype, was measured and dropped: on the NAB files and
the fridge suite it added false alerts and caught no window more.)

A lasting level shift is absorbed by the detector itself: when the median of the last `short`
values is a threshold's worth of robust deviations from the long median, and hardly any older
value lies at the new level (so a two-level series is not re-seeded each time it switches),
the long window is re-seeded with the last `short // 2` values, keeping the old scale as a
floor until it holds 2 x `short` values again. With `short` = 32 a step change is flagged from
its first reading and absorbed at most ABSORB_BOUND = 17 readings later (pinned by a test).

Memory is fixed per key, float arrays only (edgeml.learn.sketches): per feature 2 x `window`
doubles for each of the value and seasonal windows (a ring and a sorted copy), 2 x `short` for
each short window, 4 x 288 for the seasonal memory, 10 x 25 for each of the three thresholds'
sketches, 2 x (128 + 8) for each of two levels and the last 2 readings: 2,304 + 128 + 1,152 +
750 + 544 + 2 = 4,880 doubles, 39,040 bytes per feature at the defaults
(`RobustZ.state_bytes()`, pinned by a test). Measured with tracemalloc, a one-feature detector
after a week of a compressor's readings (levels in use) takes about 51 KB (1,000 such keys:
51 MB of the service's 384 MB MemoryMax); pickled, about 41 KB.
"""

from __future__ import annotations

import copy
import math
from array import array
from typing import Any, NamedTuple

from river import anomaly, base

from edgeml.learn.levels import Component as _Component  # (old snapshots name it here)
from edgeml.learn.levels import Persistence
from edgeml.learn.sketches import RollingMedian, TailThreshold

__all__ = ["ABSORB_BOUND", "CalibratedHalfSpace", "Judgement", "RobustZ"]

# A scale never below this share of the level (a flat series moving by 0.1 % is not news)...
_REL_FLOOR = 1e-3
# ... nor below this (a series of zeros).
_ABS_FLOOR = 1e-9


class Judgement(NamedTuple):
    """What a detector says about one reading (see the module docstring)."""

    score: float
    severity: float
    z: float
    flag: bool
    field: str | None


DAY_S = 86_400.0
SLOT_S = 300.0  # the seasonal memory holds a value per 5 minutes of the day
_SLOTS = int(DAY_S / SLOT_S)
_SEASONAL = 1.0  # see _Feature.judge
_FRESH = DAY_S - 4 * 3600  # a slot's value at least this old is of an earlier day


class _Feature:
    """One feature: its value and the median of its last 3 readings against the recent past
    and, when readings carry timestamps, its value against the same time a day earlier."""

    __slots__ = ("_d", "_persist_z", "_season_z", "_severity", "_value_z", "cur_ts", "cur_v",
                 "persist", "prev_ts", "prev_v", "season", "value")  # fmt: skip

    def __init__(self, window: int, short: int, cal: tuple[int, int, float, float, float]):
        self.value = _Component(window, short, TailThreshold(*cal))
        self.season = _Component(window, short, TailThreshold(*cal))
        self.persist = Persistence(TailThreshold(*cal))
        # Per 5-minute slot of the day: the latest value (cur) and the one of the day before.
        self.cur_v = array("d", bytes(8 * _SLOTS))
        self.cur_ts = array("d", [-math.inf]) * _SLOTS
        self.prev_v = array("d", bytes(8 * _SLOTS))
        self.prev_ts = array("d", [-math.inf]) * _SLOTS
        self._d: float | None = None
        self._value_z = self._season_z = self._persist_z = self._severity = 0.0

    def __setstate__(self, state: tuple[None, dict[str, object]]) -> None:
        """A feature pickled before the persistence z (edgeml 0.1.0 up to 7973cf3) gets one,
        its threshold starting from a copy of the value's (a persistence z on one level is
        never above the value's z, so no lower bar than the one it had); it judges from its
        first split into levels on (levels.FIRST_FIT readings after the load)."""
        for name, v in state[1].items():
            setattr(self, name, v)
        if not hasattr(self, "persist"):
            self.persist = Persistence(copy.deepcopy(self.value.threshold))
            self._persist_z = 0.0

    def judge(self, v: float, ts: float | None) -> tuple[float, float]:
        """(severity relative to the thresholds, the robust z behind it)."""
        floor = max(_REL_FLOOR * abs(self.value.long.median()), _ABS_FLOOR)
        self._value_z = self.value.z(v, floor)
        self._d = None
        self._season_z = 0.0
        if ts is not None:
            # The reading's deviation from the current level against the deviation a day
            # earlier: a level shift moves both, so it is not a seasonal anomaly a day long.
            k = int(ts // SLOT_S) % _SLOTS
            age = ts - self.cur_ts[k]
            was = self.cur_v[k]
            if age < _FRESH:  # this slot has a reading of today already: use the day before's
                age, was = ts - self.prev_ts[k], self.prev_v[k]
            if _FRESH <= age <= DAY_S + 4 * 3600:
                self._d = d = (v - self.value.long.median()) - was
                self._season_z = self.season.z(d, floor)
        severities = [(self._value_z / self.value.threshold.get(), self._value_z)]
        self._persist_z = pz = self.persist.z(v, self.value, floor)
        severities.append((pz / self.persist.threshold.get(), pz))
        if 0 < self.season._scale < _SEASONAL * self.value._scale:
            # Yesterday is used when it predicts better than the recent median: on a daily
            # pattern, not on noise or on a compressor's cycle, whose phase wanders.
            severities.append((self._season_z / self.season.threshold.get(), self._season_z))
        worst = max(severities)
        self._severity = worst[0]
        return worst

    def learn(self, v: float, ts: float | None, calibrate: bool) -> None:
        """Learn v right after judge(v)."""
        if calibrate:
            self.value.threshold.add(self._value_z)
            self.persist.threshold.add(self._persist_z)
            if self._d is not None:
                self.season.threshold.add(self._season_z)
        deviation = v - self.value.long.median()  # as judge() saw it
        floor = max(_REL_FLOOR * abs(self.value._m), _ABS_FLOOR)
        self.value.learn(v)
        self.persist.learn(v, self.value, floor)
        if self._d is not None:
            self.season.learn(self._d)
        if ts is not None and self._severity <= 1.0:
            # An anomalous reading is no baseline for tomorrow: its slot keeps what it had
            # (too old by then, the slot is skipped for a day).
            k = int(ts // SLOT_S) % _SLOTS
            if ts - self.cur_ts[k] >= _FRESH:  # the slot's first reading today
                self.prev_v[k], self.prev_ts[k] = self.cur_v[k], self.cur_ts[k]
            self.cur_v[k], self.cur_ts[k] = deviation, ts

    def nbytes(self) -> int:
        seasonal = 8 * 4 * _SLOTS
        return self.value.nbytes() + self.season.nbytes() + self.persist.nbytes() + seasonal


class _Calibrated(base.AnomalyDetector):
    """What both detectors share: the flag, the score and the cached judgement (the task
    judges a reading, then learns it: the judgement is not computed twice)."""

    min_readings: int
    _n: int
    _cache: tuple[dict[Any, Any], Judgement] | None

    def _judge(self, x: dict[Any, Any], ts: float | None) -> tuple[float, float, str | None]:
        raise NotImplementedError

    def _learn(self, x: dict[Any, Any], ts: float | None, calibrate: bool) -> None:
        raise NotImplementedError

    def judge_one(self, x: dict[Any, Any], ts: float | None = None) -> Judgement:
        """The judgement of x (at sample time ts, if known) by what was learned before it."""
        cache = self._cache
        if cache is not None and cache[0] is x:
            return cache[1]
        severity, z, field = self._judge(x, ts)
        flag = self._n >= self.min_readings and severity > 1.0
        j = Judgement(severity / (1.0 + severity), severity, z, flag, field)
        self._cache = (x, j)
        return j

    def score_one(self, x: dict[Any, Any]) -> float:
        return self.judge_one(x).score

    def learn_one(self, x: dict[Any, Any], ts: float | None = None) -> None:
        self.judge_one(x, ts)
        self._cache = None
        # Every reading calibrates (after the first few, whose z means little): what recurs in
        # more than 1 - quantile of the readings raises the bar; a few spikes cannot move an
        # upper quantile.
        self._learn(x, ts, self._n >= self.min_readings)
        self._n += 1

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": None}


class RobustZ(_Calibrated):
    """Robust z of each feature's value, of the median of its last 3 readings (against its
    level, on a two-level series) and (with timestamps) of its difference from the same time a
    day earlier; flags above self-calibrated thresholds.

    Parameters
    ----------
    window
        Readings the medians and MADs are taken over.
    short
        Readings whose median, far from the long one, means the level moved (ABSORB_BOUND).
    calibration
        Readings the thresholds' quantile is taken over.
    quantile
        The quantile of its own robust z a threshold is calibrated on ...
    factor
        ... the threshold is `factor` times that quantile ...
    floor
        ... and never below `floor`.
    min_readings
        No flag (and no calibration) before this many readings.
    seasonal
        Whether to compare with the same time a day earlier (when readings carry timestamps).
    """

    def __init__(
        self,
        window: int = 576,
        short: int = 32,
        calibration: int = 5000,
        quantile: float = 0.995,
        factor: float = 1.5,
        floor: float = 4.0,
        min_readings: int = 30,
        seasonal: bool = True,
    ) -> None:
        if not (window >= 10 and 4 <= short <= window and calibration >= 500):
            raise ValueError("needs window >= 10, 4 <= short <= window, calibration >= 500")
        if not (0.5 < quantile < 1 and factor >= 1 and floor > 0 and min_readings >= 3):
            raise ValueError("needs 0.5 < quantile < 1, factor >= 1, floor > 0, min_readings >= 3")
        self.window = window
        self.short = short
        self.calibration = calibration
        self.quantile = quantile
        self.factor = factor
        self.floor = floor
        self.min_readings = min_readings
        self.seasonal = seasonal
        self._features: dict[str, _Feature] = {}
        self._n = 0
        self._cache = None

    def _judge(self, x: dict[Any, Any], ts: float | None) -> tuple[float, float, str | None]:
        worst, worst_z, field = 0.0, 0.0, None
        when = ts if self.seasonal else None
        for name, v in x.items():
            f = self._features.get(name)
            if f is None:
                continue
            severity, z = f.judge(v, when)
            if severity > worst or field is None:
                worst, worst_z, field = severity, z, name
        return worst, worst_z, field

    def _learn(self, x: dict[Any, Any], ts: float | None, calibrate: bool) -> None:
        when = ts if self.seasonal else None
        for name, v in x.items():
            f = self._features.get(name)
            if f is None:
                cal = (self.calibration, 500, self.quantile, self.factor, self.floor)
                f = self._features[name] = _Feature(self.window, self.short, cal)
                f.judge(float(v), when)
            f.learn(float(v), when, calibrate)

    def state_bytes(self) -> int:
        """The bytes of the float arrays this detector holds (its per-key state)."""
        return sum(f.nbytes() for f in self._features.values())


# A level shift is absorbed (no more flags from the value's z) at most this many readings after
# its first reading, with the default `short` = 32; see RobustZ.
ABSORB_BOUND = 32 // 2 + 1


def _squash(z: float) -> float:
    """A robust z into (0, 1) for HalfSpaceTrees: normal readings spread over the middle."""
    return 0.5 + 0.5 * math.tanh(z / 6)


class CalibratedHalfSpace(_Calibrated):
    """HalfSpaceTrees on robustly scaled features (rolling median/MAD, squashed into [0, 1]);
    its score made a robust z against its own recent scores and flagged by a threshold
    calibrated as RobustZ's, but with `factor` 1: HalfSpaceTrees' score is bounded (a reading
    far outside scores no more than one just outside), so 1.5 x its quantile can be out of
    reach; at most 1 - `quantile` of the readings are flagged. Learns every reading."""

    def __init__(
        self,
        trees: anomaly.HalfSpaceTrees,
        window: int = 500,
        calibration: int = 5000,
        quantile: float = 0.995,
        factor: float = 1.0,
        floor: float = 4.0,
    ) -> None:
        self.trees = trees
        self.window = window
        self.calibration = calibration
        self.quantile = quantile
        self.factor = factor
        self.floor = floor
        # HalfSpaceTrees scores 0 for its whole first window; then its scores' median and MAD
        # need a hundred of them.
        self.min_readings = trees.window_size + 100
        self._scalers: dict[str, RollingMedian] = {}
        self._scores = RollingMedian(window)
        self._threshold = TailThreshold(calibration, 500, quantile, factor, floor)
        self._n = 0
        self._cache = None
        self._u: dict[str, float] = {}
        self._raw = self._z = 0.0

    def _judge(self, x: dict[Any, Any], ts: float | None) -> tuple[float, float, str | None]:
        u, worst, field = {}, -1.0, None
        for name, v in x.items():
            sc = self._scalers.get(name)
            if sc is None or len(sc) < 3:
                u[name] = 0.5
                continue
            m = sc.median()
            z = (v - m) / sc.scale(m, max(_REL_FLOOR * abs(m), _ABS_FLOOR))
            u[name] = _squash(z)
            if abs(z) > worst:
                worst, field = abs(z), name
        self._u = u
        # HalfSpaceTrees' score saturates below 1; -log(1 - score) spreads its top end.
        self._raw = raw = -math.log(max(1.0 - float(self.trees.score_one(u)), 1e-6))
        scores = self._scores
        self._z = 0.0
        if self._n >= self.trees.window_size and len(scores) >= 100:
            m = scores.median()
            self._z = max(0.0, raw - m) / scores.scale(m, 1e-3)
        return self._z / self._threshold.get(), self._z, field

    def _learn(self, x: dict[Any, Any], ts: float | None, calibrate: bool) -> None:
        if calibrate:
            self._threshold.add(self._z)
        self.trees.learn_one(self._u)
        if self._n >= self.trees.window_size:
            self._scores.add(self._raw)
        for name, v in x.items():
            sc = self._scalers.get(name)
            if sc is None:
                sc = self._scalers[name] = RollingMedian(self.window)
            sc.add(float(v))
