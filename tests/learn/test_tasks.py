"""The four tasks through Learner and offline.run: predictions, metrics, presets, snapshots."""

from __future__ import annotations

import hashlib
import math
import pickle
import random
import statistics
import tracemalloc
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing, utils

from edgeml.config import (
    PRESET_TASKS,
    AlertConfig,
    AnomalyConfig,
    Config,
    ForecastConfig,
    RetrainConfig,
    StreamConfig,
)
from edgeml.errors import ConfigError
from edgeml.learn import Learner, offline, snapshot
from edgeml.learn.check import check_params
from edgeml.learn.presets import build_model, estimator_of
from edgeml.learn.robust import ABSORB_BOUND
from edgeml.learn.tasks import RollingMean
from edgeml.records import Outcome, Request, Sample

KEY = "default"


def stream(task: str = "regression", model: str = "", **kw: Any) -> StreamConfig:
    target = None if task == "anomaly" else "y"
    return StreamConfig(name="s", topic="t/#", task=task, target=target, model=model, **kw)  # type: ignore[arg-type]


def outcomes(
    cfg: StreamConfig, samples: Iterable[Sample], lr: Learner | None = None
) -> list[Outcome]:
    return [o for o, _ in offline.run(cfg, samples, lr)]


def num(v: float | None) -> float:
    """A metric or prediction that must be there."""
    assert v is not None
    return v


def errors(outs: Iterable[Outcome]) -> list[float]:
    return [o.error for o in outs if o.error is not None]


def feed(lr: Learner, samples: Iterable[Sample], start: int = 1) -> list[Outcome]:
    return [lr.process(s, seq) for seq, s in enumerate(samples, start=start)]


# --- data --------------------------------------------------------------------------------------


