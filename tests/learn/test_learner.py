"""edgeml.learn.Learner: test-then-train metrics equal River's own, drift, rolling window."""

from __future__ import annotations

import math
import random

import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing

from edgeml.config import DriftConfig, StreamConfig
from edgeml.learn import Learner
from edgeml.records import DriftEvent, Outcome, Sample

TRUMP_FEATURES = ("ordinal_date", "gallup", "ipsos", "morning_consult", "rasmussen", "you_gov")


def make_stream(
    features: tuple[str, ...] = ("x",),
    rolling_window: int = 500,
    delta: float = 0.002,
    model: str = "",
) -> StreamConfig:
    return StreamConfig(
        name="s",
        topic="t/#",
        target="y",
        features=features,
        rolling_window=rolling_window,
        drift=DriftConfig(delta=delta),
        model=model,
    )


def feed(learner: Learner, rows: list[tuple[dict[str, float], float]]) -> list[Outcome]:
    return [
        learner.process(Sample("s", "default", float(i), x, y), seq=i)
        for i, (x, y) in enumerate(rows)
    ]


def river_score(metric: metrics.base.Metric) -> float:
    model = preprocessing.StandardScaler() | linear_model.LinearRegression()
    return float(evaluate.progressive_val_score(datasets.TrumpApproval(), model, metric).get())


def test_metrics_are_none_before_the_first_sample() -> None:
    assert Learner(make_stream(), "default").metrics() == {
        "mae": None,
        "rmse": None,
        "r2": None,
        "rolling_mae": None,
    }


def test_trump_approval_matches_river_progressive_validation() -> None:
    learner = Learner(make_stream(TRUMP_FEATURES, rolling_window=10_000, model="linear"), "default")
    rows = [(x, y) for x, y in datasets.TrumpApproval()]
    assert set(rows[0][0]) == set(TRUMP_FEATURES)
    outcomes = feed(learner, rows)

    expected_mae = river_score(metrics.MAE())
    expected_rmse = river_score(metrics.RMSE())
    got = learner.metrics()
    assert got["mae"] == pytest.approx(expected_mae, rel=1e-9)
    assert got["rmse"] == pytest.approx(expected_rmse, rel=1e-9)
    # the window holds every row here, so the rolling MAE is the cumulative one
    assert got["rolling_mae"] == pytest.approx(expected_mae, rel=1e-9)
    # the outcomes carry the same errors that the metric averaged
    assert sum(o.error for o in outcomes) / len(outcomes) == pytest.approx(expected_mae, rel=1e-9)
    assert learner.samples == len(rows) == 1001
    assert learner.last_seen == float(len(rows) - 1)
    assert [o.seq for o in outcomes] == list(range(len(rows)))
    assert all(o.model_version == 1 for o in outcomes)


def _regimes(seed: int, *regimes: tuple[float, float]) -> list[tuple[dict[str, float], float]]:
    """1000 samples per (slope, intercept) regime: y = slope * x + intercept + N(0, 0.1)."""
    rng = random.Random(seed)
    rows = []
    for slope, intercept in regimes:
        for _ in range(1000):
            x = rng.gauss(0.0, 1.0)
            rows.append(({"x": x}, slope * x + intercept + rng.gauss(0.0, 0.1)))
    return rows


def _events(outcomes: list[Outcome]) -> list[DriftEvent]:
    return [o.drift for o in outcomes if o.drift is not None]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drift_is_detected_after_a_change_and_not_before(seed: int) -> None:
    learner = Learner(make_stream(), "default")
    outcomes = feed(learner, _regimes(seed, (1.0, 0.0), (-3.0, 5.0)))
    events = _events(outcomes)

    assert [e for e in events if e.seq < 1000] == []
    assert len(events) >= 1
    assert [e.detections for e in events] == list(range(1, len(events) + 1))
    assert learner.drifts == len(events)
    first = events[0]
    # found soon after the change (ADWIN looks for a cut at every sample), by the stream/key
    # that saw it
    assert 1000 <= first.seq < 1010
    assert (first.stream, first.key) == ("s", "default")
    assert first.ts == float(first.seq)
    assert first.width > 0
    # the error in ADWIN's window is above the noise the model had learned (found within a
    # few samples, the window still holds mostly samples from before the change)
    noise = sum(o.error for o in outcomes[800:1000] if o.error is not None) / 200
    assert first.mean_error > 1.5 * noise
    assert outcomes[first.seq].drift is first


