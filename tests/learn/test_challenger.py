"""Challenger retraining: the promotion rule, drift -> retrain -> promotion, the policies, the
schedule, the non-finite guard and the determinism a crash replay relies on."""

from __future__ import annotations

import itertools
import math
import pickle
import random
import statistics
from collections.abc import Iterator
from typing import Any

import pytest

from edgeml.config import DriftConfig, RetrainConfig, StreamConfig
from edgeml.learn import Learner, offline
from edgeml.learn.challenger import EARLY_T, FINAL_T, LEAD_MIN, MIN_EVIDENCE, Challenger
from edgeml.learn.changepoint import TAIL, LossTail
from edgeml.learn.learner import GUARD_QUIET
from edgeml.learn.tasks import MAX_PREDICTION
from edgeml.records import ModelEvent, Outcome, Request, Sample

KEY = "default"
CHANGE = 3000  # the index of the first sample of the new regime (seq CHANGE + 1)


def make_stream(
    model: str = "tree",
    policy: str = "challenger",
    grace: int = 200,
    every: str | None = None,
    params: dict[str, Any] | None = None,
) -> StreamConfig:
    return StreamConfig(
        name="s",
        topic="t/#",
        target="y",
        features=("a", "b"),
        model=model,
        params=params or {},
        retrain=RetrainConfig(policy=policy, grace=grace, every=every),  # type: ignore[arg-type]
        drift=DriftConfig(warmup=500),
    )


