"""`edgeml simulate`: realistic multi-sensor telemetry with scripted faults, by seed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt

from edgeml.config import MqttConfig
from edgeml.transport import _paho
from edgeml.transport.mqtt import client_for

__all__ = ["Faults", "Reading", "Simulator", "run"]


@dataclass(frozen=True)
class Faults:
    """When (in seconds from the start) and how often things go wrong; None: never."""

    change_at: float | None = None  # abrupt concept change on the first device
    drift_from: float | None = None  # gradual drift on the second device from then on
    spike_rate: float = 0.0  # share of readings with a vibration spike (flagged)
    stuck_at: float | None = None  # the third device's temperature sticks for 30 s (flagged)
    drop_at: float | None = None  # the last device drops off (its will says offline)
    bad_rate: float = 0.0  # share of payloads that are garbage


@dataclass(frozen=True)
class Reading:
    topic: str
    payload: bytes
    device: str
    note: str  # what was injected into this reading, if anything ("" for none)


class Simulator:
    """Deterministic for a seed: the same arguments give the same readings, byte for byte."""

    def __init__(self, devices: int, rate: float, seed: int, faults: Faults) -> None:
        self.devices = [f"sim{i}" for i in range(devices)]
        self.rate = rate
        self.faults = faults
        self.rng = random.Random(seed)
        self.stuck_value: float | None = None

    def tick(self, n: int, start_ts: float) -> list[Reading]:
        """The readings of tick `n` (one per live device), `n / rate` seconds after start."""
        t = n / self.rate
        out = []
        for i, device in enumerate(self.devices):
            f = self.faults
            if f.drop_at is not None and i == len(self.devices) - 1 and t >= f.drop_at:
                continue
            out.append(self._reading(i, device, t, start_ts + t))
        return out

    def _reading(self, i: int, device: str, t: float, ts: float) -> Reading:
        rng, f = self.rng, self.faults
        humidity = 45 + 10 * math.sin(t / 60 + i) + rng.gauss(0, 1)
        pressure = 1013 + rng.gauss(0, 2)
        load = rng.random()
        # The relationship the models learn: temperature from humidity, pressure and load.
        temperature = 15 + 0.2 * humidity + 0.05 * (pressure - 1013) + 6 * load
        notes = []
        if i == 0 and f.change_at is not None and t >= f.change_at:
            temperature = 30 - 0.3 * humidity + 12 * load  # a new heater: a new relationship
            notes.append("changed")
        if i == 1 and f.drift_from is not None and t >= f.drift_from:
            temperature += 0.05 * (t - f.drift_from)  # a sensor that slowly goes off
            notes.append("drifting")
        temperature += rng.gauss(0, 0.2)
        anomaly = False
        stuck_device = min(2, len(self.devices) - 1)
        if i == stuck_device and f.stuck_at is not None and f.stuck_at <= t < f.stuck_at + 30:
            self.stuck_value = self.stuck_value or round(temperature, 2)
            temperature = self.stuck_value
            anomaly = True
            notes.append("stuck")
        vibration = abs(rng.gauss(0.2, 0.05))
        if f.spike_rate and rng.random() < f.spike_rate:
            vibration += rng.uniform(2, 5)
            anomaly = True
            notes.append("spike")
        tvoc = max(0.0, rng.gauss(120, 20))
        smoke = rng.random() < 0.02
        if smoke:
            tvoc += rng.uniform(400, 900)
        body = {
            "ts": round(ts, 3),
            "temperature": round(temperature, 3),
            "humidity": round(humidity, 2),
            "pressure": round(pressure, 2),
            "load": round(load, 4),
            "vibration": round(vibration, 4),
            "tvoc": round(tvoc, 1),
            "eco2": round(400 + 1.5 * tvoc + rng.gauss(0, 10), 1),
            "smoke": smoke,
            "anomaly": anomaly,
        }
        payload = json.dumps(body).encode()
        if f.bad_rate and rng.random() < f.bad_rate:
            payload = rng.choice([b"{broken", b'{"temperature": NaN}', b"\xff\xfe", b"[]"])
            notes.append("bad payload")
        return Reading(f"sensors/{device}/telemetry", payload, device, ",".join(notes))


async def run(
    broker: MqttConfig,
    sim: Simulator,
    duration: float,
    say: Callable[[str], None] = print,
) -> int:
    """Publish for `duration` seconds at the simulator's rate; returns the readings sent."""
    # A device that drops off cannot say goodbye: aiomqtt's warning about it is noise here.
    quiet = logging.getLogger("edgeml.simulate.devices")
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())
    clients = {
        d: client_for(
            broker, identifier=f"edgeml-sim-{d}", logger=quiet,
            will=aiomqtt.Will(f"sensors/{d}/status", b"offline", qos=1, retain=True),
        )
        for d in sim.devices
    }  # fmt: skip
    for d, c in clients.items():
        await c.__aenter__()
        await c.publish(f"sensors/{d}/status", b"online", qos=1, retain=True)
    said: set[tuple[str, str]] = set()
    dropped: list[aiomqtt.Client] = []
    sent = 0
    start, start_ts = time.monotonic(), time.time()
    try:
        ticks = int(duration * sim.rate)
        for n in range(ticks):
            live = set()
            for r in sim.tick(n, start_ts):
                live.add(r.device)
                await clients[r.device].publish(r.topic, r.payload, qos=1)
                sent += 1
                for note in filter(None, r.note.split(",")):
                    if (r.device, note) not in said and note not in ("spike", "bad payload"):
                        said.add((r.device, note))
                        say(f"t={n / sim.rate:6.1f}s {r.device}: {note} (from now on)")
                    elif note in ("spike", "bad payload"):
                        say(f"t={n / sim.rate:6.1f}s {r.device}: {note}")
            for d in [d for d in clients if d not in live]:
                # Drop off without a goodbye: the broker publishes the device's will.
                say(f"t={n / sim.rate:6.1f}s {d}: drops off (its will says offline)")
                client = clients.pop(d)
                _paho.drop(client)
                dropped.append(client)
            await asyncio.sleep(max(0.0, start + (n + 1) / sim.rate - time.monotonic()))
    finally:
        for c in clients.values():
            await c.__aexit__(None, None, None)
        for c in dropped:
            with contextlib.suppress(aiomqtt.MqttError):
                await c.__aexit__(None, None, None)
    return sent
