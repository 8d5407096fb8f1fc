"""SIGHUP's config reload: what applies live, what is reported as needing a restart."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import structlog

from edgeml.config import Config, load
from edgeml.daemon.reload import plan
from tests.conftest import (
    TELEMETRY,
    Broker,
    load_config,
    publish_all,
    running,
    sample_count,
    wait_for,
    write_config,
)
from tests.helpers import abstract_name, listening, telemetry, under_systemd

HUMIDITY = """
[[stream]]
name = "hum.v2"
topic = "sensors/+/telemetry"
key = "topic:1"
target = "h"
features = ["t"]
"""


def config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load(path)


def test_log_level_and_drift_delta_are_live_everything_else_needs_a_restart(
    tmp_path: Path,
) -> None:
    base = '[mqtt]\nhost = "b"\npassword = "old"\n[log]\nlevel = "info"\n' + TELEMETRY + HUMIDITY
    running_cfg = config(tmp_path, base)
    new = config(
        tmp_path,
        base.replace('level = "info"', 'level = "debug"')
        .replace('password = "old"', 'password = "new"\nkeepalive = 20')
        .replace('features = ["t"]', 'features = ["t"]\n[stream.drift]\ndelta = 0.05')
        .replace('features = ["i", "h"]', 'features = ["i"]')
        + '\n[[stream]]\nname = "new"\ntopic = "x/#"\ntarget = "v"\n',
    )
    result = plan(running_cfg, new)
    assert result.applied == ("log.level", "stream.hum.v2.drift.delta")
    # Keys only, never values: the password's key is named, its value is not.
    assert result.restart_needed == (
        "mqtt.keepalive",
        "mqtt.password",
        "stream.new",
        "stream.temp.features",
    )
    # What is in effect now: the live changes, and nothing else.
    eff = result.config
    assert eff.log.level == "debug"
    assert [s.drift.delta for s in eff.stream] == [0.002, 0.05]
    assert [s.name for s in eff.stream] == ["temp", "hum.v2"]
    assert eff.mqtt == running_cfg.mqtt
    assert eff.stream[0].features == ("i", "h")


def test_an_unchanged_file_applies_nothing_and_a_removed_stream_needs_a_restart(
    tmp_path: Path,
) -> None:
    both = config(tmp_path, TELEMETRY + HUMIDITY)
    assert plan(both, both).applied == plan(both, both).restart_needed == ()
    one = config(tmp_path, TELEMETRY)
    result = plan(both, one)
    assert (result.applied, result.restart_needed) == ((), ("stream.hum.v2",))
    assert [s.name for s in result.config.stream] == ["temp", "hum.v2"]  # still learning


async def test_reload_gives_existing_and_future_models_the_new_drift_threshold(
    broker: Broker, tmp_path: Path
) -> None:
    path = write_config(tmp_path, broker, TELEMETRY)
    cfg = load_config(path)
    async with running(cfg) as daemon:
        await publish_all(broker, telemetry(30, devices=2))
        await wait_for(lambda: sample_count(cfg) >= 30)
        engine = daemon.engine
        assert engine is not None
        assert {lr.adwin.delta for lr in engine.learners.values()} == {0.002}
        path.write_text(
            path.read_text().replace("keepalive = 10", "keepalive = 11")
            + "\n[stream.drift]\ndelta = 0.2\n"
        )
        daemon.reload()
        assert [lr.adwin.delta for lr in engine.learners.values()] == [0.2, 0.2]
        assert daemon.cfg.stream[0].drift.delta == 0.2
        assert daemon.cfg.mqtt.keepalive == 10  # needs a restart: not in effect
        # A device seen for the first time gets a model with the new threshold.
        await publish_all(broker, [("sensors/dev9/telemetry", b'{"i": 1, "h": 2, "t": 3}')])
        await wait_for(lambda: ("temp", "dev9") in engine.learners)
        assert engine.learners[("temp", "dev9")].adwin.delta == 0.2
        # The models keep learning (test-then-train goes on through the reload).
        await publish_all(broker, telemetry(10, devices=2, start=30))
        await wait_for(lambda: sample_count(cfg) >= 41)


async def test_models_restored_from_snapshots_take_the_configs_drift_threshold(
    broker: Broker, tmp_path: Path
) -> None:
    """A changed delta reaches models that come back from a snapshot (a restart, or a model
    unloaded and loaded again), not only the ones in memory at the SIGHUP."""
    path = write_config(tmp_path, broker, TELEMETRY)
    cfg = load_config(path)
    async with running(cfg):
        await publish_all(broker, telemetry(30, devices=2))
        await wait_for(lambda: sample_count(cfg) >= 30)
    path.write_text(path.read_text() + "\n[stream.drift]\ndelta = 0.3\n")
    with structlog.testing.capture_logs() as logs:
        async with running(load_config(path)) as daemon:
            assert daemon.engine is not None
            learners = list(daemon.engine.learners.values())
    [restored] = [e for e in logs if e["event"] == "restored"]
    assert (restored["snapshots"], restored["replayed"]) == (2, 0)  # from snapshots, no replay
    assert [lr.samples for lr in learners] == [15, 15]
    assert [lr.adwin.delta for lr in learners] == [0.3, 0.3]


def events(log: Path, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    return [e for e in lines if e["event"] == name]


async def test_sighup_applies_live_settings_names_the_rest_and_survives_a_bad_file(
    broker: Broker, tmp_path: Path, daemon_process: Any
) -> None:
    config = write_config(tmp_path, broker, TELEMETRY)
    cfg = load_config(config)
    original = config.read_text()
    async with listening(abstract_name()) as listener:
        d = daemon_process(config)
        with under_systemd(listener.name, watchdog_usec=10_000_000):
            d.start()
        assert d.proc is not None
        listener.pid = d.proc.pid
        i, _ = await listener.next("READY=1")

        config.write_text(
            original.replace('level = "info"', 'level = "warning"').replace(
                "keepalive = 10", "keepalive = 20"
            )
            + "\n[stream.drift]\ndelta = 0.01\n"
            + HUMIDITY
        )
        d.proc.send_signal(signal.SIGHUP)
        i, _ = await listener.next("RELOADING=1", after=i + 1)
        i, ready = await listener.next("READY=1", after=i)  # systemctl reload is over
        assert "STATUS=config reloaded, 2 changes need a restart; broker" in ready
        [reload] = events(d.log, "config_reload")
        assert reload["level"] == "warning"  # something waits for a restart
        assert reload["applied"] == ["log.level", "stream.temp.drift.delta"]
        assert reload["restart_needed"] == ["mqtt.keepalive", "stream.hum.v2"]
        # The level is in effect: a new device is learned, its (info) series_created is not
        # logged; the new stream is not learning (it takes a restart).
        await publish_all(broker, [("sensors/dev0/telemetry", b'{"i": 0, "h": 40, "t": 23}')])
        await wait_for(lambda: sample_count(cfg) == 1, timeout=10)
        assert events(d.log, "series_created") == []

        config.write_text(original.replace("port = ", 'port = "not a port" # '))
        d.proc.send_signal(signal.SIGHUP)
        i, _ = await listener.next("RELOADING=1", after=i + 1)
        i, ready = await listener.next("READY=1", after=i)
        assert "STATUS=config reload failed, running as before" in ready
        [failed] = events(d.log, "config_reload_failed")
        assert failed["level"] == "error"
        assert f"{config}: mqtt.port: " in failed["error"]
        await publish_all(broker, [("sensors/dev1/telemetry", b'{"i": 1, "h": 41, "t": 24}')])
        await wait_for(lambda: sample_count(cfg) == 2, timeout=10)

        d.terminate()
        assert await asyncio.to_thread(d.wait, 10) == 0
