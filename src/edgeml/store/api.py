"""Read-only queries of the HTTP API that the CLI has no use for (plain sqlite3, like
`queries`): the event log filtered by time window, stream and key.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeml.errors import StoreError
from edgeml.store.queries import connect_readonly

__all__ = ["read_event_window"]


def read_event_window(
    path: Path,
    kinds: Sequence[str] = (),
    stream: str | None = None,
    key: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Events newest first, as `edgeml events --json` has them, between `since` and `until`."""
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
