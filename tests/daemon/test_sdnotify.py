"""sd_notify against a real datagram socket standing in for systemd: READY, watchdog, STOPPING."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeml.daemon.sdnotify import Notifier
from tests.conftest import (
    TELEMETRY,
    Broker,
    load_config,
    publish_all,
    sample_count,
    wait_for,
    write_config,
)
from tests.helpers import abstract_name, listening, under_systemd


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory for socket paths (at most 107 bytes; tmp_path can be longer)."""
    path = Path(tempfile.mkdtemp(prefix="edgeml-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- the protocol --------------------------------------------------------------------------


async def test_notifier_sends_one_datagram_to_a_path_or_an_abstract_socket(
    short_dir: Path,
) -> None:
    for name in (str(short_dir / "notify"), abstract_name()):
        async with listening(name) as listener:
            notifier = Notifier({"NOTIFY_SOCKET": name})
            assert notifier.enabled
            assert notifier.ready("subscribed\nto 2 topics")
            assert notifier.send("WATCHDOG=1")
            await listener.next("WATCHDOG=1")
            assert [m for _, m in listener.received] == [
                "READY=1\nSTATUS=subscribed to 2 topics",  # one line: a newline would end it
                "WATCHDOG=1",
            ]


async def test_without_systemd_nothing_is_sent_and_the_keepalive_returns() -> None:
    for env in ({}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}):
        notifier = Notifier(env)
        assert not notifier.enabled
        assert not notifier.send("READY=1")
        async with asyncio.timeout(1):
            await notifier.keepalive(asyncio.Event(), lambda: "")


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_this_pid() -> None:
    sock = {"NOTIFY_SOCKET": "@x"}
    assert Notifier({**sock, "WATCHDOG_USEC": "30000000"}).interval == 15.0
    mine = {**sock, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_us == 1_000_000
    # WATCHDOG_PID names another process (a child that inherited the environment): not ours.
    assert Notifier({**mine, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_us is None
    assert Notifier({**sock, "WATCHDOG_USEC": "nonsense"}).watchdog_us is None
    assert Notifier({"WATCHDOG_USEC": "1000000"}).watchdog_us is None  # no socket, no watchdog


def test_a_manager_that_does_not_read_never_blocks_the_sender(short_dir: Path) -> None:
    name = str(short_dir / "full")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as deaf:
        deaf.bind(name)
        notifier = Notifier({"NOTIFY_SOCKET": name})
        results: list[bool] = []

        def flood() -> None:
            for _ in range(5000):
                results.append(notifier.send("WATCHDOG=1"))
                if not results[-1]:
                    return

        thread = threading.Thread(target=flood, daemon=True)
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), "send() blocked on a full socket"
        assert results[0] and not results[-1]  # sent until the queue was full, then dropped


# -- the daemon ----------------------------------------------------------------------------


async def test_ready_after_subscription_then_watchdog_at_half_period_then_stopping(
    broker: Broker, tmp_path: Path, daemon_process: Any
) -> None:
    config = write_config(tmp_path, broker, TELEMETRY)
    cfg = load_config(config)
    broker.stop()  # as at boot, when the broker is not up yet
    async with listening(abstract_name()) as listener:
        d = daemon_process(config)
        with under_systemd(listener.name, watchdog_usec=1_000_000):
            d.start()
        assert d.proc is not None
        listener.pid = d.proc.pid  # NotifyAccess=main
        # While it waits for the broker, its live event loop extends the start-up timeout and
        # says what it waits for; it is not ready.
        _, waiting = await listener.next("EXTEND_TIMEOUT_USEC=1500000")
        assert f"STATUS=waiting for the broker at {broker.host}:{broker.port}" in waiting
        assert not [m for _, m in listener.received if "READY=1" in m.split("\n")]
        broker.start()
        i_ready, ready = await listener.next("READY=1")
        # The broker has never seen this client, so it queued nothing for it: a reading
        # published once systemd hears READY=1 is learned only if the subscription is in place.
        await publish_all(broker, [("sensors/dev0/telemetry", b'{"i": 0, "h": 40, "t": 23}')])
        await wait_for(lambda: sample_count(cfg) == 1, timeout=10)
        assert f"STATUS=broker {broker.host}:{broker.port} connected" in ready
        # Before READY=1 the loop extended the start-up; it sent no watchdog ping.
        assert not [m for _, m in listener.received[:i_ready] if "WATCHDOG=1" in m.split("\n")]

        async with asyncio.timeout(10):
            while len(listener.pings(i_ready)) < 4:
                await asyncio.sleep(0.1)
        pings = listener.pings(i_ready)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        # WATCHDOG_USEC is 1 s: a ping every 0.5 s, and never a gap that would trip systemd.
        assert 0.35 < sum(gaps) / len(gaps) < 0.75, gaps
        assert max(gaps) < 1.0, gaps

        i_stop = len(listener.received)
        d.terminate()
        _, stopping = await listener.next("STOPPING=1", after=i_stop)
        assert "STATUS=stopping on SIGTERM" in stopping
        assert await asyncio.to_thread(d.wait, 10) == 0


# The daemon's real `run`, next to a task that blocks the event loop when asked: it stands
# in for a bug (a synchronous call that hangs) without any hook in the daemon itself.
BLOCKING_DRIVER = """
import asyncio, sys, time
from pathlib import Path
from edgeml import logs
from edgeml.daemon import service as daemon
from edgeml.config import load

async def block_when_asked(trigger: Path, seconds: float) -> None:
    while True:
        await asyncio.sleep(0.05)
        if trigger.exists():
            trigger.unlink()
            time.sleep(seconds)

async def main() -> None:
    blocker = asyncio.create_task(block_when_asked(Path(sys.argv[2]), float(sys.argv[3])))
    try:
        await daemon.run(load(sys.argv[1]))
    finally:
        blocker.cancel()

logs.configure("info", "json")
asyncio.run(main())
"""


def start_driver(code: str, *args: str) -> subprocess.Popen[bytes]:
    log = Path(args[0]).parent / "daemon.log"
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args], stdout=out, stderr=subprocess.STDOUT
        )


async def test_a_blocked_event_loop_sends_no_watchdog_pings(
    broker: Broker, tmp_path: Path, short_dir: Path
) -> None:
    config = write_config(tmp_path, broker, TELEMETRY)
    trigger = tmp_path / "block-now"
    async with listening(str(short_dir / "notify")) as listener:
        with under_systemd(listener.name, watchdog_usec=600_000):
            proc = start_driver(BLOCKING_DRIVER, str(config), str(trigger), "1.5")
        listener.pid = proc.pid
        try:
            i_ready, _ = await listener.next("READY=1")
            async with asyncio.timeout(10):
                while len(listener.pings(i_ready)) < 2:
                    await asyncio.sleep(0.05)
            trigger.touch()
            blocked_at = time.monotonic()
            async with asyncio.timeout(15):  # the pings come back once the loop runs again
                while len([t for t in listener.pings(i_ready) if t > blocked_at + 1.5]) < 2:
                    await asyncio.sleep(0.05)
            pings = listener.pings(i_ready)
            gaps = [(b - a, a) for a, b in itertools.pairwise(pings)]
            longest, since = max(gaps)
            # The loop was blocked for 1.5 s: no ping in that time, so a watchdog of 0.6 s would
            # have fired (systemd then kills the service with SIGABRT and restarts it).
            assert longest > 1.2, gaps
            assert since < blocked_at + 0.6
            assert all(gap < 1.0 for gap, t in gaps if t != since), gaps  # 0.3 s, give or take
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
