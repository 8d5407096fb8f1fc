"""The typer CLI driven with its runner against real config files and a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from edgeml.cli.app import app
from tests.conftest import (
    TELEMETRY,
    Broker,
    load_config,
    publish_all,
    running,
    settle,
    write_config,
)
from tests.helpers import telemetry

runner = CliRunner()


def test_check_valid_config_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\nhost = "broker.example"\n' + TELEMETRY)
    r = runner.invoke(app, ["check", "-c", str(path)], prog_name="edgeml")
    assert r.exit_code == 0, r.output
    assert f"{path}: ok (1 stream, broker broker.example:1883" in r.stdout


def test_check_invalid_config_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\nhots = "x"\nport = "1883"\n' + TELEMETRY.replace('target = "t"\n', ""))
    r = runner.invoke(app, ["check", "-c", str(path)], prog_name="edgeml")
    assert r.exit_code == 2
    assert f"{path}: mqtt.hots: unknown key (did you mean 'host'?)" in r.stderr
    assert f"{path}: mqtt.port: " in r.stderr
    assert f"{path}: stream.0.target: " in r.stderr


def test_check_warns_about_protocol_311(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\nhost = "broker.example"\nprotocol = "3.1.1"\n' + TELEMETRY)
    r = runner.invoke(app, ["check", "-c", str(path)], prog_name="edgeml")
    assert r.exit_code == 0
    assert "warning: mqtt.protocol = '3.1.1'" in r.stderr


def test_check_warns_that_ack_before_sync_can_lose_readings_in_a_power_cut(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[mqtt]\nhost = "broker.example"\n[store]\nack_before_sync = true\n' + TELEMETRY
    )
    r = runner.invoke(app, ["check", "-c", str(path)], prog_name="edgeml")
    assert r.exit_code == 0
    assert "warning: store.ack_before_sync = true" in r.stderr
    assert "power cut" in r.stderr
    assert "lose acknowledged readings" in r.stderr


def test_config_from_environment_variable(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\nhost = "broker.example"\n' + TELEMETRY)
    r = runner.invoke(app, ["check"], env={"EDGEML_CONFIG": str(path)}, prog_name="edgeml")
    assert r.exit_code == 0, r.output


def test_status_without_a_database_says_so(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\nhost = "broker.example"\n' + TELEMETRY)
    r = runner.invoke(app, ["status", "-c", str(path)], prog_name="edgeml")
    assert r.exit_code == 1
    assert "no database yet" in r.stderr


async def test_status_json_contract_and_table(broker: Broker, tmp_path: Path) -> None:
    path = write_config(tmp_path, broker, TELEMETRY)
    cfg = load_config(path)
    async with running(cfg):
        await publish_all(broker, telemetry(90, devices=3))
        assert await settle(cfg, 90) == 90
    r = runner.invoke(app, ["status", "-c", str(path), "--json"], prog_name="edgeml")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert set(doc) == {"daemon", "streams"}
    daemon = doc["daemon"]
    for key in ("running", "pid", "uptime_s", "broker", "received", "rejected", "learned", "rate"):
        assert key in daemon
    assert daemon["running"] is False
    assert daemon["received"] == daemon["learned"] == 90
    assert len(doc["streams"]) == 3
    for row in doc["streams"]:
        assert set(row) == {
            "stream",
            "key",
            "task",
            "samples",
            "last_seen",
            "model_version",
            "metrics",
            "drifts",
            "challenger",
            "failing",
            "anomalies_1h",
        }
        assert row["challenger"] is None and row["failing"] is None and row["anomalies_1h"] == 0
        assert set(row["metrics"]) == {"mae", "rmse", "r2", "rolling_mae"}
        assert row["samples"] == 30
        assert row["task"] == "regression"
    r = runner.invoke(app, ["status", "-c", str(path)], prog_name="edgeml")
    assert r.exit_code == 0, r.output
    # A daemon that stopped is not shown with an uptime: when it stopped, and how.
    assert "stopped" in r.stdout and "(a clean stop)" in r.stdout and " up " not in r.stdout
    assert "dev0" in r.stdout and "dev2" in r.stdout
    r = runner.invoke(app, ["status", "-c", str(path), "--watch", "--json"], prog_name="edgeml")
    assert r.exit_code == 2 and "--watch and --json do not go together" in r.stderr


async def test_events_history_filters_and_json(broker: Broker, tmp_path: Path) -> None:
    import asyncio
    import random

    path = write_config(tmp_path, broker, TELEMETRY)
    cfg = load_config(path)
    rng = random.Random(5)
    messages = []
    for i in range(1200):
        h = rng.uniform(0, 10)
        t = 2 * h + rng.gauss(0, 0.1) if i < 800 else -3 * h + 40 + rng.gauss(0, 0.1)
        messages.append(("sensors/dev0/telemetry", json.dumps({"i": 0, "h": h, "t": t}).encode()))
    async with running(cfg):
        await publish_all(broker, messages)
        assert await settle(cfg, 1200) == 1200
        r = await asyncio.to_thread(
            runner.invoke, app, ["models", "retrain", "temp/dev0", "-c", str(path)]
        )
        assert r.exit_code == 0, r.output

    def events(*args: str) -> list[dict[str, Any]]:
        r = runner.invoke(app, ["events", "-c", str(path), "--json", *args], prog_name="edgeml")
        assert r.exit_code == 0, r.output
        return list(json.loads(r.stdout))

    everything = events()
    kinds = [e["kind"] for e in everything]
    assert kinds[0] == "retrain"  # newest first: the manual retrain started a challenger
    assert everything[0]["data"]["trigger"] == "manual"
    assert "drift" in kinds
    drifts = events("--kind", "drift")
    assert drifts and all(e["kind"] == "drift" and e["key"] == "dev0" for e in drifts)
    assert all(e["seq"] > 800 for e in drifts)  # after the change, not before
    # The drift after the change started a challenger; its verdict is recorded with figures.
    retrains = events("--kind", "retrain")
    assert [e["data"]["trigger"] for e in retrains] == ["manual", "drift"]
    verdicts = events("--kind", "promotion", "--kind", "challenger_dropped")
    assert len(verdicts) == 1 and verdicts[0]["data"]["samples"] >= 30
    assert events("--since", "1h") == everything
    assert events("--since", "2999-01-01T00:00:00") == []
    assert events("--stream", "other") == []
    r = runner.invoke(app, ["events", "-c", str(path), "--since", "soon"], prog_name="edgeml")
    assert r.exit_code == 2 and "give a duration" in r.stderr
    r = runner.invoke(app, ["events", "-c", str(path)], prog_name="edgeml")
    assert r.exit_code == 0 and "drift" in r.stdout and "temp/dev0" in r.stdout
    r = runner.invoke(app, ["events", "-c", str(path), "--kind", "drfit"], prog_name="edgeml")
    assert r.exit_code == 2 and "did you mean 'drift'?" in r.stderr, r.stderr


def test_help_texts_keep_their_brackets() -> None:
    r = runner.invoke(app, ["report", "--help"], prog_name="edgeml")
    assert "pip install 'edgeml[report]'" in " ".join(r.stdout.split())
    r = runner.invoke(app, ["status", "--help"], prog_name="edgeml")
    assert "<bool>" not in r.stdout and "--json" in r.stdout
