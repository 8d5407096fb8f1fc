"""Self-calibrating anomaly detectors: a robust z-score (`robust`, the default) and HalfSpaceTrees
behind the same robust scaling and threshold (`halfspace`).

Both are River anomaly detectors (`score_one`, `learn_one`) with one more method, `judge_one`,
which says per reading what the episode layer needs: a `Judgement` with

- `severity`: unbounded, robust-z-like (how many robust standard deviations the reading is
  from what is normal now), the largest over the features;
- `threshold`: the severity above which a reading is flagged, calibrated on the stream itself:
  max(`floor`, `factor` x the `quantile` of its own recent severities);
- `flag`: `severity > threshold` (strict, so tied scores never flag in bulk), once the detector
  has seen `min_readings` readings;
- `field`: the feature whose severity is the largest (the one that fired);
- `score`: `severity / (severity + threshold)`, in [0, 1) and exactly 0.5 at the threshold; it
  is what `score_one` returns and what is published and stored as the anomaly score.

Every reading is learned, flagged or not: there is no feedback loop between what is flagged
and what is learned. A spike cannot squeeze normal readings into a corner, because median and
MAD ignore a few outliers, and flagged readings are kept out of the threshold's calibration.

`RobustZ` (single-value and multivariate streams). Per feature: the robust z of the value
(median and MAD of the last `window` values) and of its step from the previous value (median
and MAD of the last `window` steps); its severity is the larger of the two. A stream's severity
is the largest over its features. A lasting level shift is absorbed by the detector itself:
when the median of the last `short` values is more than `threshold` robust deviations from the
long median, the long window is re-seeded with the last `short // 2` values. With `short` = 32
a step change is flagged from its first reading and absorbed at most `short // 2 + 1` = 17
readings later (ABSORB_BOUND, pinned by a test); a noisy shift that flags only some of its
readings takes no longer, because the short median moves with the majority.

Memory is fixed per key: float arrays (`array('d')`) only, no per-reading Python objects.
RobustZ with one feature holds 2 x 2 x `window` doubles (value and step windows, each a ring
and a sorted copy), 2 x `short` doubles and the calibration sketch of
(`calibration` / `block` + 1) x ceil(`block` x (1 - `quantile`)) doubles: at the defaults
(500, 32, 5,000, 500, 0.995) 8,000 + 64 + 275 = 8,339 doubles = 66.7 KB... no: see
`state_bytes()`, which counts what is actually held (about 17 KiB for one feature, measured in
tests/test_anomaly_detector.py).
"""

from __future__ import annotations

import collections
import math
from array import array
from bisect import bisect_left, insort
from typing import Any, NamedTuple

from river import anomaly, base

__all__ = ["ABSORB_BOUND", "CalibratedHalfSpace", "Judgement", "RobustZ"]

# MAD -> standard deviation for normal data.
_MAD_SD = 1.4826
# A scale never below this share of the level (a flat series moving by 0.1 % is not news)...
_REL_FLOOR = 1e-3
# ... nor below this (a series of zeros).
_ABS_FLOOR = 1e-9


class Judgement(NamedTuple):
    """What a detector says about one reading (see the module docstring)."""

    score: float
    severity: float
    threshold: float
    flag: bool
    field: str | None


