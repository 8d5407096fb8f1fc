"""Anomaly episodes end to end: announced after their commit, once; an episode open at a
kill -9 is rebuilt from the snapshot and the log, and ends under the same id.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import aiomqtt

from edgeml.store.queries import read_events
from tests.conftest import Broker, load_config, publish_all, sample_count, wait_for, write_config

PUMP = """
[[stream]]
name = "vib"
topic = "plant/+/vibration"
key = "topic:1"
task = "anomaly"
features = ["rms"]
timestamp = "ts"
anomaly = { warmup = 200 }
alert = { clear_after = "60s" }
"""
# Sample times of the last hour (retention counts from the readings' own times).
T0 = int(time.time()) - 3600


def readings(start: int, n: int, spike: bool = False) -> list[tuple[str, bytes]]:
    """One reading every 10 s of sample time from reading `start` on."""
    rng = random.Random(start)
    out = []
    for i in range(start, start + n):
        rms = 9.0 if spike else rng.gauss(1.0, 0.1)
        body = {"rms": round(rms, 3), "ts": T0 + 10 * i}
        out.append(("plant/pump1/vibration", json.dumps(body).encode()))
    return out


async def test_an_episode_open_at_a_kill_ends_after_the_restart_announced_once(
    broker: Broker, tmp_path: Path, daemon_process: Any
) -> None:
    config = write_config(tmp_path, broker, PUMP)
    cfg = load_config(config)
    topic = f"edgeml/{cfg.node.id}/vib/pump1/anomaly"
    got: list[tuple[str, bytes]] = []
    async with aiomqtt.Client(broker.host, broker.port) as sub:
        await sub.subscribe(f"{topic}/#", qos=1)
        await sub.subscribe(topic, qos=1)

        async def collect() -> None:
            async for m in sub.messages:
                assert isinstance(m.payload, bytes)
                got.append((str(m.topic), m.payload))

        collector = asyncio.create_task(collect())
        d = daemon_process(config)
        d.start()
        await d.wait_ready()
        await publish_all(broker, readings(0, 300))
        await publish_all(broker, readings(300, 3, spike=True))  # 30 s of a bad bearing
        # `new` goes out once the batch that holds it is committed.
        await wait_for(lambda: any(t == topic for t, _ in got))
        d.kill()  # the episode is open: no normal reading has come 60 s after the last flag
        d = daemon_process(config)
        d.start()
        await d.wait_ready()
        await publish_all(broker, readings(303, 12))  # two quiet minutes
        await wait_for(lambda: sample_count(cfg) == 315)
        await wait_for(lambda: sum(t == topic for t, _ in got) >= 2)
        d.terminate()
        assert d.wait(10) == 0
        collector.cancel()
    episodes = [json.loads(p) for t, p in got if t == topic]
    assert [(e["type"], e["id"], e["count"]) for e in episodes] == [
        ("new", 301, 1),
        ("end", 301, 3),
    ]
    assert episodes[1]["start_ts"] == T0 + 3000 and episodes[1]["end_ts"] == T0 + 3020
    states = [p for t, p in got if t == f"{topic}/state"]
    assert states == [b"ON", b"OFF"]
    stored = [e["data"] for e in read_events(cfg.db_path, ["anomaly"])]
    assert sorted((e["type"], e["id"]) for e in stored) == [("end", 301), ("new", 301)]
