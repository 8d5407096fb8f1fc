"""The `edgeml` command: parse, call, render; maps errors to exit codes (config 2, other 1)."""

from __future__ import annotations

import asyncio
import difflib
import grp
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgeml import __version__
from edgeml.cli import cluster as cli_cluster
from edgeml.cli import decode as cli_decode
from edgeml.cli import ha as cli_ha
from edgeml.cli import models as cli_models
from edgeml.cli import tools as cli_tools
from edgeml.cli.common import ConfigOpt, err, exit_on_error, fail, load_or_exit, split_target
from edgeml.config import Config, parse_duration, warnings_for
from edgeml.errors import EdgemlError

app = typer.Typer(
    help="edgeml: learns online from MQTT sensor streams, on the device.",
    no_args_is_help=True,
    add_completion=False,
    # Help is plain text: with rich markup, `pip install 'edgeml[report]'` lost `[report]`.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeml {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """edgeml: learns online from MQTT sensor streams, on the device."""


@app.command()
def check(config: ConfigOpt = Path("config.toml")) -> None:
    """Validate the config file: exit 0 if it is valid, 2 (naming file and key) if not."""
    cfg = load_or_exit(config)
    for warning in warnings_for(cfg):
        err.print(f"warning: {warning}", markup=False, highlight=False)
    n = len(cfg.stream)
    source = f"broker {cfg.mqtt.host}:{cfg.mqtt.port}"
    if cfg.ingest.backend == "nats":
        nats = cfg.nats
        source = (
            f"nats {','.join(nats.servers)}, stream {nats.stream} with {nats.partitions} "
            "partitions (fixed for the life of the stream)"
        )
    typer.echo(f"{config}: ok ({n} stream{'s' if n != 1 else ''}, {source}, state {cfg.db_path})")


@app.command()
def run(config: ConfigOpt = Path("config.toml")) -> None:
    """Run the daemon in the foreground until SIGTERM or Ctrl-C (what systemd runs)."""
    cfg = load_or_exit(config)
    if cfg.ingest.backend == "nats":
        cli_cluster.need_nats(cfg)
    from edgeml import logs
    from edgeml.daemon import (
        service as daemon,  # the daemon pulls in River: only commands that learn pay
    )

    logs.configure(cfg.log.level, cfg.log.format)
    for warning in warnings_for(cfg):
        daemon.log.warning("config_warning", detail=warning)
    try:
        if cfg.ingest.backend == "nats":
            from edgeml.daemon import cluster

            asyncio.run(cluster.run(cfg))
        else:
            asyncio.run(daemon.run(cfg))
    except* EdgemlError as group:
        for exc in group.exceptions:
            daemon.log.error("fatal", error=str(exc))
        raise typer.Exit(1) from None


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="Seconds of simulated readings.", min=4)] = 30.0,
    rate: Annotated[float, typer.Option(help="Readings per second per device.", min=1)] = 40.0,
    seed: Annotated[int, typer.Option(help="Seed of the simulated sensors.")] = 7,
    broker: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT of a broker to use, or 'embedded' for amqtt in this process "
            "(default: a private mosquitto if installed, else embedded)."
        ),
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Where to keep the demo's state (default: a temp dir).")
    ] = None,
) -> None:
    """Zero setup: a private broker, simulated sensors, the daemon: a concept change is
    detected and a retrained challenger promoted, vibration spikes are flagged as anomalies.
    """
    from edgeml import logs
    from edgeml.cli.demo import run_demo

    logs.configure("warning", "console")
    result = asyncio.run(run_demo(duration, rate, seed, broker, state_dir))
    if result.detected_at is None:
        raise typer.Exit(1)


def _check_access(state_dir: Path) -> None:
    """Say why a state directory cannot be read (systemd: 0750, group edgeml), and exit 1."""
    if not state_dir.is_dir() or os.access(state_dir, os.R_OK | os.X_OK):
        return
    try:
        group = grp.getgrgid(state_dir.stat().st_gid).gr_name
    except (KeyError, OSError):
        group = "the group that owns it"
    raise fail(
        f"{state_dir}: permission denied. Members of {group} can read it: "
        f"sudo usermod -aG {group} $USER (then log in again), or use sudo."
    )


@app.command()
def status(
    config: ConfigOpt = Path("config.toml"),
    as_json: Annotated[bool, typer.Option("--json", help="The documented JSON document.")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="A live view, refreshed every second (Ctrl-C ends).")
    ] = False,
    cluster: Annotated[
        bool,
        typer.Option("--cluster", help="backend nats: nodes, partitions owned, lag of each."),
    ] = False,
) -> None:
    """The daemon's health and one row per stream/key (works while the daemon runs)."""
    cfg = load_or_exit(config)
    if cluster:
        cli_cluster.show(cfg, as_json)
        return
    from edgeml.cli import view
    from edgeml.store.queries import read_status

    if watch and as_json:
        # A live view redraws one screen for a person; a script wants a document per call.
        raise fail("--watch and --json do not go together: run `status --json` per refresh", 2)
    _check_access(cfg.node.state_dir)
    with exit_on_error():
        if watch:
            view.watch(cfg.db_path)
            return
        doc = read_status(cfg.db_path)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
    else:
        Console().print(view.render(doc, time.time()))


SinceOpt = Annotated[
    str | None,
    typer.Option(
        help="Only what came after: a duration back from now (30m, 1h, 7d) or an ISO time."
    ),
]