def linear_rows(n: int, seed: int = 0, t0: float = 0.0) -> list[Sample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.uniform(0, 10), rng.uniform(0, 10)
        out.append(Sample("s", KEY, t0 + i, {"a": a, "b": b}, 3 * a - 2 * b + rng.gauss(0, 0.5)))
    return out


def binary_rows(n: int, seed: int = 0, unlabelled_every: int = 0) -> list[Sample]:
    """Two features; label True when a + b > 10 (with 5 % label noise)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.uniform(0, 10), rng.uniform(0, 10)
        label: bool | None = (a + b > 10) != (rng.random() < 0.05)
        if unlabelled_every and i % unlabelled_every == unlabelled_every - 1:
            label = None
        out.append(Sample("s", KEY, float(i), {"a": a, "b": b}, label=label))
    return out


def string_rows(n: int, seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.uniform(0, 10), rng.uniform(0, 10)
        label = "lo" if a + b < 7 else ("mid" if a + b < 13 else "hi")
        out.append(Sample("s", KEY, float(i), {"a": a, "b": b}, label=label))
    return out


def sensor_rows(
    n: int, seed: int = 0, spike: Any = lambda i: False, labelled: bool = True
) -> list[Sample]:
    """A two-channel sensor around (10, 50); `spike(i)` adds a large excursion to reading i."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.gauss(10, 1), rng.gauss(50, 5)
        bad = bool(spike(i))
        if bad:
            a, b = a + 30, b + 200
        out.append(Sample("s", KEY, float(i), {"a": a, "b": b}, label=bad if labelled else None))
    return out


def series(
    values: Iterable[float], step: float = 60.0, t0: float = 1_700_000_000.0
) -> list[Sample]:
    return [Sample("s", KEY, t0 + i * step, {}, y) for i, y in enumerate(values)]


def ramp(n: int) -> list[float]:
    return [3.0 + 0.5 * i for i in range(n)]


def sine(n: int, period: int = 24) -> list[float]:
    return [10 + 5 * math.sin(2 * math.pi * i / period) for i in range(n)]


def rows_for(task: str, n: int) -> list[Sample]:
    if task == "regression":
        return linear_rows(n)
    if task == "classification":
        return binary_rows(n)
    if task == "anomaly":
        return sensor_rows(n, labelled=False)
    return series(sine(n))


# --- regression ------------------------------------------------------------------------------


def test_regression_metrics_include_r2_as_river_computes_it() -> None:
    cfg = stream(features=("a", "b"))
    lr = Learner(cfg, KEY)
    outs = outcomes(cfg, linear_rows(500), lr)
    r2 = metrics.R2()
    for o in outs:
        r2.update(o.sample.y, o.y_pred)
    got = lr.metrics()
    assert set(got) == {"mae", "rmse", "r2", "rolling_mae"}
    assert got["r2"] == pytest.approx(r2.get(), rel=1e-12)
    assert 0.9 < num(got["r2"]) <= 1.0


# --- classification --------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["logistic", "tree", "forest"])
def test_every_reading_gets_a_label_and_probability_once_something_is_learned(model: str) -> None:
    cfg = stream("classification", model)
    outs = outcomes(cfg, binary_rows(400, unlabelled_every=4))
    for o in outs[1:]:
        assert o.label in (True, False), o
        assert o.y_pred is not None
        assert 0.0 <= o.y_pred <= 1.0
        # the probability of the predicted class, which is the most probable of two
        assert o.y_pred >= 0.5
        if o.sample.label is None:
            assert o.error is None
        else:
            assert o.error == (0.0 if o.label == o.sample.label else 1.0)
    assert sum(o.error == 0.0 for o in outs[100:] if o.error is not None) > 0.8 * 225


@pytest.mark.parametrize("model", ["logistic", "tree", "forest"])
def test_a_reading_without_label_is_predicted_but_not_learned(model: str) -> None:
    cfg = stream("classification", model, rolling_window=1000)
    lr = Learner(cfg, KEY)
    feed(lr, binary_rows(300))
    probes = [{"a": 1.0, "b": 2.0}, {"a": 6.0, "b": 5.0}, {"a": 9.0, "b": 9.5}]
    before = [lr.model.predict_proba_one(x) for x in probes]
    metrics_before = lr.metrics()
    unlabelled = [Sample("s", KEY, 300.0 + i, x) for i, x in enumerate(probes * 20)]
    outs = feed(lr, unlabelled, start=301)
    assert all(o.label is not None and o.y_pred is not None and o.error is None for o in outs)
    assert [lr.model.predict_proba_one(x) for x in probes] == before
    assert lr.metrics() == metrics_before
    assert lr.samples == 360
    # ...while one labelled reading does change it
    lr.process(Sample("s", KEY, 400.0, {"a": 9.0, "b": 9.5}, label=False), 400)
    assert [lr.model.predict_proba_one(x) for x in probes] != before


def test_classification_metrics_are_none_until_something_is_predicted() -> None:
    lr = Learner(stream("classification", "tree"), KEY)
    assert lr.metrics() == dict.fromkeys(("accuracy", "f1", "logloss", "rolling_accuracy"))
    # a tree that has never seen a label predicts nothing
    o = lr.process(Sample("s", KEY, 0.0, {"a": 1.0, "b": 1.0}), 1)
    assert (o.y_pred, o.label, o.error) == (None, None, None)
    assert lr.metrics()["accuracy"] is None


def test_binary_labels_use_binary_f1() -> None:
    # logistic: it predicts from the first reading, so every outcome here is scored
    cfg = stream("classification", model="logistic", rolling_window=100)
    lr = Learner(cfg, KEY)
    # imbalanced: True only when a + b > 14, so binary and macro F1 differ
    rows = [
        Sample(s.stream, s.key, s.ts, s.x, label=s.x["a"] + s.x["b"] > 14)
        for s in binary_rows(800, seed=3)
    ]
    outs = outcomes(cfg, rows, lr)
    acc, f1, macro = metrics.Accuracy(), metrics.F1(), metrics.MacroF1()
    for o in outs:
        acc.update(o.sample.label, o.label)
        f1.update(o.sample.label, o.label)  # type: ignore[arg-type]
        macro.update(o.sample.label, o.label)
    got = lr.metrics()
    assert set(got) == {"accuracy", "f1", "logloss", "rolling_accuracy"}
    assert got["accuracy"] == pytest.approx(acc.get(), abs=1e-12)
    assert got["f1"] == pytest.approx(f1.get(), abs=1e-12)
    assert f1.get() != pytest.approx(macro.get(), abs=1e-3)
    rolling = sum(o.label == o.sample.label for o in outs[-100:]) / 100
    assert got["rolling_accuracy"] == pytest.approx(rolling, abs=1e-12)
    for name in ("accuracy", "f1", "rolling_accuracy"):
        assert 0.0 <= num(got[name]) <= 1.0
    assert 0.0 < num(got["logloss"]) < math.log(2)  # better than a coin


@pytest.mark.parametrize("model", ["tree", "forest"])
def test_string_labels_use_macro_f1(model: str) -> None:
    cfg = stream("classification", model)
    lr = Learner(cfg, KEY)
    outs = outcomes(cfg, string_rows(600), lr)
    scored = [o for o in outs if o.label is not None]
    assert len(scored) >= 599
    acc, f1, macro = metrics.Accuracy(), metrics.F1(), metrics.MacroF1()
    for o in scored:
        acc.update(o.sample.label, o.label)
        f1.update(o.sample.label, o.label)  # type: ignore[arg-type]
        macro.update(o.sample.label, o.label)
    got = lr.metrics()
    assert set(got) == {"accuracy", "f1", "logloss", "rolling_accuracy"}
    assert got["accuracy"] == pytest.approx(acc.get(), abs=1e-12)
    assert got["f1"] == pytest.approx(macro.get(), abs=1e-12)
    assert num(got["f1"]) > 0.5
    assert f1.get() == 0.0  # the binary F1 of string labels means nothing
    assert got["logloss"] is not None and got["logloss"] > 0


@pytest.mark.parametrize(
    ("name", "metric"),
    [("accuracy", metrics.Accuracy), ("f1", metrics.F1), ("logloss", metrics.CrossEntropy)],
)
def test_phishing_matches_river_progressive_validation(name: str, metric: type) -> None:
    cfg = stream("classification", "logistic", retrain=RetrainConfig(policy="none"))
    lr = Learner(cfg, KEY)
    rows = [Sample("s", KEY, float(i), x, label=y) for i, (x, y) in enumerate(datasets.Phishing())]
    outs = outcomes(cfg, rows, lr)
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    expected = evaluate.progressive_val_score(datasets.Phishing(), model, metric()).get()
    assert lr.metrics()[name] == pytest.approx(expected, abs=1e-12, rel=0)
    assert len(outs) == lr.samples == 1250
    assert all(o.model_version == 1 and o.request is None for o in outs)


# --- anomaly ---------------------------------------------------------------------------------


def anomaly_stream(
    warmup: int = 500, cooldown: str = "60s", label: str | None = "bad"
) -> StreamConfig:
    return stream(
        "anomaly",
        features=("a", "b"),
        label=label,
        anomaly=AnomalyConfig(quantile=0.99, warmup=warmup, cooldown=cooldown),
    )


def _spike(i: int) -> bool:
    # 1 reading in 397 (0.25 %): rarer than the 0.5 % the detectors' thresholds calibrate on,
    # above which a recurring spike is the stream's normal.
    return i >= 1000 and i % 397 == 0


def test_anomaly_scores_flags_and_warmup() -> None:
    outs = outcomes(anomaly_stream(warmup=500), sensor_rows(5000, spike=_spike))
    assert all(o.y_pred is not None and 0.0 <= o.y_pred <= 1.0 for o in outs)
    assert all(o.flag is False for o in outs[:500])
    spikes = [o for i, o in enumerate(outs) if _spike(i)]
    normal = [o for i, o in enumerate(outs[500:], start=500) if not _spike(i)]
    assert len(spikes) == 10
    assert sum(bool(o.flag) for o in spikes) == len(spikes)
    assert sum(bool(o.flag) for o in normal) / len(normal) < 0.005
    # spikes score higher than normal readings
    normal_scores = sorted(num(o.y_pred) for o in normal)
    assert statistics.median(num(o.y_pred) for o in spikes) > normal_scores[int(0.95 * len(normal))]


def shifted_rows(n: int = 4000, change: int = 2000, seed: int = 1) -> list[Sample]:
    """A pump whose normal level doubles at `change` (it runs rougher after maintenance),
    with a labelled spike every 397 readings."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        level = 1.0 if i < change else 2.0
        a, b = rng.gauss(level, 0.1 * level), rng.gauss(3 * level, 0.3 * level)
        spike = i > 0 and i % 397 == 0
        if spike:
            a, b = 6 * a, 6 * b
        out.append(Sample("s", KEY, float(i), {"a": a, "b": b}, label=spike))
    return out


@pytest.mark.parametrize("policy", ["challenger", "reset", "none"])
def test_after_a_lasting_shift_the_detector_learns_the_new_normal_itself(policy: str) -> None:
    # The detector learns every reading and absorbs a level shift on its own; the anomaly
    # score is no loss, so no drift is called and nothing is retrained, whatever the policy.
    cfg = anomaly_stream(warmup=500).model_copy(update={"retrain": RetrainConfig(policy=policy)})
    outs = [o for o, _ in offline.run(cfg, shifted_rows())]
    assert all(o.drift is None and o.request is None and o.model_version == 1 for o in outs)
    late = outs[2000 + ABSORB_BOUND :]
    normal = [o for o in late if not o.sample.label]
    assert not any(o.flag for o in normal)
    assert all(o.flag for o in late if o.sample.label)  # the spikes still


def test_anomaly_flags_can_start_right_after_the_warmup() -> None:
    # every reading after the warm-up is a huge spike: the first judged one is flagged
    outs = outcomes(anomaly_stream(warmup=300), sensor_rows(310, spike=lambda i: i >= 300))
    assert not any(o.flag for o in outs[:300])
    assert outs[300].flag is True


@pytest.mark.parametrize("cooldown", ["0s", "1h"])
def test_a_burst_of_flags_is_one_episode_and_the_cooldown_holds_back_the_next(
    cooldown: str,
) -> None:
    cfg = anomaly_stream(warmup=300).model_copy(
        update={"alert": AlertConfig(clear_after="60s", cooldown=cooldown)}
    )
    # bursts of three spikes, one second apart, every 500 s (0.6 % of the readings)
    outs = outcomes(cfg, sensor_rows(3000, spike=lambda i: i >= 600 and i % 500 < 3))
    bursts = sorted({o.sample.ts // 500 for o in outs if o.flag})
    episodes = [o.episode for o in outs if o.episode is not None]
    new = [e for e in episodes if e.type == "new"]
    assert len(new) == len(bursts) >= 4  # one episode per burst, not one alert per flag
    assert [e.type for e in episodes] == ["new", "end"] * len(new)
    assert all(e.count == 3 for e in episodes if e.type == "end")
    published = [e.published for e in new]
    # The cooldown counts from an episode's end, by sample time: 1 h holds back every
    # like burst 500 s later; none twice as severe breaks through here.
    assert published == (
        [True] * len(new) if cooldown == "0s" else [True] + [False] * (len(new) - 1)
    )


def test_anomaly_metrics_with_ground_truth() -> None:
    cfg = anomaly_stream(warmup=500)
    lr = Learner(cfg, KEY)
    outs = outcomes(cfg, sensor_rows(3000, spike=_spike), lr)
    got = lr.metrics()
    assert set(got) == {"anomaly_rate", "roc_auc", "precision", "recall"}
    judged = outs[500:]
    prec, rec = metrics.Precision(), metrics.Recall()
    for o in judged:
        prec.update(bool(o.sample.label), bool(o.flag))
        rec.update(bool(o.sample.label), bool(o.flag))
    assert got["anomaly_rate"] == pytest.approx(sum(bool(o.flag) for o in judged) / len(judged))
    assert got["precision"] == pytest.approx(prec.get(), abs=1e-12)
    assert got["recall"] == pytest.approx(rec.get(), abs=1e-12)
    assert num(got["recall"]) >= 0.9
    assert 0.5 < num(got["roc_auc"]) <= 1.0


def test_anomaly_metrics_are_null_while_undefined() -> None:
    # Labelled, but no real anomaly yet: ROC AUC and recall mean nothing (River says 0).
    cfg = anomaly_stream(warmup=200)
    lr = Learner(cfg, KEY)
    outs = outcomes(cfg, sensor_rows(1500), lr)
    flagged = sum(bool(o.flag) for o in outs[200:])
    got = lr.metrics()
    assert got["roc_auc"] is None and got["recall"] is None
    # No flag on normal readings (the old quantile filter flagged 1 % of them by design):
    # precision is undefined too.
    assert flagged == 0 and got["precision"] is None
    # Once an anomaly comes, all three are numbers again.
    outcomes(cfg, sensor_rows(5, seed=1, spike=lambda i: True), lr)
    got = lr.metrics()
    assert got["recall"] is not None and got["roc_auc"] is not None


def test_anomaly_metrics_without_ground_truth_are_only_the_rate() -> None:
    cfg = anomaly_stream(warmup=200, label=None)
    lr = Learner(cfg, KEY)
    assert lr.metrics() == {"anomaly_rate": None}
    outs = outcomes(cfg, sensor_rows(1500, spike=_spike, labelled=False), lr)
    got = lr.metrics()
    assert set(got) == {"anomaly_rate"}
    assert got["anomaly_rate"] == pytest.approx(sum(bool(o.flag) for o in outs[200:]) / 1300)
    assert 0 < num(got["anomaly_rate"]) < 0.05


# --- forecast --------------------------------------------------------------------------------


def forecast_stream(model: str = "linear", **fc: Any) -> StreamConfig:
    return stream("forecast", model, features=(), forecast=ForecastConfig(**fc))


@pytest.mark.parametrize("lags", [1, 3, 6])
def test_no_forecast_until_lags_plus_one_values(lags: int) -> None:
    outs = outcomes(forecast_stream(lags=lags), series(ramp(50)))
    assert all(o.y_pred is None and o.error is None for o in outs[: lags + 1])
    assert all(o.y_pred is not None for o in outs[lags + 1 :])
    # the forecast of the next value is there once lags + 1 values have been seen
    assert all(o.forecast == () for o in outs[:lags])
    assert all(len(o.forecast) == 1 for o in outs[lags:])


def test_ramp_and_sine_are_learned() -> None:
    outs = outcomes(forecast_stream(lags=3), series(ramp(600)))
    assert max(errors(outs[-100:])) < 1e-3
    assert outs[-1].forecast[0] == pytest.approx(ramp(601)[-1], abs=1e-3)
    outs = outcomes(forecast_stream(lags=3), series(sine(2000)))
    assert max(errors(outs[-100:])) < 0.05
    assert outs[-1].forecast[0] == pytest.approx(sine(2001)[-1], abs=0.05)


def test_horizon_gives_that_many_values() -> None:
    values = ramp(600)
    outs = outcomes(forecast_stream(lags=3, horizon=3), series(values))
    assert all(o.forecast == () for o in outs[:3])
    assert all(len(o.forecast) == 3 for o in outs[3:])
    # each is the value that follows, k readings ahead
    for i in range(500, 597):
        assert outs[i].forecast == pytest.approx(values[i + 1 : i + 4], abs=1e-3)
    # the first value of the forecast is the next reading's prediction
    for i in range(500, 599):
        assert outs[i].forecast[0] == pytest.approx(outs[i + 1].y_pred, abs=1e-12)


@pytest.mark.parametrize("season", [4, 24])
def test_seasonal_needs_a_season_and_one(season: int) -> None:
    outs = outcomes(forecast_stream("seasonal", lags=3, season=season), series(sine(800, season)))
    assert all(o.y_pred is None for o in outs[: season + 1])
    assert all(o.y_pred is not None for o in outs[season + 1 :])
    assert max(errors(outs[-100:])) < 0.05


def test_forecast_metric_keys() -> None:
    cfg = forecast_stream()
    lr = Learner(cfg, KEY)
    assert lr.metrics() == dict.fromkeys(("mae", "rmse", "smape", "rolling_mae"))
    outs = outcomes(cfg, series(sine(300)), lr)
    got = lr.metrics()
    assert set(got) == {"mae", "rmse", "smape", "rolling_mae"}
    scored = [o for o in outs if o.y_pred is not None]
    smape = metrics.SMAPE()
    for o in scored:
        smape.update(o.sample.y, o.y_pred)
    assert got["mae"] == pytest.approx(statistics.mean(errors(scored)))
    assert got["smape"] == pytest.approx(smape.get(), rel=1e-12)
    assert all(num(v) >= 0 for v in got.values())


def test_time_features_add_hour_and_week() -> None:
    plain = Learner(forecast_stream(lags=2), KEY)
    timed = Learner(forecast_stream(lags=2, time_features=True), KEY)
    monday_6am = datetime(2024, 1, 1, 6, 0, tzinfo=UTC).timestamp()
    rows = series([1.0, 2.0, 4.0, 7.0], step=3600.0, t0=monday_6am - 3 * 3600)
    feed(plain, rows[:3])
    feed(timed, rows[:3])
    assert set(plain.task.inputs(rows[3]) or {}) == {"d1", "d2"}
    x = timed.task.inputs(rows[3])
    assert x is not None
    assert set(x) == {"d1", "d2", "hour_sin", "hour_cos", "week_sin", "week_cos"}
    assert (x["d1"], x["d2"]) == (2.0, 1.0)
    assert x["hour_sin"] == pytest.approx(1.0)
    assert x["hour_cos"] == pytest.approx(0.0, abs=1e-12)
    day = 0.25 * 2 * math.pi / 7  # a quarter into Monday
    assert x["week_sin"] == pytest.approx(math.sin(day))
    assert x["week_cos"] == pytest.approx(math.cos(day))


# --- presets ---------------------------------------------------------------------------------

PAIRS = [(preset, task) for preset, tasks in PRESET_TASKS.items() for task in tasks]


@pytest.mark.parametrize(("preset", "task"), PAIRS)
def test_every_preset_learns_each_of_its_tasks(preset: str, task: str) -> None:
    cfg = stream(task, preset, anomaly=AnomalyConfig(warmup=0), forecast=ForecastConfig(season=4))
    lr = Learner(cfg, KEY)
    outs = feed(lr, rows_for(task, 50))
    assert lr.samples == 50
    assert type(lr.model).__name__ in ("Pipeline", "CalibratedHalfSpace", estimator_of(cfg))
    late = outs[10:]
    assert all(o.y_pred is not None and math.isfinite(o.y_pred) for o in late), late[0]
    assert all(v is None or math.isfinite(v) for v in lr.metrics().values())
    assert lr.metrics() != dict.fromkeys(lr.metrics())


def test_params_reach_the_estimator() -> None:
    cfg = stream(model="tree", params={"grace_period": 77, "max_depth": 5})
    check_params(Config(stream=(cfg,)))
    est = build_model(cfg)["HoeffdingAdaptiveTreeRegressor"]
    assert (est.grace_period, est.max_depth, est.seed) == (77, 5, 42)
    # a param overrides the preset's default
    assert build_model(stream(model="forest", params={"n_models": 5}))["ARFRegressor"].n_models == 5


def test_unknown_param_names_the_preset_and_lists_valid_ones() -> None:
    cfg = Config(stream=(stream(model="tree", params={"grace_perod": 50}),))
    with pytest.raises(ConfigError) as info:
        check_params(cfg)
    msg = str(info.value)
    assert "stream.0.params" in msg
    assert "'grace_perod'" in msg
    assert "preset 'tree'" in msg
    assert "HoeffdingAdaptiveTreeRegressor" in msg
    for valid in ("grace_period", "max_depth", "delta"):
        assert valid in msg


def test_every_bad_stream_is_named() -> None:
    good = stream(model="linear", params={"l2": 0.1})
    bad = stream(model="halfspace", task="anomaly", params={"n_tree": 3}).model_copy(
        update={"name": "b"}
    )
    with pytest.raises(ConfigError) as info:
        check_params(Config(stream=(good, bad)))
    lines = str(info.value).splitlines()
    assert len(lines) == 1
    assert "stream.1.params" in lines[0] and "'halfspace'" in lines[0]
    assert "n_trees" in lines[0]


def test_param_value_river_refuses_is_a_config_error() -> None:
    cfg = Config(stream=(stream(model="forest", params={"n_models": "x"}),))
    with pytest.raises(ConfigError, match=r"stream\.0\.params: ARFRegressor refuses them"):
        check_params(cfg)


def test_param_value_river_refuses_only_when_learning_is_a_config_error() -> None:
    cfg = stream(model="tree", features=("a", "b"), params={"grace_period": "x"})
    with pytest.raises(ConfigError, match=r"grace_period|HoeffdingAdaptiveTreeRegressor"):
        check_params(Config(stream=(cfg,)))


def test_params_that_make_the_model_diverge_are_a_config_error() -> None:
    # No River error: the predictions just explode (about 1e200 after one reading).
    cfg = stream(model="linear", features=("a", "b"), params={"intercept_lr": 1e200})
    with pytest.raises(
        ConfigError,
        match=r"stream\.0\.params: LinearRegression refuses them: the model diverges on a few "
        r"gentle readings \(diverged prediction: ",
    ):
        check_params(Config(stream=(cfg,)))


# --- snapshots -------------------------------------------------------------------------------


def round_trip(lr: Learner) -> Learner:
    blob = snapshot.dump(lr)
    sha = hashlib.sha256(blob).hexdigest()
    return snapshot.load(lr.stream, lr.key, blob, sha, snapshot.RIVER_VERSION)


SNAPSHOT_CASES = [
    ("regression", "linear"),
    ("regression", "forest"),
    ("classification", "logistic"),
    ("classification", "tree"),
    ("anomaly", "robust"),
    ("anomaly", "halfspace"),
    ("forecast", "seasonal"),
    ("forecast", "tree"),
]


@pytest.mark.parametrize(("task", "preset"), SNAPSHOT_CASES)
def test_snapshot_round_trip_gives_identical_next_outcomes(task: str, preset: str) -> None:
    cfg = stream(
        task,
        preset,
        anomaly=AnomalyConfig(warmup=100),
        forecast=ForecastConfig(season=12, horizon=2),
    )
    rows = rows_for(task, 600)
    original = Learner(cfg, KEY)
    feed(original, rows[:300])
    restored = round_trip(original)
    assert restored is not original and restored.model is not original.model
    assert restored.metrics() == original.metrics()
    a = feed(original, rows[300:], start=301)
    b = feed(restored, rows[300:], start=301)
    assert a == b
    assert restored.metrics() == original.metrics()
    assert any(o.y_pred is not None for o in a)


def test_snapshot_of_a_challenger_in_its_grace_period() -> None:
    cfg = stream(model="tree", features=("a", "b"), retrain=RetrainConfig(grace=200))
    rows = linear_rows(400)
    original = Learner(cfg, KEY)
    feed(original, rows[:150])
    events = original.start_challenger(Request("challenger", "manual", 150, 100), rows[50:150])
    assert [e.kind for e in events] == ["retrain"]
    feed(original, rows[150:200], start=151)
    grace = original.grace()
    assert grace is not None and grace["samples"] == 50
    restored = round_trip(original)
    assert restored.grace() == grace
    a = feed(original, rows[200:], start=201)
    b = feed(restored, rows[200:], start=201)
    assert a == b
    ended = [e for o in a for e in o.events if e.kind in ("promotion", "challenger_dropped")]
    assert len(ended) == 1  # the verdict came after the snapshot, the same in both
    assert original.challenger is None and restored.challenger is None
    assert restored.model_version == original.model_version


# --- rolling metrics -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 7, 500])
def test_rolling_mean_equals_rivers_rolling_metrics(size: int) -> None:
    rng = random.Random(size)
    mine_mae, mine_acc = RollingMean(size), RollingMean(size)
    mae = utils.Rolling(metrics.MAE, window_size=size)
    acc = utils.Rolling(metrics.Accuracy, window_size=size)
    for _ in range(3 * size + 11):  # wraps a few times and stops mid-window
        y, p = rng.gauss(0, 1e3), rng.gauss(0, 1e3)
        mine_mae.update(abs(y - p))
        mae.update(y, p)
        label, guess = rng.random() < 0.5, rng.random() < 0.5
        mine_acc.update(float(label == guess))
        acc.update(label, guess)
        assert mine_mae.get() == pytest.approx(mae.get(), rel=1e-12)
        assert mine_acc.get() == pytest.approx(acc.get(), rel=1e-12)


def test_rolling_mean_is_small_and_pickles() -> None:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    r = RollingMean(500)
    for i in range(1234):
        r.update(float(i))
    size = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert size < 8 * 1024  # River's Rolling(MAE) of 500 holds about 110 KiB
    copy = pickle.loads(pickle.dumps(r))
    copy.update(5.0)
    r.update(5.0)
    assert copy.get() == r.get() == pytest.approx(statistics.fmean([*range(735, 1234), 5.0]))


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_a_snapshot_with_rivers_rolling_window_keeps_its_rolling_metric(task: str) -> None:
    # Snapshots taken before RollingMean pickled River's utils.Rolling in the task.
    cfg = stream(task, features=("a", "b"))
    rows = linear_rows(800) if task == "regression" else binary_rows(800)
    lr = Learner(cfg, KEY)
    outs = feed(lr, rows)
    metric = metrics.MAE if task == "regression" else metrics.Accuracy
    old = utils.Rolling(metric, window_size=cfg.rolling_window)
    for o in outs:
        if task == "regression" and o.y_pred is not None:
            old.update(o.sample.y, o.y_pred)
        elif task == "classification" and o.label is not None:
            old.update(o.sample.label, o.label)
    name = "rolling_mae" if task == "regression" else "rolling_accuracy"
    assert lr.metrics()[name] == pytest.approx(old.get(), rel=1e-12)
    lr.task.rolling = old  # as an older edgeml left it
    back = round_trip(lr)
    assert isinstance(back.task.rolling, RollingMean)
    assert back.metrics()[name] == pytest.approx(old.get(), rel=1e-12)
    assert back.metrics() == pytest.approx(Learner.from_state(cfg, KEY, lr.state()).metrics())


@pytest.mark.parametrize(
    ("task", "dataset", "metric", "name"),
    [
        ("classification", datasets.Phishing, metrics.Accuracy, "accuracy"),
        ("regression", datasets.TrumpApproval, metrics.MAE, "mae"),
    ],
)
def test_auto_with_retraining_off_matches_river_progressive_validation(
    task: str, dataset: Any, metric: type, name: str
) -> None:
    cfg = stream(task, retrain=RetrainConfig(policy="none"))
    assert cfg.model == "auto"  # the default
    lr = Learner(cfg, KEY)
    if task == "classification":
        rows = [Sample("s", KEY, float(i), x, label=y) for i, (x, y) in enumerate(dataset())]
    else:
        rows = [Sample("s", KEY, float(i), x, float(y)) for i, (x, y) in enumerate(dataset())]
    outcomes(cfg, rows, lr)
    expected = evaluate.progressive_val_score(dataset(), build_model(cfg), metric()).get()
    assert lr.metrics()[name] == pytest.approx(expected, abs=1e-12, rel=0)
