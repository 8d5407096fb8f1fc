"""Hostile payloads through a real broker: each rejected with its reason, the good ones learned."""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
import time
from pathlib import Path

import aiomqtt
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeml.config import load
from edgeml.core import rejects
from edgeml.core.engine import Engine
from edgeml.core.messages import Outgoing
from edgeml.learn.tasks import MAX_PREDICTION
from edgeml.records import Delivery
from edgeml.store.queries import read_events, read_status
from tests.conftest import (
    Broker,
    db_rows,
    load_config,
    publish_all,
    running,
    settle,
    wait_for,
    write_config,
)

STREAM = """
[[stream]]
name = "env"
topic = "site/+/env"
key = "topic:1"
target = "t"
features = ["h", "p.v"]
"""

TOPIC = "site/dev1/env"

# Hand-picked: (payload, the reason it must be counted under).
HOSTILE: list[tuple[bytes, str]] = [
    (b"\xff\xfe\x00garbage", "not_utf8"),
    (b"\xc3\x28", "not_utf8"),
    (b"not json at all", "not_json"),
    (b"", "not_json"),
    (b'{"t": 1, "h": 2', "not_json"),
    (b'{"t": NaN, "h": 1, "p": {"v": 2}}', "non_finite"),
    (b'{"t": 1, "h": Infinity, "p": {"v": 2}}', "non_finite"),
    (b'{"t": 1, "h": -Infinity, "p": {"v": 2}}', "non_finite"),
    (b'{"t": 1e999, "h": 1, "p": {"v": 2}}', "non_finite"),
    (b'{"t": 1e16, "h": 1, "p": {"v": 2}}', "out_of_range"),
    (b"[" * 60_000, "too_deep"),
    (b'{"a":' * 12_000, "too_deep"),
    (b'{"t": 1, "h": 2, "p": {"v": 3}, "pad": "' + b"x" * (1 << 20) + b'"}', "too_large"),
    (b"[1, 2, 3]", "not_object"),
    (b'"a string"', "not_object"),
    (b"21.5", "not_object"),  # a bare number, but this stream has features
    (b'{"h": 1, "p": {"v": 2}}', "missing_target"),
    (b'{"t": null, "h": 1, "p": {"v": 2}}', "missing_target"),
    (b'{"t": 1, "p": {"v": 2}}', "missing_feature"),
    (b'{"t": 1, "h": 1, "p": 5}', "missing_feature"),
    (b'{"t": "21.5", "h": 1, "p": {"v": 2}}', "non_numeric"),
    (b'{"t": 1, "h": [1], "p": {"v": 2}}', "non_numeric"),
    (b'{"t": 1, "h": {"x": 1}, "p": {"v": 2}}', "non_numeric"),
]


def good(i: int) -> bytes:
    return json.dumps({"t": 20 + i % 7, "h": 40 + i % 11, "p": {"v": 1000 + i % 5}}).encode()


