"""The daemon's side of the SQLite file: the batched writer and what start-up reads back."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from edgeml.errors import StoreError
from edgeml.store.schema import migrate

__all__ = ["Batch", "Command", "Heartbeat", "Row", "Snapshot", "Store", "StoredSnapshot"]

# How many recent deliveries are remembered for redelivery detection: MQTT packet ids are
# 16-bit, so the broker cannot reuse one within the last 65,535 deliveries.
RECENT_DELIVERIES = 65535
# Retention deletes at most this many samples per commit, so the daemon never stalls on it.
PRUNE_SLICE = 2000


@dataclass(slots=True)
class Heartbeat:
    pid: int
    node: str
    version: str
    started: float
    broker: str
    received: int
    rejected: dict[str, int]
    learned: int
    rate: float
    bytes_written: int | None
    stopped: float | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A pickled learner of one series, as of sample `seq`."""

    series: int
    seq: int
    created: float
    reason: str
    model_version: int
    river: str
    blob: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.blob).hexdigest()


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


@dataclass(slots=True)
class Batch:
    """Rows produced by the learner since the last commit, written in one transaction."""

    series: list[tuple[Any, ...]] = field(default_factory=list)
    samples: list[tuple[Any, ...]] = field(default_factory=list)
    predictions: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    summary: list[tuple[Any, ...]] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    # Registry rows: new versions (series, version, created, reason, parent, metrics, river,
    # blob, seq of the drift that caused it or None), final states of retired versions
    # (blob, series, version), command results.
    versions: list[tuple[Any, ...]] = field(default_factory=list)
    retired: list[tuple[Any, ...]] = field(default_factory=list)
    command_results: list[tuple[Any, ...]] = field(default_factory=list)
    heartbeat: Heartbeat | None = None
    # Prune samples, predictions and events older than this (epoch s), a slice at a time.
    prune_before: float | None = None
    # (mid, qos, connection generation) of every MQTT message the batch accounts for.
    acks: list[tuple[int, int, int]] = field(default_factory=list)
    first_added: float = 0.0
    number: int = 0  # batches are numbered in the order they are taken

    def __len__(self) -> int:
        """Messages (or samples, when one message feeds several streams) in the batch."""
        return max(len(self.acks), len(self.samples))

    @property
    def empty(self) -> bool:
        return not (
            self.series
            or self.samples
            or self.events
            or self.summary
            or self.snapshots
            or self.versions
            or self.command_results
            or self.acks
            or self.heartbeat
        )


# A stored sample: seq, ts, x, y (None for labels-only tasks), label (None when absent).
Row = tuple[int, float, dict[str, float], float | None, Any]


