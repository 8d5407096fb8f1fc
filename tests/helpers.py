"""What several test modules share beyond conftest's fixtures: message sets, paced
publishing, the drifting stream, and a stand-in for systemd's notify socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import socket
import sqlite3
import struct
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeml.config import Config, load
from tests.conftest import TELEMETRY, Broker, free_port, publish_all, wait_for


def telemetry(n: int, devices: int = 3, start: int = 0) -> list[tuple[str, bytes]]:
    out = []
    for i in range(start, start + n):
        h = 40 + (i * 7919 % 200) / 10
        body = {"i": i, "h": h, "t": 0.5 * h + 3}
        out.append((f"sensors/dev{i % devices}/telemetry", json.dumps(body).encode()))
    return out


async def read_all(js: Any, stream: str, subjects: list[str]) -> list[Any]:
    """Every message of a JetStream stream, in stream order (ordered consumers, one per
    subject; together they must cover the stream).
    """
    total = (await js.stream_info(stream)).state.messages
    got: list[Any] = []

    async def collect(msg: Any) -> None:
        got.append(msg)

    subs = [
        await js.subscribe(s, stream=stream, cb=collect, ordered_consumer=True) for s in subjects
    ]
    await wait_for(lambda: len(got) >= total, 60)
    for sub in subs:
        await sub.unsubscribe()
    return sorted(got, key=lambda m: m.metadata.sequence.stream)


async def publish_paced(broker: Broker, messages: list[tuple[str, bytes]], per_s: float) -> None:
    """Publish in chunks of 100 at about `per_s` messages per second."""
    for i in range(0, len(messages), 100):
        t0 = time.monotonic()
        await publish_all(broker, messages[i : i + 100])
        await asyncio.sleep(max(0.0, 100 / per_s - (time.monotonic() - t0)))


DRIFTING = """
[[stream]]
name = "power"
topic = "meter/+/power"
key = "topic:1"
target = "p"
features = ["t", "h", "w"]
model = "tree"
"""


class Listener:
    """What systemd does with NOTIFY_SOCKET: receive datagrams and the sender's pid
    (SO_PASSCRED, as NotifyAccess=main needs); here each is also kept with its arrival time.
    """

    def __init__(self, name: str) -> None:
        self.name = name  # the NOTIFY_SOCKET value: a path or @abstract
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + name[1:] if name.startswith("@") else name)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setblocking(False)
        self.pid: int | None = None  # when set, messages from other processes are ignored
        self.received: list[tuple[float, str]] = []
        self.ignored: list[tuple[int, str]] = []
        self._arrived = asyncio.Event()

    def _read(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(12))
                pid = -1
                for level, kind, value in ancillary:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                        pid = struct.unpack("3i", value[:12])[0]
                if self.pid is not None and pid != self.pid:
                    self.ignored.append((pid, data.decode()))
                    continue
                self.received.append((time.monotonic(), data.decode()))
                self._arrived.set()

    async def next(self, line: str, after: int = 0) -> tuple[int, str]:
        """Wait for a message with this line, at index `after` or later: (index, message)."""
        async with asyncio.timeout(30):
            while True:
                for i, (_, msg) in enumerate(self.received[after:], after):
                    if line in msg.split("\n"):
                        return i, msg
                self._arrived.clear()
                await self._arrived.wait()

    def pings(self, after: int = 0) -> list[float]:
        return [t for t, msg in self.received[after:] if "WATCHDOG=1" in msg.split("\n")]


@contextlib.asynccontextmanager
async def listening(name: str) -> AsyncIterator[Listener]:
    listener = Listener(name)
    loop = asyncio.get_running_loop()
    loop.add_reader(listener.sock, listener._read)
    try:
        yield listener
    finally:
        loop.remove_reader(listener.sock)
        listener.sock.close()


def abstract_name() -> str:
    return f"@edgeml-test-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def under_systemd(notify_socket: str, watchdog_usec: int) -> Iterator[None]:
    """The environment systemd gives a Type=notify service with WatchdogSec= set, for the
    processes started inside the block only (a mosquitto started later must not inherit it:
    it speaks sd_notify too).
    """
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NOTIFY_SOCKET", notify_socket)
        env.setenv("WATCHDOG_USEC", str(watchdog_usec))
        env.delenv("WATCHDOG_PID", raising=False)
        yield


async def heartbeats(path: Path, n: int, timeout: float = 20.0) -> None:
    """Until the daemon has written `n` more heartbeats (each comes with a summary, reject
    events, retention and, when due, snapshots: the daemon's housekeeping pass).
    """
    seen: set[float] = set()

    def beat() -> float | None:
        with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(path)) as c:
            row = c.execute("SELECT last_beat FROM daemon WHERE id = 1").fetchone()
            return None if row is None else float(row[0])
        return None

    first = beat()
    async with asyncio.timeout(timeout):
        while len(seen - {first}) < n:
            value = beat()
            if value is not None:
                seen.add(value)
            await asyncio.sleep(0.05)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full."""
    filler = directory / "filler"
    chunk = b"\xa5" * 65536
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with filler.open("ab", buffering=0) as f, contextlib.suppress(OSError):
        while True:  # the last few KiB, a byte at a time
            f.write(b"\xa5" * 512)
    return filler


# Home Assistant's MQTT discovery, as its documentation describes the keys edgeml uses:
# device-based discovery (`homeassistant/device/<id>/config`: `device`, `origin`, shared
# `availability`, entities under `cmps`, each with `platform` and `unique_id`) and the
# single-component form (the same keys in one entity's config). `object_id` is deprecated
# (HA 2025.10; it stops working in 2026.4): `default_entity_id` replaces it.
ENTITY_ID = r"^(sensor|binary_sensor|event|button)\.[a-z0-9_]+$"
_AVAILABILITY = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["topic"],
        "properties": {
            "topic": {"type": "string", "minLength": 1},
            "payload_available": {"type": "string"},
            "payload_not_available": {"type": "string"},
            "value_template": {"type": "string"},
        },
        "additionalProperties": False,
    },
}
_AVAILABILITY_MODE = {"enum": ["all", "any", "latest"]}
_DEVICE = {
    "type": "object",
    "required": ["identifiers"],
    "properties": {
        "identifiers": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "name": {"type": "string"},
        "manufacturer": {"type": "string"},
        "model": {"type": "string"},
        "sw_version": {"type": "string"},
        "via_device": {"type": "string"},
    },
    "additionalProperties": False,
}
_ORIGIN = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "sw_version": {"type": "string"},
        "support_url": {"type": "string"},
    },
    "additionalProperties": False,
}
_ENTITY_KEYS: dict[str, object] = {
    "unique_id": {"type": "string", "minLength": 1},
    "default_entity_id": {"type": "string", "pattern": ENTITY_ID, "not": {"pattern": "__"}},
    "name": {"type": ["string", "null"]},
    "state_topic": {"type": "string", "pattern": "^[^+#]+$"},
    "command_topic": {"type": "string", "pattern": "^[^+#]+$"},
    "value_template": {"type": "string"},
    "unit_of_measurement": {"type": "string"},
    "device_class": {"type": "string"},
    "state_class": {"enum": ["measurement", "total", "total_increasing"]},
    "suggested_display_precision": {"type": "integer", "minimum": 0},
    "entity_category": {"enum": ["diagnostic", "config"]},
    "enabled_by_default": {"type": "boolean"},
    "expire_after": {"type": "integer", "minimum": 1},
    "payload_on": {"type": "string"},
    "payload_off": {"type": "string"},
    "payload_press": {"type": "string"},
    "event_types": {"type": "array", "minItems": 1, "items": {"type": "string"}},
}
# What each platform needs beyond the common keys.
_PLATFORM_RULES = [
    {
        "if": {"properties": {"platform": {"enum": ["sensor", "binary_sensor", "event"]}}},
        "then": {"required": ["state_topic"]},
    },
    {"if": {"properties": {"platform": {"const": "event"}}}, "then": {"required": ["event_types"]}},
    {
        "if": {"properties": {"platform": {"const": "button"}}},
        "then": {"required": ["command_topic"]},
    },
]
HA_DEVICE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["device", "origin", "availability", "cmps"],
    "properties": {
        "device": _DEVICE,
        "origin": _ORIGIN,
        "availability": _AVAILABILITY,
        "availability_mode": _AVAILABILITY_MODE,
        "cmps": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": "^[a-zA-Z0-9_-]+$"},
            "additionalProperties": {
                "type": "object",
                "required": ["platform", "unique_id", "default_entity_id"],
                "properties": {
                    "platform": {"enum": ["sensor", "binary_sensor", "event", "button"]},
                    **_ENTITY_KEYS,
                },
                "additionalProperties": False,
                "allOf": _PLATFORM_RULES,
            },
        },
    },
    "additionalProperties": False,
}
# The single-component form: the platform is in the topic, everything else in one object.
HA_COMPONENT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["device", "origin", "availability", "unique_id", "default_entity_id"],
    "properties": {
        "device": _DEVICE,
        "origin": _ORIGIN,
        "availability": _AVAILABILITY,
        "availability_mode": _AVAILABILITY_MODE,
        **_ENTITY_KEYS,
    },
    "additionalProperties": False,
}
DEVICE_CONFIG_TOPIC = r"^[^/+#]+(/[^/+#]+)*/device/[a-zA-Z0-9_-]+/config$"


