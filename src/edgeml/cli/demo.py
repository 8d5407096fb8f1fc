"""`edgeml demo`: a private broker, simulated sensors with a concept change and vibration
spikes, the daemon, live: drift detected, a challenger trained and promoted, anomalies flagged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt

from edgeml.config import Config, load
from edgeml.daemon.service import Daemon
from edgeml.errors import EdgemlError
from edgeml.transport.mqtt import client_for

__all__ = ["DemoResult", "run_demo"]

DEVICES = ("dev0", "dev1", "dev2")
DRIFTING = "dev1"
SPIKING = "dev2"

CONFIG = """\
# Written by `edgeml demo`: the config the demo daemon runs with.
[node]
id = "demo"
state_dir = "."

[mqtt]
host = "{host}"
port = {port}
protocol = "{protocol}"

[log]
level = "warning"

[[stream]]
name = "boiler"
topic = "demo/+/telemetry"
key = "topic:1"
target = "temperature"
features = ["humidity", "pressure", "load"]
model = "tree"
rolling_window = 100
# Shorter than the defaults (500 samples of drift warm-up) so that all fits in a minute.
drift = {{ warmup = 150 }}
retrain = {{ grace = 150 }}

[[stream]]
name = "vibration"
topic = "demo/+/vibration"
key = "topic:1"
task = "anomaly"
features = ["rms", "peak"]
label = "fault"
anomaly = {{ warmup = 150 }}
# Readings come 40 a second here: an episode ends after a fifth of a second without a
# flag, not 5 minutes.
alert = {{ clear_after = "200ms", cooldown = "0s" }}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def private_broker(
    workdir: Path, embedded: bool = False
) -> AsyncIterator[tuple[str, int, str]]:
    """A broker only this demo uses: mosquitto if installed (unless `embedded`), else amqtt."""
    port = _free_port()
    # Debian installs it in /usr/sbin, which is not on a normal user's PATH.
    mosquitto = shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin")
    if mosquitto and not embedded:
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        proc = await asyncio.create_subprocess_exec(
            mosquitto, "-c", str(conf), stderr=asyncio.subprocess.DEVNULL
        )
        try:
            for _ in range(200):
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), 0.1),
                ):
                    break
                await asyncio.sleep(0.05)
            yield "127.0.0.1", port, "5"
        finally:
            proc.terminate()
            await proc.wait()
        return
    try:
        from amqtt.broker import Broker  # type: ignore[import-untyped]
    except ImportError:
        raise SystemExit(
            "edgeml demo needs a broker: install mosquitto, or `pip install 'edgeml[demo]'` "
            "for an embedded one, or pass --broker HOST:PORT"
        ) from None
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    try:
        yield "127.0.0.1", port, "3.1.1"  # amqtt speaks MQTT 3.1.1 only
    finally:
        await broker.shutdown()


class DemoResult:
    def __init__(self, state_dir: Path, injected_at: int) -> None:
        self.state_dir = state_dir
        self.injected_at = injected_at
        self.detected_at: int | None = None
        self.promoted_at: int | None = None
        self.spikes: list[int] = []
        self.spike_times: list[float] = []  # when each spike was published (epoch s)
        self.alerts = 0  # anomaly episodes announced
        self.caught = 0  # episodes that began with one of the injected spikes
        self.drifts_before = 0  # false alarms before the change do not count as detection


def reading(rng: random.Random, device: str, after_change: bool) -> dict[str, float]:
    humidity = rng.uniform(30, 70)
    pressure = rng.uniform(990, 1030)
    load = rng.uniform(0, 1)
    if device == DRIFTING and after_change:
        # A new burner: temperature now follows load, not humidity.
        temperature = 40 + 25 * load + 0.02 * (pressure - 1000)
    else:
        temperature = 20 + 0.3 * humidity + 0.05 * (pressure - 1000) + 5 * load
    return {
        "humidity": round(humidity, 3),
        "pressure": round(pressure, 2),
        "load": round(load, 4),
        "temperature": round(temperature + rng.gauss(0, 0.3), 3),
    }


def vibration(rng: random.Random, spike: bool) -> dict[str, float | bool]:
    """A pump's vibration; a spike (a loose bearing) is flagged as ground truth."""
    rms, peak = (rng.gauss(6.0, 0.3), rng.gauss(20.0, 1.0)) if spike else (
        rng.gauss(1.0, 0.1), rng.gauss(3.0, 0.3))  # fmt: skip
    return {"rms": round(rms, 3), "peak": round(peak, 3), "fault": spike}


