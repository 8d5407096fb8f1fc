"""The `auto` preset: the default when a stream names no model; its mixture's weights follow
the experts' recent errors and come back; snapshots of the earlier default stay what they were.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from edgeml.config import StreamConfig
from edgeml.learn import Learner, snapshot
from edgeml.learn.auto import Mixture
from edgeml.records import Sample


def stream(task: str = "regression", **kw: str) -> StreamConfig:
    return StreamConfig(name="s", topic="t/+", task=task, target="y", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("task", ["regression", "classification", "forecast"])
def test_auto_is_the_default_preset_of_every_learning_task(task: str) -> None:
    assert stream(task).model == "auto" and stream(task).model_default
    assert not stream(task, model="auto").model_default


def test_weights_follow_the_best_expert_and_come_back_after_a_bad_spell() -> None:
    mix = Mixture()
    rng = random.Random(3)
    for _ in range(400):  # linear: the linear experts are best
        a = rng.uniform(-1, 1)
        mix.learn_one({"a": a}, 4 * a + rng.gauss(0, 0.05))
    linear_weight = mix.weights()[0] + mix.weights()[1]
    assert linear_weight > 0.8
    for _ in range(1500):  # a step function the linear experts cannot fit
        a = rng.uniform(-1, 1)
        mix.learn_one({"a": a}, (10.0 if a > 0 else -10.0) + rng.gauss(0, 0.05))
    assert mix.weights()[0] + mix.weights()[1] < 0.2
    for _ in range(600):  # linear again: their weights come back (they never underflow)
        a = rng.uniform(-1, 1)
        mix.learn_one({"a": a}, 4 * a + rng.gauss(0, 0.05))
    assert mix.weights()[0] + mix.weights()[1] > 0.5
    assert min(mix.weights()) > 0


def feed(learner: Learner, n: int, seed: int = 1, start: int = 1) -> list[float | None]:
    rng = random.Random(seed)
    out = []
    for seq in range(start, start + n):
        a, b = rng.random(), rng.random()
        s = Sample("s", "k", float(seq), {"a": a, "b": b}, 3 * a - b + 1)
        out.append(learner.process(s, seq).y_pred)
    return out


def reload(cfg: StreamConfig, learner: Learner) -> Learner:
    blob = snapshot.dump(learner)
    digest = hashlib.sha256(blob).hexdigest()
    return snapshot.load(cfg, "k", blob, digest, snapshot.RIVER_VERSION)


def test_a_snapshot_of_the_earlier_default_comes_back_as_what_it_was() -> None:
    # A stream that named no model had `linear` (edgeml 0.1); its snapshots say so.
    earlier = Learner(stream(model="linear"), "k")
    feed(earlier, 300)
    restored = reload(stream(), earlier)
    assert restored.stream.model == "linear" and type(restored.model) is type(earlier.model)
    assert feed(restored, 50, seed=2, start=301) == feed(earlier, 50, seed=2, start=301)
    # it stays that preset through its next snapshot, and a new key of the stream gets `auto`
    assert reload(stream(), restored).stream.model == "linear"
    assert Learner(stream(), "other").stream.model == "auto"
    # naming a model is a choice: a snapshot of another preset is refused (relearned from the log)
    with pytest.raises(snapshot.SnapshotError, match="preset 'linear'"):
        reload(stream(model="auto"), earlier)
    with pytest.raises(snapshot.SnapshotError, match="preset 'tree'"):
        reload(stream(), Learner(stream(model="tree"), "k"))


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_auto_replays_exactly_after_a_snapshot(task: str) -> None:
    cfg = stream(task)
    rng = random.Random(5)
    rows = []
    for i in range(900):
        a, b = rng.random(), rng.random()
        y = 3 * a - b + (4 if i > 450 else 0)
        label = (a > b) if i < 450 else (a < b)
        if task == "classification":
            rows.append(Sample("s", "k", float(i), {"a": a, "b": b}, None, label))
        else:
            rows.append(Sample("s", "k", float(i), {"a": a, "b": b}, y))
    original = Learner(cfg, "k")
    for seq, s in enumerate(rows[:500], 1):
        original.process(s, seq)
    restored = reload(cfg, original)
    for seq, s in enumerate(rows[500:], 501):
        a, b = original.process(s, seq), restored.process(s, seq)
        assert (a.y_pred, a.label) == pytest.approx((b.y_pred, b.label), abs=1e-9)
    assert restored.metrics() == original.metrics()
