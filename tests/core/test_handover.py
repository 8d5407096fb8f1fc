"""core/handover.py: a device key's models as one KV value and back, unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeml.config import load
from edgeml.core import handover
from edgeml.learn import Learner
from edgeml.records import Sample
from tests.conftest import TELEMETRY


def test_a_key_snapshot_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[node]\nstate_dir = "{tmp_path}"\n{TELEMETRY}')
    stream = load(path).stream[0]
    learner = Learner(stream, "dev1")
    for i in range(20):
        learner.process(Sample("temp", "dev1", 1000.0 + i, {"i": i, "h": 40.0 + i % 3}, y=i / 2), i)
    value = handover.encode(1234, "node-a", 17, {"temp": learner})
    snap = handover.decode(value)
    assert (snap.covered, snap.node, snap.lease, snap.samples) == (1234, "node-a", 17, {"temp": 20})
    back = handover.learners(snap, {"temp": stream}, "dev1")["temp"]
    x = {"i": 3.0, "h": 41.0}
    assert back.model.predict_one(x) == learner.model.predict_one(x)
    # A stream no longer configured is left out; a value that is no snapshot is refused.
    assert handover.learners(snap, {}, "dev1") == {}
    with pytest.raises(ValueError, match="no header line"):
        handover.decode(b"garbage")
