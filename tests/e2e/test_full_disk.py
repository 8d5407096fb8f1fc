"""A full disk is a state, not a crash: a real daemon on a 12 MiB tmpfs that fills up while
readings arrive, and empties again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgeml.store.queries import read_status
from tests.conftest import (
    TELEMETRY,
    Broker,
    db_rows,
    load_config,
    sample_count,
    settle,
    wait_for,
    write_config,
)
from tests.helpers import Listener, abstract_name, fill, listening, publish_paced, telemetry

READINGS = 3000


def log_events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def status_lines(listener: Listener) -> list[str]:
    """What the daemon told systemd's STATUS= (its `systemctl status` line)."""
    return [
        line.removeprefix("STATUS=")
        for _, message in listener.received
        for line in message.split("\n")
        if line.startswith("STATUS=")
    ]


def cli_status(config: Path) -> tuple[str, dict[str, Any]]:
    def run(*args: str) -> str:
        cmd = [sys.executable, "-m", "edgeml", "status", "-c", str(config), *args]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

    return run(), json.loads(run("--json"))


def config_on(disk: Path, tmp_path: Path, broker: Broker) -> Path:
    config = write_config(tmp_path, broker, TELEMETRY, '[models]\nsnapshot_interval = "1s"\n')
    state = disk / "state"
    config.write_text(config.read_text().replace('state_dir = "state"', f'state_dir = "{state}"'))
    return config


async def full_then_freed(
    broker: Broker, config: Path, d: Any, disk_dir: Path, systemd: Listener
) -> None:
    """Readings arrive; the disk fills, and the daemon waits and says so; then it empties."""
    cfg = load_config(config)
    publisher = asyncio.create_task(publish_paced(broker, telemetry(READINGS, devices=5), 400))
    await wait_for(lambda: sample_count(cfg) >= 500, timeout=30)
    filler = await asyncio.to_thread(fill, disk_dir)
    await wait_for(lambda: read_status(cfg.db_path)["daemon"]["disk"]["state"] == "full", 30)
    stored_while_full = sample_count(cfg)
    # The daemon retries while it waits (the heartbeat cannot be written meanwhile).
    await wait_for(lambda: read_status(cfg.db_path)["daemon"]["disk"]["retries"] >= 1, 30)
    text, doc = await asyncio.to_thread(cli_status, config)
    disk = doc["daemon"]["disk"]
    assert doc["daemon"]["running"] is True
    assert disk["state"] == "full"
    assert disk["path"] == str(cfg.db_path)
    assert disk["free_bytes"] < 1 << 20
    assert disk["retries"] >= 1
    assert "disk full" in text
    assert any(line.startswith(f"disk full: {cfg.db_path}") for line in status_lines(systemd))
    # Nothing was stored (or acknowledged) meanwhile; the daemon is alive and logged once.
    assert sample_count(cfg) == stored_while_full < READINGS
    assert d.proc is not None and d.proc.poll() is None
    errors = [e for e in log_events(d.log) if e.get("level") == "error"]
    assert [e["event"] for e in errors] == ["disk_full"]
    assert errors[0]["db"] == str(cfg.db_path)
    assert errors[0]["free_bytes"] < 1 << 20

    filler.unlink()  # space returns: the daemon resumes by itself
    await asyncio.wait_for(publisher, 60)
    assert await settle(cfg, READINGS, quiet_s=20, timeout=60) == READINGS
    await wait_for(lambda: read_status(cfg.db_path)["daemon"]["learned"] == READINGS, 10)
    assert not status_lines(systemd)[-1].startswith("disk full")


async def test_a_full_disk_pauses_the_daemon_and_space_resumes_it_exactly_once(
    broker: Broker, small_disk: Path, tmp_path: Path, daemon_process: Any
) -> None:
    config = config_on(small_disk, tmp_path, broker)
    cfg = load_config(config)
    d = daemon_process(config)
    async with listening(abstract_name()) as systemd:
        # As under systemd, with a watchdog ping (and so a status line) every second.
        d.start(NOTIFY_SOCKET=systemd.name, WATCHDOG_USEC="2000000")
        await d.wait_ready()
        await full_then_freed(broker, config, d, small_disk, systemd)

    # Every reading stored once, learned once: the log and the models did not part.
    ids = sorted(json.loads(x)["i"] for (x,) in db_rows(cfg, "SELECT x FROM samples"))
    assert ids == list(range(READINGS))
    assert db_rows(cfg, "SELECT count(*) FROM predictions")[0][0] == READINGS
    status = read_status(cfg.db_path)
    assert status["daemon"]["disk"]["state"] == "ok"
    assert status["daemon"]["disk"]["full_episodes"] == 1
    assert sorted(s["samples"] for s in status["streams"]) == [READINGS // 5] * 5
    assert "disk_space_returned" in [e["event"] for e in log_events(d.log)]
    d.terminate()
    assert await asyncio.to_thread(d.wait, 20) == 0
    with contextlib.closing(sqlite3.connect(cfg.db_path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # The interval snapshots held back by the full disk were written once it emptied.
        assert conn.execute("SELECT max(seq) FROM snapshots").fetchone()[0] == READINGS


async def test_sigterm_on_a_full_disk_exits_zero_and_a_start_on_it_waits_for_space(
    broker: Broker, small_disk: Path, tmp_path: Path, daemon_process: Any
) -> None:
    """Stopped while it waits for space, the daemon leaves at once; what it held was not
    acknowledged. Started again on the full disk it waits (no crash loop under systemd),
    and once space returns it stores what the broker kept, once.
    """
    config = config_on(small_disk, tmp_path, broker)
    cfg = load_config(config)
    n = 2000
    d = daemon_process(config)
    d.start()
    await d.wait_ready()
    publisher = asyncio.create_task(publish_paced(broker, telemetry(n, devices=5), 400))
    await wait_for(lambda: sample_count(cfg) >= 300, timeout=30)
    filler = await asyncio.to_thread(fill, small_disk)
    await wait_for(lambda: read_status(cfg.db_path)["daemon"]["disk"]["state"] == "full", 30)
    await asyncio.sleep(1)  # a few more readings learned and held
    d.terminate()
    assert await asyncio.to_thread(d.wait, 10) == 0
    held = [e for e in log_events(d.log) if e["event"] == "stopped_unstored_disk_full"]
    assert len(held) == 1
    assert held[0]["readings"] > 0

    d = daemon_process(config)
    d.start()
    pid = d.proc.pid if d.proc is not None else 0

    def waiting() -> bool:
        disk = read_status(cfg.db_path)["daemon"]["disk"]
        return disk["state"] == "full" and disk["pid"] == pid

    await wait_for(waiting, 30)
    assert read_status(cfg.db_path)["daemon"]["running"] is True
    assert d.proc is not None and d.proc.poll() is None
    filler.unlink()
    await asyncio.wait_for(publisher, 60)
    await d.wait_ready()
    assert await settle(cfg, n, timeout=60) == n
    d.terminate()
    assert await asyncio.to_thread(d.wait, 20) == 0
    ids = sorted(json.loads(x)["i"] for (x,) in db_rows(cfg, "SELECT x FROM samples"))
    assert ids == list(range(n))
    assert sorted(s["samples"] for s in read_status(cfg.db_path)["streams"]) == [n // 5] * 5
    with contextlib.closing(sqlite3.connect(cfg.db_path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
