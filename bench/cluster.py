"""The capacity figures of docs/scale.md: CPU per reading for nats-server (MQTT ingest and the
JetStream store) and for edgeml nodes on it, and the bytes of a snapshot round.

    nice .venv/bin/python bench/cluster.py [--readings 20000] [--devices 500] [--nodes 1]

Starts a private nats-server (JetStream, its MQTT listener, the partition mapping), runs
`edgeml cluster init` and `--nodes` `edgeml run` processes (backend nats, one linear
regression stream), publishes the readings over MQTT 3.1.1 QoS 1 as fast as the broker
acknowledges them, and waits until every partition's checkpoint covers its newest reading.
CPU is utime + stime from /proc, per process, from the first reading to that point.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import (
    cpu_seconds,
    free_port,
    make_messages,
    print_run,
    progress,
    publisher,
    start_edgeml,
    utc_now,
)

NATS_SERVER = "/usr/sbin/nats-server"

CONFIG = """[ingest]
backend = "nats"

[nats]
servers = ["nats://127.0.0.1:{port}"]
partitions = {partitions}

[node]
id = "{node}"
state_dir = "{state}"

[models]
snapshot_interval = "2s"
max_live = 100000

[log]
level = "warning"
format = "json"

[[stream]]
name = "load"
topic = "bench/+/telemetry"
key = "topic:1"
task = "regression"
model = "linear"
features = ["a", "b", "c"]
target = "y"
"""


def start_server(
    workdir: Path, port: int, mqtt_port: int, mappings: list[str]
) -> subprocess.Popen[bytes]:
    conf = workdir / "nats.conf"
    conf.write_text(
        f"server_name: bench\nlisten: 127.0.0.1:{port}\n"
        f'jetstream {{ store_dir: "{workdir}/js" }}\n'
        f"mqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n" + "\n".join(mappings) + "\n"
    )
    proc = subprocess.Popen([NATS_SERVER, "-c", str(conf)], stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return proc


async def wait_covered(url: str, seconds: float) -> None:
    """Until every partition's checkpoint is at its newest reading."""
    from edgeml.config import load
    from edgeml.transport.nats_link import cluster_view, connect

    cfg = load(Path(url))
    nc = await connect(cfg.nats, "bench")
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            _, owners, behind = await cluster_view(nc, cfg.nats)
            if len(owners) == cfg.nats.partitions and not any(behind.values()):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError("the checkpoints did not catch up")
    finally:
        await nc.close()


async def stored_bytes(config: Path) -> tuple[int, int, int]:
    """(bytes, values) in the snapshot bucket's stream, and bytes in the input stream."""
    from edgeml.config import load
    from edgeml.transport.nats_link import connect

    cfg = load(config)
    nc = await connect(cfg.nats, "bench")
    try:
        js = nc.jetstream()
        info = await js.stream_info(f"KV_{cfg.nats.snapshot_bucket}")
        inputs = await js.stream_info(cfg.nats.stream)
        return info.state.bytes, info.state.messages, inputs.state.bytes
    finally:
        await nc.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--readings", type=int, default=20_000)
    p.add_argument("--devices", type=int, default=500)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--partitions", type=int, default=64)
    args = p.parse_args()
    started = utc_now()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port, mqtt_port = free_port(), free_port()
        configs = []
        for i in range(args.nodes):
            state = work / f"n{i}"
            state.mkdir()
            path = state / "config.toml"
            path.write_text(CONFIG.format(port=port, partitions=args.partitions, node=f"n{i}",
                                          state=state))  # fmt: skip
            configs.append(path)
        from edgeml.cli.cluster import server_mappings
        from edgeml.config import load

        server = start_server(work, port, mqtt_port, server_mappings(load(configs[0])))
        nodes: list[subprocess.Popen[bytes]] = []
        try:
            subprocess.run([sys.executable, "-m", "edgeml", "cluster", "init", "-c",
                            str(configs[0])], check=True, capture_output=True)  # fmt: skip
            nodes = [start_edgeml(c) for c in configs]
            time.sleep(5)  # the nodes share out the partitions
            messages = make_messages(args.readings, args.devices, 7, "bench")
            cpu0 = {"nats-server": cpu_seconds(server.pid) or 0.0}
            cpu0.update({f"edgeml n{i}": cpu_seconds(n.pid) or 0.0 for i, n in enumerate(nodes)})
            t0 = time.monotonic()
            progress(f"publishing {args.readings} readings of {args.devices} devices")
            with contextlib.redirect_stdout(io.StringIO()):  # its JSON line is not the report
                publisher(mqtt_port, messages, client_id="bench-pub")
            published = time.monotonic() - t0
            asyncio.run(wait_covered(str(configs[0]), 300))
            wall = time.monotonic() - t0
            cpu = {"nats-server": (cpu_seconds(server.pid) or 0.0) - cpu0["nats-server"]}
            for i, n in enumerate(nodes):
                cpu[f"edgeml n{i}"] = (cpu_seconds(n.pid) or 0.0) - cpu0[f"edgeml n{i}"]
            size, revisions, stream_bytes = asyncio.run(stored_bytes(configs[0]))
        finally:
            for n in nodes:
                n.terminate()
            for n in nodes:
                n.wait(30)
            server.terminate()
            server.wait(10)
    n = args.readings
    print(f"{n} readings, {args.devices} devices, {args.nodes} node(s), P = {args.partitions}")
    print(f"published (PUBACKed) in {published:.1f} s: {n / published:,.0f}/s; "
          f"all learned and checkpointed in {wall:.1f} s")  # fmt: skip
    print(f"{'process':<14} {'CPU s':>7} {'CPU µs/reading':>15}")
    for name, seconds in cpu.items():
        print(f"{name:<14} {seconds:>7.2f} {seconds / n * 1e6:>15.0f}")
    print(f"snapshot bucket: {revisions} values, {size / max(1, revisions) / 1024:.1f} KiB each")
    print(f"input stream: {stream_bytes / n:.0f} bytes stored per reading")
    print_run(started)
    server_version = subprocess.run(
        [NATS_SERVER, "--version"], check=False, capture_output=True, text=True
    )
    print(f"{server_version.stdout.strip()}, nats-py {importlib.metadata.version('nats-py')}")


if __name__ == "__main__":
    main()
