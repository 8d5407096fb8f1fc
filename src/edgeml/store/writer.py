"""The daemon's side of the SQLite file: the batched writer and what start-up reads back."""

from __future__ import annotations

import errno
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from edgeml.core.batch import Batch, StoredSample
from edgeml.errors import DiskFull, StoreError
from edgeml.store.queries import free_bytes
from edgeml.store.schema import create
from edgeml.store.writes import vacuum, write_batch

__all__ = ["Command", "Store", "StoredSnapshot"]

log = structlog.get_logger("edgeml.store")

# How many recent deliveries are remembered for redelivery detection: MQTT packet ids are
# 16-bit, so the broker cannot reuse one within the last 65,535 deliveries.
RECENT_DELIVERIES = 65535


@dataclass(frozen=True, slots=True)
class Command:
    """A request from the CLI, applied by the daemon (or at its next start)."""

    id: int
    kind: str
    stream: str
    key: str
    args: dict[str, Any]
    blob: bytes | None


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    id: int
    series: int
    seq: int
    reason: str
    river: str
    sha256: str


# Below this much free space, an I/O error is taken for a full disk under another name (the
# -shm file that cannot grow, an fsync that reports ENOSPC late).
_NEARLY_FULL = 1 << 20


def _is_disk_full(exc: BaseException, directory: Path) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if code is not None and code & 0xFF == sqlite3.SQLITE_IOERR:
        free = free_bytes(directory)
        return free is not None and free < _NEARLY_FULL
    return False


def _error(path: Path, what: str, exc: BaseException) -> StoreError:
    """DiskFull when `exc` says the file system is full (a state to wait out), else StoreError."""
    if _is_disk_full(exc, path.parent):
        return DiskFull(f"{path}: {what}: {exc}", str(path), free_bytes(path.parent))
    return StoreError(f"{path}: {what}: {exc}")


def _row(r: Any) -> StoredSample:
    return StoredSample(
        int(r[0]),
        float(r[1]),
        json.loads(r[2]),
        None if r[3] is None else float(r[3]),
        None if r[4] is None else json.loads(r[4]),
    )


