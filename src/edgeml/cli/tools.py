"""`edgeml replay` and `edgeml simulate`: readings from a file or a simulator, to the broker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgeml.cli.common import ConfigOpt, err, exit_on_error, fail, load_or_exit
from edgeml.config import MqttConfig

if TYPE_CHECKING:  # the MQTT client is imported only by the commands that publish
    from edgeml.tools.replay import ReplayResult

__all__ = ["replay", "simulate"]


def replay(
    csv_file: Annotated[Path, typer.Argument(help="A CSV file with a header row.")],
    stream: Annotated[str, typer.Option(help="The stream the rows belong to.")],
    key: Annotated[
        str | None, typer.Option(help="The device key, for a stream keyed by topic or field.")
    ] = None,
    speed: Annotated[
        str, typer.Option(help="'max', or e.g. '100x' to keep the rows' timestamp spacing.")
    ] = "max",
    config: ConfigOpt = Path("config.toml"),
) -> None:
    """Feed historical rows through MQTT to the daemon: to warm a model or fill a gap.

    Each row is checked by the stream's own decoder first; rows that do not decode are
    reported with their line numbers and not sent. The daemon learns what is sent (if it is
    not running, the broker keeps the readings for its session).
    """
    cfg = load_or_exit(config)
    from rich.progress import Progress

    from edgeml.tools.replay import parse_speed, time_column_ignored
    from edgeml.tools.replay import replay as run_replay

    sc = next((s for s in cfg.stream if s.name == stream), None)
    if sc is None:
        raise fail(f"no stream {stream!r} in {config}", 2)
    with exit_on_error(OSError):
        factor = parse_speed(speed)
        ignored = time_column_ignored(sc, csv_file)
        if ignored is not None:
            raise fail(
                f"{csv_file} has a time column {ignored!r}, but stream {stream!r} reads no "
                f"timestamp: the rows would be learned as if they happened now. Set "
                f'timestamp = "{ignored}" in the stream\'s config (or drop the column)',
                2,
            )
        total = sum(1 for _ in csv_file.open(encoding="utf-8", errors="replace")) - 1
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task(f"replaying {csv_file.name}", total=max(total, 1))
            result = asyncio.run(
                run_replay(
                    cfg,
                    sc,
                    csv_file,
                    key,
                    factor,
                    lambda line: bar.update(task, completed=line - 1),
                )
            )
    _report(result, csv_file, stream, cfg.store.retention)


def _report(result: ReplayResult, csv_file: Path, stream: str, retention: str) -> None:
    """What was sent, the rows that were not (by line), and what retention will prune."""
    for line, why in result.bad[:20]:
        err.print(f"{csv_file}:{line}: {why}", markup=False, highlight=False)
    if len(result.bad) > 20:
        err.print(f"... and {len(result.bad) - 20} more bad rows")
    typer.echo(
        f"published {result.published} rows to {stream}; {len(result.bad)} rows did not decode"
    )
    if result.beyond_retention:
        err.print(
            f"note: {result.beyond_retention} rows are older than store.retention "
            f"({retention}), which counts from each reading's own time: the daemon learns "
            "them, then deletes them from its log once a snapshot covers them (edgeml report "
            "will not show them). Raise [store] retention to keep them.",
            markup=False,
            highlight=False,
        )
    if not result.published:
        raise fail(f"nothing was sent: no row of {csv_file} decodes for stream {stream!r}")


def simulate(
    devices: Annotated[int, typer.Option(help="Simulated devices.", min=1, max=200)] = 5,
    rate: Annotated[float, typer.Option(help="Readings per second per device.", min=0.1)] = 2.0,
    duration: Annotated[float, typer.Option(help="Seconds to run.", min=1)] = 120.0,
    seed: Annotated[int, typer.Option(help="The same seed gives the same readings.")] = 1,
    change_at: Annotated[
        float | None, typer.Option(help="Seconds in: an abrupt concept change on sim0.")
    ] = None,
    drift_from: Annotated[
        float | None, typer.Option(help="Seconds in: sim1's temperature starts to drift.")
    ] = None,
    spikes: Annotated[
        float, typer.Option(help="Share of readings with a vibration spike (flagged anomaly).")
    ] = 0.0,
    stuck_at: Annotated[
        float | None, typer.Option(help="Seconds in: sim2's temperature sticks for 30 s.")
    ] = None,
    drop_at: Annotated[
        float | None, typer.Option(help="Seconds in: the last device drops off (its will).")
    ] = None,
    bad: Annotated[float, typer.Option(help="Share of payloads that are garbage.")] = 0.0,
    broker: Annotated[
        str | None, typer.Option(help="HOST:PORT (default: the config's broker).")
    ] = None,
    config: ConfigOpt = Path("config.toml"),
) -> None:
    """Publish realistic telemetry to sensors/<device>/telemetry, with scripted faults.

    Payloads carry temperature, humidity, pressure, load, vibration, tvoc, eco2, a smoke
    label and an `anomaly` ground-truth flag. What is injected, and when, is printed.
    """
    import aiomqtt

    from edgeml.tools.simulate import Faults, Simulator
    from edgeml.tools.simulate import run as run_simulation

    if broker:
        host, _, port_text = broker.rpartition(":")
        target = MqttConfig(host=host or "localhost", port=int(port_text))
    else:
        target = load_or_exit(config).mqtt
    host, port = target.host, target.port
    faults = Faults(change_at, drift_from, spikes, stuck_at, drop_at, bad)
    sim = Simulator(devices, rate, seed, faults)
    typer.echo(
        f"simulating {devices} devices at {rate}/s each for {duration:.0f} s on {host}:{port}"
    )
    try:
        sent = asyncio.run(run_simulation(target, sim, duration, typer.echo))
    except aiomqtt.MqttError as exc:
        raise fail(f"broker {host}:{port}: {exc}") from None
    typer.echo(f"sent {sent} readings")