def test_drift_detections_count_up_across_changes() -> None:
    learner = Learner(make_stream(), "default")
    outcomes = feed(learner, _regimes(7, (1.0, 0.0), (-3.0, 5.0), (4.0, -10.0), (1.0, 20.0)))
    events = _events(outcomes)

    assert [e for e in events if e.seq < 1000] == []
    # every change is seen, each within 200 samples
    for change in (1000, 2000, 3000):
        assert any(change <= e.seq < change + 200 for e in events), (change, events)
    assert [e.detections for e in events] == list(range(1, len(events) + 1))
    assert learner.drifts == len(events) >= 3


def test_stationary_stream_has_no_drift() -> None:
    learner = Learner(make_stream(), "default")
    outcomes = feed(learner, _regimes(3, (2.0, 1.0), (2.0, 1.0), (2.0, 1.0)))
    assert _events(outcomes) == []
    assert learner.drifts == 0


@pytest.mark.parametrize("window", [1, 5, 37])
def test_rolling_mae_covers_only_the_last_window(window: int) -> None:
    learner = Learner(make_stream(rolling_window=window), "default")
    rng = random.Random(window)
    # a level shift makes early errors much larger than late ones
    rows = [
        ({"x": rng.uniform(0, 1)}, (100.0 if i < 50 else 0.0) + rng.uniform(0, 1))
        for i in range(120)
    ]
    outcomes = []
    for i, (x, y) in enumerate(rows):
        outcomes.append(learner.process(Sample("s", "default", float(i), x, y), seq=i))
        last = outcomes[-window:]
        expected = sum(abs(o.sample.y - o.y_pred) for o in last) / len(last)
        assert learner.metrics()["rolling_mae"] == pytest.approx(expected, rel=1e-12, abs=1e-12)

    cumulative = sum(o.error for o in outcomes) / len(outcomes)
    got = learner.metrics()
    assert got["mae"] == pytest.approx(cumulative, rel=1e-12)
    assert got["rolling_mae"] != pytest.approx(got["mae"], rel=0.01)


def test_extreme_features_keep_predictions_finite() -> None:
    learner = Learner(make_stream(("a", "b")), "default")
    outcomes = []
    for i in range(2000):
        sign = 1.0 if i % 2 == 0 else -1.0
        x = {"a": sign * 1e15, "b": -sign * 1e15}
        y = sign * 1e15 if i % 3 else 1.0
        outcomes.append(learner.process(Sample("s", "default", float(i), x, y), seq=i))
    for o in outcomes:
        assert math.isfinite(o.y_pred), o
        assert math.isfinite(o.error), o
    assert all(v is not None and math.isfinite(v) for v in learner.metrics().values())
    assert learner.samples == 2000


def test_extreme_then_normal_features_recover() -> None:
    learner = Learner(make_stream(("a",)), "default")
    for i in range(200):
        sign = 1.0 if i % 2 == 0 else -1.0
        learner.process(Sample("s", "default", float(i), {"a": sign * 1e15}, sign * 1e15), seq=i)
    errors = []
    for i in range(200, 1200):
        o = learner.process(Sample("s", "default", float(i), {"a": 1.0}, 2.0), seq=i)
        assert math.isfinite(o.y_pred)
        errors.append(o.error)
    # it goes on learning: the plain readings are predicted well in the end
    assert max(errors[-100:]) < 0.1


def test_a_model_that_keeps_raising_asks_for_its_parent_and_one_success_resets_the_count() -> None:
    learner = Learner(make_stream(), "default")
    good = learner.model
    learner.model = preprocessing.StandardScaler()  # no predict_one: raises on every reading
    steps = [
        learner.step(Sample("s", "default", float(i), {"x": 1.0}, 2.0), seq=i) for i in range(9)
    ]
    assert all(exc is not None and out.y_pred is None and out.request is None for out, exc in steps)
    assert (learner.failing, learner.last_seq) == (9, 8)
    assert learner.error is not None and learner.error.startswith("AttributeError")
    # A snapshot keeps the count, so a replay after a restart asks at the same reading.
    restored = Learner.from_state(learner.stream, "default", learner.state())
    out, _ = restored.step(Sample("s", "default", 9.0, {"x": 1.0}, 2.0), seq=9)
    assert out.request is not None and (out.request.kind, out.request.parent) == ("restore", True)
    assert [e.kind for e in out.events] == ["guard"] and out.events[0].data["version"] == 1
    learner.model = good
    out, exc = learner.step(Sample("s", "default", 9.0, {"x": 1.0}, 2.0), seq=9)
    assert exc is None and out.y_pred is not None and (learner.failing, learner.error) == (0, None)
