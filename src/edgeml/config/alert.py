"""`[stream.anomaly]` and `[stream.alert]`: an anomaly stream's warm-up, and how its flagged
readings become announced episodes.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictFloat, StrictInt, field_validator

from edgeml.config.base import Duration, Frozen, parse_duration

__all__ = ["AlertConfig", "AnomalyConfig"]

Severity = Annotated[StrictFloat | StrictInt, Field(ge=0)]


class AnomalyConfig(Frozen):
    warmup: Annotated[StrictInt, Field(ge=0, le=1_000_000)] = 200
    # Ignored since the detectors calibrate their own threshold and alerts are episodes;
    # accepted so that older configs validate (`edgeml check` names them as ignored).
    quantile: Annotated[StrictFloat, Field(gt=0.5, lt=1)] = 0.99
    cooldown: Duration = "60s"

    @property
    def cooldown_s(self) -> float:
        return parse_duration(self.cooldown)


class AlertConfig(Frozen):
    # An episode is announced once it has this many flagged readings ...
    min_count: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = 1
    # ... spanning at least this long.
    min_duration: Duration = "0s"
    # It ends at the first normal reading this long after its last flagged one.
    clear_after: Duration = "5m"
    # After an episode ends, the next one of the same key is recorded but not published for
    # this long, unless it is `escalate` times as severe.
    cooldown: Duration = "1h"
    escalate: Annotated[StrictFloat | StrictInt, Field(ge=1)] = 2.0
    # Episodes published per key and hour; beyond it they are recorded only. 0: no limit.
    # (Per key: the budget is part of the key's state, rebuilt exactly by a replay.)
    max_per_hour: Annotated[StrictInt, Field(ge=0, le=1_000_000)] = 0
    # Level names by the least severity they take (1 = the detector's threshold); an
    # announced episode is published again (`update`) when it reaches a higher level.
    severity: dict[str, Severity] = Field(
        default_factory=lambda: {"minor": 1.0, "major": 2.0, "critical": 4.0}
    )

    @field_validator("severity")
    @classmethod
    def _levels(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("give at least one level, e.g. { minor = 1.0 }")
        return v

    @property
    def min_duration_s(self) -> float:
        return parse_duration(self.min_duration)

    @property
    def clear_after_s(self) -> float:
        return parse_duration(self.clear_after)

    @property
    def cooldown_s(self) -> float:
        return parse_duration(self.cooldown)
