"""What only a real process shows: kill -9 and restart, SIGTERM drain, exit codes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
from rich.console import Console

from edgeml.cli.view import render
from edgeml.store.queries import read_status
from tests.conftest import (
    TELEMETRY,
    Broker,
    db_rows,
    load_config,
    publish_all,
    sample_count,
    settle,
    wait_for,
    write_config,
)
from tests.helpers import publish_paced, telemetry


async def test_sigkill_while_publishing_loses_nothing_and_stores_nothing_twice(
    broker: Broker, tmp_path: Path, daemon_process: Any
) -> None:
    config = write_config(tmp_path, broker, TELEMETRY)
    cfg = load_config(config)
    d = daemon_process(config)
    d.start()
    await d.wait_ready()
    publisher = asyncio.create_task(publish_paced(broker, telemetry(5000, devices=5), 4000))
    for kill_after in (1200, 2800):
        await wait_for(lambda n=kill_after: sample_count(cfg) >= n, timeout=60)
        d.kill()  # SIGKILL: no drain, no offline, no final commit
        shown = render_text(read_status(cfg.db_path))
        assert "ended without a clean stop" in shown and " up " not in shown, shown
        d = daemon_process(config)
        d.start()
        await d.wait_ready()
    await asyncio.wait_for(publisher, 60)
    assert await settle(cfg, 5000) == 5000
    d.terminate()
    assert d.wait(10) == 0
    ids = [json.loads(x)["i"] for (x,) in db_rows(cfg, "SELECT x FROM samples")]
    assert len(ids) == 5000
    assert sorted(ids) == list(range(5000))
    # Every stored sample has its prediction, and each device's model saw all its readings.
    assert db_rows(cfg, "SELECT count(*) FROM predictions")[0][0] == 5000
    doc = read_status(cfg.db_path)
    assert sorted(s["samples"] for s in doc["streams"]) == [1000] * 5


def render_text(doc: dict[str, Any]) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(render(doc, time.time()))
    return console.export_text()


async def retained_status(broker: Broker, topic: str) -> bytes:
    async with aiomqtt.Client(broker.host, broker.port) as c:
        await c.subscribe(topic, qos=1)
        async with asyncio.timeout(5):
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                return m.payload
    raise AssertionError("no retained status")


async def test_sigterm_drains_commits_and_exits_zero(
    broker: Broker, tmp_path: Path, daemon_process: Any
) -> None:
    config = write_config(tmp_path, broker, TELEMETRY)
    cfg = load_config(config)
    d = daemon_process(config)
    d.start()
    await d.wait_ready()
    assert await retained_status(broker, cfg.status_topic) == b"online"
    messages = telemetry(2000)
    publisher = asyncio.create_task(publish_paced(broker, messages, 1000))
    await wait_for(lambda: sample_count(cfg) >= 500, timeout=30)
    d.terminate()
    t0 = time.monotonic()
    assert await asyncio.to_thread(d.wait, 5) == 0
    assert time.monotonic() - t0 < 5
    # Everything the daemon had received when it stopped is committed; nothing else is.
    daemon = read_status(cfg.db_path)["daemon"]
    assert daemon["running"] is False
    assert daemon["stopped"] is not None
    assert sample_count(cfg) == daemon["learned"] == daemon["received"]
    assert await retained_status(broker, cfg.status_topic) == b"offline"
    # What arrived after the stop was not acknowledged: the next run gets it, exactly once.
    await publisher
    d = daemon_process(config)
    d.start()
    await d.wait_ready()
    assert await settle(cfg, 2000) == 2000
    d.terminate()
    assert d.wait(10) == 0
    ids = sorted(json.loads(x)["i"] for (x,) in db_rows(cfg, "SELECT x FROM samples"))
    assert ids == list(range(2000))


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise AssertionError("no write_bytes in /proc/<pid>/io")


async def test_an_idle_daemon_writes_nothing_until_its_idle_heartbeat(
    broker: Broker, tmp_path: Path, daemon_process: Any
) -> None:
    """An SD card: with no readings, a summary every 200 ms writes nothing at all (the
    heartbeat is written when a figure changed, or every 30 minutes).
    """
    config = write_config(tmp_path, broker, TELEMETRY, '[store]\nsummary_interval = "200ms"\n')
    cfg = load_config(config)
    d = daemon_process(config)
    d.start()
    await d.wait_ready()
    await publish_all(broker, telemetry(100))
    await wait_for(lambda: sample_count(cfg) == 100)
    await asyncio.sleep(3)  # the last figures (the rate falling to 0) are written
    assert d.proc is not None
    before, beat = write_bytes(d.proc.pid), read_status(cfg.db_path)["daemon"]["last_beat"]
    await asyncio.sleep(3)  # 15 summary intervals, idle
    assert write_bytes(d.proc.pid) == before
    doc = read_status(cfg.db_path)["daemon"]
    assert doc["last_beat"] == beat and doc["running"] is True
    d.terminate()
    assert d.wait(10) == 0
