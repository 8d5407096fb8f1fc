"""Snapshots: a learner survives a pickle round trip; a bad snapshot is refused with a reason."""

from __future__ import annotations

import hashlib
import random

import pytest

from edgeml.config import StreamConfig
from edgeml.learn import Learner, snapshot
from edgeml.records import Sample

STREAM = StreamConfig(name="s", topic="t/+", target="y", features=("a", "b"))


def trained(n: int = 300, seed: int = 1) -> Learner:
    rng = random.Random(seed)
    learner = Learner(STREAM, "k")
    for seq in range(1, n + 1):
        a, b = rng.random(), rng.random()
        learner.process(Sample("s", "k", float(seq), {"a": a, "b": b}, 3 * a - b + 1), seq)
    return learner


def test_round_trip_keeps_model_metrics_and_detector() -> None:
    original = trained()
    blob = snapshot.dump(original)
    restored = snapshot.load(
        STREAM, "k", blob, hashlib.sha256(blob).hexdigest(), snapshot.RIVER_VERSION
    )
    assert restored.metrics() == original.metrics()
    assert (restored.samples, restored.last_seq, restored.drifts) == (300, 300, 0)
    # Both go on identically: same predictions, same metrics, sample by sample.
    rng = random.Random(9)
    for seq in range(301, 401):
        x = {"a": rng.random(), "b": rng.random()}
        s = Sample("s", "k", float(seq), x, 5 * x["a"])
        assert restored.process(s, seq).y_pred == pytest.approx(
            original.process(s, seq).y_pred, abs=1e-12
        )
    assert restored.metrics() == original.metrics()
    assert restored.adwin.width == original.adwin.width


def test_corrupt_foreign_or_mismatched_snapshots_are_refused() -> None:
    blob = snapshot.dump(trained(50))
    good_sha = hashlib.sha256(blob).hexdigest()
    with pytest.raises(snapshot.SnapshotError, match="sha256"):
        snapshot.load(STREAM, "k", blob[:-1] + b"x", good_sha, snapshot.RIVER_VERSION)
    with pytest.raises(snapshot.SnapshotError, match=r"River 0\.1\.0"):
        snapshot.load(STREAM, "k", blob, good_sha, "0.1.0")
    junk = b"not a pickle"
    with pytest.raises(snapshot.SnapshotError, match="cannot unpickle"):
        snapshot.load(STREAM, "k", junk, hashlib.sha256(junk).hexdigest(), snapshot.RIVER_VERSION)
    other = STREAM.model_copy(update={"model": "other"})
    with pytest.raises(snapshot.SnapshotError, match="preset 'auto'"):
        snapshot.load(other, "k", blob, good_sha, snapshot.RIVER_VERSION)
