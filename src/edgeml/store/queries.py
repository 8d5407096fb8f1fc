"""Read-only queries for the CLI: plain sqlite3 (no event loop), safe while the daemon writes."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeml.errors import StoreError
from edgeml.store.schema import SCHEMA_VERSION

__all__ = [
    "DISK_FILE",
    "EVENT_KINDS",
    "PROMOTIONS",
    "STALE_AFTER_S",
    "connect_readonly",
    "free_bytes",
    "read_events",
    "read_status",
]

# A daemon whose heartbeat is older than this is reported as not running. An idle daemon
# writes one only every 30 minutes (daemon.service.IDLE_BEAT_S): an SD card lasts longer.
STALE_AFTER_S = 4500.0
# The disk's state as the daemon sees it, beside edgeml.db (daemon/disk.py writes it). While
# the disk is full the heartbeat cannot be written, but this file is rewritten in place at
# every retry (at least every 15 s): the daemon counts as running while it is fresh.
DISK_FILE = "disk.json"
DISK_STALE_AFTER_S = 45.0


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the file system that holds `path`."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def connect_readonly(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise StoreError(f"{path}: no database yet (has `edgeml run` started with this config?)")
    try:
        try:
            conn, version = _open_readonly(path, "mode=ro")
        except sqlite3.OperationalError as exc:
            # A WAL reader needs the -shm file. While the daemon runs, a reader in its group
            # uses it read-only; once the daemon has stopped, SQLite has removed it, and a
            # reader who may not write the state directory (an operator in group edgeml)
            # cannot create it. With no -wal file everything is in the main file: read that.
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_READONLY_DIRECTORY" or (
                path.with_name(path.name + "-wal").exists()
            ):
                raise
            conn, version = _open_readonly(path, "mode=ro&immutable=1")
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read the database: {exc}") from exc
    if version > SCHEMA_VERSION:
        conn.close()
        raise StoreError(
            f"{path}: schema version {version} is newer than this edgeml ({SCHEMA_VERSION})"
        )
    return conn


def _open_readonly(path: Path, params: str) -> tuple[sqlite3.Connection, int]:
    conn = sqlite3.connect(f"file:{path}?{params}", uri=True, timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=10000")
        return conn, conn.execute("PRAGMA user_version").fetchone()[0]
    except BaseException:
        conn.close()
        raise


def _pid_alive(pid: int, started: float | None = None) -> bool:
    """Whether process `pid` runs, and (given when the daemon started) is that daemon, not a
    process that got its number since.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started is None:
        return True
    try:
        btime = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        ticks = float(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, StopIteration, IndexError, ValueError):
        return True  # no /proc here: the signal check must do
    return btime + ticks / os.sysconf("SC_CLK_TCK") <= started + 2.0


def read_status(path: Path, now: float | None = None) -> dict[str, Any]:
    """The `edgeml status --json` document (a documented contract: extend, don't rename)."""
    now = time.time() if now is None else now
    conn = connect_readonly(path)
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] < 1:
            return {"daemon": {"running": False}, "streams": []}
        daemon = _daemon_status(conn, now, _disk_file(path))
        return {"daemon": daemon, "streams": _stream_status(conn, now)}
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read status: {exc}") from exc
    finally:
        conn.close()


def _disk_file(db: Path) -> dict[str, Any]:
    doc: Any = {}
    with contextlib.suppress(OSError, ValueError):
        doc = json.loads(db.with_name(DISK_FILE).read_text())
    return doc if isinstance(doc, dict) else {}


def _disk(db: Path, doc: dict[str, Any], pid: int, now: float) -> dict[str, Any]:
    """The `disk` key: `full` while a live daemon waits for space (the one of the heartbeat,
    or a newer one that could not write its first heartbeat), else `ok`; free_bytes is read
    now.
    """
    writer = doc.get("pid")
    full = (
        doc.get("state") == "full"
        and isinstance(writer, int)
        and now - float(doc.get("updated") or 0) < DISK_STALE_AFTER_S
        and _pid_alive(writer)
    )
    return {
        "state": "full" if full else "ok",
        "pid": writer if full else pid,
        "path": str(db),
        "free_bytes": free_bytes(db.parent),
        "since": doc.get("since") if full else None,
        "error": doc.get("error") if full else None,
        "retries": doc.get("retries", 0) if full else 0,
        "next_retry": doc.get("next_retry") if full else None,
        "full_episodes": doc.get("episodes", 0) if writer == pid else 0,
    }