async def test_hostile_corpus_is_counted_by_reason_and_good_readings_are_learned(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = load_config(write_config(tmp_path, broker, STREAM))
    messages: list[tuple[str, bytes]] = []
    for i, (payload, _) in enumerate(HOSTILE * 3):
        messages.append((TOPIC, good(i)))
        messages.append((TOPIC, payload))
    async with running(cfg) as daemon:
        await publish_all(broker, messages)
        assert await settle(cfg, len(HOSTILE) * 3) == len(HOSTILE) * 3
        await wait_for(lambda: daemon.transport.received == len(messages))
        assert daemon.transport.state == "connected"
    expected: dict[str, int] = {}
    for _, reason in HOSTILE:
        expected[reason] = expected.get(reason, 0) + 3
    doc = read_status(cfg.db_path)
    assert doc["daemon"]["rejected_by_reason"] == expected
    assert doc["daemon"]["learned"] == len(HOSTILE) * 3
    preds = [p for (p,) in db_rows(cfg, "SELECT y_pred FROM predictions")]
    assert len(preds) == len(HOSTILE) * 3
    assert all(math.isfinite(p) for p in preds)
    # Within a minute the rejects are one `reject` event, written when the daemon stops.
    (reject,) = read_events(cfg.db_path, ["reject"])
    assert reject["stream"] == "env" and reject["key"] is None
    assert reject["data"]["reasons"] == expected
    assert reject["data"]["count"] == len(HOSTILE) * 3
    assert reject["data"]["topic"] == TOPIC


json_leaf = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
    st.none(),
    st.text(max_size=10),
)
json_value = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.sampled_from(["t", "h", "p", "v", "x"]), kids, max_size=4)
    ),
    max_leaves=12,
)
payloads = st.one_of(
    st.binary(max_size=300),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"t": json_leaf, "h": json_leaf, "p": st.fixed_dictionaries({"v": json_leaf})}
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(corpus=st.lists(payloads, min_size=40, max_size=40))
def test_any_payload_is_learned_or_rejected_and_the_daemon_stays_up(
    broker: Broker, corpus: list[bytes]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(write_config(Path(tmp), broker, STREAM))

        async def scenario() -> tuple[int, int, int]:
            async with running(cfg) as daemon:
                await publish_all(broker, [(TOPIC, p) for p in corpus] + [(TOPIC, good(0))])
                async with asyncio.timeout(20):
                    while daemon.transport.received < len(corpus) + 1 or daemon.transport.inbox:
                        await asyncio.sleep(0.02)
                await settle(cfg, 10**9, quiet_s=0.3)
                assert daemon.transport.state == "connected"
            doc = read_status(cfg.db_path)["daemon"]
            return doc["learned"], doc["rejected"], doc["received"]

        learned, rejected, received = asyncio.run(scenario())
        assert received == len(corpus) + 1
        assert learned + rejected == received
        assert learned >= 1  # the good reading at the end
        preds = [p for (p,) in db_rows(cfg, "SELECT y_pred FROM predictions")]
        xs = [json.loads(x) for (x,) in db_rows(cfg, "SELECT x FROM samples")]
        # Readings near the 1e15 limit can make SGD diverge: the guard serves no prediction
        # for that reading and brings the last good version back.
        [(guards,)] = db_rows(cfg, "SELECT count(*) FROM events WHERE kind = 'guard'")
        assert len(preds) == learned - guards
        assert all(math.isfinite(p) and abs(p) <= MAX_PREDICTION for p in preds)
        assert all(math.isfinite(v) for x in xs for v in x.values())


async def test_rejects_are_an_event_a_minute_on_the_events_topic(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A minute is long for a test: report every summary instead, through the same path.
    monkeypatch.setattr(rejects, "REJECT_EVENT_EVERY_S", 0.0)
    cfg = load_config(write_config(tmp_path, broker, STREAM))
    async with running(cfg), aiomqtt.Client(broker.host, broker.port) as sub:
        await sub.subscribe(cfg.events_topic, qos=1)
        await publish_all(broker, [(TOPIC, b"{not json"), (TOPIC, b'{"t": 1, "h": 2}')])
        async with asyncio.timeout(20):
            async for message in sub.messages:
                assert isinstance(message.payload, bytes)
                event = json.loads(message.payload)
                if event["event"] == "reject":
                    break
    stored = read_events(cfg.db_path, ["reject"])
    assert event["reasons"] == {"not_json": 1, "missing_feature": 1}
    assert event["count"] == 2 and event["stream"] == "env"
    assert [e["data"]["reasons"] for e in stored] == [event["reasons"]]


class Exploding:
    """A model that raises, as River might on an input nobody foresaw."""

    def predict_one(self, x: dict[str, float]) -> float:
        raise ZeroDivisionError("inside River")

    def learn_one(self, x: dict[str, float], y: object = None) -> None:
        raise ZeroDivisionError("inside River")


def test_an_error_river_raises_costs_a_prediction_not_the_daemon(tmp_path: Path) -> None:
    """Plain pytest on the engine: the reading is kept, the error logged; an exception
    here would stop the daemon, and again at every restart when the replay meets it."""
    path = tmp_path / "c.toml"
    path.write_text(f'[node]\nstate_dir = "{tmp_path}"\n' + STREAM)
    p = Engine(load(path), 1, {}, {})
    out: list[Outgoing] = []
    for i in range(2):
        p.handle(Delivery(TOPIC, good(i), time.time(), (i + 1, 1, 0), i + 1), out)
    p.learners[("env", "dev1")].model = Exploding()
    with structlog.testing.capture_logs() as logs:
        for i in range(2, 4):
            p.handle(Delivery(TOPIC, good(i), time.time(), (i + 1, 1, 0), i + 1), out)
        p.replay("env", "dev1", (5, time.time(), {"h": 1.0, "p.v": 2.0}, 3.0, None))
    assert p.model_errors == 3
    assert [row[0] for row in p.batch.samples] == [1, 2, 3, 4]  # every reading is kept
    assert [row[0] for row in p.batch.predictions] == [1, 2]  # only the model's own
    errors = [e for e in logs if e["event"] == "model_error"]
    assert [e["seq"] for e in errors] == [3, 4, 5]
    assert errors[0]["error"] == "ZeroDivisionError: inside River"
    assert errors[0]["log_level"] == "error"
