"""`edgeml cluster ...`: set up the JetStream stream and buckets a cluster of nodes shares,
and show who owns which partition and how far behind each is (docs/scale.md).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Annotated

import typer

from edgeml.cli.common import ConfigOpt, exit_on_error, fail, load_or_exit
from edgeml.config import Config
from edgeml.partitions import mapping

app = typer.Typer(
    help="A cluster of nodes on NATS JetStream: set it up, see who owns what.",
    no_args_is_help=True,
    add_completion=False,
)


def server_mappings(cfg: Config) -> list[str]:
    """The `mappings` block nats-server needs so that MQTT readings land in the stream's
    partitions (servers before 2.10 have no subject transform on the stream itself).
    """
    n = cfg.nats
    seen: dict[str, str] = {}
    for s in cfg.stream:
        level = s.key_level
        assert level is not None  # checked by the config for backend "nats"
        for topic in s.topics:
            source, dest = mapping(topic, level, n.stream, n.partitions)
            seen[source] = dest
    lines = ["mappings = {"]
    lines += [f'  "{source}": "{dest}"' for source, dest in seen.items()]
    return [*lines, "}"]


def need_nats(cfg: Config) -> None:
    """Exit with a clear message unless the config is a cluster's and nats-py is there."""
    if cfg.ingest.backend != "nats":
        raise fail(f"{cfg.source}: ingest.backend is 'mqtt': the cluster commands need 'nats'")
    if importlib.util.find_spec("nats") is None:
        raise fail("ingest.backend = 'nats' needs nats-py: pip install 'edgeml[nats]'")


@app.command()
def init(
    config: ConfigOpt = Path("config.toml"),
    history: Annotated[
        int, typer.Option(help="Snapshot revisions kept per key (1-64).", min=1, max=64)
    ] = 8,
) -> None:
    """Create the input stream (one subject per partition), the output stream and the lease
    and snapshot buckets; print the server-config mapping that feeds the stream.
    """
    cfg = load_or_exit(config)
    need_nats(cfg)
    with exit_on_error():
        version = asyncio.run(_init(cfg, history))
    n = cfg.nats
    typer.echo(
        f"stream {n.stream}: {n.partitions} partitions (fixed for the life of the stream); "
        f"outputs in {n.output_stream}; buckets {n.lease_bucket}, {n.snapshot_bucket} "
        f"(nats-server {version})"
    )
    typer.echo("Add to the nats-server config (all servers), then reload it:")
    typer.echo("\n".join(server_mappings(cfg)))


async def _init(cfg: Config, history: int) -> str:
    from edgeml.transport.nats_link import buckets, connect, streams

    nc = await connect(cfg.nats, "edgeml-cluster-init")
    try:
        js = nc.jetstream()
        await streams(js, cfg.nats, cfg.mqtt.topic_prefix)
        await buckets(js, cfg.nats, history)
        v = nc.connected_server_version
        return f"{v.major}.{v.minor}.{v.patch}"
    finally:
        await nc.close()


def show(cfg: Config, as_json: bool) -> None:
    """`edgeml status --cluster`: the nodes alive, the partitions each owns, and how many of
    them have readings after their checkpoint (what a node that takes them over re-learns).
    """
    need_nats(cfg)
    with exit_on_error():
        nodes, owners, behind = asyncio.run(_status(cfg))
    if as_json:
        doc = {
            "nodes": nodes,
            "partitions": [
                {"partition": p, "owner": owners.get(p), "behind": behind.get(p, 0)}
                for p in range(cfg.nats.partitions)
            ],
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(f"nodes: {', '.join(nodes) or '(none)'}")
    for node in nodes:
        mine = sorted(p for p, o in owners.items() if o == node)
        late = {p: behind[p] for p in mine if behind.get(p)}
        typer.echo(
            f"{node}: {len(mine)} partitions; {len(late)} with readings after their checkpoint"
            + (f" (up to {max(late.values())} sequences)" if late else "")
        )
    free = [p for p in range(cfg.nats.partitions) if p not in owners]
    if free:
        shown = ", ".join(map(str, free[:16])) + (" ..." if len(free) > 16 else "")
        typer.echo(f"unowned: {len(free)} partitions ({shown})")


async def _status(cfg: Config) -> tuple[list[str], dict[int, str], dict[int, int]]:
    from edgeml.transport.nats_link import cluster_view, connect

    nc = await connect(cfg.nats, "edgeml-cluster-status")
    try:
        return await cluster_view(nc, cfg.nats)
    finally:
        await nc.close()
