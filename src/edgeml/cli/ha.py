"""`edgeml ha ...`: what this node announces to Home Assistant, and clearing it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated

import typer

from edgeml import __version__
from edgeml.cli.common import ConfigOpt, exit_on_error, load_or_exit
from edgeml.config import Config

app = typer.Typer(
    help="Home Assistant: show the discovery configs, purge them from the broker.",
    no_args_is_help=True,
    add_completion=False,
)

# Collecting retained configs: done after this long without one more, or at most.
_QUIET_S = 0.5
_COLLECT_MAX_S = 5.0


def _known_keys(cfg: Config) -> list[tuple[str, str]]:
    from edgeml.store.queries import read_status

    if not cfg.db_path.exists():
        return []
    with exit_on_error():
        return [(s["stream"], s["key"]) for s in read_status(cfg.db_path)["streams"]]


@app.command()
def show(
    config: ConfigOpt = Path("config.toml"),
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: topic -> config.")] = (
        False
    ),
) -> None:
    """Print the discovery configs the daemon would publish, for the stream/keys it knows."""
    cfg = load_or_exit(config)
    from edgeml.core.homeassistant import Discovery

    messages = Discovery(cfg, __version__).messages(_known_keys(cfg))
    docs = {m.topic: json.loads(m.payload) for m in messages}
    if as_json:
        typer.echo(json.dumps(docs, indent=2))
        return
    if not cfg.homeassistant.enabled:
        typer.echo("note: [homeassistant] enabled is false: the daemon publishes none of these")
    for topic, doc in docs.items():
        typer.echo(f"{topic} (retained)\n{json.dumps(doc, indent=2)}\n")


async def _purge(cfg: Config) -> list[str]:
    from edgeml.core.homeassistant import Discovery
    from edgeml.transport.mqtt import client_for

    discovery = Discovery(cfg, __version__)
    found: set[str] = set()
    async with client_for(cfg.mqtt, identifier=f"{cfg.client_id}-ha-purge") as client:
        await client.subscribe([(f, 0) for f in discovery.owned_filters()])
        start = time.monotonic()
        messages = client.messages
        while time.monotonic() - start < _COLLECT_MAX_S:
            try:
                message = await asyncio.wait_for(anext(messages), _QUIET_S)
            except TimeoutError:
                break
            topic = str(message.topic)
            if message.retain and message.payload and discovery.is_ours(topic):
                found.add(topic)
        for topic in sorted(found):
            await client.publish(topic, b"", qos=1, retain=True)
    return sorted(found)


@app.command()
def purge(config: ConfigOpt = Path("config.toml")) -> None:
    """Clear this node's retained discovery configs from the broker (HA removes the devices).

    A running daemon with Home Assistant enabled announces them again at its next connection
    or when HA next says `online`: stop it, or set `[homeassistant] enabled = false`, first.
    """
    cfg = load_or_exit(config)
    import aiomqtt

    with exit_on_error(aiomqtt.MqttError):
        cleared = asyncio.run(_purge(cfg))
    for topic in cleared:
        typer.echo(f"cleared {topic}")
    typer.echo(f"{len(cleared)} configs of node {cfg.node.id} cleared")