def abrupt(seed: int = 0, n: int = 4500, step: float = 1.0) -> list[Sample]:
    """y = 3a - 2b + noise, then from sample CHANGE on y = -4a + 5b + 20 + noise."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.uniform(0, 10), rng.uniform(0, 10)
        y = 3 * a - 2 * b if i < CHANGE else -4 * a + 5 * b + 20
        out.append(Sample("s", KEY, i * step, {"a": a, "b": b}, y + rng.gauss(0, 0.5)))
    return out


def stationary(n: int, seed: int = 0, step: float = 60.0) -> list[Sample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.uniform(0, 10), rng.uniform(0, 10)
        y = 3 * a - 2 * b + rng.gauss(0, 0.5)
        out.append(Sample("s", KEY, 1_700_000_000 + i * step, {"a": a, "b": b}, y))
    return out


def run_all(
    cfg: StreamConfig, samples: list[Sample], lr: Learner | None = None
) -> list[tuple[Outcome, list[ModelEvent]]]:
    return list(offline.run(cfg, samples, lr))


def all_events(steps: list[tuple[Outcome, list[ModelEvent]]]) -> list[ModelEvent]:
    return [e for o, answered in steps for e in (*o.events, *answered)]


# --- the rule ----------------------------------------------------------------------------------


def fresh() -> Challenger:
    return Challenger(object(), "drift", 10, 50, 9)


def test_no_verdict_before_min_evidence() -> None:
    ch = fresh()
    for _ in range(MIN_EVIDENCE - 1):
        ch.observe(10.0, 0.0)  # the challenger is far better...
        assert ch.verdict(grace=10) is None  # ...but there is too little evidence
    assert ch.n == MIN_EVIDENCE - 1
    ch.observe(10.0, 0.0)
    assert ch.verdict(grace=10) == "promote"


def test_t_is_the_paired_t_statistic_and_its_sign_says_who_is_better() -> None:
    rng = random.Random(4)
    ch = fresh()
    assert ch.t() == 0.0
    diffs = []
    for _ in range(100):
        champion, challenger = rng.expovariate(1.0), rng.expovariate(1.5)
        ch.observe(champion, challenger)
        diffs.append(champion - challenger)
    expected = statistics.mean(diffs) / (statistics.stdev(diffs) / math.sqrt(len(diffs)))
    assert ch.t() == pytest.approx(expected, rel=1e-9)
    assert ch.t() > 0  # the challenger's loss is lower
    worse = fresh()
    for d in diffs:
        worse.observe(1.0, 1.0 + d)
    assert worse.t() == pytest.approx(-expected, rel=1e-9)
    # no variance: the sign of the mean difference, as far as it goes
    constant = fresh()
    for _ in range(5):
        constant.observe(2.0, 1.0)
    assert constant.t() == math.inf
    figures = constant.figures()
    assert figures["t"] == 99.0
    assert (figures["samples"], figures["champion_loss"], figures["challenger_loss"]) == (5, 2, 1)


def test_clearly_better_challenger_is_promoted_before_the_grace_period_ends() -> None:
    rng = random.Random(1)
    ch = fresh()
    verdict = None
    while verdict is None:
        base = rng.uniform(0, 5)
        ch.observe(base + 1.0 + rng.gauss(0, 0.5), base + rng.gauss(0, 0.5))
        verdict = ch.verdict(grace=200)
    assert verdict == "promote"
    assert MIN_EVIDENCE <= ch.n < 60
    assert ch.t() >= EARLY_T
    figures = ch.figures()
    assert figures["champion_loss"] > figures["challenger_loss"]
    assert (figures["warm_start"], figures["trigger"], figures["drift_seq"]) == (50, "drift", 9)


def test_equal_losses_are_dropped_at_the_end_of_the_grace_period() -> None:
    ch = fresh()
    for i in range(1, 200):
        ch.observe(float(i % 7), float(i % 7))
        assert ch.verdict(grace=200) is None
    ch.observe(1.0, 1.0)
    assert ch.t() == 0.0
    assert ch.verdict(grace=200) == "drop"


def test_noise_is_rarely_promoted_and_never_a_challenger_that_stops_early_on_noise() -> None:
    """Both models equally good (same loss distribution): the challenger should be dropped."""
    outcomes = []
    for seed in range(200):
        rng = random.Random(seed)
        ch = fresh()
        verdict = None
        while verdict is None:
            base = rng.uniform(0, 5)
            ch.observe(base + rng.gauss(0, 1), base + rng.gauss(0, 1))
            verdict = ch.verdict(grace=200)
        outcomes.append((verdict, ch.n))
    dropped = [n for v, n in outcomes if v == "drop"]
    assert all(n == 200 for n in dropped)  # a drop waits for the end of the grace period
    # looked at on every sample, noise still clears t >= 3 now and then: a few percent
    assert len(dropped) >= 0.95 * len(outcomes)


def test_worse_challenger_is_not_promoted() -> None:
    rng = random.Random(2)
    ch = fresh()
    for _ in range(199):
        base = rng.uniform(0, 5)
        ch.observe(base + rng.gauss(0, 0.5), base + 0.5 + rng.gauss(0, 0.5))
        assert ch.verdict(grace=200) is None
    ch.observe(1.0, 1.5)
    assert ch.t() < 0
    assert ch.verdict(grace=200) == "drop"


@pytest.mark.parametrize(("target_t", "verdict"), [(2.5, "promote"), (1.5, "drop")])
def test_at_the_end_of_grace_the_challenger_wins_above_final_t(
    target_t: float, verdict: str
) -> None:
    n = 40
    # differences m +- 1, alternating: t = m * sqrt(n - 1) at every even count
    m = target_t / math.sqrt(n - 1)
    ch = fresh()
    for i in range(n - 1):
        ch.observe(m + (1 if i % 2 else -1), 0.0)
        assert ch.verdict(grace=n) is None
        assert ch.t() < EARLY_T
    ch.observe(m + 1, 0.0)
    assert ch.t() == pytest.approx(target_t, rel=1e-9)
    assert (ch.t() >= FINAL_T) == (verdict == "promote")
    assert ch.verdict(grace=n) == verdict


def test_the_challenger_leads_while_a_fading_mean_of_the_differences_favours_it() -> None:
    ch = fresh()
    for _ in range(LEAD_MIN - 1):
        ch.observe(2.0, 1.0)
        assert not ch.leads()  # too little to go on
    ch.observe(2.0, 1.0)
    assert ch.leads()
    for _ in range(30):
        ch.observe(1.0, 3.0)  # it fell behind lately
    assert not ch.leads()
    for _ in range(30):
        ch.observe(3.0, 1.0)  # and leads again: the mean fades, it does not stick
    assert ch.leads()


def test_a_challenger_pickled_before_it_could_lead_loads() -> None:
    ch = fresh()
    for _ in range(LEAD_MIN):
        ch.observe(2.0, 1.0)
    old = {k: v for k, v in ch.__dict__.items() if k != "lead"}
    restored = Challenger.__new__(Challenger)
    restored.__setstate__(old)
    assert (restored.n, restored.lead, restored.leads()) == (LEAD_MIN, 0.0, False)
    restored.observe(2.0, 1.0)
    assert restored.leads()


# --- where the change began ------------------------------------------------------------------


def test_the_change_point_is_where_the_loss_rose() -> None:
    rng = random.Random(3)
    tail = LossTail()
    assert tail.change_start() is None
    for seq in range(1, 1001):
        tail.add(seq, abs(rng.gauss(0, 1)) + (4.0 if seq > 980 else 0.0))
    assert tail.count == TAIL
    assert tail.change_start() == 981
    restored = pickle.loads(pickle.dumps(tail))
    assert restored.change_start() == 981
    flat = LossTail()
    for seq in range(1, 50):
        flat.add(seq, 1.0)
    assert flat.change_start() is None  # no rise, no change


# --- a learner that meets an abrupt change ---------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_abrupt_change_retrains_and_promotes(seed: int) -> None:
    cfg = make_stream()
    lr = Learner(cfg, KEY)
    steps = run_all(cfg, abrupt(seed), lr)
    outcomes = [o for o, _ in steps]

    drifts = [o.drift for o in outcomes if o.drift is not None]
    assert drifts
    assert all(d.seq > CHANGE for d in drifts)
    first = drifts[0]
    assert first.seq < CHANGE + 200
    # the drift asked for a challenger, warm-started on the newest samples
    request = outcomes[first.seq - 1].request
    assert request is not None
    assert (request.kind, request.reason, request.seq, request.drift) == (
        "challenger",
        "drift",
        first.seq,
        first,
    )
    # warm-started on the new regime only: from the change the recent losses point to
    assert 1 <= request.samples <= first.seq - CHANGE

    events = all_events(steps)
    assert [e.kind for e in events] == ["retrain", "promotion"]
    retrain, promotion = events
    assert steps[first.seq - 1][1] == [retrain]  # answered in the step that asked
    assert retrain.seq == first.seq
    assert retrain.data["trigger"] == "drift"
    assert retrain.data["drift_seq"] == first.seq
    assert retrain.data["warm_start"] == request.samples
    assert (retrain.data["policy"], retrain.data["grace"]) == ("challenger", 200)

    data = promotion.data
    assert promotion.seq > retrain.seq
    assert data["samples"] == promotion.seq - retrain.seq  # the grace period so far
    assert data["samples"] < 200  # promoted early
    assert data["champion_loss"] > data["challenger_loss"]
    assert data["t"] >= 3
    # While it led, the challenger's predictions were served: the served error in the grace
    # period is mostly the challenger's (after LEAD_MIN), well below the champion's.
    grace = [o.error for o in outcomes[retrain.seq : promotion.seq] if o.error is not None]
    assert statistics.mean(grace) < 0.8 * data["champion_loss"]
    assert (data["version"], data["parent"], data["reason"]) == (2, 1, "drift")
    assert data["drift_seq"] == first.seq
    assert set(data["metrics"]) == {"mae", "rmse", "r2", "rolling_mae"}
    assert promotion.retired is not None and promotion.retired is not lr.model

    versions = [o.model_version for o in outcomes]
    assert set(versions[: promotion.seq]) == {1}
    assert set(versions[promotion.seq :]) == {2}
    assert (lr.model_version, lr.latest_version) == (2, 2)
    assert lr.challenger is None
    # the new champion learned the new regime
    assert statistics.mean(o.error for o in outcomes[-200:] if o.error is not None) < 1.5


def test_drift_warmup_restarts_after_a_promotion() -> None:
    cfg = make_stream()
    lr = Learner(cfg, KEY)
    promoted_at = None
    watched_after = []
    for o, _ in offline.run(cfg, abrupt(0), lr):
        if any(e.kind == "promotion" for e in o.events):
            promoted_at = o.seq
            assert lr.watched == 0
            assert lr.adwin.width == 0
        elif promoted_at is not None:
            watched_after.append(lr.watched)
        if promoted_at is None:
            before = lr.watched
    assert promoted_at is not None
    assert before > cfg.drift.warmup  # ADWIN had been watching the old champion
    assert watched_after == list(range(1, 4500 - promoted_at + 1))
    assert lr.drifts == 1  # nothing new during the warm-up of the new champion


def test_reset_policy_promotes_the_retrained_model_at_once() -> None:
    cfg = make_stream(policy="reset")
    lr = Learner(cfg, KEY)
    steps = run_all(cfg, abrupt(0), lr)
    drift_steps = [(o, a) for o, a in steps if o.drift is not None]
    assert drift_steps
    o, answered = drift_steps[0]
    assert o.request is not None and o.request.reason == "drift"
    assert [e.kind for e in answered] == ["retrain", "promotion"]
    promotion = answered[1]
    assert (promotion.data["version"], promotion.data["parent"]) == (2, 1)
    assert promotion.data["reason"] == "drift"
    assert promotion.seq == o.seq
    assert o.model_version == 1  # this sample was predicted by the old champion
    assert all(s.model_version == 2 for s, _ in steps[o.seq :])
    assert lr.challenger is None
    assert [e.kind for e in all_events(steps)] == ["retrain", "promotion"]


def test_none_policy_records_drift_without_retraining() -> None:
    cfg = make_stream(policy="none")
    lr = Learner(cfg, KEY)
    steps = run_all(cfg, abrupt(0), lr)
    drifts = [o for o, _ in steps if o.drift is not None]
    assert drifts and all(o.seq > CHANGE for o in drifts)
    assert lr.drifts == len(drifts)
    assert all(o.request is None for o, _ in steps)
    assert all_events(steps) == []
    assert (lr.model_version, lr.latest_version) == (1, 1)


# --- the schedule ----------------------------------------------------------------------------


def test_schedule_asks_for_a_challenger_every_period() -> None:
    cfg = make_stream(model="linear", grace=10, every="1h")
    steps = run_all(cfg, stationary(1000))
    scheduled = [(o, o.request) for o, _ in steps if o.request is not None]
    assert all(r.reason == "schedule" for _, r in scheduled)
    seqs = [o.seq for o, _ in scheduled]
    # readings 60 s apart: the first after an hour, then one every 60 readings
    assert seqs == list(range(61, 1001, 60))
    assert all(r.samples == cfg.retrain.max_warm_start for _, r in scheduled)
    retrains = [e for e in all_events(steps) if e.kind == "retrain"]
    assert len(retrains) == len(seqs)
    assert all(e.data["trigger"] == "schedule" for e in retrains)
    assert retrains[0].data["warm_start"] == 61  # all the log there was


def test_schedule_waits_while_a_challenger_runs() -> None:
    cfg = make_stream(model="linear", grace=200, every="1h")
    lr = Learner(cfg, KEY)
    requests = []
    running_before: list[bool] = []
    ends = []
    gen: Iterator[tuple[Outcome, list[ModelEvent]]] = offline.run(cfg, stationary(1000), lr)
    while True:
        running = lr.challenger is not None
        step = next(gen, None)
        if step is None:
            break
        o, _ = step
        ended = any(e.kind in ("promotion", "challenger_dropped") for e in o.events)
        if ended:
            ends.append(o.seq)
        if o.request is not None:
            requests.append(o.seq)
            running_before.append(running and not ended)
    assert requests
    assert not any(running_before)  # never asked while a challenger was still running
    gaps = [b - a for a, b in itertools.pairwise(requests)]
    assert gaps and min(gaps) >= 200
    assert requests[1:] == ends[: len(requests) - 1]  # the overdue retrain comes as one ends


# --- the non-finite guard --------------------------------------------------------------------


class Diverged:
    """A model that has blown up: every prediction is `value`, learning changes nothing."""

    def __init__(self, value: float = float("nan")) -> None:
        self.value = value

    def predict_one(self, x: dict[str, float]) -> float:
        return self.value

    def learn_one(self, x: dict[str, float], y: Any = None) -> None:
        pass


def with_challenger(n: int) -> tuple[Learner, list[Sample]]:
    """A linear learner that has learned 100 of `n` stationary rows and shadows a challenger."""
    lr = Learner(make_stream(model="linear"), KEY)
    rows = stationary(n, step=1.0)
    for seq, s in enumerate(rows[:100], start=1):
        lr.process(s, seq)
    lr.start_challenger(Request("challenger", "manual", 100, 50), rows[50:100])
    assert lr.challenger is not None
    return lr, rows


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (float("nan"), "non-finite prediction"),
        (float("-inf"), "non-finite prediction"),
        # Finite, but squared by RMSE it overflows: River raises OverflowError.
        (1e200, "diverged prediction"),
        (-2e18, "diverged prediction"),
    ],
)
def test_non_finite_or_absurd_prediction_asks_for_the_last_good_version(
    value: float, detail: str
) -> None:
    lr, rows = with_challenger(300)
    good = lr.model
    lr.model = Diverged(value)
    metrics_before = lr.metrics()
    o = lr.process(rows[100], 101)
    assert (o.y_pred, o.error, o.model_version) == (None, None, 1)
    assert [e.kind for e in o.events] == ["guard"]
    assert o.events[0].data["version"] == 1
    assert o.events[0].data["detail"] == detail
    assert o.request == Request("restore", "guard", 101, version=1)
    assert lr.challenger is None  # dropped with the champion's trouble
    assert lr.metrics() == metrics_before  # nothing was scored
    lr.replace_model(good, lr.latest_version + 1)
    o = lr.process(rows[101], 102)
    assert o.y_pred is not None and math.isfinite(o.y_pred)
    assert o.model_version == 2


def test_a_challenger_with_absurd_predictions_is_not_scored_and_never_promoted() -> None:
    lr, rows = with_challenger(600)
    assert lr.challenger is not None
    lr.challenger.model = Diverged(1e200)
    events = [e for seq, s in enumerate(rows[100:], start=101) for e in lr.process(s, seq).events]
    assert [e.kind for e in events] == ["challenger_dropped"]
    assert events[0].data["samples"] == 0 and lr.model_version == 1


def test_a_model_whose_params_make_it_diverge_is_guarded_not_crashed() -> None:
    # An intercept learning rate of 1e200 sends the first prediction to about 1e200.
    cfg = make_stream(model="linear", params={"intercept_lr": 1e200})
    lr = Learner(cfg, KEY)
    guards = 0
    for seq, s in enumerate(stationary(50, step=1.0), start=1):
        o = lr.process(s, seq)
        guards += [e.kind for e in o.events] == ["guard"]
        assert o.y_pred is None or abs(o.y_pred) <= MAX_PREDICTION
    assert guards > 0


def test_offline_run_restores_the_last_good_version_under_a_new_number() -> None:
    cfg = make_stream(model="linear")
    lr = Learner(cfg, KEY)
    rows = stationary(300, step=1.0)
    gen = offline.run(cfg, rows, lr)
    outcomes = [next(gen)[0] for _ in range(100)]
    lr.model = Diverged()
    guard, answered = next(gen)
    assert guard.request is not None and guard.request.kind == "restore"
    assert answered == []
    assert not isinstance(lr.model, Diverged)
    assert (lr.model_version, lr.latest_version) == (2, 2)
    rest = [o for o, _ in gen]
    assert all(o.model_version == 2 for o in rest)
    assert all(o.y_pred is not None and math.isfinite(o.y_pred) for o in rest)
    # version 1 as offline.run kept it: the untrained model it started with
    fresh_model = pickle.loads(pickle.dumps(Learner(cfg, KEY).model))
    assert rest[0].y_pred == fresh_model.predict_one(rows[101].x)
    assert outcomes[-1].model_version == 1


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tree", "forest"])
def test_the_same_samples_give_the_same_outcomes_and_events(model: str) -> None:
    rows = abrupt(5, n=3600)
    first = run_all(make_stream(model=model, grace=100), rows)
    second = run_all(make_stream(model=model, grace=100), rows)
    assert first == second
    kinds = [e.kind for e in all_events(first)]
    assert "retrain" in kinds  # the replay went through a retrain
    assert [o.y_pred for o, _ in first] == [o.y_pred for o, _ in second]


def test_a_model_that_diverges_again_soon_comes_back_under_its_own_number() -> None:
    cfg = make_stream(model="linear")
    lr = Learner(cfg, KEY)
    rows = stationary(400, step=1.0)
    gen = offline.run(cfg, rows, lr)
    for _ in range(150):
        next(gen)
    lr.model = Diverged()
    first, _ = next(gen)
    assert first.request is not None and not first.request.in_place
    assert (lr.model_version, lr.latest_version) == (2, 2)
    # Diverging again within GUARD_QUIET readings of that restore: no new version.
    for _ in range(GUARD_QUIET - 1):
        next(gen)
    lr.model = Diverged()
    second, _ = next(gen)
    assert second.request is not None and second.request.in_place
    assert second.events[0].data["restore"] == "in place"
    assert (lr.model_version, lr.latest_version) == (2, 2)
    assert all(o.model_version == 2 and o.y_pred is not None for o, _ in gen)


def test_a_snapshot_from_before_the_loss_tail_loads_and_goes_on() -> None:
    cfg = make_stream()
    lr = Learner(cfg, KEY)
    rows = abrupt(0, n=3600)
    for seq, s in enumerate(rows[:600], start=1):
        lr.process(s, seq)
    state = lr.state()
    del state["tail"]  # what an edgeml before issue 20 stored
    restored = Learner.from_state(cfg, KEY, pickle.loads(pickle.dumps(state)))
    assert restored.tail.count == 0
    events = run_all(cfg, rows[600:], restored)
    assert "promotion" in [e.kind for e in all_events(events)]
