"""`edgeml replay`: good CSV rows reach the daemon through MQTT; broken ones are named by line."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from edgeml.cli.app import app
from edgeml.config import StreamConfig
from edgeml.tools.replay import topic_for
from tests.conftest import TELEMETRY, Broker, db_rows, load_config, running, settle, write_config

runner = CliRunner()


def test_topic_puts_the_key_at_its_level() -> None:
    stream = StreamConfig(name="temp", topic="sensors/+/telemetry/#", key="topic:1", target="t")
    assert topic_for(stream, "boiler7") == "sensors/boiler7/telemetry/replay"


async def test_replay_learns_good_rows_and_reports_broken_lines(
    broker: Broker, tmp_path: Path
) -> None:
    path = write_config(tmp_path, broker, TELEMETRY)
    cfg = load_config(path)
    lines = ["i,h,t"]
    lines += [f"{i},{40 + i % 9},{20 + i % 9 / 2}" for i in range(100)]
    lines.insert(11, "10,forty,21")  # line 12: non-numeric feature
    lines.insert(31, "30,41")  # line 32: a cell short
    lines.insert(51, "50,42,")  # line 52: empty target
    csv_file = tmp_path / "history.csv"
    csv_file.write_text("\n".join(lines) + "\n")
    async with running(cfg):
        r = await asyncio.to_thread(
            runner.invoke,
            app,
            ["replay", str(csv_file), "--stream", "temp", "--key", "boiler7", "-c", str(path)],
            prog_name="edgeml",
        )
        assert r.exit_code == 0, r.output
        assert await settle(cfg, 100) == 100
    assert "published 100 rows to temp; 3 rows did not decode" in r.stdout
    assert "older than store.retention" not in r.stderr  # arrival time: nothing is old
    assert f"{csv_file}:12: non_numeric: h" in r.stderr
    assert f"{csv_file}:32: 2 cells, the header has 3" in r.stderr
    assert f"{csv_file}:52: missing_target: t" in r.stderr
    keys = {k for (k,) in db_rows(cfg, "SELECT key FROM series")}
    assert keys == {"boiler7"}
    ids = sorted(json.loads(x)["i"] for (x,) in db_rows(cfg, "SELECT x FROM samples"))
    assert ids == list(range(100))


def test_replay_needs_a_key_for_a_keyed_stream(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[mqtt]\nport = 1\n" + TELEMETRY)
    csv_file = tmp_path / "h.csv"
    csv_file.write_text("i,h,t\n1,2,3\n")
    r = runner.invoke(app, ["replay", str(csv_file), "--stream", "temp", "-c", str(path)])
    assert r.exit_code == 1 and "give --key" in r.stderr
    r = runner.invoke(app, ["replay", str(csv_file), "--stream", "nope", "-c", str(path)])
    assert r.exit_code == 2 and "no stream 'nope'" in r.stderr


def test_replay_refuses_what_it_cannot_honour(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[mqtt]\nport = 1\n" + TELEMETRY)
    plain = tmp_path / "h.csv"
    plain.write_text("i,h,t\n1,2,3\n")

    def replay(csv_file: Path, *args: str) -> Any:
        argv = ["replay", str(csv_file), "--stream", "temp", "--key", "k", "-c", str(path)]
        return runner.invoke(app, [*argv, *args], prog_name="edgeml")

    # Pacing needs the rows' own times, which a stream without `timestamp` does not read.
    r = replay(plain, "--speed", "100x")
    assert r.exit_code == 1 and "has no `timestamp` field" in r.stderr, r.stderr
    # A time column the stream ignores would make history look like now.
    timed = tmp_path / "timed.csv"
    timed.write_text("time,i,h,t\n2025-01-01T00:00:00,1,2,3\n")
    r = replay(timed)
    assert r.exit_code == 2 and "a time column 'time'" in r.stderr, r.stderr
    assert 'timestamp = "time"' in r.stderr


async def test_a_replay_that_sent_nothing_fails(broker: Broker, tmp_path: Path) -> None:
    path = write_config(tmp_path, broker, TELEMETRY)
    broken = tmp_path / "broken.csv"
    broken.write_text("i,h,t\n1,forty,3\n")
    r = await asyncio.to_thread(
        runner.invoke,
        app,
        ["replay", str(broken), "--stream", "temp", "--key", "k", "-c", str(path)],
        prog_name="edgeml",
    )
    assert r.exit_code == 1 and "nothing was sent" in r.stderr, r.stderr


async def test_replay_names_the_rows_that_retention_will_prune(
    broker: Broker, tmp_path: Path
) -> None:
    stream = TELEMETRY.replace('target = "t"', 'target = "t"\ntimestamp = "ts"')
    path = write_config(tmp_path, broker, stream)
    old = tmp_path / "last-year.csv"
    old.write_text("ts,i,h,t\n1700000000,1,2,3\n1700000060,2,3,4\n" + f"{int(time.time())},3,4,5\n")
    r = await asyncio.to_thread(
        runner.invoke,
        app,
        ["replay", str(old), "--stream", "temp", "--key", "k", "-c", str(path)],
        prog_name="edgeml",
    )
    assert r.exit_code == 0, r.output
    assert "note: 2 rows are older than store.retention (7d)" in " ".join(r.stderr.split())
