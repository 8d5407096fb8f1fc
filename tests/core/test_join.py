"""Joins across messages: fields that arrive apart make one sample; a message that waits in a
join is held (not acknowledged) until none of its fields can be used; everything is bounded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeml.config import Config, StreamConfig, load
from edgeml.core.decode import Decoder, Partial
from edgeml.core.engine import Engine
from edgeml.core.join import Joins
from edgeml.core.messages import Outgoing
from edgeml.records import Delivery, Reject, RejectReason, Sample

ESPHOME = """
[[stream]]
name = "climate"
topic = "esphome/+/sensor/+/state"
key = "topic:1"
payload = "value"
field = "topic:3"
target = "temperature"
features = ["humidity"]
join_window = "2s"
"""


def esphome(**kw: Any) -> StreamConfig:
    base: dict[str, Any] = {"name": "climate", "topic": "esphome/+/sensor/+/state",
                            "key": "topic:1", "payload": "value", "field": "topic:3",
                            "target": "temperature", "features": ("humidity",),
                            "join_window": "2s"}  # fmt: skip
    return StreamConfig(**{**base, **kw})


def partial(d: Decoder, field: str, value: str, at: float, dev: str = "d1") -> Partial | Reject:
    out = d.decode(f"esphome/{dev}/sensor/{field}/state", value.encode(), at)
    assert not isinstance(out, Sample)
    return out


def test_a_pair_on_two_topics_makes_one_sample_when_the_target_arrives() -> None:
    s = esphome()
    d, j = Decoder(s), Joins([s], 100, 100)
    hum = partial(d, "humidity", "40", 10.0)
    assert hum == Partial("climate", "d1", 10.0, {"humidity": 40.0})
    assert j.offer([hum], 10.0) == [None]  # waits for the target
    assert j.keep([hum], 10.0, "tok-h") is True and j.held == 1
    temp = partial(d, "temperature", "21.5", 10.3)
    assert isinstance(temp, Partial)
    assert j.offer([temp], 10.3) == [Sample("climate", "d1", 10.3, {"humidity": 40.0}, 21.5)]
    # The sample is made: the target's message is not held, the humidity still may be used.
    assert j.keep([temp], 10.3, None) is False and j.held == 1
    assert j.released() == []
    # A newer humidity supersedes the old one: the old message is released.
    hum2 = partial(d, "humidity", "41", 11.0)
    assert isinstance(hum2, Partial)
    j.keep([hum2], 11.0, "tok-h2")
    assert j.released() == [("tok-h", None, None)] and j.held == 1


def test_a_field_older_than_the_window_is_not_used_and_its_message_is_released() -> None:
    s = esphome()
    d, j = Decoder(s), Joins([s], 100, 100)
    hum = partial(d, "humidity", "40", 10.0)
    assert isinstance(hum, Partial)
    j.keep([hum], 10.0, "tok-h")
    temp = partial(d, "temperature", "21.5", 12.5)
    assert isinstance(temp, Partial)
    assert j.offer([temp], 12.5) == [Reject("climate", RejectReason.MISSING_FEATURE, "humidity")]
    j.keep([temp], 12.5, "tok-t")  # the target never waits: nothing of it is held
    assert j.released() == [("tok-h", None, None)] and j.held == 0 and j.keys == 0


def test_keys_are_joined_apart() -> None:
    s = esphome()
    d, j = Decoder(s), Joins([s], 100, 100)
    hum = partial(d, "humidity", "40", 10.0, dev="a")
    assert isinstance(hum, Partial)
    j.keep([hum], 10.0, "tok")
    temp = partial(d, "temperature", "20", 10.1, dev="b")
    assert isinstance(temp, Partial)
    (r,) = j.offer([temp], 10.1)
    assert isinstance(r, Reject) and r.reason is RejectReason.MISSING_FEATURE


def test_join_on_any_makes_a_sample_whenever_a_field_arrives_once_all_are_there() -> None:
    s = esphome(join_on="any")
    d, j = Decoder(s), Joins([s], 100, 100)
    temp = partial(d, "temperature", "20", 1.0)
    assert isinstance(temp, Partial)
    (r,) = j.offer([temp], 1.0)
    assert isinstance(r, Reject) and r.reason is RejectReason.MISSING_FEATURE
    assert j.keep([temp], 1.0, "t1")  # held: with join_on any, the target waits too
    hum = partial(d, "humidity", "40", 1.5)
    assert isinstance(hum, Partial)
    assert j.offer([hum], 1.5) == [Sample("climate", "d1", 1.5, {"humidity": 40.0}, 20.0)]


def test_json_messages_with_some_fields_each_join_like_zigbee2mqtt() -> None:
    s = StreamConfig(name="z", topic="zigbee2mqtt/+", key="regex:^zigbee2mqtt/(?P<key>.+)$",
                     target="temperature", features=("humidity", "pressure"),
                     join_window="1s")  # fmt: skip
    d, j = Decoder(s), Joins([s], 100, 100)
    parts = [d.decode("zigbee2mqtt/hall", json.dumps(body).encode(), t) for t, body in
             [(0.0, {"humidity": 48.2, "battery": 97}), (0.1, {"pressure": 1013}),
              (0.2, {"temperature": 22.4, "linkquality": 120})]]  # fmt: skip
    out = []
    for t, p in zip((0.0, 0.1, 0.2), parts, strict=True):
        assert isinstance(p, Partial)
        out += j.offer([p], t)
        j.keep([p], t, f"tok{t}")
    assert out[:2] == [None, None]
    assert out[2] == Sample("z", "hall", 0.2, {"humidity": 48.2, "pressure": 1013.0}, 22.4)
    # A message with none of the stream's fields, or a bad one, is rejected as without a join.
    r = d.decode("zigbee2mqtt/hall", b'{"battery": 96}', 0.3)
    assert isinstance(r, Reject) and r.reason is RejectReason.MISSING_FEATURE
    r = d.decode("zigbee2mqtt/hall", b'{"humidity": "unavailable"}', 0.3)
    assert isinstance(r, Reject) and r.reason is RejectReason.MISSING_VALUE


def test_ten_thousand_fields_offered_keep_only_the_stream_s() -> None:
    s = StreamConfig(name="z", topic="#", target="t", features=("a", "b"), join_window="1s")
    d = Decoder(s, max_payload_bytes=1 << 20)
    body = {f"f{i}": i for i in range(10_000)} | {"a": 1}
    p = d.decode("x", json.dumps(body).encode(), 0.0)
    assert p == Partial("z", "default", 0.0, {"a": 1.0})


def test_memory_is_bounded_by_keys_and_held_messages() -> None:
    s = esphome()
    d, j = Decoder(s), Joins([s], max_keys=5, max_held=3)
    for i in range(100):
        p = partial(d, "humidity", "40", float(i) / 100, dev=f"dev{i}")
        assert isinstance(p, Partial)
        j.keep([p], float(i) / 100, f"tok{i}")
    assert j.keys == 5 and j.held <= 3
    released = [token for token, _, _ in j.released()]
    assert len(released) == 100 - j.held and len(set(released)) == len(released)


# --- in the engine: what is acknowledged when --------------------------------------------


def config(tmp_path: Path, streams: str = ESPHOME, extra: str = "") -> Config:
    path = tmp_path / "config.toml"
    path.write_text(f'[node]\nid = "n1"\nstate_dir = "{tmp_path}"\n{extra}\n{streams}')
    return load(path)


def msg(field: str, value: str, at: float, mid: int, dev: str = "d1") -> Delivery:
    topic = f"esphome/{dev}/sensor/{field}/state"
    return Delivery(topic, value.encode(), at, (mid, 1, 0), mid)


def test_engine_holds_the_waiting_message_and_acks_it_once_it_cannot_be_used(
    tmp_path: Path,
) -> None:
    engine = Engine(config(tmp_path), 1, {}, {})
    out: list[Outgoing] = []
    engine.handle(msg("humidity", "40", 100.0, 1), out)
    engine.handle(msg("temperature", "21.5", 100.3, 2), out)
    engine.handle(msg("humidity", "41", 101.0, 3), out)  # supersedes mid 1
    engine.handle(msg("temperature", "21.7", 101.3, 4), out)
    batch = engine.take_batch()
    assert [(r.x, r.y) for r in batch.samples] == [
        ('{"humidity":40.0}', 21.5),
        ('{"humidity":41.0}', 21.7),
    ]
    assert sorted(batch.acks) == [(1, 1, 0), (2, 1, 0), (4, 1, 0)]  # mid 3 still waits
    assert engine.intake.joins.held == 1
    assert engine.rejects.total.total() == 0


def test_engine_counts_quiet_reasons_and_dedupes_plain_values(tmp_path: Path) -> None:
    plain = """
