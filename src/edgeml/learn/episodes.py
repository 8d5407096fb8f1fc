"""Anomaly alerts as episodes: flagged readings of one key open an episode, normal readings
close it, and each episode is announced once (`new`), again only when its severity level
rises (`update`), and at its `end`.

The tracker is a fold over the key's readings by their sample time, pickled with the learner:
a daemon killed with an episode open rebuilds it from its snapshot and the log, so the
episode resumes or ends, never lost, never announced twice.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Literal

from edgeml.config import AlertConfig
from edgeml.records import Episode

__all__ = ["EpisodeTracker", "level_of"]


@dataclass(slots=True)
class _Open:
    id: int
    start_ts: float
    last_flag_ts: float
    count: int = 0
    max_score: float = 0.0
    max_severity: float = 0.0
    field: str | None = None
    level: str | None = None  # the level announced (None: not announced yet)
    published: bool = False


@dataclass(slots=True)
class EpisodeTracker:
    """The episode state of one key."""

    open: _Open | None = None
    last_end_ts: float | None = None  # when the last announced episode ended
    last_end_severity: float = 0.0
    published_at: collections.deque[float] = field(default_factory=collections.deque)

    def update(
        self,
        cfg: AlertConfig,
        ts: float,
        seq: int,
        flag: bool,
        score: float,
        severity: float,
        field_: str | None,
    ) -> Episode | None:
        """Fold one judged reading in; the announcement it causes, if any."""
        ep = self.open
        if not flag:
            if ep is not None and ts - ep.last_flag_ts >= cfg.clear_after_s:
                return self._end(ep)
            return None
        if ep is None:
            ep = self.open = _Open(seq, ts, ts)
        ep.count += 1
        ep.last_flag_ts = ts
        ep.max_score = max(ep.max_score, score)
        if severity > ep.max_severity:
            ep.max_severity, ep.field = severity, field_
        if ep.level is None:
            if ep.count < cfg.min_count or ts - ep.start_ts < cfg.min_duration_s:
                return None
            ep.published = self._may_publish(cfg, ts, ep.max_severity)
            ep.level = level_of(cfg, ep.max_severity)
            return self._say("new", ep, None)
        level = level_of(cfg, ep.max_severity)
        if _rank(cfg, level) > _rank(cfg, ep.level):
            ep.level = level
            return self._say("update", ep, None)
        return None

    def _end(self, ep: _Open) -> Episode | None:
        self.open = None
        if ep.level is None:  # never announced (too short): it ends unsaid
            return None
        if ep.published:
            self.last_end_ts, self.last_end_severity = ep.last_flag_ts, ep.max_severity
        return self._say("end", ep, ep.last_flag_ts)

    def _may_publish(self, cfg: AlertConfig, ts: float, severity: float) -> bool:
        """The cooldown after the last published episode (unless this one is `escalate`
        times as severe) and the key's hourly budget (`max_per_hour`).
        """
        if (
            self.last_end_ts is not None
            and ts - self.last_end_ts < cfg.cooldown_s
            and severity < cfg.escalate * self.last_end_severity
        ):
            return False
        while self.published_at and ts - self.published_at[0] >= 3600:
            self.published_at.popleft()
        if cfg.max_per_hour and len(self.published_at) >= cfg.max_per_hour:
            return False
        self.published_at.append(ts)
        return True

    @staticmethod
    def _say(kind: Literal["new", "update", "end"], ep: _Open, end_ts: float | None) -> Episode:
        return Episode(kind, ep.id, ep.start_ts, end_ts, ep.count, ep.max_score,
                       ep.max_severity, ep.level or "", ep.field, ep.published)  # fmt: skip


def level_of(cfg: AlertConfig, severity: float) -> str:
    """The highest `[stream.alert] severity` level whose minimum `severity` reaches."""
    name = ""
    for level, minimum in sorted(cfg.severity.items(), key=lambda item: item[1]):
        if severity >= minimum:
            name = level
    return name or min(cfg.severity, key=cfg.severity.__getitem__)


def _rank(cfg: AlertConfig, level: str | None) -> float:
    return -1.0 if level is None else cfg.severity.get(level, -1.0)
