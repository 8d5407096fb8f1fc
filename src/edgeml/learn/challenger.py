"""A challenger in its grace period and the rule that promotes or drops it.

Champion and challenger predict the same samples; the rule looks at the paired differences
of their losses (champion minus challenger), so what both find hard cancels out. Those
differences are autocorrelated (both models change slowly, a hard stretch of the stream lasts
a while), so a t statistic over single samples is far too confident: it promoted equal models
in 12 of 160 stationary runs. The rule is a batch-means t test instead: the differences are
averaged in blocks of BLOCK samples, the block means are close to independent, and the t
statistic of the block means is compared with Student's t for their degrees of freedom.
Clear evidence promotes early; otherwise the grace period ends it. A challenger is never
dropped early: right after a change both models are learning the new regime, and the fresher
one often catches up only after a while.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Literal

__all__ = ["Challenger", "t_quantile"]

# Paired differences per block; no verdict on fewer blocks than MIN_BLOCKS.
BLOCK = 20
MIN_BLOCKS = 5
# The first BURN_IN paired differences are not tested: a fresh challenger is still learning
# the new regime there, and what is asked is whether it is better now, not from its start.
BURN_IN = 2 * BLOCK
MIN_EVIDENCE = BURN_IN + BLOCK * MIN_BLOCKS
# One-sided error rates: early (looked at after every block, so it must be strict), and at
# the end of the grace period.
EARLY_ALPHA = 0.0005
FINAL_ALPHA = 0.005
# The challenger's predictions are served while a fading mean of the paired differences
# (weight LEAD_WEIGHT on the newest) says it leads, after at least LEAD_MIN of them.
LEAD_WEIGHT = 0.05
LEAD_MIN = 10
# A challenger that still leads at the end of the grace period, without proof, is judged on
# (its predictions served, promoted only at the early threshold) up to EXTEND times as long.
EXTEND = 4


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (Cornish-Fisher expansion around the normal's; within 1 % for
    df >= 4 at the tails used here). Plain float arithmetic, so deterministic.
    """
    z = NormalDist().inv_cdf(p)
    v = float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


class Challenger:
    def __init__(
        self, model: Any, reason: str, seq: int, warm_start: int, drift_seq: int | None
    ) -> None:
        self.model = model
        self.reason = reason
        self.seq = seq  # the last sample before its grace period
        self.warm_start = warm_start
        self.drift_seq = drift_seq
        self.n = 0
        self.champion_loss = 0.0
        self.challenger_loss = 0.0
        self._sum_d = 0.0  # over single samples (kept for snapshots of earlier versions)
        self._sum_d2 = 0.0
        self._block = 0.0  # the sum of the differences in the block being filled
        self._in_block = 0
        self.blocks = 0
        self._sum_b = 0.0  # of the block means, and of their squares
        self._sum_b2 = 0.0
        self.lead = 0.0  # the fading mean of the paired differences (> 0: it leads)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A challenger of an earlier version, in its grace period: its blocks start now.
        defaults = {"_block": 0.0, "_in_block": 0, "blocks": 0, "_sum_b": 0.0, "_sum_b2": 0.0,
                    "lead": 0.0}  # fmt: skip
        self.__dict__.update({**defaults, **state})

    def observe(self, champion_loss: float, challenger_loss: float) -> None:
        d = champion_loss - challenger_loss
        self.n += 1
        self.champion_loss += champion_loss
        self.challenger_loss += challenger_loss
        self._sum_d += d
        self._sum_d2 += d * d
        self.lead += LEAD_WEIGHT * (d - self.lead)
        if self.n <= BURN_IN:
            return
        self._block += d
        self._in_block += 1
        if self._in_block == BLOCK:
            b = self._block / BLOCK
            self.blocks += 1
            self._sum_b += b
            self._sum_b2 += b * b
            self._block, self._in_block = 0.0, 0

    def leads(self) -> bool:
        """Whether its predictions should be served now (its loss has lately been lower)."""
        return self.n >= LEAD_MIN and self.lead > 0

    def t(self) -> float:
        """How reliably the challenger's loss is lower: the t statistic of the block means of
        the paired differences (> 0: it is lower).
        """
        k = self.blocks
        if k < 2:
            return 0.0
        mean = self._sum_b / k
        var = max(self._sum_b2 - k * mean * mean, 0.0) / (k - 1)
        if var <= 1e-24:
            return 0.0 if mean == 0 else math.copysign(math.inf, mean)
        return mean / math.sqrt(var / k)

    def verdict(self, grace: int) -> Literal["promote", "drop"] | None:
        k = self.blocks
        if k < MIN_BLOCKS:  # a grace period shorter than MIN_EVIDENCE waits for it
            return None
        t = self.t()
        if t >= t_quantile(1 - EARLY_ALPHA, k - 1):
            return "promote"
        end = max(grace, MIN_EVIDENCE)
        if self.n == end and t >= t_quantile(1 - FINAL_ALPHA, k - 1):
            return "promote"
        if self.n < end or (self.leads() and t > 0 and self.n < EXTEND * end):
            return None  # judged on while it leads (at the early threshold only)
        return "drop"

    def figures(self) -> dict[str, Any]:
        """What decided it, for the event."""
        n = max(self.n, 1)
        t = self.t()
        return {
            "samples": self.n,
            "champion_loss": self.champion_loss / n,
            "challenger_loss": self.challenger_loss / n,
            "t": t if math.isfinite(t) else (99.0 if t > 0 else -99.0),
            "warm_start": self.warm_start,
            "trigger": self.reason,
            "drift_seq": self.drift_seq,
        }