[[stream]]
name = "power"
topic = "shellies/+/relay/0/power"
key = "topic:1"
payload = "value"
target = "power"
"""
    engine = Engine(config(tmp_path, plain), 1, {}, {})
    out: list[Outgoing] = []
    topic = "shellies/plug/relay/0/power"
    bodies = [b"52.5", b"52.5", b"unavailable", b"53", b"53"]
    with structlog.testing.capture_logs() as logs:
        for mid, body in enumerate(bodies, 1):
            engine.handle(Delivery(topic, body, float(mid), (mid, 1, 0), mid), out)
        engine.handle(Delivery(topic, b"60", 9.0, (9, 1, 0), 9, retained=True), out)
        engine.handle(Delivery(topic, b"hot", 10.0, (10, 1, 0), 10), out)
    # Expected reasons are counted, not logged; garbage still is.
    assert [e["reason"] for e in logs if e["event"] == "payload_rejected"] == ["non_numeric"]
    batch = engine.take_batch()
    assert [r.y for r in batch.samples] == [52.5, 53.0]
    assert len(batch.acks) == 7
    assert engine.rejects.total == {"duplicate": 2, "missing_value": 1, "retained": 1,
                                    "non_numeric": 1}  # fmt: skip


# --- hostile sequences ---------------------------------------------------------------------

FIELDS = st.sampled_from(["temperature", "humidity", "pressure", "x" * 300, ""])
VALUES = st.sampled_from(["21.5", "40", "nan", "ON", "unknown", "", "1e999", "hello", "-3"])
DEVICES = st.sampled_from(["a", "b", "c", "", "a/b"])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(st.tuples(FIELDS, VALUES, DEVICES, st.floats(0, 3)), max_size=60),
       join_on=st.sampled_from(["target", "any"]))  # fmt: skip
def test_any_sequence_acks_each_message_once_or_holds_it_and_stays_bounded(
    tmp_path: Path, steps: list[tuple[str, str, str, float]], join_on: str
) -> None:
    streams = ESPHOME.replace('join_window = "2s"', f'join_window = "2s"\njoin_on = "{join_on}"')
    extra = '[mqtt]\nprotocol = "3.1.1"\n[models]\nmax_live = 2\n'
    engine = Engine(config(tmp_path, streams, extra), 1, {}, {})
    out: list[Outgoing] = []
    at = 1000.0
    for mid, (field, value, dev, gap) in enumerate(steps, 1):
        at += gap
        topic = f"esphome/{dev}/sensor/{field}/state"
        engine.handle(Delivery(topic, value.encode(), at, (mid, 1, 0), mid), out)
        assert engine.intake.joins.held <= 10 and engine.intake.joins.keys <= 2
    batch = engine.take_batch()
    acked = [token[0] for token in batch.acks]
    assert len(set(acked)) == len(acked)
    assert len(acked) + engine.intake.joins.held == len(steps)
    for row in batch.samples:
        values = [row.y, *json.loads(row.x).values()]
        assert all(isinstance(v, float) and math.isfinite(v) for v in values)