def _row(r: Any) -> Row:
    return (
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
    async def open(cls, path: Path, keep_snapshots: int = 3) -> Store:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Schema work is synchronous and done once, before the async connection opens.
            with sqlite3.connect(path, timeout=10) as conn:
                if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                    # Only possible in a new, empty file: freed pages can then be handed back
                    # a few at a time (PRAGMA incremental_vacuum) as retention prunes.
                    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                conn.execute("PRAGMA journal_mode=WAL")
                migrate(conn, path)
            conn.close()
            db = await aiosqlite.connect(path, timeout=10)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the database: {exc}") from exc
        try:
            # NORMAL in WAL mode: a power cut can lose the last commits, never corrupt the file;
            # the messages of those commits were not acknowledged yet, so the broker resends them.
            await db.execute("PRAGMA synchronous=NORMAL")
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

    async def recent_samples(self, series: int, limit: int, upto: int | None = None) -> list[Row]:
        """The newest `limit` samples of a series up to seq `upto`, oldest first."""
        rows = await self._db.execute_fetchall(
            "SELECT seq, ts, x, y, label FROM samples WHERE series = ? AND seq <= ?"
            " ORDER BY seq DESC LIMIT ?",
            (series, 2**62 if upto is None else upto, limit),
        )
        return [_row(r) for r in reversed(list(rows))]

    async def replay_series(self, series: int, after: int) -> list[Row]:
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
    ) -> AsyncIterator[tuple[str, str, Row]]:
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
        """Write a batch in one transaction: one executemany per table, then commit."""
        db = self._db
        try:
            if batch.series:
                await db.executemany(
                    "INSERT INTO series(id, stream, key, task, created) VALUES (?,?,?,?,?)",
                    batch.series,
                )
            if batch.samples:
                await db.executemany(
                    "INSERT INTO samples(seq, series, ts, x, y, mid, hash, label)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    batch.samples,
                )
            if batch.predictions:
                await db.executemany(
                    "INSERT INTO predictions(seq, y_pred, error, model_version, label, flag)"
                    " VALUES (?,?,?,?,?,?)",
                    batch.predictions,
                )
            if batch.events:
                await db.executemany(
                    "INSERT INTO events(ts, kind, stream, key, seq, data) VALUES (?,?,?,?,?,?)",
                    batch.events,
                )
            if batch.summary:
                await db.executemany(
                    "INSERT OR REPLACE INTO summary(series, samples, last_seen, model_version,"
                    " metrics, drifts, updated, challenger) VALUES (?,?,?,?,?,?,?,?)",
                    batch.summary,
                )
            if batch.snapshots:
                await self._snapshots(batch.snapshots)
            if batch.versions:
                # OR IGNORE: a replay from an older snapshot (a fallback) makes the same
                # promotion again. `event` is the drift that caused it, found by its seq.
                await db.executemany(
                    "INSERT OR IGNORE INTO models(series, version, created, reason, parent,"
                    " metrics, river, size, sha256, blob, event) VALUES (?,?,?,?,?,?,?,?,?,?,"
                    " (SELECT MAX(id) FROM events WHERE kind = 'drift' AND seq = ?"
                    "  AND stream = (SELECT stream FROM series WHERE id = ?)))",
                    [
                        (*v[:7], len(v[7]), hashlib.sha256(v[7]).hexdigest(), v[7], v[8], v[0])
                        for v in batch.versions
                    ],
                )
            if batch.retired:
                await db.executemany(
                    "UPDATE models SET blob = ?, size = ?, sha256 = ?"
                    " WHERE series = ? AND version = ?",
                    [
                        (b, len(b), hashlib.sha256(b).hexdigest(), series, version)
                        for b, series, version in batch.retired
                    ],
                )
            if batch.command_results:
                await db.executemany(
                    "UPDATE commands SET status = ?, result = ?, applied = ? WHERE id = ?",
                    batch.command_results,
                )
            if batch.heartbeat is not None:
                await self._heartbeat(batch.heartbeat)
            if batch.prune_before is not None:
                self.pruned += await self._prune(batch.prune_before)
            await db.commit()
            if batch.prune_before is not None:
                # executescript steps the pragma to the end; execute() frees a single page.
                await db.executescript(f"PRAGMA incremental_vacuum({PRUNE_SLICE});")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: write failed: {exc}") from exc

    async def _prune(self, before: float) -> int:
        """Delete one slice of samples older than `before` that every kept snapshot of their
        stream/key has learned (so a fallback to the oldest snapshot still finds its replay),
        their predictions, and old events. Returns the samples deleted.
        """
        rows = await self._db.execute_fetchall(
            "SELECT s.seq FROM samples s WHERE s.ts < ? AND s.seq <= COALESCE("
            " (SELECT MIN(n.seq) FROM snapshots n WHERE n.series = s.series), 0)"
            " ORDER BY s.seq LIMIT ?",
            (before, PRUNE_SLICE),
        )
        seqs = [(r[0],) for r in rows]
        if seqs:
            await self._db.executemany("DELETE FROM samples WHERE seq = ?", seqs)
            await self._db.executemany("DELETE FROM predictions WHERE seq = ?", seqs)
        await self._db.execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ? LIMIT ?)",
            (before, PRUNE_SLICE),
        )
        return len(seqs)

    async def _snapshots(self, snaps: list[Snapshot]) -> None:
        await self._db.executemany(
            "INSERT INTO snapshots(series, seq, created, reason, model_version, river, size,"
            " sha256, blob) VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (
                    s.series,
                    s.seq,
                    s.created,
                    s.reason,
                    s.model_version,
                    s.river,
                    len(s.blob),
                    s.sha256,
                    s.blob,
                )
                for s in snaps
            ],
        )
        # Keep the newest few per series: an older one is the fallback if the newest is
        # unreadable, and the samples it needs are still in the log.
        await self._db.executemany(
            "DELETE FROM snapshots WHERE series = ? AND id NOT IN"
            " (SELECT id FROM snapshots WHERE series = ? ORDER BY seq DESC, id DESC LIMIT ?)",
            [(s.series, s.series, self.keep_snapshots) for s in snaps],
        )

    async def _heartbeat(self, hb: Heartbeat) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO daemon(id, pid, node, version, started, last_beat, stopped,"
            " broker, received, rejected, learned, rate, bytes_written)"
            " VALUES (1,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                hb.pid,
                hb.node,
                hb.version,
                hb.started,
                time.time(),
                hb.stopped,
                hb.broker,
                hb.received,
                json.dumps(hb.rejected, sort_keys=True),
                hb.learned,
                hb.rate,
                hb.bytes_written,
            ),
        )
