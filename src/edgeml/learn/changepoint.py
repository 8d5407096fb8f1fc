"""Where did the champion's error change? The recent losses and a split estimate over them.

ADWIN says *that* the error rose; its window at that moment mostly holds the old regime
(on FriedmanDrift 28-60 new samples of 128-224). A challenger warm-started on that window
learns the concept it is meant to replace. This estimates *where* the rise began, so the
warm start can take only the samples after it.
"""

from __future__ import annotations

import math
from array import array

__all__ = ["LossTail"]

# Losses kept (a drift is detected well within this many samples of a change).
TAIL = 512
# The old side of a split is at least this long (its mean is the yardstick); the new side
# may be a single loss: a detection can come at the first sample of a new regime.
MIN_SIDE = 5


class LossTail:
    """The last TAIL losses of the champion and the numbers of their samples (the learner's
    count of its own samples: the log's seq also counts other keys' samples)."""

    __slots__ = ("_losses", "_next", "_numbers", "count")

    def __init__(self) -> None:
        self._losses = array("d", bytes(8 * TAIL))
        self._numbers = array("q", bytes(8 * TAIL))
        self._next = 0
        self.count = 0

    def add(self, number: int, loss: float) -> None:
        self._losses[self._next] = loss
        self._numbers[self._next] = number
        self._next = (self._next + 1) % TAIL
        self.count = min(self.count + 1, TAIL)

    def clear(self) -> None:
        self._next = 0
        self.count = 0

    def _ordered(self) -> tuple[list[float], list[int]]:
        start = (self._next - self.count) % TAIL
        idx = [(start + i) % TAIL for i in range(self.count)]
        return [self._losses[i] for i in idx], [self._numbers[i] for i in idx]

    def change_start(self) -> int | None:
        """The number of the first sample after the most likely rise in the loss: the
        split that maximises (mean after - mean before) * sqrt(n_before * n_after / n), a
        standardised difference of the two means. None with too few losses or no rise.
        """
        losses, numbers = self._ordered()
        n = len(losses)
        if n <= MIN_SIDE:
            return None
        total = math.fsum(losses)
        best, best_k = 0.0, None
        before = 0.0
        for k in range(1, n):  # k losses before the split
            before += losses[k - 1]
            if k < MIN_SIDE:
                continue
            m = n - k
            score = ((total - before) / m - before / k) * math.sqrt(k * m / n)
            if score > best:
                best, best_k = score, k
        return None if best_k is None else numbers[best_k]

    def __getstate__(self) -> tuple[bytes, bytes, int, int]:
        return self._losses.tobytes(), self._numbers.tobytes(), self._next, self.count

    def __setstate__(self, state: tuple[bytes, bytes, int, int]) -> None:
        losses, numbers, self._next, self.count = state
        self._losses = array("d", losses)
        self._numbers = array("q", numbers)
