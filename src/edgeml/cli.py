"""The `edgeml` command: parse, call, render; maps errors to exit codes (config 2, other 1)."""

from __future__ import annotations

import asyncio
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

from edgeml import __version__, cli_models
from edgeml.cli_common import ConfigOpt, err, fail, load_or_exit
from edgeml.config import parse_duration, warnings_for
from edgeml.errors import EdgemlError

app = typer.Typer(
    help="edgeml: learns online from MQTT sensor streams, on the device.",
    no_args_is_help=True,
    add_completion=False,
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
    typer.echo(
        f"{config}: ok ({len(cfg.stream)} stream{'s' if len(cfg.stream) != 1 else ''}, "
        f"broker {cfg.mqtt.host}:{cfg.mqtt.port}, state {cfg.db_path})"
    )


@app.command()
def run(config: ConfigOpt = Path("config.toml")) -> None:
    """Run the daemon in the foreground until SIGTERM or Ctrl-C (what systemd runs)."""
    cfg = load_or_exit(config)
    from edgeml import daemon, logs  # the daemon pulls in River: only commands that learn pay

    logs.configure(cfg.log.level, cfg.log.format)
    for warning in warnings_for(cfg):
        daemon.log.warning("config_warning", detail=warning)
    try:
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
    """Zero setup: a private broker, three simulated sensors, one concept change, the daemon."""
    from edgeml import logs
    from edgeml.demo import run_demo

    logs.configure("warning", "console")
    result = asyncio.run(run_demo(duration, rate, seed, broker, state_dir))
    if result.detected_at is None:
        raise typer.Exit(1)


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    s = max(0.0, now - ts)
    if s < 60:
        return f"{s:.0f}s ago"
    if s < 3600:
        return f"{s / 60:.0f}m ago"
    if s < 86400:
        return f"{s / 3600:.1f}h ago"
    return f"{s / 86400:.1f}d ago"


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def _render(doc: dict[str, Any], console: Console) -> None:
    now = time.time()
    d = doc["daemon"]
    if "pid" not in d:
        console.print("daemon: [yellow]never ran[/] with this state directory")
    else:
        state = "[green]running[/]" if d["running"] else "[red]not running[/]"
        broker = "[green]connected[/]" if d["broker_connected"] else f"[yellow]{d['broker']}[/]"
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(d["rejected_by_reason"].items()))
        console.print(
            f"daemon: {state}  pid {d['pid']}  node {d['node']}  up {d['uptime_s']:.0f}s  "
            f"broker {broker}  last beat {_ago(d['last_beat'], now)}"
        )
        console.print(
            f"received {d['received']}  learned {d['learned']}  rejected {d['rejected']}"
            + (f" ({reasons})" if reasons else "")
            + f"  rate {d['rate']:.1f}/s"
            + (f"  {d['bytes_per_sample']:.0f} B written/sample" if d["bytes_per_sample"] else "")
        )
    table = Table(show_edge=False, pad_edge=False)
    for col in ("stream", "key", "samples", "last seen", "ver", "mae", "rmse", "rolling", "drifts"):
        table.add_column(col, justify="right" if col not in ("stream", "key") else "left")
    for s in doc["streams"]:
        m = s["metrics"]
        table.add_row(
            s["stream"],
            s["key"],
            str(s["samples"]),
            _ago(s["last_seen"], now),
            str(s["model_version"]),
            _num(m.get("mae")),
            _num(m.get("rmse")),
            _num(m.get("rolling_mae")),
            str(s["drifts"]) if not s["drifts"] else f"[yellow]{s['drifts']}[/]",
        )
    if doc["streams"]:
        console.print(table)
    else:
        console.print("no stream has learned anything yet")


def _check_access(state_dir: Path) -> None:
    """Say why a state directory cannot be read (systemd: 0750, group edgeml), and exit 1."""
    if not state_dir.is_dir() or os.access(state_dir, os.R_OK | os.X_OK):
        return
    try:
        group = grp.getgrgid(state_dir.stat().st_gid).gr_name
    except (KeyError, OSError):
        group = "the group that owns it"
    err.print(
        f"{state_dir}: permission denied. Members of {group} can read it: "
        f"sudo usermod -aG {group} $USER (then log in again), or use sudo.",
        markup=False,
        highlight=False,
    )
    raise typer.Exit(1)


@app.command()
def status(
    config: ConfigOpt = Path("config.toml"),
    as_json: Annotated[bool, typer.Option("--json", help="The documented JSON document.")] = False,
) -> None:
    """The daemon's health and one row per stream/key (works while the daemon runs)."""
    cfg = load_or_exit(config)
    from edgeml.store import read_status

    _check_access(cfg.node.state_dir)
    try:
        doc = read_status(cfg.db_path)
    except EdgemlError as exc:
        err.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
    else:
        _render(doc, Console())


@app.command()
def events(
    config: ConfigOpt = Path("config.toml"),
    kind: Annotated[
        list[str] | None,
        typer.Option(
            help="drift, model_reset, import, rollback, manual (retrain), or promotion "
            "(any new version); repeat for several."
        ),
    ] = None,
    stream: Annotated[str | None, typer.Option(help="Only this stream.")] = None,
    since: Annotated[
        str | None, typer.Option(help="A duration back from now (30m, 1h, 7d) or an ISO time.")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON, for scripts.")] = False,
) -> None:
    """The event history, newest first: drifts, model resets, new versions."""
    cfg = load_or_exit(config)
    from edgeml.store import PROMOTIONS, read_events

    kinds: list[str] = []
    for k in kind or []:
        kinds.extend(PROMOTIONS if k == "promotion" else [k])
    try:
        rows = read_events(cfg.db_path, kinds, stream, _since(since), limit)
    except EdgemlError as exc:
        raise fail(str(exc)) from None
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
            f"{r['stream']}/{r['key']}",
            " ".join(f"{k}={_num(v) if isinstance(v, float) else v}" for k, v in details.items()),
        )
    Console().print(table)


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


app.add_typer(cli_models.app, name="models")


def main() -> None:
    app(prog_name="edgeml")


if __name__ == "__main__":
    main()
