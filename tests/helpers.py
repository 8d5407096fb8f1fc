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

import pytest

from tests.conftest import Broker, publish_all


def telemetry(n: int, devices: int = 3, start: int = 0) -> list[tuple[str, bytes]]:
    out = []
    for i in range(start, start + n):
        h = 40 + (i * 7919 % 200) / 10
        body = {"i": i, "h": h, "t": 0.5 * h + 3}
        out.append((f"sensors/dev{i % devices}/telemetry", json.dumps(body).encode()))
    return out


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
