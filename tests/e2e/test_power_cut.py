"""A power cut, without a Pi: the daemon's syscalls traced with strace.

The page cache survives `kill -9`, so the kill tests cannot see what a power cut loses. Here
a real `edgeml run` learns QoS 1 readings from a real mosquitto under `strace -f`, and the
trace says (1) whether any PUBACK went out while the WAL held writes not yet fsynced, and
(2) what the files would hold after a power cut right after a PUBACK: only what an fsync
made durable. That image is opened by SQLite (which recovers it as after a real cut) and
must hold every reading acknowledged so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    TELEMETRY,
    Broker,
    load_config,
    publish_all,
    settle,
    unavailable,
    write_config,
)
from tests.e2e.syscalls import TRACED, PowerCut, restore
from tests.helpers import telemetry

STRACE = shutil.which("strace")
# .ci/run sets it: there the test must run, not skip for want of strace.
READINGS = 3000


@pytest.fixture
def strace() -> str:
    if STRACE is None:
        unavailable("strace is not installed (apt-get install strace)", "EDGEML_REQUIRE_STRACE")
    probe = subprocess.run(
        [STRACE, "-qq", "-o", os.devnull, "true"], check=False, capture_output=True
    )
    if probe.returncode != 0:
        message = f"strace cannot trace here: {probe.stderr.decode()[-200:]}"
        unavailable(message, "EDGEML_REQUIRE_STRACE")
    return STRACE


@contextlib.contextmanager
def traced_daemon(strace: str, config: Path, trace: Path) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [strace, "-f", "-qq", "-yy", "-xx", "-s", "65536", "-e", f"trace={TRACED}"]
    cmd += ["-e", "signal=none", "-o", str(trace)]
    cmd += [sys.executable, "-m", "edgeml", "run", "-c", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (config.parent / "daemon.log").open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def daemon_pid(log: Path) -> int | None:
    for line in log.read_text().splitlines():
        if line.startswith("{") and json.loads(line).get("event") == "ready":
            return int(json.loads(line)["pid"])
    return None


async def learn_traced(
    strace: str, broker: Broker, tmp_path: Path, extra: str = ""
) -> tuple[PowerCut, Path]:
    """A traced daemon learns READINGS readings and is killed with SIGKILL (no clean stop:
    the moment of a power cut); returns the replayed trace and the state file.
    """
    config = write_config(tmp_path, broker, TELEMETRY, extra)
    cfg = load_config(config)
    trace = tmp_path / "trace.txt"
    log = config.parent / "daemon.log"
    with traced_daemon(strace, config, trace) as proc:
        async with asyncio.timeout(60):
            while (pid := daemon_pid(log)) is None:
                assert proc.poll() is None, log.read_text()[-2000:]
                await asyncio.sleep(0.1)
        await publish_all(broker, telemetry(READINGS, devices=5))
        assert await settle(cfg, READINGS, quiet_s=5, timeout=90) == READINGS
        await asyncio.sleep(1)  # the last batch's acknowledgements
        os.kill(pid, signal.SIGKILL)
    cut = PowerCut(str(cfg.node.state_dir))
    cut.replay(trace, cut_every=READINGS // 6)
    return cut, cfg.db_path


def stored_mids(db: Path) -> set[int]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {int(r[0]) for r in conn.execute("SELECT mid FROM samples")}


async def test_no_puback_before_its_commit_is_fsynced_and_a_power_cut_keeps_every_ack(
    strace: str, broker: Broker, tmp_path: Path
) -> None:
    cut, db = await learn_traced(strace, broker, tmp_path)
    # Every reading was acknowledged, once each (3,000 packet ids: none reused).
    assert len(cut.acked) == READINGS
    assert len(set(cut.acked)) == READINGS
    assert stored_mids(db) == set(cut.acked)
    # Group commit: an fsync per batch, not per reading.
    assert 5 <= cut.wal_fsyncs < READINGS / 5
    assert cut.early_acks == 0
    # The PUBACKs of a commit leave together: a write per batch, not per reading.
    assert cut.ack_writes < READINGS / 10
    # A power cut right after the PUBACKs taken at six points: the synced files hold all.
    assert len(cut.cuts) == 6
    for i, (acked, files) in enumerate(cut.cuts):
        recovered = stored_mids(restore(files, tmp_path / f"cut{i}"))
        assert set(acked) <= recovered, f"cut {i}: {len(set(acked) - recovered)} acks lost"


async def test_ack_before_sync_is_what_a_power_cut_punishes(
    strace: str, broker: Broker, tmp_path: Path
) -> None:
    """The opt-in mode, traced the same way: PUBACKs go out ahead of any WAL fsync, and a
    power cut loses acknowledged readings (which is why it is opt-in, and `check` warns).
    """
    cut, _ = await learn_traced(strace, broker, tmp_path, "[store]\nack_before_sync = true\n")
    assert len(cut.acked) == READINGS
    assert cut.early_acks > READINGS / 2
    lost = [set(acked) - stored_mids(restore(files, tmp_path / f"cut{i}"))
            for i, (acked, files) in enumerate(cut.cuts)]  # fmt: skip
    assert any(lost)
