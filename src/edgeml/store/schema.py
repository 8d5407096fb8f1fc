"""The SQLite schema of the one state file, and its migrations by PRAGMA user_version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edgeml.errors import StoreError

__all__ = ["SCHEMA_VERSION", "migrate"]

# Each entry migrates from user_version == index to index + 1.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE series(
        id INTEGER PRIMARY KEY,
        stream TEXT NOT NULL,
        key TEXT NOT NULL,
        task TEXT NOT NULL,
        created REAL NOT NULL,
        UNIQUE(stream, key)
    );
    -- The log: every decoded reading, in the order it was learned (seq).
    -- mid/hash identify the MQTT delivery, so a redelivery after a crash is not stored twice.
    CREATE TABLE samples(
        seq INTEGER PRIMARY KEY,
        series INTEGER NOT NULL REFERENCES series(id),
        ts REAL NOT NULL,
        x TEXT NOT NULL,
        y REAL,
        mid INTEGER,
        hash INTEGER
    );
    CREATE TABLE predictions(
        seq INTEGER PRIMARY KEY,
        y_pred REAL NOT NULL,
        error REAL,
        model_version INTEGER NOT NULL
    );
    CREATE TABLE events(
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        stream TEXT,
        key TEXT,
        seq INTEGER,
        data TEXT NOT NULL
    );
    CREATE INDEX events_ts ON events(ts);
    -- Live summary per stream/key, refreshed every few seconds.
    CREATE TABLE summary(
        series INTEGER PRIMARY KEY REFERENCES series(id),
        samples INTEGER NOT NULL,
        last_seen REAL,
        model_version INTEGER NOT NULL,
        metrics TEXT NOT NULL,
        drifts INTEGER NOT NULL,
        updated REAL NOT NULL
    );
    -- The daemon's heartbeat: one row.
    CREATE TABLE daemon(
        id INTEGER PRIMARY KEY CHECK (id = 1),
        pid INTEGER NOT NULL,
        node TEXT NOT NULL,
        version TEXT NOT NULL,
        started REAL NOT NULL,
        last_beat REAL NOT NULL,
        stopped REAL,
        broker TEXT NOT NULL,
        received INTEGER NOT NULL,
        rejected TEXT NOT NULL,
        learned INTEGER NOT NULL,
        rate REAL NOT NULL,
        bytes_written INTEGER
    );
    """,
    """
    -- Checkpoints of each stream/key's learner: the samples after `seq` are replayed on start.
    CREATE TABLE snapshots(
        id INTEGER PRIMARY KEY,
        series INTEGER NOT NULL REFERENCES series(id),
        seq INTEGER NOT NULL,
        created REAL NOT NULL,
        reason TEXT NOT NULL,
        model_version INTEGER NOT NULL,
        river TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        blob BLOB NOT NULL
    );
    CREATE INDEX snapshots_series ON snapshots(series, seq);
    """,
    """
    -- The registry: every model version of every stream/key and its lineage. `blob` is the
    -- pickled pipeline as the version was created, replaced by its final state when another
    -- version takes its place; the champion's live state is in its newest snapshot.
    CREATE TABLE models(
        id INTEGER PRIMARY KEY,
        series INTEGER NOT NULL REFERENCES series(id),
        version INTEGER NOT NULL,
        created REAL NOT NULL,
        reason TEXT NOT NULL,
        parent INTEGER,
        event INTEGER,
        metrics TEXT NOT NULL,
        river TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        blob BLOB NOT NULL,
        UNIQUE(series, version)
    );
    -- The control channel: the CLI inserts, the daemon applies and writes the result.
    CREATE TABLE commands(
        id INTEGER PRIMARY KEY,
        created REAL NOT NULL,
        kind TEXT NOT NULL,
        stream TEXT NOT NULL,
        key TEXT NOT NULL,
        args TEXT NOT NULL,
        blob BLOB,
        status TEXT NOT NULL DEFAULT 'pending',
        result TEXT,
        applied REAL
    );
    """,
    """
    -- Learning engine: class labels and anomaly ground truth (JSON), predicted classes and
    -- anomaly flags, and the challenger in its grace period per stream/key.
    ALTER TABLE samples ADD COLUMN label TEXT;
    ALTER TABLE predictions ADD COLUMN label TEXT;
    ALTER TABLE predictions ADD COLUMN flag INTEGER;
    ALTER TABLE summary ADD COLUMN challenger TEXT;
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema version {version} is newer than this edgeml understands "
            f"({SCHEMA_VERSION}); upgrade edgeml"
        )
    for target in range(version, SCHEMA_VERSION):
        # executescript commits first; the migration and its version bump commit together.
        script = _MIGRATIONS[target]
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {target + 1};\nCOMMIT;")


def create(path: Path) -> None:
    """Create (or migrate) the state file; synchronous, done before any connection opens.
    sqlite3.Error and OSError propagate.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=10) as conn:
        if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            # Only possible in a new, empty file: freed pages can then be handed back a few
            # at a time (PRAGMA incremental_vacuum) as retention prunes.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        migrate(conn, path)
    conn.close()
