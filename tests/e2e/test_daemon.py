"""End to end, in process: a real mosquitto, a real SQLite file, the daemon's own tasks."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import aiomqtt
import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing

from edgeml.store.queries import read_status
from tests.conftest import (
    TELEMETRY,
    Broker,
    db_rows,
    load_config,
    publish_all,
    running,
    sample_count,
    wait_for,
    write_config,
)
from tests.helpers import telemetry

TRUMP_FEATURES = ["ordinal_date", "gallup", "ipsos", "morning_consult", "rasmussen", "you_gov"]


async def test_trump_approval_mae_equals_river_progressive_validation(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = load_config(
        write_config(
            tmp_path,
            broker,
            f"""
[[stream]]
name = "trump"
topic = "polls/trump"
model = "linear"
target = "approval"
features = {json.dumps(TRUMP_FEATURES)}
""",
        )
    )
    rows = list(datasets.TrumpApproval())
    messages = [("polls/trump", json.dumps({**x, "approval": y}).encode()) for x, y in rows]
    predictions: list[dict[str, float]] = []

    async with running(cfg), aiomqtt.Client(broker.host, broker.port) as sub:
        await sub.subscribe(f"edgeml/{cfg.node.id}/trump/default/prediction", qos=0)

        async def collect() -> None:
            async for m in sub.messages:
                assert isinstance(m.payload, bytes)
                predictions.append(json.loads(m.payload))
                if len(predictions) == len(rows):
                    return

        collector = asyncio.create_task(collect())
        await publish_all(broker, messages)
        await wait_for(lambda: sample_count(cfg) == len(rows))
        async with asyncio.timeout(10):
            await collector

    expected = evaluate.progressive_val_score(
        datasets.TrumpApproval(),
        preprocessing.StandardScaler() | linear_model.LinearRegression(),
        metrics.MAE(),
    ).get()
    doc = read_status(cfg.db_path)
    [row] = doc["streams"]
    assert row["samples"] == len(rows)
    assert row["metrics"]["mae"] == pytest.approx(expected, rel=1e-9)
    assert row["model_version"] == 1
    # Every prediction was published, in order, and matches the stored one.
    stored = db_rows(cfg, "SELECT y_pred, error FROM predictions ORDER BY seq")
    # (Published to 6 significant digits, docs/mqtt.md; stored in full.)
    assert [p["y_pred"] for p in predictions] == [float(f"{s[0]:.6g}") for s in stored]
    assert [p["y"] for p in predictions] == [y for _, y in rows]
    assert sum(p["error"] for p in predictions) / len(rows) == pytest.approx(expected, rel=1e-6)


async def test_one_model_per_device_from_a_topic_level(broker: Broker, tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, broker, TELEMETRY))
    async with running(cfg):
        await publish_all(broker, telemetry(300, devices=3))
        await wait_for(lambda: sample_count(cfg) == 300)
    doc = read_status(cfg.db_path)
    assert [(s["stream"], s["key"], s["samples"]) for s in doc["streams"]] == [
        ("temp", "dev0", 100),
        ("temp", "dev1", 100),
        ("temp", "dev2", 100),
    ]
    # Each device's model learned only its own readings: its `i` values are i % 3 == device.
    for dev in range(3):
        xs = db_rows(
            cfg,
            "SELECT s.x FROM samples s JOIN series r ON r.id = s.series WHERE r.key = ?",
            f"dev{dev}",
        )
        assert {json.loads(x)["i"] % 3 for (x,) in xs} == {dev}
    assert doc["daemon"]["learned"] == 300
    assert doc["daemon"]["running"] is False  # stopped cleanly


async def test_redelivery_of_committed_messages_is_acknowledged_not_stored_twice(
    broker: Broker, tmp_path: Path
) -> None:
    """The crash window between commit and PUBACK: the broker resends, nothing is stored twice."""
    cfg = load_config(write_config(tmp_path, broker, TELEMETRY))
    async with running(cfg) as daemon:
        # The daemon commits but its acknowledgements never reach the broker.
        daemon.transport.ack = lambda token: None  # type: ignore[method-assign]
        await publish_all(broker, telemetry(200))
        await wait_for(lambda: sample_count(cfg) == 200)
    # A new daemon on the same persistent session gets the 200 again, with DUP set.
    async with running(cfg) as daemon:
        await wait_for(lambda: daemon.transport.received >= 200)
        await publish_all(broker, telemetry(50, start=200))
        await wait_for(lambda: sample_count(cfg) == 250)
        duplicates_seen = daemon.transport.received - 50
    assert duplicates_seen == 200
    assert sample_count(cfg) == 250
    ids = [json.loads(x)["i"] for (x,) in db_rows(cfg, "SELECT x FROM samples ORDER BY seq")]
    assert sorted(ids) == list(range(250))
    # And they were acknowledged this time: a third start receives nothing old.
    async with running(cfg) as daemon:
        await asyncio.sleep(1.0)
        assert daemon.transport.received == 0
    assert sample_count(cfg) == 250


async def test_broker_restart_reconnects_and_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, broker, TELEMETRY))
    async with running(cfg) as daemon:
        await publish_all(broker, telemetry(300))
        await wait_for(lambda: sample_count(cfg) == 300)
        broker.restart()
        # Published at once, before the daemon is back: the persistent session queues them.
        await publish_all(broker, telemetry(300, start=300))
        await wait_for(
            lambda: daemon.transport.connects == 2 and daemon.transport.state == "connected"
        )
        await publish_all(broker, telemetry(100, start=600))
        await wait_for(lambda: sample_count(cfg) == 700)
    ids = sorted(json.loads(x)["i"] for (x,) in db_rows(cfg, "SELECT x FROM samples"))
    assert ids == list(range(700))


async def test_retained_status_online_then_offline(broker: Broker, tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, broker, TELEMETRY))

    async def retained() -> bytes:
        async with aiomqtt.Client(broker.host, broker.port) as c:
            await c.subscribe(cfg.status_topic, qos=1)
            async with asyncio.timeout(5):
                async for m in c.messages:
                    assert m.retain
                    assert isinstance(m.payload, bytes)
                    return m.payload
        raise AssertionError("unreachable")

    async with running(cfg):
        assert await retained() == b"online"
    assert await retained() == b"offline"


async def test_predictions_stay_finite_for_extreme_but_valid_readings(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = load_config(write_config(tmp_path, broker, TELEMETRY))
    messages = [
        ("sensors/dev0/telemetry", json.dumps({"i": i, "h": (-1) ** i * 1e15, "t": 1e15}).encode())
        for i in range(200)
    ]
    async with running(cfg):
        await publish_all(broker, messages)
        await wait_for(lambda: sample_count(cfg) == 200)
    preds = [p for (p,) in db_rows(cfg, "SELECT y_pred FROM predictions")]
    assert len(preds) == 200
    assert all(math.isfinite(p) for p in preds)


async def test_publish_none_sends_no_predictions(broker: Broker, tmp_path: Path) -> None:
    streams = TELEMETRY + 'publish = "none"\n'
    cfg = load_config(write_config(tmp_path, broker, streams))
    seen: list[str] = []
    async with running(cfg), aiomqtt.Client(broker.host, broker.port) as sub:
        await sub.subscribe(f"edgeml/{cfg.node.id}/#", qos=0)

        async def collect() -> None:
            async for m in sub.messages:
                seen.append(m.topic.value)

        collector = asyncio.create_task(collect())
        await publish_all(broker, telemetry(60))
        await wait_for(lambda: sample_count(cfg) == 60)
        await asyncio.sleep(0.3)
        collector.cancel()
    assert seen == [cfg.status_topic]  # the retained `online`, and nothing else
