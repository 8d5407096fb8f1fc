"""Scale out on NATS JetStream (issue 18): three `edgeml run` nodes share 1,000 devices that
publish MQTT 3.1.1 QoS 1 to nats-server; one node is killed, one paused past its lease, one
joins. Every acknowledged reading is learned exactly once, by the node that owns its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import aiomqtt
import nats
import pytest
from river import linear_model, preprocessing

from edgeml.cli.cluster import server_mappings
from edgeml.config import Config, load
from edgeml.core import handover
from edgeml.learn import Learner
from edgeml.partitions import partition_of
from edgeml.records import Sample
from tests.conftest import DaemonProcess, NatsServer
from tests.helpers import read_all

P = 64
TTL_S = 3.0
DEVICES = 1000
READINGS = 30
CLIENTS = 12  # under 100 publishes in flight each (aiomqtt warns at 100)
ROUND_S = 0.6  # one reading of every device per round
T0 = 1_700_000_000.0

CONFIG = """
[ingest]
backend = "nats"

[nats]
servers = ["{url}"]
partitions = {partitions}
lease_ttl = "3s"

[node]
id = "{node}"
state_dir = "{state}"

[store]
summary_interval = "1s"

[models]
snapshot_interval = "5s"
max_live = 5000

[log]
format = "json"

[[stream]]
name = "temperature"
topic = "sensors/+/telemetry"
key = "topic:1"
target = "temperature"
features = ["humidity", "load"]
model = "linear"
timestamp = "ts"

[[stream]]
name = "vibration"
topic = "sensors/+/telemetry"
key = "topic:1"
task = "anomaly"
model = "halfspace"
features = ["vibration"]
timestamp = "ts"

[stream.params]
n_trees = 2
height = 3
window_size = 10
"""


# key -> [(stream sequence, reading)] in stream order
ByKey = dict[str, list[tuple[int, dict[str, float]]]]


def reading(device: int, n: int) -> dict[str, float]:
    return {
        "ts": T0 + n,
        "n": n,
        "temperature": 20 + 5 * math.sin(device + n / 3),
        "humidity": 40 + (device * 7 + n * 3) % 30,
        "load": ((device + n) % 10) / 10,
        "vibration": 0.1 * ((device * 3 + n) % 7),
    }


def node_config(tmp_path: Path, server: NatsServer, node: str) -> Path:
    state = tmp_path / node
    state.mkdir()
    path = state / "config.toml"  # its daemon.log beside it
    path.write_text(CONFIG.format(url=server.url, partitions=P, node=node, state=state))
    return path


async def publish(port: int, acked: set[tuple[int, int]], start: asyncio.Event) -> None:
    """Every device's readings in order, QoS 1 over MQTT 3.1.1; `acked`: the PUBACKed."""

    async def client(k: int) -> None:
        devices = range(k, DEVICES, CLIENTS)
        async with aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier=f"devices-{k}",
            protocol=aiomqtt.ProtocolVersion.V311,
            max_inflight_messages=len(devices),
        ) as c:
            for n in range(READINGS):
                await start.wait()
                due = time.monotonic() + ROUND_S

                async def one(d: int, n: int = n) -> None:
                    with contextlib.suppress(aiomqtt.MqttError):
                        payload = json.dumps(reading(d, n))
                        await c.publish(f"sensors/d{d}/telemetry", payload, qos=1, timeout=30)
                        acked.add((d, n))

                await asyncio.gather(*(one(d) for d in devices))
                await asyncio.sleep(max(0.0, due - time.monotonic()))

    await asyncio.gather(*(client(k) for k in range(CLIENTS)))


async def owners(js: Any) -> dict[int, str]:
    kv = await js.key_value("edgeml_leases")
    out = {}
    for p in range(P):
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            out[p] = (await kv.get(f"p.{p}")).value.decode()
    return out


def events(node: DaemonProcess, name: str) -> list[dict[str, Any]]:
    lines = node.log.read_text().splitlines()
    return [e for e in map(json.loads, filter(None, lines)) if e.get("event") == name]


