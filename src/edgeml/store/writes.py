"""One batch, one transaction: the rows of every table the engine filled, then a commit."""

from __future__ import annotations

import hashlib
import json
import time

import aiosqlite

from edgeml.core.batch import Batch, Heartbeat, Snapshot

__all__ = ["PRUNE_SLICE", "vacuum", "write_batch"]

# Retention deletes at most this many samples per commit, so the daemon never stalls on it.
PRUNE_SLICE = 2000

# The plain inserts and updates: a batch field and the statement its rows fill in order.
_PLAIN = (
    ("series", "INSERT INTO series(id, stream, key, task, created) VALUES (?,?,?,?,?)"),
    (
        "samples",
        "INSERT INTO samples(seq, series, ts, x, y, mid, hash, label) VALUES (?,?,?,?,?,?,?,?)",
    ),
    (
        "predictions",
        "INSERT INTO predictions(seq, y_pred, error, model_version, label, flag)"
        " VALUES (?,?,?,?,?,?)",
    ),
    ("events", "INSERT INTO events(ts, kind, stream, key, seq, data) VALUES (?,?,?,?,?,?)"),
    (
        "summary",
        "INSERT OR REPLACE INTO summary(series, samples, last_seen, model_version, metrics,"
        " drifts, updated, challenger, failing) VALUES (?,?,?,?,?,?,?,?,?)",
    ),
)
# OR IGNORE: a replay from an older snapshot (a fallback) makes the same promotion again.
# `event` is the drift that caused it, found by its seq.
_VERSION = (
    "INSERT OR IGNORE INTO models(series, version, created, reason, parent, metrics, river,"
    " size, sha256, blob, event) VALUES (?,?,?,?,?,?,?,?,?,?,"
    " (SELECT MAX(id) FROM events WHERE kind = 'drift' AND seq = ?"
    "  AND stream = (SELECT stream FROM series WHERE id = ?)))"
)
_RETIRED = "UPDATE models SET blob = ?, size = ?, sha256 = ? WHERE series = ? AND version = ?"
_COMMAND = "UPDATE commands SET status = ?, result = ?, applied = ? WHERE id = ?"


async def write_batch(db: aiosqlite.Connection, batch: Batch, keep_snapshots: int) -> int:
    """Write a batch in one transaction and commit; returns the samples retention deleted.

    sqlite3.Error propagates: the store wraps it with the file's name.
    """
    for name, sql in _PLAIN:
        rows = getattr(batch, name)
        if rows:
            await db.executemany(sql, rows)
    if batch.snapshots:
        await _snapshots(db, batch.snapshots, keep_snapshots)
    if batch.versions:
        await db.executemany(
            _VERSION,
            [(*v[:7], len(v.blob), _sha256(v.blob), v.blob, v.drift_seq, v.series)
             for v in batch.versions],
        )  # fmt: skip
    if batch.retired:
        await db.executemany(
            _RETIRED,
            [(r.blob, len(r.blob), _sha256(r.blob), r.series, r.version) for r in batch.retired],
        )
    if batch.command_results:
        await db.executemany(_COMMAND, batch.command_results)
    if batch.heartbeat is not None:
        await _heartbeat(db, batch.heartbeat)
    pruned = 0
    if batch.prune_before is not None:
        pruned = await _prune(db, batch.prune_before)
    await db.commit()
    return pruned


async def vacuum(db: aiosqlite.Connection) -> None:
    """Hand pages that retention freed back to the file system, a slice at a time (after the
    commit of a pruning batch: it needs WAL space of its own, which a full disk lacks).
    """
    # executescript steps the pragma to the end; execute() frees a single page.
    await db.executescript(f"PRAGMA incremental_vacuum({PRUNE_SLICE});")


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


async def _prune(db: aiosqlite.Connection, before: float) -> int:
    """Delete one slice of samples older than `before` that every kept snapshot of their
    stream/key has learned (so a fallback to the oldest snapshot still finds its replay),
    their predictions, and old events. Returns the samples deleted.
    """
    rows = await db.execute_fetchall(
        "SELECT s.seq FROM samples s WHERE s.ts < ? AND s.seq <= COALESCE("
        " (SELECT MIN(n.seq) FROM snapshots n WHERE n.series = s.series), 0)"
        " ORDER BY s.seq LIMIT ?",
        (before, PRUNE_SLICE),
    )
    seqs = [(r[0],) for r in rows]
    if seqs:
        await db.executemany("DELETE FROM samples WHERE seq = ?", seqs)
        await db.executemany("DELETE FROM predictions WHERE seq = ?", seqs)
    await db.execute(
        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ? LIMIT ?)",
        (before, PRUNE_SLICE),
    )
    return len(seqs)


async def _snapshots(db: aiosqlite.Connection, snaps: list[Snapshot], keep: int) -> None:
    await db.executemany(
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
    await db.executemany(
        "DELETE FROM snapshots WHERE series = ? AND id NOT IN"
        " (SELECT id FROM snapshots WHERE series = ? ORDER BY seq DESC, id DESC LIMIT ?)",
        [(s.series, s.series, keep) for s in snaps],
    )


async def _heartbeat(db: aiosqlite.Connection, hb: Heartbeat) -> None:
    await db.execute(
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
