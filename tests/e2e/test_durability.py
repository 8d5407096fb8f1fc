"""Learning survives restarts: snapshots, replay of what followed them, fallbacks, and kill -9."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from edgeml.config import Config
from edgeml.learn import snapshot
from edgeml.learn.presets import build_model
from edgeml.store.queries import read_status
from tests.conftest import (
    TELEMETRY,
    Broker,
    db_rows,
    load_config,
    publish_all,
    running,
    settle,
    wait_for,
    write_config,
)
from tests.helpers import DRIFTING, heartbeats, publish_paced, telemetry

# Series whose newest sample is covered by an interval snapshot.
COVERED_BY_INTERVAL = (
    "SELECT count(DISTINCT series) FROM snapshots n WHERE reason = 'interval'"
    " AND seq = (SELECT MAX(seq) FROM samples s WHERE s.series = n.series)"
)
FAST_SNAPSHOTS = """
[store]
summary_interval = "200ms"

[models]
snapshot_interval = "400ms"
"""


def reference_check(cfg: Config) -> int:
    """Replay the stored log through plain River, per device, in seq order: every stored
    prediction must be what a daemon that never stopped would have predicted, and the final
    model (from the shutdown snapshot) must be that model. Returns the samples checked.
    """
    rows = db_rows(
        cfg,
        "SELECT s.seq, r.key, s.x, s.y, p.y_pred FROM samples s JOIN series r ON r.id = s.series"
        " JOIN predictions p ON p.seq = s.seq ORDER BY s.seq",
    )
    models: dict[str, Any] = {}
    abs_errors: dict[str, list[float]] = {}
    for _seq, key, x_json, y, y_pred in rows:
        x = json.loads(x_json)
        model = models.setdefault(key, build_model(cfg.stream[0]))  # the stream's preset
        expected = model.predict_one(x)
        assert y_pred == pytest.approx(expected, rel=1e-9, abs=1e-9)
        abs_errors.setdefault(key, []).append(abs(y - expected))
        model.learn_one(x, y)
    stream = cfg.stream[0]
    probe = [{"i": float(i), "h": 40.0 + i % 20} for i in range(0, 5000, 250)]
    for key, model in models.items():
        [(blob, sha, river)] = db_rows(
            cfg,
            "SELECT n.blob, n.sha256, n.river FROM snapshots n JOIN series r ON r.id = n.series"
            " WHERE r.key = ? ORDER BY n.seq DESC, n.id DESC LIMIT 1",
            key,
        )
        learner = snapshot.load(stream, key, blob, sha, river)
        for x in probe:
            assert learner.model.predict_one(x) == pytest.approx(model.predict_one(x), rel=1e-9)
        errors = abs_errors[key]
        assert learner.samples == len(errors)
        assert learner.metrics()["mae"] == pytest.approx(sum(errors) / len(errors), rel=1e-9)
    return len(rows)


async def test_restart_restores_from_snapshots_and_replays_only_what_followed(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = load_config(write_config(tmp_path, broker, TELEMETRY, extra=FAST_SNAPSHOTS))
    async with running(cfg):
        await publish_all(broker, telemetry(300))
        assert await settle(cfg, 300) == 300
    # A clean stop leaves every model snapshotted as of its last sample (by the shutdown
    # snapshot, or by an interval snapshot that came after the last reading: with 400 ms
    # intervals either can be the newest).
    newest = (
        "SELECT count(*) FROM series r WHERE (SELECT MAX(seq) FROM snapshots n"
        " WHERE n.series = r.id) = (SELECT MAX(seq) FROM samples s WHERE s.series = r.id)"
    )
    assert db_rows(cfg, newest) == [(3,)]
    reasons = {r for (r,) in db_rows(cfg, "SELECT reason FROM snapshots")}
    assert reasons <= {"interval", "shutdown"}
    before = read_status(cfg.db_path)["streams"]
    with structlog.testing.capture_logs() as logs:
        async with running(cfg):
            pass
    [restored] = [e for e in logs if e["event"] == "restored"]
    assert (restored["snapshots"], restored["replayed"], restored["models"]) == (3, 0, 3)
    assert read_status(cfg.db_path)["streams"] == [
        {**row, "last_seen": row["last_seen"]} for row in before
    ]
    # At most `keep_snapshots` (3) per device are kept.
    counts = db_rows(cfg, "SELECT count(*) FROM snapshots GROUP BY series")
    assert all(n <= 3 for (n,) in counts)


async def test_unusable_newest_snapshot_falls_back_to_an_older_one_and_a_longer_replay(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = load_config(write_config(tmp_path, broker, TELEMETRY, extra=FAST_SNAPSHOTS))
    async with running(cfg):
        for start in (0, 150):
            await publish_all(broker, telemetry(150, start=start))
            assert await settle(cfg, start + 150) == start + 150
            # An interval snapshot of every device between the two halves.
            await wait_for(lambda: db_rows(cfg, COVERED_BY_INTERVAL) == [(3,)])
    # Corrupt the newest snapshot of every device; remove all snapshots of dev2.
    db_rows(cfg, "SELECT 1")  # the file exists and is readable
    import sqlite3

    with sqlite3.connect(cfg.db_path) as conn:
        conn.execute(
            "UPDATE snapshots SET blob = X'00' || blob WHERE id IN"
            " (SELECT max(id) FROM snapshots GROUP BY series)"
        )
        conn.execute(
            "UPDATE snapshots SET river = '0.0.1' WHERE series ="
            " (SELECT id FROM series WHERE key = 'dev2')"
        )
    conn.close()
    with structlog.testing.capture_logs() as logs:
        async with running(cfg):
            await publish_all(broker, telemetry(30, start=300))
            assert await settle(cfg, 330) == 330
    unusable = [e for e in logs if e["event"] == "snapshot_unusable"]
    assert any("sha256" in e["reason"] for e in unusable)
    assert any("River 0.0.1" in e["reason"] for e in unusable)
    fallbacks = {e["key"]: e["detail"] for e in logs if e["event"] == "snapshot_fallback"}
    assert "older snapshot" in fallbacks["dev0"]
    assert "fresh model" in fallbacks["dev2"]
    # Whatever path each device took, its model is exactly the one the log implies.
    assert reference_check(cfg) == 330


async def test_three_kills_while_publishing_end_with_the_model_of_a_run_that_never_stopped(
    broker: Broker, tmp_path: Path, daemon_process: Any
) -> None:
    config = write_config(tmp_path, broker, TELEMETRY, extra=FAST_SNAPSHOTS)
    cfg = load_config(config)
    d = daemon_process(config)
    d.start()
    await d.wait_ready()
    publisher = asyncio.create_task(publish_paced(broker, telemetry(5000, devices=5), 3000))
    rng = random.Random(2026)
    for kill_after in sorted(rng.sample(range(500, 4500), 3)):
        await asyncio.wait_for(settle(cfg, kill_after, quiet_s=30), 60)
        await asyncio.sleep(rng.uniform(0, 0.3))
        d.kill()
        d = daemon_process(config)
        d.start()
        await d.wait_ready()
    await asyncio.wait_for(publisher, 60)
    assert await settle(cfg, 5000) == 5000
    d.terminate()
    assert d.wait(10) == 0
    assert db_rows(cfg, "SELECT count(DISTINCT seq) FROM predictions")[0][0] == 5000
    assert reference_check(cfg) == 5000


# linear: its snapshots are small beside the pruned readings, so the file must shrink (with
# `auto`'s, several times larger, the snapshots written after the pruning outweighed the pages
# it freed: 83 pages against 76).
RETENTION_STREAM = TELEMETRY.replace(
    'target = "t"', 'target = "t"\ntimestamp = "ts"\nmodel = "linear"'
)


def old_and_new(n_old: int, n_new: int, start: int = 0) -> list[tuple[str, bytes]]:
    now = time.time()
    out = []
    for i in range(start, start + n_old + n_new):
        ts = now - 7200 if i < start + n_old else now  # two hours old, or fresh
        body = {"i": i, "h": 40 + i % 17, "t": 20 + i % 17 / 2, "ts": ts}
        out.append((f"sensors/dev{i % 3}/telemetry", json.dumps(body).encode()))
    return out


def counts(cfg: Config) -> tuple[int, int, int]:
    return (
        db_rows(cfg, "SELECT count(*) FROM samples")[0][0],
        db_rows(cfg, "SELECT count(*) FROM predictions")[0][0],
        db_rows(cfg, "SELECT count(*) FROM snapshots")[0][0],
    )


async def test_retention_prunes_only_what_snapshots_cover_and_the_file_shrinks(
    broker: Broker, tmp_path: Path
) -> None:
    no_snapshots_yet = '[store]\nsummary_interval = "200ms"\nretention = "1h"\n'
    path = write_config(tmp_path, broker, RETENTION_STREAM, extra=no_snapshots_yet)
    cfg = load_config(path)
    async with running(cfg):
        await publish_all(broker, old_and_new(3000, 0))
        assert await settle(cfg, 3000) == 3000
        # A retention pass after the last reading was stored: one rides with each heartbeat,
        # and the next comes when the rate falls (an idle daemon writes no more until then).
        await heartbeats(cfg.db_path, 1)
        # Two hours old, but no snapshot has covered them yet: all kept.
        assert counts(cfg) == (3000, 3000, 0)
    pages_full = db_rows(cfg, "PRAGMA page_count")[0][0]
    metrics_before = read_status(cfg.db_path)["streams"]
    # The clean stop wrote a snapshot per device; now they can go, a slice per pass.
    async with running(cfg):
        await publish_all(broker, old_and_new(0, 30, start=3000))
        await settle(cfg, 10**9, quiet_s=1.5)
        assert counts(cfg)[:2] == (30, 30)
    assert db_rows(cfg, "PRAGMA auto_vacuum")[0][0] == 2  # incremental
    assert db_rows(cfg, "PRAGMA freelist_count")[0][0] < 10
    assert db_rows(cfg, "PRAGMA page_count")[0][0] < pages_full
    # The models kept everything they learned from the pruned readings.
    after = {s["key"]: s for s in read_status(cfg.db_path)["streams"]}
    for row in metrics_before:
        assert after[row["key"]]["samples"] == row["samples"] + 10
    # And a restart restores them from their snapshots, with nothing left to replay.
    with structlog.testing.capture_logs() as logs:
        async with running(cfg):
            pass
    [restored] = [e for e in logs if e["event"] == "restored"]
    assert (restored["snapshots"], restored["replayed"]) == (3, 0)
    assert {s["key"]: s["samples"] for s in read_status(cfg.db_path)["streams"]} == {
        k: s["samples"] for k, s in after.items()
    }


def drifting(n_per_device: int, change: int, devices: int = 2) -> list[tuple[str, bytes]]:
    """Interleaved meters whose relation between features and power changes at `change`."""
    rng = random.Random(8)
    out = []
    for i in range(n_per_device):
        for dev in range(devices):
            t, h, w = rng.uniform(10, 30), rng.uniform(20, 80), rng.uniform(0, 10)
            if i < change:
                p = 2 * t + 0.5 * h + (5 if w > 5 else 0) + rng.gauss(0, 1)
            else:
                p = -1.5 * t + 1.0 * h + 30 + (-5 if w > 5 else 0) + rng.gauss(0, 1)
            body = {"t": t, "h": h, "w": w, "p": p}
            out.append((f"meter/m{dev}/power", json.dumps(body).encode()))
    return out


async def test_kills_around_a_drift_end_with_the_challenger_history_of_a_run_that_never_stopped(
    broker: Broker, tmp_path: Path, daemon_process: Any
) -> None:
    """Drift, warm start, grace period and promotion survive kill -9 at any of those moments:
    every stored prediction, and every promotion, is what one uninterrupted run of the same
    log makes (edgeml.learn.offline: the learning path with the log in memory).
    """
    from edgeml.learn import offline
    from edgeml.records import Sample

    config = write_config(tmp_path, broker, DRIFTING, extra=FAST_SNAPSHOTS)
    cfg = load_config(config)
    d = daemon_process(config)
    d.start()
    await d.wait_ready()
    messages = drifting(2400, change=1500)
    publisher = asyncio.create_task(publish_paced(broker, messages, 2000))
    rng = random.Random(7)
    # Around the change (reading 3000 of 4800): detection, warm start, grace, promotion.
    for kill_after in sorted(rng.sample(range(2900, 3400), 3)):
        await asyncio.wait_for(settle(cfg, kill_after, quiet_s=30), 60)
        await asyncio.sleep(rng.uniform(0, 0.2))
        d.kill()
        d = daemon_process(config)
        d.start()
        await d.wait_ready()
    await asyncio.wait_for(publisher, 60)
    assert await settle(cfg, len(messages)) == len(messages)
    d.terminate()
    assert d.wait(10) == 0

    stream = cfg.stream[0]
    promoted_live = {
        (key, seq) for key, seq in db_rows(
            cfg, "SELECT key, seq FROM events WHERE kind = 'promotion' ORDER BY seq"
        )
    }  # fmt: skip
    assert promoted_live, "the change must have been caught and a challenger promoted"
    checked = 0
    for key in ("m0", "m1"):
        rows = db_rows(
            cfg,
            "SELECT s.seq, s.ts, s.x, s.y, p.y_pred, p.model_version FROM samples s"
            " JOIN series r ON r.id = s.series JOIN predictions p ON p.seq = s.seq"
            " WHERE r.key = ? ORDER BY s.seq",
            key,
        )
        samples = [Sample("power", key, ts, json.loads(x), y) for _, ts, x, y, _, _ in rows]
        promoted = set()
        for row, (outcome, _) in zip(rows, offline.run(stream, samples), strict=True):
            seq, _, _, _, y_pred, version = row
            assert (y_pred, version) == (outcome.y_pred, outcome.model_version), seq
            if any(e.kind == "promotion" for e in outcome.events):
                promoted.add(seq)
            checked += 1
        assert {(key, s) for s in promoted} == {(k, s) for k, s in promoted_live if k == key}
    assert checked == len(messages)


async def kill_at(
    failpoint: str,
    gap: list[tuple[str, list[tuple[Any, ...]]]],
    config: Path,
    broker: Broker,
    messages: list[tuple[str, bytes]],
    rate: int,
    daemon_process: Any,
) -> Config:
    """Publish `messages` while the daemon runs with EDGEML_FAILPOINT=`failpoint` until it
    kills itself there; check what the store holds then (`gap`: query, rows); then a new
    daemon learns the rest and stops cleanly.
    """
    cfg = load_config(config)
    d = daemon_process(config)
    d.start(EDGEML_FAILPOINT=failpoint)
    await d.wait_ready()
    publisher = asyncio.create_task(publish_paced(broker, messages, rate))
    assert await asyncio.to_thread(d.wait, 60) == -signal.SIGKILL
    for query, rows in gap:
        assert db_rows(cfg, query) == rows, query
    d = daemon_process(config)
    d.start()
    await d.wait_ready()
    await asyncio.wait_for(publisher, 60)
    assert await settle(cfg, len(messages)) == len(messages)
    d.terminate()
    assert d.wait(10) == 0
    return cfg


async def test_a_kill_right_after_a_warm_start_loses_no_retrain_event(
    broker: Broker, tmp_path: Path, daemon_process: Any
) -> None:
    """The retrain event is committed after the sample whose drift asked for the warm start.
    EDGEML_FAILPOINT kills the daemon (SIGKILL) in exactly that gap, which no timing from
    outside hits reliably; the replay must record the event, once, as a run that never
    stopped records it.
    """
    from edgeml.learn import offline
    from edgeml.records import Sample

    config = write_config(tmp_path, broker, DRIFTING, extra=FAST_SNAPSHOTS)
    # The gap was hit: the drift is stored, the warm start it asked for is not.
    gap = [
        ("SELECT count(*) FROM events WHERE kind = 'drift'", [(1,)]),
        ("SELECT count(*) FROM events WHERE kind = 'retrain'", [(0,)]),
    ]
    messages = drifting(2400, change=1500)
    cfg = await kill_at("warm_start", gap, config, broker, messages, 2000, daemon_process)

    stream = cfg.stream[0]
    expected = []
    for key in ("m0", "m1"):
        rows = db_rows(
            cfg,
            "SELECT s.ts, s.x, s.y FROM samples s JOIN series r ON r.id = s.series"
            " WHERE r.key = ? ORDER BY s.seq",
            key,
        )
        samples = [Sample("power", key, ts, json.loads(x), y) for ts, x, y in rows]
        seqs = [seq for (seq,) in db_rows(
            cfg, "SELECT s.seq FROM samples s JOIN series r ON r.id = s.series"
            " WHERE r.key = ? ORDER BY s.seq", key)]  # fmt: skip
        for seq, (_, answered) in zip(seqs, offline.run(stream, samples), strict=True):
            expected += [(key, seq, e.data["warm_start"]) for e in answered if e.kind == "retrain"]
    stored = [
        (key, seq, json.loads(data)["warm_start"])
        for key, seq, data in db_rows(
            cfg, "SELECT key, seq, data FROM events WHERE kind = 'retrain' ORDER BY key, seq"
        )
    ]
    assert expected and stored == sorted(expected)


DIVERGING = DRIFTING.replace('model = "tree"', 'model = "linear"')


def extreme(n: int, calm: int) -> list[tuple[str, bytes]]:
    """`calm` ordinary readings, then legal ones at the 1e15 limit that send SGD's predictions
    far beyond it: every third is predicted at 1e23 or more (found by the hostile-payload
    property test).
    """
    rng = random.Random(3)
    cycle = [
        {"t": 0.0, "h": 0.0, "w": 0.0, "p": 0.0},
        {"t": -1e15, "h": 123.0, "w": 0.0, "p": 5e14},
        {"t": 0.0, "h": -1e15, "w": 0.0, "p": 5e14},
    ]
    out = []
    for i in range(n):
        t, h, w = rng.uniform(10, 30), rng.uniform(20, 80), rng.uniform(0, 10)
        body = {"t": t, "h": h, "w": w, "p": 2 * t + 0.5 * h} if i < calm else cycle[i % 3]
        out.append(("meter/m0/power", json.dumps(body).encode()))
    return out


async def test_a_diverging_model_is_guarded_and_a_kill_after_a_guard_loses_no_version(
    broker: Broker, tmp_path: Path, daemon_process: Any
) -> None:
    """Predictions far beyond any reading are finite, but squared by RMSE they can overflow:
    the guard must catch them (a prediction of 1e200 stopped the daemon with OverflowError,
    and again after every restart). The first guard brings the model's stored version back
    as a new one; EDGEML_FAILPOINT kills the daemon before that version is committed, and
    the replay must record it. While the readings go on diverging it, the model comes back
    in place, under its own number: no version per reading.
    """
    config = write_config(tmp_path, broker, DIVERGING, extra=FAST_SNAPSHOTS)
    # The gap was hit: the guard is stored, the version it restored is not.
    gap = [
        ("SELECT count(*) FROM events WHERE kind = 'guard'", [(1,)]),
        ("SELECT max(version) FROM models", [(1,)]),
    ]
    messages = extreme(400, calm=150)
    cfg = await kill_at("guard", gap, config, broker, messages, 500, daemon_process)

    guards = db_rows(cfg, "SELECT seq, data FROM events WHERE kind = 'guard' ORDER BY seq")
    assert len(guards) > 50 and json.loads(guards[0][1])["restore"] == "new version"
    assert {json.loads(data)["restore"] for _, data in guards[1:]} == {"in place"}
    # The first guard's version is in the registry, once; no other version was made.
    promoted = db_rows(
        cfg,
        "SELECT seq, json_extract(data, '$.version') FROM events WHERE kind = 'promotion'"
        " AND json_extract(data, '$.reason') = 'guard'",
    )
    assert promoted == [(guards[0][0], 2)]
    assert db_rows(cfg, "SELECT version, reason FROM models ORDER BY version") == [
        (1, "initial"),
        (2, "guard"),
    ]
    served = {v for (v,) in db_rows(cfg, "SELECT DISTINCT model_version FROM predictions")}
    assert served == {1, 2}
    predictions = [p for (p,) in db_rows(cfg, "SELECT y_pred FROM predictions")]
    assert all(abs(p) <= 1e18 for p in predictions)
    assert read_status(cfg.db_path)["streams"][0]["model_version"] == 2
