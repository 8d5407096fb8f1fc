"""The status view: renders at 80 and 200 columns, with trends and drift times."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from rich.console import Console

from edgeml.cli.view import History, render, snapshot_view, sparkline
from tests.conftest import (
    TELEMETRY,
    Broker,
    load_config,
    publish_all,
    running,
    settle,
    write_config,
)
from tests.helpers import heartbeats, telemetry


def test_sparkline_scales_to_eight_levels() -> None:
    assert sparkline([]) == ""
    assert sparkline([1.0, 1.0]) == "▁▁"
    assert sparkline([0.0, 0.5, 1.0]) == "▁▅█"


@pytest.mark.parametrize("width", [80, 100, 200])
async def test_live_view_of_a_real_store_renders_at_any_width(
    broker: Broker, tmp_path: Path, width: int
) -> None:
    cfg = load_config(write_config(tmp_path, broker, TELEMETRY))
    history = History()
    async with running(cfg):
        for start in (0, 90, 180):
            await publish_all(broker, telemetry(90, devices=3, start=start))
            assert await settle(cfg, start + 90) == start + 90
            await heartbeats(cfg.db_path, 1)  # a summary write between refreshes
            snapshot_view(cfg.db_path, history)
        console = Console(width=width, record=True, color_system=None)
        console.print(snapshot_view(cfg.db_path, history))
    text = console.export_text()
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines)
    assert "…" not in text  # every cell whole: what does not fit is left out, not cut
    assert "daemon: running" in text
    for key in ("temp/dev0", "temp/dev1", "temp/dev2"):
        assert key in text
    assert any(ch in text for ch in "▁▂▃▄▅▆▇█")  # the rolling-error trend
    assert len(history.of("temp", "dev0")) == 4


@pytest.mark.parametrize("width", [80, 100, 200])
def test_big_figures_and_long_keys_are_never_cut(width: int) -> None:
    now = time.time()
    stream = {"stream": "temperature", "key": "kitchen_floor_sensor_with_a_long_name",
              "task": "regression", "samples": 12_345_678, "last_seen": now - 30,
              "model_version": 12, "drifts": 123, "challenger": {"samples": 10, "grace": 200,
              "t": 1.2, "trigger": "drift"}, "anomalies_1h": 0,
              "metrics": {"mae": 0.123456, "rmse": 1.5, "rolling_mae": 1.0}}  # fmt: skip
    doc = {"daemon": {"running": True, "pid": 123456, "node": "n", "uptime_s": 9,
                      "last_beat": now, "broker": "connected", "broker_connected": True,
                      "received": 1, "rejected": 0, "rejected_by_reason": {}, "learned": 1,
                      "rate": 1.0, "bytes_per_sample": None}, "streams": [stream]}  # fmt: skip
    history = History()
    for i in range(20):
        history.add({"streams": [{**stream, "metrics": {"rolling_mae": i % 7}}]})
    console = Console(width=width, record=True, color_system=None)
    console.print(render(doc, now, history, {("temperature", stream["key"]): now - 100}))
    text = console.export_text()
    assert "…" not in text and all(len(line) <= width for line in text.splitlines())
    assert "12.3M" in text and "12+c" in text and re.search(r"\s123\s", text)
    # The last drift from 100 columns; the 16-step trend from 120.
    assert ("last drift" in text) == (width >= 100)
    row = next(line for line in text.splitlines() if "12.3M" in line)
    assert sum(ch in "▁▂▃▄▅▆▇█" for ch in row) == (16 if width >= 120 else 8)


def test_render_marks_stale_devices_and_recent_drifts() -> None:
    now = time.time()
    doc = {
        "daemon": {"running": False, "pid": 1, "node": "n", "uptime_s": 5, "last_beat": now,
                   "broker": "disconnected", "broker_connected": False, "received": 3,
                   "rejected": 1, "rejected_by_reason": {"not_json": 1}, "learned": 2,
                   "rate": 0.0, "bytes_per_sample": None},
        "streams": [{"stream": "s", "key": "k", "task": "regression", "samples": 2,
                     "last_seen": now - 900, "model_version": 2, "drifts": 1,
                     "metrics": {"mae": 1.5, "rmse": 2.0, "rolling_mae": 1.0}}],
    }  # fmt: skip
    console = Console(width=100, record=True, color_system=None)
    console.print(render(doc, now, History(), {("s", "k"): now - 120}))
    text = console.export_text()
    assert "not running" in text and "rejected 1 (not_json 1)" in text
    # Seen 15 minutes ago, and a drift 2 minutes ago (the last-drift column needs 100 columns).
    row = next(line for line in text.splitlines() if line.startswith("s/k"))
    # The rolling column names its metric: the rolling MAE, in the target's unit.
    assert row.split()[2:] == ["15m", "2", "mae", "1", "1", "2m"], row