@app.command()
def events(
    config: ConfigOpt = Path("config.toml"),
    kind: Annotated[
        list[str] | None,
        typer.Option(
            help="drift, retrain (a challenger starts), promotion (any new version, also "
            "import and rollback), challenger_dropped, guard (a diverged model), anomaly, "
            "reject (payloads that did not decode: one event per stream a minute at most), "
            "silent and back (a device stopped sending, and came back); "
            "repeat for several."
        ),
    ] = None,
    stream: Annotated[str | None, typer.Option(help="Only this stream.")] = None,
    since: SinceOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON, for scripts.")] = False,
) -> None:
    """The event history, newest first: drifts, retraining, new versions, anomalies, rejects."""
    cfg = load_or_exit(config)
    from edgeml.store.queries import EVENT_KINDS, PROMOTIONS, read_events

    kinds: list[str] = []
    for k in kind or []:
        if k not in EVENT_KINDS:
            hint = difflib.get_close_matches(k, EVENT_KINDS, n=1)
            raise fail(
                f"--kind {k!r}: not a kind of event"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; the kinds: {', '.join(EVENT_KINDS)}",
                2,
            )
        kinds.extend(PROMOTIONS if k == "promotion" else [k])
    with exit_on_error():
        rows = read_events(cfg.db_path, kinds, stream, _since(since), limit)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no events")
        return
    table = Table(show_edge=False, pad_edge=False)
    for col in ("time", "kind", "stream/key", "details"):
        table.add_column(col)
    for r in rows:
        details = {k: v for k, v in r["data"].items() if k not in ("stream", "key", "ts")}
        table.add_row(
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["ts"])),
            r["kind"],
            r["stream"] if r["key"] is None else f"{r['stream']}/{r['key']}",
            " ".join(f"{k}={_detail(v)}" for k, v in details.items()),
        )
    Console().print(table)


@app.command()
def report(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The HTML file to write.", dir_okay=False)
    ] = Path("edgeml-report.html"),
    stream: Annotated[str | None, typer.Option(help="Only this stream.")] = None,
    since: SinceOpt = None,
    points: Annotated[
        int, typer.Option(help="Intervals per plot (each one's mean is a point).", min=10)
    ] = 300,
    config: ConfigOpt = Path("config.toml"),
) -> None:
    """Write one self-contained HTML file (it opens offline): per stream/key, the error over
    time with drifts, retraining, promotions and rollbacks marked, and anomalies over time.

    Needs plotly: pip install 'edgeml[report]'. Open the file in a browser, or copy it off
    the device (scp) first; it holds no secrets, only figures and stream/key names.
    """
    cfg = load_or_exit(config)
    from edgeml.cli.report import write

    _known_stream(cfg, stream, config)
    _check_access(cfg.node.state_dir)
    with exit_on_error(OSError), err.status("reading the history"):
        count = write(output, cfg.db_path, stream, _since(since), points)
    size = output.stat().st_size / 2**20
    typer.echo(f"wrote {output} ({count} stream/keys, {size:.1f} MiB): open it in a browser")


@app.command()
def plot(
    target: Annotated[str, typer.Argument(help="STREAM/KEY, e.g. temperature/kitchen.")],
    since: SinceOpt = None,
    height: Annotated[int, typer.Option(help="Rows of the plot.", min=8)] = 20,
    width: Annotated[
        int | None, typer.Option(help="Columns (default: the terminal's).", min=40)
    ] = None,
    config: ConfigOpt = Path("config.toml"),
) -> None:
    """The error of one stream/key over time in the terminal, with drifts and new versions
    as coloured vertical lines and anomaly flags as x (for SSH; `edgeml report` for a file).
    """
    cfg = load_or_exit(config)
    from edgeml.cli.plot import render
    from edgeml.store.history import read_history

    stream_name, key = split_target(target)
    _known_stream(cfg, stream_name, config)
    _check_access(cfg.node.state_dir)
    console = Console()
    columns = width or min(console.width, 200)
    with exit_on_error():
        # Braille draws two points per column.
        found = read_history(cfg.db_path, stream_name, key, _since(since), points=2 * columns)
    if not found:
        raise fail(f"{target}: no such stream/key has learned yet (see `edgeml status`)")
    typer.echo(render(found[0], columns, height, colour=console.is_terminal))


def _known_stream(cfg: Config, stream: str | None, config: Path) -> None:
    names = [s.name for s in cfg.stream]
    if stream is not None and stream not in names:
        raise fail(f"no stream {stream!r} in {config}; its streams: {', '.join(names)}", 2)


def _detail(value: Any) -> str:
    from edgeml.cli.view import num

    if isinstance(value, float):
        return num(value)
    if isinstance(value, dict):
        return ",".join(f"{k}:{_detail(v)}" for k, v in value.items())
    return str(value)


def _since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"--since {text!r}: give a duration (30m, 1h, 7d) or an ISO time", 2) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


app.command()(cli_decode.decode)
app.command()(cli_tools.replay)
app.command()(cli_tools.simulate)
app.add_typer(cli_models.app, name="models")
app.add_typer(cli_ha.app, name="ha")
app.add_typer(cli_cluster.app, name="cluster")


def main() -> None:
    app(prog_name="edgeml")


if __name__ == "__main__":
    main()
