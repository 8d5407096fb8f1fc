"""bench/nab_score.py against cases computed by hand from the NAB rules (S(p) = -tanh(2.5 p))."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _load() -> ModuleType:
    path = Path(__file__).parents[2] / "bench" / "nab_score.py"
    spec = importlib.util.spec_from_file_location("nab_score", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["nab_score"] = module
    spec.loader.exec_module(module)
    return module


nab = _load()
STANDARD = nab.PROFILES["standard"]
LOW_FP = nab.PROFILES["reward_low_FP_rate"]
LOW_FN = nab.PROFILES["reward_low_FN_rate"]
# 100 rows: probation 15; one window, rows 40 to 49 (width 10, right edge 49).
WINDOW = [(40, 49)]


def raw(alerts: list[int], profile: tuple[float, float, float] = STANDARD) -> float:
    return float(nab.score_file(100, WINDOW, alerts, profile).raw)


def test_sigmoid_and_probation() -> None:
    assert nab.sigmoid_s(0) == 0
    assert nab.sigmoid_s(-1) == pytest.approx(0.986614, abs=1e-6)  # tanh(2.5)
    assert nab.sigmoid_s(1) == pytest.approx(-0.986614, abs=1e-6)
    assert nab.sigmoid_s(3.01) == -1
    assert [nab.probation(n) for n in (100, 4032, 5000, 6000, 20000)] == [15, 604, 750, 750, 750]


def test_an_alert_at_the_start_of_the_window_earns_the_full_weight() -> None:
    assert raw([40]) == pytest.approx(1.0)
    assert nab.normalised([nab.score_file(100, WINDOW, [40], STANDARD)], STANDARD) == 100


def test_a_late_alert_earns_less_and_only_the_earliest_counts() -> None:
    assert raw([49]) == pytest.approx(0.248242, abs=1e-6)  # tanh(0.25) / tanh(2.5)
    assert raw([45, 42, 49]) == pytest.approx(0.977107, abs=1e-6)  # tanh(2) / tanh(2.5)


def test_a_missed_window_costs_fn_weight() -> None:
    assert raw([]) == -1.0
    assert raw([], LOW_FN) == -2.0
    assert nab.normalised([nab.score_file(100, WINDOW, [], STANDARD)], STANDARD) == 0


def test_false_alerts_cost_by_distance_from_the_previous_window() -> None:
    assert raw([10, 40]) == pytest.approx(1.0)  # row 10 is in the probation period
    assert raw([20, 40]) == pytest.approx(1 - 0.11)  # before the first window: full cost
    assert raw([20, 40], LOW_FP) == pytest.approx(1 - 0.22)
    # 5 rows after the right edge: p = 5 / 9, cost 0.11 tanh(2.5 * 5 / 9)
    assert raw([40, 54]) == pytest.approx(1 - 0.11 * 0.882926, abs=1e-6)
    assert raw([40, 90]) == pytest.approx(1 - 0.11)  # p = 41 / 9 > 3: full cost


def test_counts_and_normalisation_over_files() -> None:
    hit = nab.score_file(100, WINDOW, [42, 20, 60], STANDARD)
    assert (hit.windows, hit.detected, hit.false_alerts, hit.normal_rows) == (1, 1, 2, 75)
    miss = nab.score_file(100, WINDOW, [], STANDARD)
    perfect = nab.score_file(100, WINDOW, [40], STANDARD)
    assert nab.normalised([perfect, miss], STANDARD) == pytest.approx(50.0)
    assert nab.normalised([perfect, perfect], LOW_FN) == pytest.approx(100.0)
    # a file without windows only costs its false alerts
    empty = nab.score_file(100, [], [50, 60], STANDARD)
    assert (empty.raw, empty.false_alerts, empty.normal_rows) == (pytest.approx(-0.22), 2, 85)