async def test_three_nodes_a_kill_a_pause_and_a_join_learn_every_reading_once(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    configs = {n: node_config(tmp_path, nats_server, n) for n in "abcd"}
    cfg = load(configs["a"])
    nats_server.extra = server_mappings(cfg)
    nats_server.start()
    init = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "edgeml", "cluster", "init", "-c", str(configs["a"]),
         "--history", "64"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "fixed for the life of the stream" in init.stdout
    nodes = {n: DaemonProcess(configs[n]) for n in "abcd"}
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        for n in "abc":
            nodes[n].start()
        await _until(lambda: _all_owned(js, {"a", "b", "c"}, each=True), 60)
        acked: set[tuple[int, int]] = set()
        start = asyncio.Event()
        publisher = asyncio.create_task(publish(nats_server.mqtt_port, acked, start))
        start.set()
        timeline = await _chaos(js, nodes)
        await publisher
        # Every partition owned by b, c or d and every checkpoint at its partition's newest
        # reading: all that was published is learned and in a snapshot.
        why: list[str] = []
        try:
            await _until(lambda: _quiet(js, why), 90)
        except TimeoutError:
            pytest.fail(f"the cluster did not settle: {why}")
        for n in "bcd":
            nodes[n].terminate()
        for n in "bcd":
            assert nodes[n].wait(30) == 0
        await _check(js, cfg, acked, nodes, timeline)
    finally:
        for node in nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    node.proc.send_signal(signal.SIGCONT)
                node.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.wait(10)
                if node.proc.poll() is None:
                    node.proc.kill()
        await nc.close()


async def _until(check: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


async def _all_owned(js: Any, by: set[str], each: bool = False) -> bool:
    """Every partition owned by one of `by` (`each`: and each of them owns some)."""
    current = await owners(js)
    held = set(current.values())
    return len(current) == P and (held == by if each else held <= by)


async def _quiet(js: Any, why: list[str]) -> bool:
    """All settled; else `why` says what was still moving (for a timeout's message)."""
    if not await _all_owned(js, {"b", "c", "d"}):
        why[:] = [f"owners: {await owners(js)}"]
        return False
    kv = await js.key_value("edgeml_snapshots")
    for p in range(P):
        try:
            newest = (await js.get_last_msg("EDGEML_IN", f"EDGEML_IN.{p}.>")).seq
        except nats.js.errors.NotFoundError:
            continue
        try:
            mark = json.loads((await kv.get(f"{p}.checkpoint")).value)
        except nats.js.errors.KeyNotFoundError:
            return False
        if mark["seq"] < newest:
            why[:] = [f"partition {p}: checkpoint {mark['seq']} < newest {newest}"]
            return False
    return True


async def _chaos(js: Any, nodes: dict[str, DaemonProcess]) -> dict[str, Any]:
    """Kill a, pause b for twice the lease TTL, start d, while the devices publish."""
    await asyncio.sleep(4 * ROUND_S)
    before = await owners(js)
    of_a = {p for p, n in before.items() if n == "a"}
    nodes["a"].kill()
    killed = time.monotonic()
    await _until(lambda: _taken(js, of_a, "a"), 30)
    took = time.monotonic() - killed
    print(f"a's {len(of_a)} partitions owned again {took:.2f} s after the kill (TTL {TTL_S} s)")
    of_b = {p for p, n in (await owners(js)).items() if n == "b"}
    assert nodes["b"].proc is not None
    nodes["b"].proc.send_signal(signal.SIGSTOP)
    await asyncio.sleep(2 * TTL_S)
    nodes["b"].proc.send_signal(signal.SIGCONT)
    nodes["d"].start()
    return {"of_a": of_a, "of_b": of_b}


async def _taken(js: Any, partitions: set[int], dead: str) -> bool:
    current = await owners(js)
    return all(current.get(p) not in (None, dead) for p in partitions)


async def _check(
    js: Any,
    cfg: Config,
    acked: set[tuple[int, int]],
    nodes: dict[str, DaemonProcess],
    timeline: dict[str, Any],
) -> None:
    inputs = await read_all(js, "EDGEML_IN", [f"EDGEML_IN.{p}.>" for p in range(P)])
    by_key: ByKey = defaultdict(list)
    for m in inputs:
        by_key[m.subject.split(".")[3]].append((m.metadata.sequence.stream, json.loads(m.data)))
    stored = {(int(k[1:]), int(r["n"])) for k, rows in by_key.items() for _, r in rows}
    # 1. Every PUBACKed reading is in the stream once, in each device's order.
    assert acked <= stored
    assert len(acked) == DEVICES * READINGS  # loopback: every publish is acknowledged
    for rows in by_key.values():
        ns = [int(r["n"]) for _, r in rows]
        assert ns == sorted(set(ns))
    await _check_snapshots(js, cfg, by_key)
    await _check_outputs(js, by_key)
    # 5. a's partitions went to the survivors; b was fenced and wrote nothing after; d got
    # its partitions from the nodes that held them, each handed over.
    # b stopped every partition it held when it was paused (its leases had expired).
    assert timeline["of_b"] <= {e["partition"] for e in events(nodes["b"], "fenced")}
    released = {
        (e["node"], e["partition"]) for n in "bc" for e in events(nodes[n], "partition_released")
    }
    given = {p for e in events(nodes["d"], "partitions_acquired") for p in e["partitions"]}
    assert given
    assert all(any((n, p) in released for n in "bc") for p in given)
    assert timeline["of_a"]


async def _check_snapshots(js: Any, cfg: Config, by_key: ByKey) -> None:
    """2. Every key's final models are what learning each of its readings once, in stream
    order, makes; 3. its snapshots only moved forward, and no writer came back after a
    newer lease had written.
    """
    cfg_streams = {s.name: s for s in cfg.stream}
    # Every revision of every key (kv.history misses values this large).
    revisions: dict[str, list[bytes]] = defaultdict(list)
    for m in await read_all(js, "KV_edgeml_snapshots", ["$KV.edgeml_snapshots.>"]):
        revisions[m.subject.removeprefix("$KV.edgeml_snapshots.")].append(m.data)
    # Checkpoints too: only forward, and never again by a lease older than one that wrote.
    for p in range(P):
        marks = [json.loads(v) for v in revisions[f"{p}.checkpoint"]]
        assert [m["seq"] for m in marks] == sorted({m["seq"] for m in marks}), p
        assert [m["lease"] for m in marks] == sorted(m["lease"] for m in marks), p
    probe = [{"humidity": 40.0 + i, "load": i / 10} for i in range(10)]
    for key, rows in by_key.items():
        snaps = [handover.decode(v) for v in revisions[f"{partition_of(key, P)}.{key}"]]
        covered = [s.covered for s in snaps]
        assert covered == sorted(set(covered)), key
        leases = [s.lease for s in snaps]
        assert leases == sorted(leases), key
        final = snaps[-1]
        assert final.covered == rows[-1][0]
        assert final.samples == {"temperature": len(rows), "vibration": len(rows)}
        learned = handover.learners(final, cfg_streams, key)
        plain = preprocessing.StandardScaler() | linear_model.LinearRegression()
        ref = Learner(cfg_streams["vibration"], key)
        for seq, r in rows:
            x = {"humidity": r["humidity"], "load": r["load"]}
            plain.learn_one(x, r["temperature"])
            ref.process(Sample("vibration", key, r["ts"], {"vibration": r["vibration"]}), seq)
        for x in probe:
            got = learned["temperature"].model.predict_one(x)
            assert got == pytest.approx(plain.predict_one(x), rel=1e-9, abs=1e-9), key
        for v in (0.0, 0.3, 0.6, 5.0):
            got = learned["vibration"].model.score_one({"vibration": v})
            assert got == pytest.approx(ref.model.score_one({"vibration": v}), abs=1e-9), key


async def _check_outputs(js: Any, by_key: ByKey) -> None:
    """4. Exactly one prediction per (key, seq) in the output stream, for every reading."""
    outputs = await read_all(js, "EDGEML_OUT", ["edgeml.>"])
    ids = Counter(json.loads(m.data)["id"] for m in outputs if m.subject.endswith(".prediction"))
    assert max(ids.values()) == 1
    want = {f"{s}:{k}:{seq}" for k, rows in by_key.items() for seq, _ in rows
            for s in ("temperature", "vibration")}  # fmt: skip
    assert set(ids) == want
