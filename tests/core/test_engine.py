"""The engine on its own: plain pytest, no broker, no database, no event loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeml.config import Config, load
from edgeml.core.batch import StoredSample
from edgeml.core.engine import Engine, NeedsLearner
from edgeml.core.messages import Outgoing
from edgeml.errors import ConfigError
from edgeml.learn import Learner
from edgeml.records import Delivery

STREAM = """
[[stream]]
name = "temp"
topic = "sensors/+/telemetry"
key = "topic:1"
target = "t"
features = ["h"]
"""


def config(tmp_path: Path, extra: str = "") -> Config:
    path = tmp_path / "config.toml"
    path.write_text(f'[node]\nid = "n1"\nstate_dir = "{tmp_path}"\n{extra}\n{STREAM}')
    return load(path)


def reading(i: int, device: str = "dev1", mid: int | None = None) -> Delivery:
    body = json.dumps({"h": 40 + i % 17, "t": 2 * (40 + i % 17) + 1, "ts": 1_700_000_000 + i})
    mid = i + 1 if mid is None else mid
    return Delivery(f"sensors/{device}/telemetry", body.encode(), 0.0, (mid, 1, 0), mid)


def test_every_reading_is_predicted_then_learned_and_its_rows_and_ack_are_in_the_batch(
    tmp_path: Path,
) -> None:
    engine = Engine(config(tmp_path), 1, {}, {})
    out: list[Outgoing] = []
    for i in range(50):
        engine.handle(reading(i), out)
    batch = engine.take_batch()
    assert [row.seq for row in batch.samples] == list(range(1, 51))
    assert batch.acks == [(i + 1, 1, 0) for i in range(50)]
    assert [row.id for row in batch.series] == [1] and batch.versions[0].reason == "initial"
    # A linear relation: the prequential error falls as the model learns.
    errors = [row.error for row in batch.predictions]
    assert errors and sum(errors[-10:]) < sum(errors[:10])
    topics = {o.topic for o in out}
    assert topics == {"edgeml/n1/temp/dev1/prediction"}
    assert engine.learned == 50 and engine.learners[("temp", "dev1")].samples == 50


def test_a_redelivered_message_that_is_stored_already_is_acknowledged_not_learned(
    tmp_path: Path,
) -> None:
    engine = Engine(config(tmp_path), 1, {}, {})
    out: list[Outgoing] = []
    engine.handle(reading(1, mid=7), out)
    engine.handle(reading(1, mid=7)._replace(redelivered=True), out)
    # The same packet id with another payload is another message: learned.
    engine.handle(reading(2, mid=7)._replace(redelivered=True), out)
    batch = engine.take_batch()
    assert len(batch.samples) == 2 and engine.duplicates == 1
    assert len(batch.acks) == 3


def test_a_message_without_an_ack_token_is_learned_and_not_acknowledged(tmp_path: Path) -> None:
    engine = Engine(config(tmp_path), 1, {}, {})
    engine.handle(reading(1)._replace(ack=None, dedup=None), [])
    batch = engine.take_batch()
    assert batch.acks == [] and len(batch.samples) == 1
    assert (batch.samples[0].mid, batch.samples[0].hash) == (None, None)


def test_a_bad_payload_is_counted_and_acknowledged_never_learned(tmp_path: Path) -> None:
    engine = Engine(config(tmp_path), 1, {}, {})
    bad = Delivery("sensors/dev1/telemetry", b"{not json", 0.0, (1, 1, 0), 1)
    engine.handle(bad, [])
    batch = engine.take_batch()
    assert batch.samples == [] and batch.acks == [(1, 1, 0)]
    assert dict(engine.rejects.total) == {"not_json": 1}


def test_an_evicted_model_is_parked_until_its_snapshot_is_written_then_asked_for(
    tmp_path: Path,
) -> None:
    engine = Engine(config(tmp_path, "[models]\nmax_live = 1"), 1, {}, {})
    engine.handle(reading(1, "dev1"), [])
    engine.handle(reading(2, "dev2"), [])  # dev1 is evicted: its snapshot rides in the batch
    assert list(engine.learners) == [("temp", "dev2")]
    batch = engine.take_batch()
    assert [s.series for s in batch.snapshots] == [1]
    engine.handle(reading(3, "dev1"), [])  # parked in memory: no store read needed
    assert list(engine.learners) == [("temp", "dev1")]  # and dev2 is parked in its turn
    engine.take_batch()
    engine.written_batches = 2  # the writer committed both batches: the store has dev2 now
    engine.take_batch()
    with pytest.raises(NeedsLearner) as need:
        engine.handle(reading(4, "dev2"), [])
    assert need.value.keys == [("temp", "dev2")]


def test_replaying_the_stored_samples_gives_the_model_that_learned_them_live(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    live = Engine(cfg, 1, {}, {})
    for i in range(100):
        live.handle(reading(i), [])
    rows = live.take_batch().samples
    restarted = Engine(cfg, 101, {("temp", "dev1"): 1}, {})
    restarted.restore(Learner(cfg.stream[0], "dev1"))
    for row in rows:
        x, label = json.loads(row.x), None
        restarted.replay("temp", "dev1", StoredSample(row.seq, row.ts, x, row.y, label))
    a, b = live.learners[("temp", "dev1")], restarted.learners[("temp", "dev1")]
    assert a.metrics() == b.metrics()
    assert a.model.predict_one({"h": 50.0}) == b.model.predict_one({"h": 50.0})


def test_a_key_that_goes_quiet_is_silent_and_its_next_reading_is_back(tmp_path: Path) -> None:
    """By arrival time; "auto": 10 of the key's typical intervals, at least a minute."""
    engine = Engine(config(tmp_path), 1, {}, {})
    out: list[Outgoing] = []
    for i in range(30):  # one reading every 10 s
        engine.handle(reading(i)._replace(arrival=1000.0 + 10 * i), out)
    last = 1000.0 + 290
    engine.add_silences(last + 99, out)  # 10 intervals are 100 s: not yet
    engine.add_silences(last + 101, out)
    engine.add_silences(last + 500, out)  # still silent: said once
    silent = [json.loads(o.payload) for o in out if b'"event":"silent"' in o.payload]
    assert [(e["key"], e["last_seen"], e["silent_after"]) for e in silent] == [
        ("dev1", last, 100.0)
    ]
    engine.handle(reading(30)._replace(arrival=last + 600), out)
    back = [json.loads(o.payload) for o in out if b'"event":"back"' in o.payload]
    assert [(e["key"], e["silent_for"]) for e in back] == [("dev1", 600.0)]
    kinds = [row.kind for row in engine.take_batch().events]
    assert kinds.count("silent") == 1 and kinds.count("back") == 1


def test_silent_after_is_a_duration_or_off(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(STREAM + 'silent_after = "30s"\n')
    engine = Engine(load(path), 1, {}, {})
    out: list[Outgoing] = []
    engine.handle(reading(0)._replace(arrival=100.0), out)  # one reading: a duration is enough
    engine.add_silences(131.0, out)
    assert [o for o in out if b'"event":"silent"' in o.payload]
    path.write_text(STREAM + 'silent_after = "off"\n')
    quiet = Engine(load(path), 1, {}, {})
    out = []
    quiet.handle(reading(0)._replace(arrival=100.0), out)
    quiet.add_silences(10**9, out)
    assert not [o for o in out if b'"event":"silent"' in o.payload]
    path.write_text(STREAM + 'silent_after = "soon"\n')
    with pytest.raises(ConfigError, match=r"stream\.0\.silent_after"):
        load(path)
