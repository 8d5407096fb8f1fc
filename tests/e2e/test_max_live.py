"""[models] max_live: the least recently used models are snapshotted and unloaded, and come
back exactly as they were when their next reading arrives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from edgeml.learn.presets import build_model
from tests.conftest import (
    TELEMETRY,
    Broker,
    db_rows,
    load_config,
    publish_all,
    running,
    settle,
    write_config,
)

SMALL_LIVE = '[models]\nmax_live = 20\nsnapshot_interval = "1h"\n'


def readings(n: int, devices: int, start: int = 0) -> list[tuple[str, bytes]]:
    out = []
    for i in range(start, start + n):
        h = 40 + (i * 7919 % 200) / 10
        body = {"i": i, "h": h, "t": 0.5 * h + (i % devices) / 10}
        out.append((f"sensors/d{i % devices}/telemetry", json.dumps(body).encode()))
    return out


def assert_log_implies_models(cfg: Any) -> None:
    """Every stored prediction is what a model that was never unloaded would have said."""
    models: dict[str, Any] = {}
    rows = db_rows(
        cfg,
        "SELECT r.key, s.x, s.y, p.y_pred FROM samples s JOIN series r ON r.id = s.series"
        " JOIN predictions p ON p.seq = s.seq ORDER BY s.seq",
    )
    for key, x_json, y, y_pred in rows:
        x = json.loads(x_json)
        m = models.setdefault(key, build_model(cfg.stream[0]))  # the stream's preset
        assert y_pred == pytest.approx(m.predict_one(x), rel=1e-9, abs=1e-9)
        m.learn_one(x, y)


async def test_evicted_models_come_back_exactly(broker: Broker, tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, broker, TELEMETRY, extra=SMALL_LIVE))
    async with running(cfg) as daemon:
        # 200 devices, each heard 6 times, round-robin: every reading finds its model evicted.
        await publish_all(broker, readings(1200, devices=200))
        assert await settle(cfg, 1200) == 1200
        assert daemon.engine is not None
        assert len(daemon.engine.learners) <= 20
        assert daemon.engine.models.evictions >= 1000
    assert_log_implies_models(cfg)
    # After a restart, only the 20 most recent come back at once; the rest on demand.
    with structlog.testing.capture_logs() as logs:
        async with running(cfg) as daemon:
            await publish_all(broker, readings(400, devices=200, start=1200))
            assert await settle(cfg, 1600) == 1600
    [restored] = [e for e in logs if e["event"] == "restored"]
    assert restored["models"] == 20 and restored["parked"] == 180
    assert_log_implies_models(cfg)


RSS_SCRIPT = """
import asyncio, json, os, sys, time
sys.path.insert(0, {root!r})
from tests.conftest import Broker, write_config, load_config, publish_all, settle
from edgeml.daemon.service import Daemon
from pathlib import Path
import logging, structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

async def main():
    tmp = Path({tmp!r}); (tmp / "b").mkdir()
    broker = Broker(tmp / "b"); broker.start()
    cfg = load_config(write_config(tmp, broker, {streams!r}, extra={extra!r}))
    daemon = Daemon(cfg); stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await daemon.ready.wait()
    rss = []
    n, step = {n}, 10_000
    for start in range(0, n, step):
        batch = [(f"sensors/k{{i}}/telemetry",
                  json.dumps({{"i": i, "h": i % 50, "t": i % 7}}).encode())
                 for i in range(start, start + step)]
        await publish_all(broker, batch)
        await settle(cfg, start + step, quiet_s=5, timeout=300)
        rss.append(round(rss_mib(), 1))
    live = len(daemon.engine.learners)
    stop.set(); await task; broker.stop()
    print(json.dumps({{"rss": rss, "live": live, "evictions": daemon.engine.models.evictions}}))

asyncio.run(main())
"""


@pytest.mark.parametrize("keys", [100_000])
def test_a_flood_of_new_keys_keeps_memory_bounded(tmp_path: Path, keys: int) -> None:
    """Every reading comes from a new device id: RSS stops growing once max_live is reached."""
    root = str(Path(__file__).resolve().parents[2])
    # linear: what is measured is the bound max_live puts on memory; `auto` costs about 10x
    # linear's memory and 5-8x its time per key (docs/learning.md#presets), and 100,000 readings
    # of it did not fit the timeout on a shared VM.
    streams = TELEMETRY.replace('target = "t"', 'target = "t"\nmodel = "linear"')
    script = RSS_SCRIPT.format(
        root=root, tmp=str(tmp_path), streams=streams, extra="[models]\nmax_live = 500\n", n=keys
    )
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=400,
        env={**os.environ, "PYTHONPATH": root},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    rss = doc["rss"]
    print(f"RSS MiB after each 10k new keys: {rss} ({time.monotonic() - t0:.0f} s)")
    assert doc["live"] == 500
    assert doc["evictions"] == keys - 500
    # 500 live models and an index entry (~0.4 KB) per device ever seen: 90,000 more devices
    # may add tens of MiB; 100,000 models in memory would take gigabytes.
    assert rss[-1] - rss[0] < 60, (rss, time.monotonic() - t0)
