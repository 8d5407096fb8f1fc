"""The robust anomaly detectors (edgeml.learn.robust) on their own and through the anomaly task:
level shifts absorbed within the stated bound, spikes kept out of the threshold, calibration
bounded, pickling, the field that fired, the seasonal memory."""

from __future__ import annotations

import hashlib
import math
import pickle
import random
import statistics
from array import array
from pathlib import Path

import pytest
from river import anomaly, compose, preprocessing

from edgeml.config import AnomalyConfig, RetrainConfig, StreamConfig
from edgeml.learn import Learner, offline, snapshot
from edgeml.learn.levels import LEVEL_ABSORB, two_levels
from edgeml.learn.robust import ABSORB_BOUND, CalibratedHalfSpace, Judgement, RobustZ
from edgeml.learn.sketches import RollingMedian, TailThreshold
from edgeml.records import Sample

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def run(d: RobustZ | CalibratedHalfSpace, values: list[dict[str, float]], step: float = 60.0,
        timestamps: bool = True) -> list[Judgement]:  # fmt: skip
    out = []
    for i, x in enumerate(values):
        ts = T0 + i * step if timestamps else None
        out.append(d.judge_one(x, ts))
        d.learn_one(x, ts)
    return out


def noise(n: int, seed: int = 0, level: float = 100.0, sd: float = 2.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(level, sd) for _ in range(n)]


def one(values: list[float]) -> list[dict[str, float]]:
    return [{"v": v} for v in values]


# --- the rolling statistics ----------------------------------------------------------------