class Store:
    """The daemon's connection: the only writer of the SQLite file."""

    def __init__(self, db: aiosqlite.Connection, path: Path, keep_snapshots: int = 3) -> None:
        self._db = db
        self.path = path
        self.keep_snapshots = keep_snapshots
        self.pruned = 0

    @classmethod
    async def open(cls, path: Path, keep_snapshots: int = 3, sync: bool = True) -> Store:
        """Open (create, migrate) the file. `sync`: every commit is fsynced before `write`
        returns (what makes an acknowledgement survive a power cut); False is the opt-in
        `store.ack_before_sync`.
        """
        try:
            create(path)  # schema work: synchronous, once, before the async connection
            db = await aiosqlite.connect(path, timeout=10)
        except (OSError, sqlite3.Error) as exc:
            raise _error(path, "cannot open the database", exc) from exc
        try:
            # FULL in WAL mode: each commit fsyncs the WAL before it returns, so what the daemon
            # acknowledges next is on storage (one fsync per batch; SQLite also syncs the
            # directory when it creates the WAL). NORMAL syncs only at checkpoints: a power
            # cut can then undo the last commits, whose readings were acknowledged already.
            await db.execute(f"PRAGMA synchronous={'FULL' if sync else 'NORMAL'}")
            await db.execute("PRAGMA busy_timeout=10000")
        except BaseException:
            await db.close()
            raise
        return cls(db, path, keep_snapshots)

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- state at start -------------------------------------------------------------

    async def next_seq(self) -> int:
        # Retention may have pruned the newest samples' predecessors, never what a snapshot
        # has not covered: with the snapshots' seq, a sequence number is never handed out twice.
        async with self._db.execute(
            "SELECT max(COALESCE((SELECT MAX(seq) FROM samples), 0),"
            " COALESCE((SELECT MAX(seq) FROM snapshots), 0)) + 1"
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 1

    async def series(self) -> dict[tuple[str, str], int]:
        rows = await self._db.execute_fetchall("SELECT stream, key, id FROM series")
        return {(r[0], r[1]): int(r[2]) for r in rows}

    async def recent_deliveries(self) -> dict[int, int]:
        """mid -> payload hash of the latest stored deliveries, for redelivery detection."""
        rows = await self._db.execute_fetchall(
            "SELECT mid, hash FROM samples"
            " WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM samples) - ?"
            " AND mid IS NOT NULL ORDER BY seq",
            (RECENT_DELIVERIES,),
        )
        return {int(r[0]): int(r[1]) for r in rows}

    async def snapshot_index(self) -> dict[int, list[StoredSnapshot]]:
        """Every kept snapshot per series, newest first, without its bytes (see `load_blob`)."""
        out: dict[int, list[StoredSnapshot]] = {}
        async with self._db.execute(
            "SELECT id, series, seq, reason, river, sha256 FROM snapshots"
            " ORDER BY series, seq DESC, id DESC"
        ) as cur:
            async for r in cur:
                snap = StoredSnapshot(int(r[0]), int(r[1]), int(r[2]), r[3], r[4], r[5])
                out.setdefault(snap.series, []).append(snap)
        return out

    async def snapshots_of(self, series: int) -> list[StoredSnapshot]:
        async with self._db.execute(
            "SELECT id, series, seq, reason, river, sha256 FROM snapshots WHERE series = ?"
            " ORDER BY seq DESC, id DESC",
            (series,),
        ) as cur:
            return [
                StoredSnapshot(int(r[0]), int(r[1]), int(r[2]), r[3], r[4], r[5]) async for r in cur
            ]

    async def load_blob(self, snapshot_id: int) -> bytes:
        async with self._db.execute(
            "SELECT CAST(blob AS BLOB) FROM snapshots WHERE id = ?", (snapshot_id,)
        ) as cur:
            row = await cur.fetchone()
        return bytes(row[0]) if row else b""

    async def recent_samples(
        self, series: int, limit: int, upto: int | None = None
    ) -> list[StoredSample]:
        """The newest `limit` samples of a series up to seq `upto`, oldest first."""
        rows = await self._db.execute_fetchall(
            "SELECT seq, ts, x, y, label FROM samples WHERE series = ? AND seq <= ?"
            " ORDER BY seq DESC LIMIT ?",
            (series, 2**62 if upto is None else upto, limit),
        )
        return [_row(r) for r in reversed(list(rows))]

    async def replay_series(self, series: int, after: int) -> list[StoredSample]:
        """One series' samples after `after` (a rowid range scan from `after`)."""
        rows = await self._db.execute_fetchall(
            "SELECT seq, ts, x, y, label FROM samples WHERE seq > ? AND series = ? ORDER BY seq",
            (after, series),
        )
        return [_row(r) for r in rows]

    async def pending_commands(self) -> list[Command]:
        rows = await self._db.execute_fetchall(
            "SELECT id, kind, stream, key, args, blob FROM commands WHERE status = 'pending'"
            " ORDER BY id"
        )
        return [Command(int(r[0]), r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    async def max_version(self, series: int) -> int:
        async with self._db.execute(
            "SELECT COALESCE(MAX(version), 0) FROM models WHERE series = ?", (series,)
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def has_event(self, kind: str, stream: str, key: str, seq: int, ts: float) -> bool:
        """Whether this event is stored (found by its time, which the events index covers)."""
        rows = await self._db.execute_fetchall(
            "SELECT 1 FROM events WHERE ts = ? AND kind = ? AND stream = ? AND key = ?"
            " AND seq = ? LIMIT 1",
            (ts, kind, stream, key, seq),
        )
        return bool(list(rows))

    async def has_version(self, series: int, version: int) -> bool:
        rows = await self._db.execute_fetchall(
            "SELECT 1 FROM models WHERE series = ? AND version = ?", (series, version)
        )
        return bool(list(rows))

    async def version_blob(self, series: int, version: int) -> bytes | None:
        async with self._db.execute(
            "SELECT CAST(blob AS BLOB) FROM models WHERE series = ? AND version = ?",
            (series, version),
        ) as cur:
            row = await cur.fetchone()
        return bytes(row[0]) if row else None

    async def replay(
        self, after: dict[int, int], chunk: int = 5000
    ) -> AsyncIterator[tuple[str, str, StoredSample]]:
        """The samples of the series in `after` that follow `after[series]` (what the series'
        snapshot has learned), in learning order: stream, key and the row.
        """
        if not after:
            return
        names = {
            int(r[0]): (r[1], r[2])
            for r in await self._db.execute_fetchall("SELECT id, stream, key FROM series")
        }
        last = min(after.values())
        while True:
            rows = list(
                await self._db.execute_fetchall(
                    "SELECT seq, ts, x, y, label, series FROM samples WHERE seq > ?"
                    " ORDER BY seq LIMIT ?",
                    (last, chunk),
                )
            )
            if not rows:
                return
            for r in rows:
                series = r[5]
                if series in after and r[0] > after[series]:
                    stream, key = names[series]
                    yield stream, key, _row(r)
            last = int(rows[-1][0])

    # -- writing --------------------------------------------------------------------

    async def write(self, batch: Batch) -> None:
        """Write a batch in one transaction: one executemany per table, then commit.

        On any error the transaction is rolled back, so nothing of the batch is stored and
        the same batch can be written again; DiskFull when it failed for want of space.
        """
        try:
            self.pruned += await write_batch(self._db, batch, self.keep_snapshots)
        except (sqlite3.Error, OSError) as exc:
            await self._rollback()
            raise _error(self.path, "write failed", exc) from exc
        if batch.prune_before is not None and await self._free_pages():
            try:
                await vacuum(self._db)
            except sqlite3.Error as exc:
                # The batch is committed; the pages retention freed stay in the file (reused
                # by the next inserts) until a later vacuum gets the WAL space it needs.
                log.warning("vacuum_failed", db=str(self.path), error=str(exc))

    async def _free_pages(self) -> int:
        """Pages retention freed (a vacuum with none to hand back would still write)."""
        async with self._db.execute("PRAGMA freelist_count") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _rollback(self) -> None:
        try:
            await self._db.rollback()
        except sqlite3.Error as exc:
            log.warning("rollback_failed", db=str(self.path), error=str(exc))
