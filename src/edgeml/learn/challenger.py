"""A challenger in its grace period and the rule that promotes or drops it.

Champion and challenger predict the same samples; the rule looks at the paired differences
of their losses (champion minus challenger), so what both find hard cancels out. Clear
evidence promotes early; otherwise the grace period ends it. A challenger is never dropped
early: right after a change both models are learning the new regime, and the fresher one
often catches up only after a while.
"""

from __future__ import annotations

import math
from typing import Any, Literal

__all__ = ["Challenger"]

# No verdict on fewer paired samples than this: a t statistic of a handful means little.
MIN_EVIDENCE = 30
# t beyond this promotes before the grace period ends (looked at on every sample, so it must
# be strict); at the end the challenger wins only with t above FINAL_T.
EARLY_T = 3.0
FINAL_T = 2.0
# The challenger's predictions are served while a fading mean of the paired differences
# (weight LEAD_WEIGHT on the newest) says it leads, after at least LEAD_MIN of them.
LEAD_WEIGHT = 0.05
LEAD_MIN = 10


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
        self._sum_d = 0.0
        self._sum_d2 = 0.0
        self.lead = 0.0  # the fading mean of the paired differences (> 0: it leads)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A challenger pickled before it could lead: it leads from its next readings on.
        self.__dict__.update({"lead": 0.0, **state})

    def observe(self, champion_loss: float, challenger_loss: float) -> None:
        d = champion_loss - challenger_loss
        self.n += 1
        self.champion_loss += champion_loss
        self.challenger_loss += challenger_loss
        self._sum_d += d
        self._sum_d2 += d * d
        self.lead += LEAD_WEIGHT * (d - self.lead)

    def leads(self) -> bool:
        """Whether its predictions should be served now (its loss has lately been lower)."""
        return self.n >= LEAD_MIN and self.lead > 0

    def t(self) -> float:
        """How reliably the challenger's loss is lower (a paired t statistic; > 0: it is)."""
        n = self.n
        if n < 2:
            return 0.0
        mean = self._sum_d / n
        var = max(self._sum_d2 - n * mean * mean, 0.0) / (n - 1)
        if var <= 1e-24:
            return 0.0 if mean == 0 else math.copysign(math.inf, mean)
        return mean / math.sqrt(var / n)

    def verdict(self, grace: int) -> Literal["promote", "drop"] | None:
        if self.n < MIN_EVIDENCE:
            return None
        t = self.t()
        if t >= EARLY_T:
            return "promote"
        if self.n >= grace:
            return "promote" if t >= FINAL_T else "drop"
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
            "warm_start": self.warm_start,
            "trigger": self.reason,
            "drift_seq": self.drift_seq,
        }
