"""`edgeml models import` on a cluster reaches the key's owner, wherever it runs; the model
it installs is in the key's snapshot in KV and predicts the key's next reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiomqtt
import nats
from typer.testing import CliRunner, Result

from edgeml.cli.app import app
from edgeml.cli.cluster import server_mappings
from edgeml.config import Config, load
from edgeml.core import handover
from edgeml.partitions import partition_of
from tests.conftest import DaemonProcess, NatsServer, db_rows

runner = CliRunner()
P = 8
CONFIG = """
[ingest]
backend = "nats"

[nats]
servers = ["{url}"]
partitions = {p}

[node]
id = "{node}"
state_dir = "{state}"

[models]
snapshot_interval = "1s"

[log]
format = "json"

[[stream]]
name = "temp"
topic = "sensors/+/telemetry"
key = "topic:1"
target = "t"
features = ["i", "h"]
"""


async def test_an_import_reaches_the_owner_of_the_key(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    paths = {}
    for node in ("n1", "n2"):
        state = tmp_path / node
        state.mkdir()
        paths[node] = state / "config.toml"
        paths[node].write_text(CONFIG.format(url=nats_server.url, p=P, node=node, state=state))
    cfgs = {n: load(p) for n, p in paths.items()}
    nats_server.extra = server_mappings(cfgs["n1"])
    nats_server.start()
    r = await cli("cluster", "init", "-c", str(paths["n1"]))
    assert r.exit_code == 0, r.output
    nodes = [DaemonProcess(paths[n]) for n in ("n1", "n2")]
    nc = await nats.connect(nats_server.url)
    try:
        for node in nodes:
            node.start()
        leases = await nc.jetstream().key_value("edgeml_leases")
        owners = await _owners(leases)
        # A key owned by n1, imported through n2's config: the command travels.
        attic = next(k for k in (f"attic{i}" for i in range(99)) if owners[_p(k)] == "n1")
        async with aiomqtt.Client("127.0.0.1", nats_server.mqtt_port, identifier="dev") as c:
            for i in range(50):
                body = {"i": i, "h": 40 + i % 9, "t": 0.5 * i + 3}
                await c.publish("sensors/dev0/telemetry", json.dumps(body), qos=1)
        learner = owners[_p("dev0")]
        async with asyncio.timeout(60):
            while not _learned(cfgs[learner], 50):
                await asyncio.sleep(0.2)
        bundle = tmp_path / "dev0.edgeml"
        r = await cli("models", "export", "temp/dev0", "-o", str(bundle), "-c", str(paths[learner]))
        assert r.exit_code == 0, r.output + r.stderr
        args = ["models", "import", str(bundle), "--stream", "temp", "--key", attic]
        r = await cli(*args, "-c", str(paths["n2"]))
        assert r.exit_code == 0, r.output + r.stderr
        assert "version 2 is the champion: the imported model" in r.stdout
        kv = await nc.jetstream().key_value("edgeml_snapshots")
        snap = handover.decode((await kv.get(f"{_p(attic)}.{attic}")).value)
        imported = handover.learners(snap, {"temp": cfgs["n1"].stream[0]}, attic)["temp"]
        dev0 = handover.decode((await kv.get(f"{_p('dev0')}.dev0")).value)
        trained = handover.learners(dev0, {"temp": cfgs["n1"].stream[0]}, "dev0")["temp"]
        x = {"i": 7.0, "h": 44.0}
        assert imported.model.predict_one(x) == trained.model.predict_one(x)
        assert imported.model_version == 2
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            node.wait(30)
        await nc.close()


async def cli(*args: str) -> Result:
    # In a thread: the CLI runs its own event loop.
    return await asyncio.to_thread(runner.invoke, app, list(args), prog_name="edgeml")


def _p(key: str) -> int:
    return partition_of(key, P)


async def _owners(leases: Any) -> dict[int, str]:
    """Partition -> node, once both nodes own partitions and every one is owned."""
    async with asyncio.timeout(60):
        while True:
            out = {}
            for p in range(P):
                with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                    out[p] = (await leases.get(f"p.{p}")).value.decode()
            if len(out) == P and set(out.values()) == {"n1", "n2"}:
                return out
            await asyncio.sleep(0.2)


def _learned(cfg: Config, n: int) -> bool:
    if not cfg.db_path.exists():
        return False
    with contextlib.suppress(sqlite3.OperationalError):
        return bool(db_rows(cfg, "SELECT count(*) FROM samples")[0][0] >= n)
    return False
