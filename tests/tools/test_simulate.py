"""`edgeml simulate`: the same seed gives the same readings; faults are flagged; wills fire."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
from pathlib import Path

import aiomqtt

from edgeml.store.queries import read_events, read_status
from edgeml.tools.simulate import Faults, Simulator
from tests.conftest import Broker, load_config, running, settle, write_config

FAULTS = Faults(change_at=5, drift_from=5, spike_rate=0.05, stuck_at=3, drop_at=8, bad_rate=0.05)


def readings(seed: int, ticks: int = 100) -> list[tuple[str, bytes, str]]:
    sim = Simulator(devices=4, rate=10, seed=seed, faults=FAULTS)
    return [(r.topic, r.payload, r.note) for n in range(ticks) for r in sim.tick(n, 1.8e9)]


ROOT = Path(__file__).resolve().parents[2]


def test_same_seed_same_readings() -> None:
    assert readings(7) == readings(7)
    assert readings(7) != readings(8)


def test_faults_are_where_they_were_scripted() -> None:
    sim = Simulator(devices=4, rate=10, seed=3, faults=FAULTS)
    ticks = [sim.tick(n, 1.8e9) for n in range(120)]
    # The last device drops off at 8 s (tick 80).
    assert all(len(t) == 4 for t in ticks[:80]) and all(len(t) == 3 for t in ticks[80:])
    by_device: dict[str, list[tuple[int, str, bytes]]] = {}
    for n, t in enumerate(ticks):
        for r in t:
            by_device.setdefault(r.device, []).append((n, r.note, r.payload))
    assert all(("changed" in note) == (n >= 50) for n, note, _ in by_device["sim0"])
    assert all(("drifting" in note) == (n >= 50) for n, note, _ in by_device["sim1"])
    stuck = [
        json.loads(p) for n, note, p in by_device["sim2"] if "stuck" in note and "bad" not in note
    ]
    assert stuck and len({r["temperature"] for r in stuck}) == 1
    assert all(r["anomaly"] for r in stuck)
    bad = [p for d in by_device.values() for _, note, p in d if "bad payload" in note]
    assert 0 < len(bad) < 60
    assert any("spike" in note for d in by_device.values() for _, note, _ in d)


async def test_simulated_devices_feed_the_daemon_and_a_dropped_one_goes_offline(
    broker: Broker, tmp_path: Path
) -> None:
    stream = """
[[stream]]
name = "boiler"
topic = "sensors/+/telemetry"
key = "topic:1"
target = "temperature"
features = ["humidity", "pressure", "load"]
"""
    path = write_config(tmp_path, broker, stream)
    cfg = load_config(path)
    async with running(cfg), aiomqtt.Client(broker.host, broker.port) as watcher:
        await watcher.subscribe("sensors/+/status", qos=1)
        # A real process: what it prints on stderr is what a user sees (under pytest, log
        # records are captured instead).
        r = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "edgeml", "simulate", "--devices", "3", "--rate", "10",
             "--duration", "3", "--seed", "2", "--drop-at", "2", "--bad", "0.1", "-c", str(path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        assert "sim2: drops off (its will says offline)" in r.stdout
        assert r.stderr == ""  # no "Could not gracefully disconnect" for the dropped device
        statuses: dict[str, bytes] = {}
        async with asyncio.timeout(10):
            async for m in watcher.messages:
                assert isinstance(m.payload, bytes)
                statuses[m.topic.value] = m.payload
                if statuses.get("sensors/sim2/status") == b"offline":
                    break
        sent = int(r.stdout.strip().splitlines()[-1].split()[1])
        await settle(cfg, sent, quiet_s=1.0)
    daemon = read_status(cfg.db_path)["daemon"]
    assert daemon["received"] == sent
    assert daemon["learned"] + daemon["rejected"] == sent
    assert daemon["rejected"] > 0  # the bad payloads


def documented_example(speedup: float) -> list[str]:
    """The `edgeml simulate` command of docs/cli.md, `speedup` times faster: the same
    readings (rate up, every time down by the same factor).
    """
    text = (ROOT / "docs" / "cli.md").read_text()
    block = text.split("## `edgeml simulate`", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    args = shlex.split(block.replace("\\\n", " "))[2:]  # after `edgeml simulate`
    times = {"--duration", "--change-at", "--drift-from", "--stuck-at", "--drop-at"}
    out = []
    for name, given in zip(args[::2], args[1::2], strict=True):
        value = given
        if name == "--rate":
            value = f"{float(given) * speedup:g}"
        elif name in times:
            value = f"{float(given) / speedup:g}"
        out += [name, value]
    return out


async def test_the_documented_example_shows_the_drift_and_the_anomalies_it_promises(
    broker: Broker, tmp_path: Path
) -> None:
    """docs/cli.md's simulate example against the example config.toml: a drift of
    temperature/sim0 after its change, and anomaly episodes on the vibration stream.
    """
    config = (ROOT / "config.toml").read_text()
    config = config.replace("port = 1883", f"port = {broker.port}")
    config = config.replace('host = "localhost"', f'host = "{broker.host}"')
    config = config.replace('state_dir = "./state"', 'state_dir = "state"')
    path = tmp_path / "config.toml"
    path.write_text(config)
    cfg = load_config(path)
    args = documented_example(20)
    async with running(cfg):
        r = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "edgeml", "simulate", *args, "-c", str(path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        sent = int(r.stdout.strip().splitlines()[-1].split()[1])
        await settle(cfg, sent, quiet_s=1.5)
    events = read_events(cfg.db_path, limit=10_000)
    drifts = [e for e in events if e["kind"] == "drift" and e["stream"] == "temperature"]
    assert any(e["key"] == "sim0" for e in drifts), [(e["key"], e["seq"]) for e in drifts]
    episodes = [e for e in events if e["kind"] == "anomaly" and e["data"]["type"] == "new"]
    assert episodes and all(e["stream"] == "vibration" for e in episodes)