def check_ha_configs(configs: dict[str, bytes]) -> list[str]:
    """Validate retained discovery configs by topic; the unique ids of all their entities
    (asserted unique). Each entity's default_entity_id starts with its own platform.
    """
    import re

    import jsonschema

    unique_ids: list[str] = []
    for topic, payload in configs.items():
        doc = json.loads(payload)
        if "/device/" in topic:
            assert re.match(DEVICE_CONFIG_TOPIC, topic), topic
            jsonschema.validate(doc, HA_DEVICE_SCHEMA)
            entities = [(c["platform"], c) for c in doc["cmps"].values()]
        else:
            jsonschema.validate(doc, HA_COMPONENT_SCHEMA)
            entities = [(topic.split("/")[-4], doc)]
        for platform, entity in entities:
            assert entity["default_entity_id"].split(".")[0] == platform, entity
            unique_ids.append(entity["unique_id"])
    assert len(unique_ids) == len(set(unique_ids)), sorted(unique_ids)
    return unique_ids


def http_config(tmp_path: Path, broker: Broker, extra: str = "") -> tuple[Config, str]:
    port = free_port()
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[node]
id = "test-http"
state_dir = "state"

[mqtt]
host = "{broker.host}"
port = {broker.port}

[log]
format = "json"

[http]
enabled = true
listen = "127.0.0.1:{port}"
{extra}
{TELEMETRY}
"""
    )
    return load(path), f"http://127.0.0.1:{port}"
