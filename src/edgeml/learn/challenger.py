"""A challenger in its grace period and the rule that promotes or drops it.

Champion and challenger predict the same samples; the rule looks at the paired differences
of their losses (champion minus challenger), so what both find hard cancels out. The
differences of neighbouring samples are correlated (both models err together on a hard
stretch), so a t test on single differences is far too confident: it promoted a challenger
no better than its champion in 48 % of AR(1) runs. The rule therefore tests the means of
blocks of BLOCK differences (batch means: blocks this long are nearly independent) against
Student's quantiles. Clear evidence promotes early; otherwise the grace period ends it. A
challenger is never dropped early: right after a change both models are learning the new
regime, and the fresher one often catches up only after a while.
"""

from __future__ import annotations

import math
from typing import Any, Literal

__all__ = ["Challenger", "block_size"]

# Paired differences per block, and the blocks needed before any verdict.
BLOCK = 25
MIN_BLOCKS = 5
# One-sided Student quantiles for 4, 5, ... 40 degrees of freedom (blocks - 1); beyond, the
# last. EARLY (0.05 %) promotes before the grace period ends, looked at after every block;
# FINAL (2.5 %) at its end (at 0.5 % a challenger 30 % better over 500 readings of the drifting
# stream of tests/e2e was dropped: its lead is large early and small later, which widens the
# spread of the block means).
EARLY_T = (8.61, 6.869, 5.959, 5.408, 5.041, 4.781, 4.587, 4.437, 4.318, 4.221, 4.14, 4.073,
           4.015, 3.965, 3.922, 3.883, 3.85, 3.819, 3.792, 3.768, 3.745, 3.725, 3.707, 3.69,
           3.674, 3.659, 3.646, 3.633, 3.622, 3.611, 3.601, 3.591, 3.582, 3.574, 3.566, 3.558,
           3.551)  # fmt: skip
FINAL_T = (2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131,
           2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052,
           2.048, 2.045, 2.042, 2.04, 2.037, 2.035, 2.032, 2.03, 2.028, 2.026, 2.024, 2.023,
           2.021)  # fmt: skip
# The challenger's predictions are served while a fading mean of the paired differences
# (weight LEAD_WEIGHT on the newest) says it leads, after at least LEAD_MIN of them.
LEAD_WEIGHT = 0.05
LEAD_MIN = 10


def block_size(grace: int) -> int:
    """BLOCK, or less when the grace period cannot hold MIN_BLOCKS of them."""
    return max(1, min(BLOCK, grace // MIN_BLOCKS))


def quantile(table: tuple[float, ...], blocks: int) -> float:
    return table[min(blocks - MIN_BLOCKS, len(table) - 1)]


class Challenger:
    def __init__(
        self,
        model: Any,
        reason: str,
        seq: int,
        warm_start: int,
        drift_seq: int | None,
        block: int = BLOCK,
    ) -> None:
        self.model = model
        self.reason = reason
        self.seq = seq  # the last sample before its grace period
        self.warm_start = warm_start
        self.drift_seq = drift_seq
        self.block = block
        self.n = 0
        self.champion_loss = 0.0
        self.challenger_loss = 0.0
        self.lead = 0.0  # the fading mean of the paired differences (> 0: it leads)
        self._open = 0.0  # the sum of the differences of the block being filled
        self._in_block = 0  # and how many it has
        self.blocks = 0
        self._sum_b = 0.0  # of the block means
        self._sum_b2 = 0.0

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A challenger pickled by an earlier edgeml (a per-sample t test): its block test
        # starts with its next readings.
        fresh = {"lead": 0.0, "block": BLOCK, "_open": 0.0, "_in_block": 0, "blocks": 0,
                 "_sum_b": 0.0, "_sum_b2": 0.0}  # fmt: skip
        self.__dict__.update({**fresh, **state})

    def observe(self, champion_loss: float, challenger_loss: float) -> None:
        d = champion_loss - challenger_loss
        self.n += 1
        self.champion_loss += champion_loss
        self.challenger_loss += challenger_loss
        self.lead += LEAD_WEIGHT * (d - self.lead)
        self._open += d
        self._in_block += 1
        if self._in_block == self.block:
            mean = self._open / self.block
            self._open, self._in_block = 0.0, 0
            self.blocks += 1
            self._sum_b += mean
            self._sum_b2 += mean * mean

    def leads(self) -> bool:
        """Whether its predictions should be served now (its loss has lately been lower)."""
        return self.n >= LEAD_MIN and self.lead > 0

    def t(self) -> float:
        """How reliably the challenger's loss is lower: the t statistic of the block means
        (> 0: it is); 0 with fewer than two blocks."""
        k = self.blocks
        if k < 2:
            return 0.0
        mean = self._sum_b / k
        var = max(self._sum_b2 - k * mean * mean, 0.0) / (k - 1)
        if var <= 1e-24:
            return 0.0 if mean == 0 else math.copysign(math.inf, mean)
        return mean / math.sqrt(var / k)

    def verdict(self, grace: int) -> Literal["promote", "drop"] | None:
        ended = self.n >= grace
        if self.blocks < MIN_BLOCKS:
            return "drop" if ended else None
        t = self.t()
        if self._in_block == 0 and t >= quantile(EARLY_T, self.blocks):
            return "promote"
        if ended:
            return "promote" if t >= quantile(FINAL_T, self.blocks) else "drop"
        return None

    def figures(self) -> dict[str, Any]:
        """What decided it, for the event."""
        n = max(self.n, 1)
        t = self.t()
        return {
            "samples": self.n,
            "champion_loss": self.champion_loss / n,
            "challenger_loss": self.challenger_loss / n,
            "t": t if math.isfinite(t) else (99.0 if t > 0 else -99.0),
            "blocks": self.blocks,
            "warm_start": self.warm_start,
            "trigger": self.reason,
            "drift_seq": self.drift_seq,
        }
