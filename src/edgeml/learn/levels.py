"""The baselines of the robust detector (edgeml.learn.robust): a robust z against a window of
recent values that absorbs a lasting level shift (`Component`), and the persistence z, the z of
the median of the last 3 readings against the level the series is at (`Persistence`).

Why persistence: a single reading beyond the threshold is as often noise as news on a spiky
series (whose threshold its own spikes have raised), but a change that lasts (3 readings in a
row away from normal) is rarer, so its z has a lower threshold of its own and sees a moderate
lasting change that no single reading would flag. One spike cannot move a median of 3.

Why levels: a series that switches between two levels (a compressor on and off) has one wide
scale around one median, so a new level inside that range (the compressor's on level moving
from 120 W to 160 W) is not news to the plain z. Every `REFIT` readings the value window is
split in two by Otsu's rule (the split of the sorted values that maximises the variance between
the two classes); when the two classes' medians are more than `SEPARATION` times the narrower
class's spread apart, the series has two levels, and the persistence z is taken against the
level its median belongs to: a median, scale and shift absorption (`Component`) per level,
over the last `LEVEL_WINDOW` medians at that level. A switch between known levels is normal;
a new level is flagged and absorbed like any shift, within LEVEL_ABSORB of its readings.
"""

from __future__ import annotations

from array import array
from itertools import accumulate

from edgeml.learn.sketches import RollingMedian, TailThreshold

__all__ = ["LEVEL_ABSORB", "LEVEL_WINDOW", "REFIT", "SEPARATION", "Component", "Persistence"]

LEVEL_WINDOW = 128  # medians of 3 per level
LEVEL_SHORT = 8  # the short window of a level's Component
LEVEL_ABSORB = LEVEL_SHORT // 2 + 1  # a level's shift is absorbed after this many readings
REFIT = 32  # readings between two splits of the value window into levels
FIRST_FIT = 4 * REFIT  # the first split, once the value window holds 100 values or more
SEPARATION = 10.0  # class medians this many spreads apart are two levels
_IQR_SD = 1.349  # interquartile range -> standard deviation for normal data


