"""A state file written by an earlier version opens in this one: every model comes back from
its own snapshot (no fallback, no fresh model), and learning goes on from where it stopped.

One exception, by design: an anomaly detector from before the self-calibrating detectors (a
QuantileFilter, 0.1.0's `halfspace`) is rebuilt from the log, since anomaly streams no longer
retrain on drift and it would never be replaced (docs/learning.md says so).

The files in tests/fixtures were made by `python -m tests.fixtures.make_state` with the
version their names give; add one per release whose snapshots or schema change.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import structlog

from edgeml.store.queries import read_status
from tests.conftest import Broker, db_rows, load_config, publish_all, running, settle, write_config
from tests.fixtures.make_state import STREAMS, messages

FIXTURES = sorted(Path(__file__).parents[1].joinpath("fixtures").glob("state-*.db"))


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
async def test_an_earlier_state_file_restores_every_model_from_its_snapshot(
    broker: Broker, tmp_path: Path, fixture: Path
) -> None:
    cfg = load_config(write_config(tmp_path, broker, STREAMS))
    cfg.db_path.parent.mkdir(parents=True)
    shutil.copy(fixture, cfg.db_path)
    before = {(s["stream"], s["key"]): s for s in read_status(cfg.db_path)["streams"]}
    [(stored,)] = db_rows(cfg, "SELECT count(*) FROM samples")
    assert len(before) == 10 and stored == len(messages())

    legacy = {sk for sk in before if sk[0] == "power"}  # 0.1.0's halfspace detectors
    with structlog.testing.capture_logs() as logs:
        async with running(cfg) as daemon:
            assert daemon.engine is not None
            assert sorted(daemon.engine.learners) == sorted(before)
            # Each model is the one it was: same version, same count of samples learned.
            for sk, lr in daemon.engine.learners.items():
                assert (lr.model_version, lr.samples) == (
                    before[sk]["model_version"],
                    before[sk]["samples"],
                ), sk
            more = messages()[:50]
            await publish_all(broker, more)
            assert await settle(cfg, stored + len(more)) == stored + len(more)
    unusable = {
        (e["stream"], e["key"]): e["reason"] for e in logs if e["event"] == "snapshot_unusable"
    }
    assert set(unusable) == legacy
    assert all("an anomaly detector of an older edgeml" in r for r in unusable.values())
    fallbacks = {(e["stream"], e["key"]) for e in logs if e["event"] == "snapshot_fallback"}
    assert fallbacks == legacy
    [restored] = [e for e in logs if e["event"] == "restored"]
    assert (restored["snapshots"], restored["models"]) == (10 - len(legacy), 10)
    # Only the rebuilt detectors replayed the log: 300 readings each.
    assert restored["replayed"] == 300 * len(legacy)
    assert not [e for e in logs if e["event"] == "model_error"]
