"""`edgeml demo`: a private broker, simulated sensors with a concept change, the daemon, live."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt

from edgeml.config import Config, load
from edgeml.daemon import Daemon

__all__ = ["DemoResult", "run_demo"]

DEVICES = ("dev0", "dev1", "dev2")
DRIFTING = "dev1"

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
rolling_window = 100
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
    def __init__(self, state_dir: Path, injected_at: int, detected_at: int | None) -> None:
        self.state_dir = state_dir
        self.injected_at = injected_at
        self.detected_at = detected_at


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
        injected_at, detected_at = await _simulate(
            cfg, host, port, duration, rate, seed, daemon, say
        )
        stop.set()
        await task
    if detected_at is not None:
        say(
            f"summary: concept change injected on {DRIFTING} at its sample {injected_at}, "
            f"detected by ADWIN at sample {detected_at} ({detected_at - injected_at} samples later)"
        )
    else:
        say(f"summary: concept change injected on {DRIFTING} at sample {injected_at}, not detected")
    say(f"state and config: {state}   (try: edgeml status -c {state / 'config.toml'})")
    return DemoResult(state, injected_at, detected_at)


async def _simulate(
    cfg: Config,
    host: str,
    port: int,
    duration: float,
    rate: float,
    seed: int,
    daemon: Daemon,
    say: Callable[[str], None],
) -> tuple[int, int | None]:
    rng = random.Random(seed)
    total = int(duration * rate)
    change = total // 2
    detected_at: int | None = None
    drifts_before = 0
    t0 = time.monotonic()
    next_report = t0 + 1.0
    async with aiomqtt.Client(host, port) as pub:
        for n in range(total):
            for device in DEVICES:
                body = reading(rng, device, n >= change)
                await pub.publish(f"demo/{device}/telemetry", json.dumps(body).encode(), qos=1)
            learner = (
                daemon.pipeline.learners.get(("boiler", DRIFTING)) if daemon.pipeline else None
            )
            if n == change:
                say(f"injecting a concept change on {DRIFTING} (its sample {change})")
                drifts_before = learner.drifts if learner else 0
            if (
                n >= change
                and detected_at is None
                and learner is not None
                and learner.drifts > drifts_before
            ):
                detected_at = learner.samples
                say(f"drift detected on {DRIFTING} at its sample {detected_at}")
            now = time.monotonic()
            if now >= next_report:
                next_report = now + 1.0
                say(_line(daemon, now - t0))
            await asyncio.sleep(max(0.0, t0 + (n + 1) / rate - time.monotonic()))
    await asyncio.sleep(0.5)
    say(_line(daemon, time.monotonic() - t0))
    return change, detected_at


def _line(daemon: Daemon, elapsed: float) -> str:
    parts = [f"{elapsed:5.1f}s"]
    if daemon.pipeline is not None:
        for device in DEVICES:
            lr = daemon.pipeline.learners.get(("boiler", device))
            if lr is not None:
                m = lr.metrics()
                mae = m["rolling_mae"] or 0.0
                parts.append(f"{device} n={lr.samples:<5} mae={mae:6.3f} drifts={lr.drifts}")
    return "  ".join(parts)