class Component:
    """A robust z against the median and MAD of a window of recent values, with its own
    calibrated threshold, and the short window that notices when the level has moved."""

    __slots__ = ("_m", "_prior", "_scale", "long", "recent", "threshold")

    def __init__(self, window: int, short: int, threshold: TailThreshold) -> None:
        self.long = RollingMedian(window)
        self.recent = RollingMedian(short)
        self.threshold = threshold
        self._m = 0.0
        self._scale = 0.0  # of the last z(); 0: none computed, no shift check
        self._prior = 0.0  # the scale before the last re-seed

    def z(self, v: float, floor: float) -> float:
        """|v - median| / robust sd; 0 until the window holds short // 2 values."""
        long = self.long
        if len(long) < self.recent.size // 2:
            self._scale = 0.0
            return 0.0
        m = long.median()
        if len(long) < 2 * self.recent.size:
            floor = max(floor, self._prior)
        self._m, self._scale = m, long.scale(m, floor)
        return abs(v - m) / self._scale

    def learn(self, v: float) -> bool:
        """Learn v after z(v); True when the level moved and the long window was re-seeded
        with the last short // 2 values (see edgeml.learn.robust.ABSORB_BOUND)."""
        long, recent = self.long, self.recent
        long.add(v)
        recent.add(v)
        if len(recent) < recent.size or self._scale <= 0:
            return False
        if abs(recent.median() - self._m) <= self.threshold.get() * self._scale:
            return False
        # A new level, or one the long window knows (a two-level series, a compressor
        # switching on)? New when hardly any older value lies in the middle half of the
        # values the window would be re-seeded with.
        seed = recent.recent(recent.size // 2)
        middle = sorted(seed)[len(seed) // 4 : len(seed) - len(seed) // 4]
        if long.count_between(middle[0], middle[-1]) > recent.size:
            return False
        long.reseed(seed)
        # Until the window holds 2 x short values again, its scale is at least the old one:
        # a MAD of 16 readings is often far too small.
        self._prior = self._scale
        return True

    def nbytes(self) -> int:
        return self.long.nbytes() + self.recent.nbytes() + self.threshold.nbytes()


def two_levels(s: array[float], floor: float) -> float | None:
    """The split between two levels of the sorted values s, or None when s has one level."""
    n = len(s)
    if n < 100:
        return None
    prefix = list(accumulate(s))
    total = prefix[-1]
    best, cut = -1.0, 0
    for i in range(n // 10, n - n // 10 + 1):  # each class at least a tenth of the values
        below = prefix[i - 1]
        gap = (total - below) / (n - i) - below / i
        between = i * (n - i) * gap * gap
        if between > best:
            best, cut = between, i
    rest = n - cut
    spread = min(s[3 * cut // 4] - s[cut // 4], s[cut + 3 * rest // 4] - s[cut + rest // 4])
    if s[cut + rest // 2] - s[cut // 2] <= SEPARATION * max(spread / _IQR_SD, floor):
        return None
    return 0.5 * (s[cut - 1] + s[cut])


class Persistence:
    """The robust z of the median of the last 3 readings, against the value window's median
    and scale or, on a series of two levels, against the level that median is at; no more
    than the reading's own z against the same (a change that lasts up to this reading)."""

    __slots__ = ("_at", "_last", "_m", "_n", "levels", "split", "threshold")

    def __init__(self, threshold: TailThreshold) -> None:
        self.threshold = threshold
        self.levels: tuple[Component, Component] | None = None
        self.split = 0.0  # between the two levels
        self._last = array("d")  # the two readings before this one
        self._m: float | None = None  # the median of 3 of the last z()
        self._at: Component | None = None  # the level it was judged against
        self._n = 0

    def z(self, v: float, value: Component, floor: float) -> float:
        """After value.z(v): the persistence z of v; 0 until the first split into levels (a
        two-level series judged as one would calibrate the threshold on nonsense)."""
        self._m = self._at = None
        last = self._last
        if self._n < FIRST_FIT or value._scale <= 0:
            return 0.0
        a, b = last
        m = self._m = max(min(a, b), min(max(a, b), v))
        base: Component = value
        if self.levels is not None:
            base = self._at = self.levels[m >= self.split]
            if base.z(m, floor) == 0.0:
                return 0.0
        # The change must last up to this reading: the reading after a burst of spikes is
        # normal, though the median of 3 still holds one of them.
        return min(abs(m - base._m), abs(v - base._m)) / base._scale

    def learn(self, v: float, value: Component, floor: float) -> None:
        """After value.learn(v)."""
        if self._at is not None and self._m is not None:
            self._at.learn(self._m)
        last = self._last
        if len(last) == 2:
            last[0] = last[1]
            last[1] = v
        else:
            last.append(v)
        self._n += 1
        if self._n % REFIT == 0:
            self._refit(value, floor)

    def _refit(self, value: Component, floor: float) -> None:
        split = two_levels(value.long._sorted, floor)
        if split is None:
            self.levels = None
            return
        self.split = split
        if self.levels is not None:
            return
        # Two levels, newly: each learns the medians of 3 in the value window at its level.
        levels = (
            Component(LEVEL_WINDOW, LEVEL_SHORT, self.threshold),
            Component(LEVEL_WINDOW, LEVEL_SHORT, self.threshold),
        )
        ring = value.long.recent(value.long.size)
        for i in range(2, len(ring)):
            m = sorted(ring[i - 2 : i + 1])[1]
            levels[m >= split].long.add(m)
        self.levels = levels

    def nbytes(self) -> int:
        levels = sum(c.long.nbytes() + c.recent.nbytes() for c in self.levels or ())
        return levels + self.threshold.nbytes() + 8 * len(self._last)