class RollingMedian:
    """Median and MAD of the last `size` values: a ring buffer and a sorted copy, both
    `array('d')`; insertion and removal are a bisect and a memmove."""

    __slots__ = ("_next", "_ring", "_sorted", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ring = array("d")
        self._sorted = array("d")
        self._next = 0

    def __len__(self) -> int:
        return len(self._ring)

    def add(self, v: float) -> None:
        if len(self._ring) < self.size:
            self._ring.append(v)
        else:
            old = self._ring[self._next]
            self._ring[self._next] = v
            self._next = (self._next + 1) % self.size
            del self._sorted[bisect_left(self._sorted, old)]
        insort(self._sorted, v)

    def recent(self, k: int) -> list[float]:
        """The last k values, oldest first."""
        ring, n = self._ring, len(self._ring)
        ordered = ring[self._next :] + ring[: self._next] if n == self.size else ring
        return list(ordered[max(0, n - k) :])

    def reseed(self, values: list[float]) -> None:
        self._ring = array("d")
        self._sorted = array("d")
        self._next = 0
        for v in values:
            self.add(v)

    def median(self) -> float:
        s, n = self._sorted, len(self._sorted)
        if n == 0:
            return 0.0
        h = n // 2
        return s[h] if n % 2 else 0.5 * (s[h - 1] + s[h])

    def mad(self, m: float) -> float:
        """The median absolute deviation from m: the k-th smallest of two sorted sequences
        (the deviations below m, going left, and above it, going right), in O(log^2 n)."""
        s, n = self._sorted, len(self._sorted)
        if n == 0:
            return 0.0
        split = bisect_left(s, m)
        n_a, n_b = split, n - split  # a[t] = m - s[split-1-t], b[t] = s[split+t] - m
        k = (n - 1) // 2  # 0-based rank of the (lower) median deviation
        lo, hi = max(0, k + 1 - n_b), min(k + 1, n_a)
        while lo < hi:
            a = (lo + hi) // 2
            b = k + 1 - a
            if b > 0 and m - s[split - 1 - a] < s[split + b - 1] - m:
                lo = a + 1
            else:
                hi = a
        a, b = lo, k + 1 - lo
        last_a = m - s[split - a] if a > 0 else -math.inf
        last_b = s[split + b - 1] - m if b > 0 else -math.inf
        return max(last_a, last_b)

    def scale(self, m: float, floor: float) -> float:
        """A robust standard deviation: 1.4826 MAD; when more than half the values tie, the
        5-95 % spread / 3.29; never below `floor`."""
        sd = _MAD_SD * self.mad(m)
        if sd <= floor:
            s, n = self._sorted, len(self._sorted)
            if n > 1:
                sd = max(sd, (s[int(0.95 * (n - 1))] - s[int(0.05 * (n - 1))]) / 3.29)
        return max(sd, floor)

    def nbytes(self) -> int:
        return (self._ring.buffer_info()[1] + self._sorted.buffer_info()[1]) * 8


class TailThreshold:
    """max(floor, factor x the `quantile` of the last `window` values), from a sketch.

    The values come in blocks of `block`; of each of the last `window // block` blocks (and
    of the current one) only the largest ceil(block x (1 - quantile)) are kept, which is
    enough to know the window's upper quantile exactly (the window spans the last
    `window - block` to `window` values)."""

    __slots__ = ("_blocks", "_current", "_in_block", "_value", "block", "factor", "floor", "keep",
                 "quantile")  # fmt: skip

    def __init__(self, window: int, block: int, quantile: float, factor: float, floor: float):
        self.block = block
        self.quantile = quantile
        self.factor = factor
        self.floor = floor
        self.keep = max(1, math.ceil(block * (1 - quantile)))
        self._blocks: collections.deque[array[float]] = collections.deque(
            maxlen=max(1, window // block - 1)
        )
        self._current = array("d")
        self._in_block = 0
        self._value = floor

    def get(self) -> float:
        return self._value

    def add(self, v: float) -> None:
        cur = self._current
        changed = False
        if len(cur) < self.keep:
            insort(cur, v)
            changed = True
        elif v > cur[0]:
            del cur[0]
            insort(cur, v)
            changed = True
        self._in_block += 1
        if self._in_block == self.block:
            self._blocks.append(cur)
            self._current = array("d")
            self._in_block = 0
            changed = True
        if changed:
            self._update()

    def _update(self) -> None:
        counted = self._in_block + self.block * len(self._blocks)
        if not counted:
            self._value = self.floor
            return
        kth = max(1, math.ceil(counted * (1 - self.quantile)))
        pool = sorted([*self._current, *(v for b in self._blocks for v in b)], reverse=True)
        self._value = max(self.floor, self.factor * pool[min(kth, len(pool)) - 1])

    def nbytes(self) -> int:
        return 8 * (len(self._current) + sum(len(b) for b in self._blocks))


class _Feature:
    """One feature's value and step windows, and the short window that detects a shift."""

    __slots__ = ("_m", "_scale", "last", "recent", "step", "value")

    def __init__(self, window: int, short: int) -> None:
        self.value = RollingMedian(window)
        self.step = RollingMedian(window)
        self.recent = RollingMedian(short)
        self.last: float | None = None
        self._m = 0.0
        self._scale = 0.0  # of the last severity(); 0: none computed

    def severity(self, v: float) -> float:
        """The larger robust z of v and of its step; 0 until the windows hold short // 2."""
        value = self.value
        if len(value) < self.recent.size // 2 or self.last is None:
            self._scale = 0.0  # nothing known: learn() does not look for a shift
            return 0.0
        m = value.median()
        floor = max(_REL_FLOOR * abs(m), _ABS_FLOOR)
        scale = value.scale(m, floor)
        self._m, self._scale = m, scale
        z = abs(v - m) / scale
        step = self.step
        if len(step) >= self.recent.size // 2:
            ms = step.median()
            z = max(z, abs(v - self.last - ms) / step.scale(ms, floor))
        return z

    def learn(self, v: float, threshold: float) -> None:
        """Learn v; `severity(v)` has just been computed (it left median and scale behind)."""
        value, recent = self.value, self.recent
        if self.last is not None:
            self.step.add(v - self.last)
        self.last = v
        value.add(v)
        recent.add(v)
        if len(recent) == recent.size and self._scale > 0:
            if abs(recent.median() - self._m) > threshold * self._scale:
                value.reseed(recent.recent(recent.size // 2))

    def nbytes(self) -> int:
        return self.value.nbytes() + self.step.nbytes() + self.recent.nbytes()


class _Calibrated(base.AnomalyDetector):  # type: ignore[misc]  # River is untyped
    """What both detectors share: the threshold, the flag, the score and the cached judgement
    (the task judges a reading, then learns it: the judgement is not computed twice)."""

    min_readings: int
    _threshold: TailThreshold
    _n: int
    _cache: tuple[dict[str, Any], Judgement] | None

    def _severities(self, x: dict[str, Any]) -> tuple[float, str | None]:
        raise NotImplementedError

    def _learn(self, x: dict[str, Any], j: Judgement) -> None:
        raise NotImplementedError

    def judge_one(self, x: dict[str, Any]) -> Judgement:
        cache = self._cache
        if cache is not None and cache[0] is x:
            return cache[1]
        severity, field = self._severities(x)
        threshold = self._threshold.get()
        flag = self._n >= self.min_readings and severity > threshold
        score = severity / (severity + threshold)
        j = Judgement(score, severity, threshold, flag, field)
        self._cache = (x, j)
        return j

    def score_one(self, x: dict[str, Any]) -> float:
        return self.judge_one(x).score

    def learn_one(self, x: dict[str, Any]) -> None:
        j = self.judge_one(x)
        self._cache = None
        self._learn(x, j)
        self._n += 1
        if self._n > self.min_readings and not j.flag:
            # Flagged readings stay out of the calibration: a spike never raises the bar.
            self._threshold.add(j.severity)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": None}


class RobustZ(_Calibrated):
    """Robust z of each feature's value and step; flags above a self-calibrated threshold.

    Parameters
    ----------
    window
        Readings (and steps) the median and MAD are taken over.
    short
        Readings whose median, far from the long one, means the level moved (see ABSORB_BOUND).
    calibration
        Readings the threshold's quantile is taken over.
    quantile
        The quantile of its own severities the threshold is calibrated on.
    factor
        The threshold is `factor` times that quantile...
    floor
        ... and never below `floor`.
    min_readings
        No flag (and no calibration) before this many readings.
    """

    def __init__(
        self,
        window: int = 500,
        short: int = 32,
        calibration: int = 5000,
        quantile: float = 0.995,
        factor: float = 1.5,
        floor: float = 4.0,
        min_readings: int = 30,
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
        self._features: dict[str, _Feature] = {}
        self._threshold = TailThreshold(calibration, 500, quantile, factor, floor)
        self._n = 0
        self._cache = None

    def _severities(self, x: dict[str, Any]) -> tuple[float, str | None]:
        worst, field = 0.0, None
        for name, v in x.items():
            f = self._features.get(name)
            if f is None:
                continue
            z = f.severity(v)
            if z > worst or field is None:
                worst, field = z, name
        return worst, field

    def _learn(self, x: dict[str, Any], j: Judgement) -> None:
        for name, v in x.items():
            f = self._features.get(name)
            if f is None:
                f = self._features[name] = _Feature(self.window, self.short)
            f.learn(float(v), j.threshold)

    def state_bytes(self) -> int:
        """The bytes of the float arrays this detector holds (its per-key state)."""
        return self._threshold.nbytes() + sum(f.nbytes() for f in self._features.values())


# A level shift is absorbed (no more flags from the value's z) at most this many readings after
# its first reading, with the default `short` = 32; see RobustZ.
ABSORB_BOUND = 32 // 2 + 1


def _squash(z: float) -> float:
    """A robust z into (0, 1) for HalfSpaceTrees: normal readings spread over the middle."""
    return 0.5 + 0.5 * math.tanh(z / 6)


class CalibratedHalfSpace(_Calibrated):
    """HalfSpaceTrees on robustly scaled features (rolling median/MAD, squashed into [0, 1]),
    its score turned into a severity (robust z of the score against its own recent scores)
    and flagged by the same self-calibrated threshold as RobustZ; learns every reading."""

    def __init__(
        self,
        trees: anomaly.HalfSpaceTrees,
        window: int = 500,
        calibration: int = 5000,
        quantile: float = 0.995,
        factor: float = 1.5,
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

    def _scaled(self, x: dict[str, Any]) -> tuple[dict[str, float], str | None]:
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
        return u, field

    def _severities(self, x: dict[str, Any]) -> tuple[float, str | None]:
        u, field = self._scaled(x)
        self._u = u
        # HalfSpaceTrees' score saturates below 1; -log(1 - score) spreads its top end.
        raw = -math.log(max(1.0 - float(self.trees.score_one(u)), 1e-6))
        self._raw = raw
        scores = self._scores
        if self._n < self.trees.window_size or len(scores) < 100:
            return 0.0, field
        m = scores.median()
        return max(0.0, raw - m) / scores.scale(m, 1e-3), field

    def _learn(self, x: dict[str, Any], j: Judgement) -> None:
        self.trees.learn_one(self._u)
        if self._n >= self.trees.window_size:
            self._scores.add(self._raw)
        for name, v in x.items():
            sc = self._scalers.get(name)
            if sc is None:
                sc = self._scalers[name] = RollingMedian(self.window)
            sc.add(float(v))
