"""Anomaly episodes: one `new` per episode, `update` when the level rises, `end` after a
quiet `clear_after`; cooldown, escalation and the hourly budget hold announcements back.
"""

from __future__ import annotations

import pickle
from typing import Any

from edgeml.config import AlertConfig
from edgeml.learn.episodes import Episode, EpisodeTracker, level_of


def run(cfg: AlertConfig, readings: list[tuple[float, float]]) -> list[Episode]:
    """(ts, severity) per reading, flagged when severity > 1; the announcements made."""
    tracker = EpisodeTracker()
    out = []
    for seq, (ts, sev) in enumerate(readings, 1):
        ep = tracker.update(cfg, ts, seq, sev > 1, min(1.0, sev / 10), sev, "w")
        if ep is not None:
            out.append(ep)
    return out


def quiet(start: float, n: int, step: float = 60.0) -> list[tuple[float, float]]:
    return [(start + i * step, 0.3) for i in range(n)]


def kinds(eps: list[Episode]) -> list[tuple[Any, ...]]:
    return [(e.type, e.id, e.severity, e.published) for e in eps]


def test_a_burst_of_flags_is_one_episode_that_ends_after_clear_after() -> None:
    cfg = AlertConfig(clear_after="5m")
    readings = [*quiet(0, 10), (600, 1.5), (660, 1.6), (720, 1.2), *quiet(780, 10)]
    eps = run(cfg, readings)
    assert kinds(eps) == [("new", 11, "minor", True), ("end", 11, "minor", True)]
    end = eps[-1]
    assert (end.start_ts, end.end_ts, end.count, end.max_severity) == (600, 720, 3, 1.6)
    # It ends at the first normal reading 5 minutes after the last flag (720 + 300).
    assert end.end_ts == 720


def test_a_rising_severity_is_an_update_and_the_worst_field_is_named() -> None:
    eps = run(AlertConfig(), [*quiet(0, 3), (180, 1.5), (240, 2.5), (300, 5.0), (360, 3.0)])
    assert [(e.type, e.severity) for e in eps] == [
        ("new", "minor"),
        ("update", "major"),
        ("update", "critical"),
    ]
    assert eps[-1].field == "w" and eps[-1].max_severity == 5.0


def test_min_count_and_min_duration_keep_a_blip_from_being_announced() -> None:
    cfg = AlertConfig(min_count=3, min_duration="2m")
    blip = [*quiet(0, 3), (180, 3.0), (240, 3.0), *quiet(300, 10)]
    assert run(cfg, blip) == []
    lasting = [*quiet(0, 3), (180, 3.0), (240, 3.0), (300, 3.0), *quiet(360, 10)]
    assert kinds(run(cfg, lasting)) == [("new", 4, "major", True), ("end", 4, "major", True)]


def test_the_cooldown_holds_back_a_like_episode_but_not_one_twice_as_severe() -> None:
    cfg = AlertConfig(clear_after="0s", cooldown="1h")
    first = [(0, 0.5), (60, 1.5), (120, 0.5)]
    like = [(600, 1.5), (660, 0.5)]
    worse = [(1200, 3.5), (1260, 0.5)]
    eps = run(cfg, first + like + worse)
    assert [(e.type, e.published) for e in eps] == [
        ("new", True), ("end", True),  # the first
        ("new", False), ("end", False),  # recorded, not published: within the cooldown
        ("new", True), ("end", True),  # 3.5 >= 2 x 1.5: it breaks through
    ]  # fmt: skip
    after = [(0, 1.5), (60, 0.5), (3700, 1.5), (3760, 0.5)]  # an hour later: published
    assert [e.published for e in run(cfg, after)] == [True, True, True, True]


def test_max_per_hour_records_the_rest_without_publishing_them() -> None:
    cfg = AlertConfig(clear_after="0s", cooldown="0s", max_per_hour=2)
    readings = [r for i in range(4) for r in ((i * 600.0, 1.5), (i * 600.0 + 60, 0.5))]
    eps = [e for e in run(cfg, readings) if e.type == "new"]
    assert [e.published for e in eps] == [True, True, False, False]


def test_an_open_episode_survives_a_pickle_round_trip_and_is_not_announced_again() -> None:
    cfg = AlertConfig()
    tracker = EpisodeTracker()
    assert tracker.update(cfg, 0, 1, True, 0.9, 2.0, "w") is not None  # new
    restored = pickle.loads(pickle.dumps(tracker))
    assert restored.update(cfg, 60, 2, True, 0.9, 2.0, "w") is None  # still the same episode
    end = restored.update(cfg, 400, 3, False, 0.1, 0.2, "w")
    assert end is not None and (end.type, end.id, end.count) == ("end", 1, 2)


def test_levels_are_named_by_the_least_severity_they_take() -> None:
    cfg = AlertConfig(severity={"warning": 1, "critical": 3})
    assert [level_of(cfg, s) for s in (0.5, 1.0, 2.9, 3.0, 50)] == [
        "warning",
        "warning",
        "warning",
        "critical",
        "critical",
    ]