async def run_demo(
    duration: float = 30.0,
    rate: float = 40.0,
    seed: int = 7,
    broker: str | None = None,
    state_dir: Path | None = None,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo; `rate` is readings per second per device; the change comes at half time."""
    state = state_dir or Path(tempfile.mkdtemp(prefix="edgeml-demo-"))
    state.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        if broker and broker != "embedded":
            host, _, port_text = broker.rpartition(":")
            host, port, protocol = host or "localhost", int(port_text), "5"
        else:
            host, port, protocol = await stack.enter_async_context(
                private_broker(state, embedded=broker == "embedded")
            )
        (state / "config.toml").write_text(CONFIG.format(host=host, port=port, protocol=protocol))
        cfg = load(state / "config.toml")
        say(f"broker {host}:{port} (MQTT {protocol}), state in {state}")
        daemon = Daemon(cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        await asyncio.wait_for(daemon.ready.wait(), 20)
        result = await _simulate(cfg, host, port, duration, rate, seed, daemon, say, state)
        stop.set()
        await task
    _summary(result, say)
    _show(cfg, state, say)
    return result


def _show(cfg: Config, state: Path, say: Callable[[str], None]) -> None:
    """The drifting boiler's error in the terminal, the HTML report, where everything is."""
    from edgeml.cli.plot import render
    from edgeml.cli.report import write
    from edgeml.store.history import read_history

    columns = min(shutil.get_terminal_size().columns, 100)
    (boiler,) = read_history(cfg.db_path, "boiler", DRIFTING, points=2 * columns)
    say(render(boiler, columns, 16, colour=sys.stdout.isatty()))
    config = state / "config.toml"
    edgeml = _command()
    say(f"state and config: {state}   (try: {edgeml} status -c {config})")
    try:
        write(state / "report.html", cfg.db_path)
    except EdgemlError as exc:
        say(f"no HTML report: {exc}")
    else:
        say(f"report: {state / 'report.html'}   (open it in a browser)")
    say(f"in a terminal: {edgeml} plot vibration/{SPIKING} -c {config}")


def _command() -> str:
    """How to call edgeml again: `edgeml` if the shell finds it, else the path this one was
    started by (`make demo` runs .venv/bin/edgeml, which is not on the PATH).
    """
    started = Path(sys.argv[0])
    if started.name != "edgeml" or shutil.which("edgeml"):
        return "edgeml"
    return str(started)


def _summary(r: DemoResult, say: Callable[[str], None]) -> None:
    if r.detected_at is None:
        say(f"summary: concept change injected on {DRIFTING} at sample {r.injected_at}, "
            "not detected")  # fmt: skip
        return
    say(
        f"summary: concept change injected on {DRIFTING} at its sample {r.injected_at}, "
        f"detected by ADWIN at sample {r.detected_at} ({r.detected_at - r.injected_at} later)"
    )
    if r.promoted_at is not None:
        say(f"         a challenger warm-started on the new regime was promoted at sample "
            f"{r.promoted_at}: version 1 -> 2")  # fmt: skip
    else:
        say("         the challenger did not beat the champion within its grace period")
    others = r.alerts - r.caught
    say(f"         {len(r.spikes)} vibration spikes injected on {SPIKING}: {r.caught} anomaly "
        f"episodes; {others} other{'' if others == 1 else 's'} "
        "(see `edgeml events --kind anomaly`)")  # fmt: skip


async def _simulate(
    cfg: Config,
    host: str,
    port: int,
    duration: float,
    rate: float,
    seed: int,
    daemon: Daemon,
    say: Callable[[str], None],
    state: Path,
) -> DemoResult:
    rng = random.Random(seed)
    total = int(duration * rate)
    change = total // 2
    result = DemoResult(state, change)
    spikes = {int(total * f) for f in (0.7, 0.8, 0.9)}
    t0 = time.monotonic()
    next_report = t0 + 1.0
    async with client_for(cfg.mqtt, host, port) as pub:
        await pub.subscribe(f"{cfg.mqtt.topic_prefix}/{cfg.node.id}/vibration/+/anomaly", qos=1)
        listener = asyncio.create_task(_count_alerts(pub, result))
        for n in range(total):
            sent_at = time.time()
            for device in DEVICES:
                body = reading(rng, device, n >= change)
                await pub.publish(f"demo/{device}/telemetry", json.dumps(body).encode(), qos=1)
                shake = vibration(rng, device == SPIKING and n in spikes)
                await pub.publish(f"demo/{device}/vibration", json.dumps(shake).encode(), qos=1)
            if n == change:
                say(f"injecting a concept change on {DRIFTING} (its sample {change})")
                lr = daemon.engine.learners.get(("boiler", DRIFTING)) if daemon.engine else None
                result.drifts_before = lr.drifts if lr else 0
            if n in spikes:
                result.spikes.append(n)
                result.spike_times.append(sent_at)
                say(f"injecting a vibration spike on {SPIKING} (its sample {n})")
            _watch(daemon, result, say)
            now = time.monotonic()
            if now >= next_report:
                next_report = now + 1.0
                say(_line(daemon, now - t0))
            await asyncio.sleep(max(0.0, t0 + (n + 1) / rate - time.monotonic()))
        await asyncio.sleep(0.5)
        _watch(daemon, result, say)
        listener.cancel()
    say(_line(daemon, time.monotonic() - t0))
    return result


async def _count_alerts(client: aiomqtt.Client, result: DemoResult) -> None:
    """Count the episodes announced (`new`), and those that began with an injected spike."""
    async for m in client.messages:
        episode = json.loads(m.payload)
        if episode["type"] != "new":
            continue
        result.alerts += 1
        start = episode["start_ts"]
        result.caught += episode["key"] == SPIKING and any(
            0 <= start - t < 1.0 for t in result.spike_times
        )


def _watch(daemon: Daemon, result: DemoResult, say: Callable[[str], None]) -> None:
    """Say when the drifting device's drift is detected and its challenger promoted."""
    lr = daemon.engine.learners.get(("boiler", DRIFTING)) if daemon.engine else None
    if lr is None:
        return
    if result.detected_at is None and lr.drifts > result.drifts_before:
        result.detected_at = lr.samples
        say(f"drift detected on {DRIFTING} at its sample {lr.samples}: a challenger is trained")
    if result.promoted_at is None and lr.model_version > 1:
        result.promoted_at = lr.samples
        say(f"challenger promoted on {DRIFTING} at its sample {lr.samples}: version 1 -> 2")


def _line(daemon: Daemon, elapsed: float) -> str:
    parts = [f"{elapsed:5.1f}s"]
    if daemon.engine is not None:
        for device in DEVICES:
            lr = daemon.engine.learners.get(("boiler", device))
            if lr is not None:
                mae = lr.metrics()["rolling_mae"] or 0.0
                parts.append(f"{device} n={lr.samples:<5} mae={mae:6.3f} v{lr.model_version}")
    return "  ".join(parts)