def test_rolling_median_and_mad_match_a_full_sort() -> None:
    rng = random.Random(7)
    for _ in range(300):
        r = RollingMedian(rng.randint(1, 60))
        values = [float(round(rng.gauss(0, 3))) for _ in range(rng.randint(1, 90))]
        for v in values:
            r.add(v)
        window = values[-r.size :]
        m = statistics.median(window)
        assert r.median() == m
        deviations = sorted(abs(v - m) for v in window)
        assert r.mad(m) == deviations[(len(deviations) - 1) // 2]
        assert r.recent(5) == window[-5:]


def test_tail_threshold_is_the_exact_quantile_of_its_window() -> None:
    rng = random.Random(3)
    t = TailThreshold(window=5000, block=500, quantile=0.995, factor=1.0, floor=0.0)
    values = [rng.expovariate(1) for _ in range(12_345)]
    for v in values:
        t.add(v)
    # the window is the last 4,500 to 5,000 values: here the 4,845 of the closed blocks and
    # the current one; its 0.995 quantile is its ceil(0.005 x 4,845) = 25th largest
    window = values[-(9 * 500 + 12_345 % 500) :]
    assert t.get() == sorted(window, reverse=True)[math.ceil(0.005 * len(window)) - 1]
    assert t.nbytes() <= 8 * 10 * 25  # bounded: at most 25 values per block, 10 blocks


# --- RobustZ ---------------------------------------------------------------------------------


@pytest.mark.parametrize("timestamps", [True, False])
def test_a_level_shift_is_absorbed_within_the_stated_bound(timestamps: bool) -> None:
    values = noise(3000, seed=1)
    shift = 2000
    values[shift:] = [v + 40 for v in values[shift:]]  # 20 standard deviations
    out = run(RobustZ(), one(values), timestamps=timestamps)
    assert out[shift].flag  # alerted from its first reading
    late = [i - shift for i in range(shift, 3000) if out[i].flag]
    assert max(late) < ABSORB_BOUND == 17, late
    assert not any(j.flag for j in out[500:shift])


def test_a_two_level_series_is_not_re_seeded_each_time_it_switches() -> None:
    # A compressor: 30 readings on at 120 W, 30 off at 2 W; the long window knows both levels.
    rng = random.Random(2)
    values = [(120 if (i // 30) % 2 else 2) + rng.gauss(0, 1) for i in range(4000)]
    values[3000] = 900.0
    out = run(RobustZ(), one(values), timestamps=False)
    flagged = [i for i, j in enumerate(out) if j.flag and i >= 1000]
    assert flagged == [3000]


def test_a_spike_is_not_learned_into_the_threshold() -> None:
    # A spike every 250 readings (0.4 %, below the calibration's 0.5 %): every one is
    # flagged, as severely at the end as at the start, and nothing else is.
    values = noise(8000, seed=4)
    spikes = range(1000, 8000, 250)
    for i in spikes:
        values[i] += 60
    out = run(RobustZ(), one(values))
    assert all(out[i].flag for i in spikes)
    assert [i for i, j in enumerate(out) if j.flag and i not in spikes] == []
    first, last = out[spikes[0]].severity, out[spikes[-1]].severity
    assert last == pytest.approx(first, rel=0.3)


def test_calibration_is_bounded_and_forgets() -> None:
    # Heavy-tailed noise raises the threshold: few flags, not a fixed share; once the noise
    # is gone for `calibration` readings, the threshold is back to its floor.
    rng = random.Random(5)
    heavy = [100 + 2 * rng.gauss(0, 1) / max(abs(rng.gauss(0, 1)), 0.05) for _ in range(6000)]
    calm = noise(7000, seed=6)
    d = RobustZ()
    out = run(d, one(heavy + calm), timestamps=False)
    threshold = d._features["v"].value.threshold
    assert sum(j.flag for j in out[1000:6000]) / 5000 < 0.005
    high = max(j.z / j.severity for j in out[5000:6000] if j.severity > 0)
    assert high > 10
    # back to 1.5 x the 0.995 quantile of a normal |z| (2.8): about 4.2
    assert 4.0 <= threshold.get() < 5.0
    assert d.state_bytes() <= STATE_BYTES


# The stated per-feature bound (robust.py), in doubles: value and seasonal windows (a ring and a
# sorted copy each), their short windows, the seasonal memory, three thresholds' sketches, two
# levels' windows and short windows, the last two readings.
STATE_BYTES = 8 * (2 * 2 * 576 + 2 * 2 * 32 + 4 * 288 + 3 * 10 * 25 + 2 * 2 * (128 + 8) + 2)
assert STATE_BYTES == 39_040


def test_memory_per_feature_is_bounded_as_stated() -> None:
    rng = random.Random(14)
    d = RobustZ()
    run(d, one([(120 if (i // 30) % 2 else 2) + rng.gauss(0, 1) for i in range(20_000)]))
    assert d._features["v"].persist.levels is not None  # every part is in use
    assert 0.9 * STATE_BYTES < d.state_bytes() <= STATE_BYTES


def test_a_lasting_change_is_flagged_where_no_single_reading_of_it_would_be() -> None:
    # A spike of 15 sd every 100 readings (1 %) raises the value's threshold above 20 sd; a
    # lasting change of 8 sd is then flagged by the persistence z (the median of the last 3
    # readings), whose threshold the single spikes do not touch.
    rng = random.Random(3)
    values = [rng.gauss(100, 2) + (30 if i % 100 == 50 else 0) for i in range(3000)]
    values += [rng.gauss(116, 2) for _ in range(10)]
    d = RobustZ(seasonal=False)
    out = run(d, one(values))
    feature = d._features["v"]
    assert feature.value.threshold.get() > 20 and feature.persist.threshold.get() < 5
    assert sum(j.flag for j in out[500:3000]) <= 2  # spikes of its normal are not flagged
    assert all(j.flag for j in out[3002:3010])


def cycle(n: int, on: float, shift_at: int, rng: random.Random) -> list[float]:
    """A compressor, a reading a minute: on 20-30 min (a 180-220 W first minute, then `on` W
    until shift_at, `on` + 40 W after), off 30-45 min at 2 W."""
    values: list[float] = []
    running = True
    while len(values) < n:
        running = not running
        for k in range(rng.randint(20, 30) if running else rng.randint(30, 45)):
            level = on + (40 if len(values) >= shift_at else 0)
            if not running:
                values.append(2 + rng.gauss(0, 0.3))
            else:
                values.append(rng.uniform(180, 220) if k == 0 else level + rng.gauss(0, 3))
    return values[:n]


def test_a_new_level_of_a_two_level_series_is_flagged_and_absorbed() -> None:
    # Off at 2 W, on at 120 W, then on at 160 W: the plain z's scale spans both levels, so
    # only the z against the level at hand sees the new one (the fridge suite's cycle series).
    values = cycle(3600, 120.0, 3000, random.Random(4))
    d = RobustZ()
    out = run(d, one(values))
    assert d._features["v"].persist.levels is not None
    assert sum(j.flag for j in out[200:3000]) <= 0.001 * 2800  # switching is normal
    new = [i for i in range(3000, 3600) if 140 < values[i] < 175]  # readings at the new level
    flagged = [new.index(i) for i in range(3000, 3600) if out[i].flag]
    assert flagged[0] == 0  # from its first reading
    assert max(flagged) < LEVEL_ABSORB  # and absorbed


def test_two_levels_only_when_the_classes_stand_apart() -> None:
    rng = random.Random(15)
    normal = array("d", sorted(rng.gauss(0, 1) for _ in range(500)))
    skewed = array("d", sorted(rng.expovariate(1) for _ in range(500)))
    two = array("d", sorted(rng.gauss(0 if i % 3 else 50, 1) for i in range(500)))
    assert two_levels(normal, 1e-9) is None and two_levels(skewed, 1e-9) is None
    split = two_levels(two, 1e-9)
    assert split is not None and 5 < split < 45
    assert two_levels(two[:99], 1e-9) is None  # too few values to say


def test_a_robust_snapshot_from_before_the_persistence_z_loads() -> None:
    # tests/fixtures/robust-0.1.0-7973cf3.pickle: RobustZ() of edgeml at 7973cf3 after 700
    # readings {"v": gauss(100, 2)} (seed 5) a minute apart from T0, pickled.
    path = Path(__file__).parents[1] / "fixtures" / "robust-0.1.0-7973cf3.pickle"
    d = pickle.loads(path.read_bytes())
    feature = d._features["v"]
    assert feature.persist.threshold.get() == feature.value.threshold.get()
    assert d.window == 500  # its own parameters, not today's defaults
    rng = random.Random(16)
    values = [rng.gauss(100, 2) for _ in range(300)] + [rng.gauss(130, 2) for _ in range(5)]
    out = []
    for i, v in enumerate(values):
        ts = T0 + 60 * (700 + i)
        out.append(d.judge_one({"v": v}, ts))
        d.learn_one({"v": v}, ts)
    assert not any(j.flag for j in out[:300]) and all(j.flag for j in out[300:])
    again = pickle.loads(pickle.dumps(d))
    assert again.judge_one({"v": 100.0}) == d.judge_one({"v": 100.0})


def test_score_and_flag_agree_with_the_severity() -> None:
    values = noise(1500, seed=8)
    values[1200] += 100
    out = run(RobustZ(), one(values))
    for j in out[100:]:
        assert j.score == pytest.approx(j.severity / (1 + j.severity))
        assert j.flag == (j.severity > 1) == (j.score > 0.5)
    assert out[1200].flag and out[1200].z > 4


def test_pickling_round_trip_gives_identical_judgements() -> None:
    values = noise(3000, seed=9)
    values[2500] += 50
    d = RobustZ()
    run(d, one(values[:2000]))
    copy = pickle.loads(pickle.dumps(d))
    start = T0 + 2000 * 60
    a = [(d.judge_one(x, start + i * 60), d.learn_one(x, start + i * 60))
         for i, x in enumerate(one(values[2000:]))]  # fmt: skip
    b = [(copy.judge_one(x, start + i * 60), copy.learn_one(x, start + i * 60))
         for i, x in enumerate(one(values[2000:]))]  # fmt: skip
    assert a == b
    assert len(pickle.dumps(d)) < 40_000


def test_multivariate_names_the_field_that_fired() -> None:
    rng = random.Random(10)
    xs = [{"rms": rng.gauss(1, 0.1), "temp": rng.gauss(40, 0.5)} for _ in range(2000)]
    xs[1500]["temp"] = 55.0
    xs[1700]["rms"] = 3.0
    out = run(RobustZ(), xs)
    assert (out[1500].flag, out[1500].field) == (True, "temp")
    assert (out[1700].flag, out[1700].field) == (True, "rms")
    assert sum(j.flag for j in out[500:]) == 2


def daily(n: int, seed: int = 11, missing_peak_on: int | None = None) -> list[float]:
    """Five-minute readings of a daily pattern: 10 at night, 50 from 9:00 to 17:00."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        minute = (i * 5) % 1440
        peak = 9 * 60 <= minute < 17 * 60 and (i * 5) // 1440 != missing_peak_on
        out.append((50 if peak else 10) + rng.gauss(0, 1))
    return out


def test_the_seasonal_memory_sees_a_missing_daily_peak() -> None:
    values = daily(288 * 10, missing_peak_on=8)
    day8 = range(288 * 8 + 9 * 12, 288 * 8 + 17 * 12)
    seasonal = run(RobustZ(), one(values), step=300)
    plain = run(RobustZ(seasonal=False), one(values), step=300)
    assert any(seasonal[i].flag for i in day8)
    assert not any(plain[i].flag for i in day8)
    # and the pattern itself is learned: nothing flagged on the normal days after the first two
    assert not any(j.flag for j in seasonal[288 * 2 : 288 * 8])


# --- HalfSpaceTrees behind the same calibration ---------------------------------------------


def test_calibrated_halfspace_flags_a_joint_anomaly_and_learns_every_reading() -> None:
    rng = random.Random(12)
    xs = []
    for _ in range(3000):
        a = rng.gauss(0, 1)
        xs.append({"a": a, "b": a + rng.gauss(0, 0.1)})
    xs[2500] = {"a": 8.0, "b": -8.0}
    d = CalibratedHalfSpace(anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=250,
                                                    seed=42))  # fmt: skip
    out = run(d, xs)
    assert out[2500].flag and out[2500].field in ("a", "b")
    assert sum(j.flag for j in out[500:]) <= 0.01 * 2500
    assert d._n == 3000  # every reading learned
    copy = pickle.loads(pickle.dumps(d))
    assert copy.judge_one({"a": 0.1, "b": 0.1}) == d.judge_one({"a": 0.1, "b": 0.1})


# --- through the anomaly task ------------------------------------------------------------------


def stream(**kw: object) -> StreamConfig:
    return StreamConfig(name="s", topic="t/#", task="anomaly", **kw)  # type: ignore[arg-type]


def test_the_default_anomaly_preset_is_robust_and_never_drifts() -> None:
    cfg = stream(anomaly=AnomalyConfig(warmup=200))
    assert cfg.model == "robust"
    values = noise(4000, seed=13)
    values[2000:] = [v + 30 for v in values[2000:]]
    samples = [Sample("s", "k", T0 + 60 * i, {"v": v}) for i, v in enumerate(values)]
    learner = Learner(cfg, "k")
    outs = [o for o, events in offline.run(cfg, samples, learner)]
    # the score is no loss: nothing for ADWIN to watch, no drift, no retrain
    assert all(o.error is None and o.drift is None and o.request is None for o in outs)
    assert learner.drifts == 0 and learner.model_version == 1
    flagged = [i for i, o in enumerate(outs) if o.flag]
    assert flagged and flagged[0] == 2000 and max(flagged) < 2000 + ABSORB_BOUND


def test_a_scheduled_challenger_is_not_started_for_an_anomaly_stream() -> None:
    # It would never be judged (no loss); with policy reset it replaces the detector.
    samples = [Sample("s", "k", T0 + 60 * i, {"v": v}) for i, v in enumerate(noise(300))]
    for policy, retrains in (("challenger", 0), ("reset", 4)):  # 5 h of readings
        cfg = stream(retrain=RetrainConfig(policy=policy, every="1h"))  # type: ignore[arg-type]
        events = [e for _, answered in offline.run(cfg, samples) for e in answered]
        assert sum(e.kind == "retrain" for e in events) == retrains


def test_old_pickles_find_the_anomaly_task_where_it_was() -> None:
    from edgeml.learn.anomaly_task import Anomaly
    from edgeml.learn.tasks import Anomaly as Old

    assert Old is Anomaly


def test_a_snapshot_of_an_old_quantile_filter_is_not_restored() -> None:
    # Without drift retrains it would never be replaced: the daemon rebuilds from the log.
    cfg = stream(model="halfspace")
    learner = Learner(cfg, "k")
    hst = anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=42)
    learner.model = anomaly.QuantileFilter(compose.Pipeline(preprocessing.MinMaxScaler(), hst),
                                           q=0.99)  # fmt: skip
    blob = snapshot.dump(learner)
    with pytest.raises(snapshot.SnapshotError, match="older edgeml"):
        snapshot.load(cfg, "k", blob, hashlib.sha256(blob).hexdigest(), snapshot.RIVER_VERSION)
    fresh = Learner(cfg, "k")
    blob = snapshot.dump(fresh)
    restored = snapshot.load(cfg, "k", blob, hashlib.sha256(blob).hexdigest(),
                             snapshot.RIVER_VERSION)  # fmt: skip
    assert isinstance(restored.model, CalibratedHalfSpace)
