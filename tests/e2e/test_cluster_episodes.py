"""Anomaly episodes in NATS mode are published once: a node announces an episode and is
killed before it snapshots; the node that takes its partitions learns the readings again
and announces the episode again, and the output stream drops the repeat by its
Nats-Msg-Id (`stream:key:seq:type` of the reading that caused it).
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt
import nats

from edgeml.cli.cluster import server_mappings
from edgeml.config import load
from tests.conftest import NatsServer, sample_count, wait_for
from tests.helpers import read_all

CONFIG = """
[ingest]
backend = "nats"

[nats]
servers = ["{url}"]
partitions = 4
lease_ttl = "3s"

[node]
id = "{node}"
state_dir = "{state}"

[models]
snapshot_interval = "1h"  # no snapshot before the kill: the next owner learns it all

[log]
format = "json"

[[stream]]
name = "vib"
topic = "plant/+/vibration"
key = "topic:1"
task = "anomaly"
features = ["rms"]
timestamp = "ts"
publish = "anomalies"
anomaly = {{ warmup = 200 }}
alert = {{ clear_after = "60s" }}
"""
T0 = 1_700_000_000
READINGS = 303  # 300 quiet ones, then 30 s of a bad bearing


def readings() -> list[bytes]:
    rng = random.Random(7)
    rms = [rng.gauss(1.0, 0.1) for _ in range(300)] + [9.0] * 3
    return [json.dumps({"rms": round(v, 3), "ts": T0 + 10 * i}).encode() for i, v in enumerate(rms)]


async def test_an_episode_learned_again_after_a_failover_is_announced_once(
    nats_server: NatsServer, tmp_path: Path, daemon_process: Any
) -> None:
    paths = {}
    for node in "ab":
        (tmp_path / node).mkdir()
        paths[node] = tmp_path / node / "config.toml"
        text = CONFIG.format(url=nats_server.url, node=node, state=tmp_path / node)
        paths[node].write_text(text)
    nats_server.extra = server_mappings(load(paths["a"]))
    nats_server.start()
    init = [sys.executable, "-m", "edgeml", "cluster", "init", "-c", str(paths["a"])]
    await asyncio.to_thread(subprocess.run, init, capture_output=True, check=True)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        a = daemon_process(paths["a"])
        a.start()
        await a.wait_ready()
        async with aiomqtt.Client(
            "127.0.0.1", nats_server.mqtt_port, protocol=aiomqtt.ProtocolVersion.V311
        ) as c:
            for body in readings():
                await c.publish("plant/pump1/vibration", body, qos=1)

        async def announced() -> bool:  # the retained ON: the last of a's two messages
            try:
                await js.get_last_msg("EDGEML_OUT", "edgeml.a.vib.pump1.anomaly.state")
            except nats.js.errors.NotFoundError:
                return False
            return True

        await _until(announced, 60)
        a.kill()  # before any snapshot: b takes the partition from the stream's start
        b = daemon_process(paths["b"])
        b.start()
        b_cfg = load(paths["b"])
        await wait_for(lambda: sample_count(b_cfg) == READINGS, 60)
        b.terminate()
        assert b.wait(30) == 0
        again = [json.loads(line) for line in b.log.read_text().splitlines() if "anomaly" in line]
        assert [e["type"] for e in again if e.get("event") == "anomaly"] == ["new"]
        outputs = await read_all(js, "EDGEML_OUT", ["edgeml.>"])
    finally:
        await nc.close()
    anomaly = [json.loads(m.data) for m in outputs if m.subject.endswith(".anomaly")]
    state = [m.data for m in outputs if m.subject.endswith(".anomaly.state")]
    # One `new` and one ON, both a's: b's repeats of them were dropped.
    assert [(e["type"], e["key"]) for e in anomaly] == [("new", "pump1")]
    assert state == [b"ON"]
    episodes = [m for m in outputs if ".anomaly" in m.subject]
    assert {m.subject.split(".")[1] for m in episodes} == {"a"}
    ids = Counter(m.headers["Nats-Msg-Id"] for m in episodes)
    seq = anomaly[0]["msg_id"].split(":")[2]
    assert ids == {f"vib:pump1:{seq}:new": 1, f"vib:pump1:{seq}:state": 1}


async def _until(check: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)
