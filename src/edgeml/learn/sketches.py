"""Bounded-memory rolling statistics for the anomaly detectors (edgeml.learn.robust): float
arrays (`array('d')`) only, no Python object per reading, so a key's state is fixed in size
and pickles compactly."""

from __future__ import annotations

import collections
import math
from array import array
from bisect import bisect_left, bisect_right, insort

__all__ = ["RollingMedian", "TailThreshold"]

# MAD -> standard deviation for normal data.
_MAD_SD = 1.4826


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

    def quantile(self, q: float) -> float:
        s = self._sorted
        return s[int(q * (len(s) - 1))] if s else 0.0

    def count_between(self, lo: float, hi: float) -> int:
        return bisect_right(self._sorted, hi) - bisect_left(self._sorted, lo)

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


YOUNG = 500


def _top(n: int, quantile: float) -> int:
    """How many of n values are at or above their `quantile` (1e-9: 5000 x (1 - 0.995) is
    25.000000000000022 in floating point)."""
    return max(1, math.ceil(n * (1 - quantile) - 1e-9))


class TailThreshold:
    """max(floor, factor x the `quantile` of the last `window` values), from a sketch.

    The values come in blocks of `block`; of each of the last `window // block - 1` blocks (and
    of the current one) only the largest ceil(window x (1 - quantile)) are kept, which is
    enough to know the window's upper quantile exactly (the window spans the last
    `window - block` to `window` values)."""

    __slots__ = ("_blocks", "_current", "_in_block", "_value", "block", "factor", "floor", "keep",
                 "quantile")  # fmt: skip

    def __init__(self, window: int, block: int, quantile: float, factor: float, floor: float):
        self.block = block
        self.quantile = quantile
        self.factor = factor
        self.floor = floor
        # The window's top ceil(window x (1 - quantile)) may all fall in one block.
        self.keep = _top(window, quantile)
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
        # A young stream counts as YOUNG values at least, the unseen ones calm: its threshold
        # needs 3 values above it, not 0.5 % of a few hundred (1 or 2 spikes).
        kth = _top(max(counted, YOUNG), self.quantile)
        pool = sorted([*self._current, *(v for b in self._blocks for v in b)], reverse=True)
        self._value = (
            self.floor if kth > len(pool) else max(self.floor, self.factor * pool[kth - 1])
        )

    def nbytes(self) -> int:
        return 8 * (len(self._current) + sum(len(b) for b in self._blocks))
