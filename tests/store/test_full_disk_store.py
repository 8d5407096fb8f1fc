"""The store on a full 12 MiB tmpfs: a write that fails for want of space says so (DiskFull),
leaves nothing of its batch behind, and the same batch can be written once space returns.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from edgeml.core.batch import Batch, SampleRow, SeriesRow, Snapshot
from edgeml.errors import DiskFull
from edgeml.store.writer import Store
from tests.helpers import fill


def batch(first: int, n: int, prune: bool = False) -> Batch:
    b = Batch()
    if first == 1:
        b.series.append(SeriesRow(1, "s", "k", "regression", time.time()))
    x = '{"a": ' + "1.5, " * 200 + "0}"  # a large row, so a batch is several pages
    b.samples.extend(
        SampleRow(seq, 1, time.time(), x, float(seq), seq % 65535, seq, None)
        for seq in range(first, first + n)
    )
    b.snapshots.append(
        Snapshot(1, first + n - 1, time.time(), "interval", 1, "0", b"\x80" * 20_000)
    )
    if prune:
        b.prune_before = time.time() - 3600  # nothing that old: the slice finds nothing
    return b


def count(db: Path) -> tuple[int, int, str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        samples = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
        snaps = conn.execute("SELECT count(*) FROM snapshots").fetchone()[0]
        return samples, snaps, conn.execute("PRAGMA integrity_check").fetchone()[0]


async def test_a_write_on_a_full_disk_rolls_back_and_the_same_batch_commits_later(
    small_disk: Path,
) -> None:
    db = small_disk / "state" / "edgeml.db"
    async with await Store.open(db) as store:
        await store.write(batch(1, 200))
        filler = fill(small_disk)
        pending = [batch(201 + 200 * i, 200, prune=True) for i in range(5)]
        with pytest.raises(DiskFull) as info:
            for b in pending:
                await store.write(b)
        assert info.value.path == str(db)
        assert info.value.free_bytes is not None and info.value.free_bytes < 1 << 20
        stored, _, ok = count(db)
        assert ok == "ok"
        assert stored % 200 == 0  # whole batches only: the failed one left nothing behind
        filler.unlink()
        # The batch that failed (and those after it) commit as they are: no duplicate seq.
        for b in pending[(stored - 200) // 200 :]:
            await store.write(b)
    assert count(db) == (1200, 3, "ok")  # keep_snapshots = 3