def _daemon_status(
    conn: sqlite3.Connection, now: float, disk_doc: dict[str, Any]
) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM daemon WHERE id = 1").fetchone()
    if row is None:
        return {"running": False}
    rejected = json.loads(row["rejected"])
    db = Path(conn.execute("PRAGMA database_list").fetchone()[2])
    disk = _disk(db, disk_doc, row["pid"], now)
    running = disk["state"] == "full" or (
        row["stopped"] is None
        and now - row["last_beat"] < STALE_AFTER_S
        and _pid_alive(row["pid"], row["started"])
    )
    learned, written = row["learned"], row["bytes_written"]
    return {
        "running": running,
        "pid": row["pid"],
        "node": row["node"],
        "version": row["version"],
        "started": row["started"],
        "uptime_s": round((now if running else row["last_beat"]) - row["started"], 1),
        "last_beat": row["last_beat"],
        "stopped": row["stopped"],
        "broker": row["broker"] if running else "disconnected",
        "broker_connected": running and row["broker"] == "connected",
        "received": row["received"],
        "rejected": sum(rejected.values()),
        "rejected_by_reason": rejected,
        "learned": learned,
        "rate": row["rate"] if running else 0.0,
        "bytes_written": written,
        "bytes_per_sample": round(written / learned, 1)
        if written is not None and learned
        else None,
        "disk": disk,
    }


def _stream_status(conn: sqlite3.Connection, now: float) -> list[dict[str, Any]]:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    challenger = "m.challenger" if version >= 4 else "NULL"
    failing = "m.failing" if version >= 5 else "NULL"
    anomalies = {
        (r[0], r[1]): r[2]
        for r in conn.execute(
            # Episodes that began in the last hour (an alert before episodes had no type).
            "SELECT stream, key, count(*) FROM events WHERE kind = 'anomaly' AND ts >= ?"
            " AND COALESCE(json_extract(data, '$.type'), 'new') = 'new' GROUP BY stream, key",
            (now - 3600,),
        )
    }
    return [
        {
            "stream": r["stream"],
            "key": r["key"],
            "task": r["task"],
            "samples": r["samples"],
            "last_seen": r["last_seen"],
            "model_version": r["model_version"],
            "metrics": json.loads(r["metrics"]),
            "drifts": r["drifts"],
            # The challenger in its grace period: since_seq, samples, grace, trigger, t.
            "challenger": json.loads(r["challenger"]) if r["challenger"] else None,
            # A model raising on every reading: {"readings": in a row, "error": ...}, else None.
            "failing": json.loads(r["failing"]) if r["failing"] else None,
            "anomalies_1h": anomalies.get((r["stream"], r["key"]), 0),
        }
        for r in conn.execute(
            "SELECT r.stream, r.key, r.task, m.samples, m.last_seen, m.model_version, m.metrics,"
            f" m.drifts, {challenger} AS challenger, {failing} AS failing"
            " FROM series r JOIN summary m"
            " ON m.series = r.id ORDER BY r.stream, r.key"
        )
    ]


# Every kind of event the daemon records (`edgeml events --kind`).
EVENT_KINDS = (
    "drift",
    "retrain",
    "promotion",
    "import",
    "rollback",
    "challenger_dropped",
    "guard",
    "anomaly",
    "reject",
    "silent",
    "back",
)
# `edgeml events --kind promotion` means every kind of event that makes a new model version.
PROMOTIONS = ("promotion", "import", "rollback")


def read_events(
    path: Path,
    kinds: Sequence[str] = (),
    stream: str | None = None,
    since: float | None = None,
    limit: int = 100,
    key: str | None = None,
    until: float | None = None,
) -> list[dict[str, Any]]:
    """The event history, newest first (the `edgeml events --json` document), of `kinds`
    (all when empty), one stream and key, and a time window, when given.
    """
    conn = connect_readonly(path)
    try:
        wanted = list(kinds)
        marks = ",".join("?" * len(wanted))
        rows = conn.execute(
            "SELECT id, ts, kind, stream, key, seq, data FROM events WHERE"
            f" ({'1' if not wanted else f'kind IN ({marks})'})"
            " AND (? IS NULL OR stream = ?) AND (? IS NULL OR key = ?)"
            " AND (? IS NULL OR ts >= ?) AND (? IS NULL OR ts < ?)"
            " ORDER BY ts DESC, id DESC LIMIT ?",
            (*wanted, stream, stream, key, key, since, since, until, until, limit),
        ).fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read events: {exc}") from exc
    finally:
        conn.close()
    return [
        {
            "id": r["id"],
            "ts": r["ts"],
            "kind": r["kind"],
            "stream": r["stream"],
            "key": r["key"],
            "seq": r["seq"],
            "data": json.loads(r["data"]),
        }
        for r in rows
    ]
