"""Each stream/key's past for plots: its error per time bucket and what happened to its model.

Read-only, plain sqlite3 like `queries`: `edgeml report` and `edgeml plot` draw what this
returns. However long the log, a stream/key comes back as at most `points` buckets, computed
by SQLite in one pass over the samples.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeml.errors import StoreError
from edgeml.store.queries import connect_readonly

__all__ = ["ERROR_NAMES", "MARK_KINDS", "Bucket", "History", "Mark", "read_history"]

# What a bucket's `error` is, per task: the mean of the loss the drift detector watches.
ERROR_NAMES = {
    "regression": "mean absolute error",
    "forecast": "mean absolute error of the forecast",
    "classification": "error rate (1 - accuracy)",
    "anomaly": "mean anomaly score",
}

# The events drawn as marks on the error: what the drift detector and the registry did.
MARK_KINDS = ("drift", "retrain", "promotion", "import", "rollback", "challenger_dropped", "guard")


@dataclass(frozen=True, slots=True)
class Bucket:
    ts: float  # the middle of the bucket (sample time)
    samples: int  # predictions served in it
    error: float | None  # the mean loss of those that could be scored
    flagged: int  # anomaly flags
    truth: int  # samples whose label says they are anomalies (ground truth)


@dataclass(frozen=True, slots=True)
class Mark:
    ts: float
    kind: str  # one of MARK_KINDS
    text: str  # one line for a person


@dataclass(frozen=True)
class History:
    stream: str
    key: str
    task: str
    version: int | None  # the champion's, from the summary
    buckets: list[Bucket]
    marks: list[Mark]

    @property
    def name(self) -> str:
        return f"{self.stream}/{self.key}"

    @property
    def error_name(self) -> str:
        return ERROR_NAMES.get(self.task, "mean error")


def read_history(
    path: Path,
    stream: str | None = None,
    key: str | None = None,
    since: float | None = None,
    points: int = 300,
) -> list[History]:
    """Every stream/key (or those asked for), ordered by stream and key."""
    conn = connect_readonly(path)
    try:
        return _read(conn, stream, key, since, max(points, 1))
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read the history: {exc}") from exc
    finally:
        conn.close()


def _read(
    conn: sqlite3.Connection, stream: str | None, key: str | None, since: float | None, points: int
) -> list[History]:
    if conn.execute("PRAGMA user_version").fetchone()[0] < 4:
        return []  # a state file the daemon has not opened yet holds no readings either
    series = conn.execute(
        "SELECT r.id, r.stream, r.key, r.task, m.model_version FROM series r"
        " LEFT JOIN summary m ON m.series = r.id"
        " WHERE (? IS NULL OR r.stream = ?) AND (? IS NULL OR r.key = ?)"
        " ORDER BY r.stream, r.key",
        (stream, stream, key, key),
    ).fetchall()
    if not series:
        return []
    ids = [r["id"] for r in series]
    marks = ",".join("?" * len(ids))
    start = since if since is not None else float("-inf")
    first, last = conn.execute(
        f"SELECT min(ts), max(ts) FROM samples WHERE series IN ({marks}) AND ts >= ?",
        (*ids, start),
    ).fetchone()
    buckets: dict[int, list[Bucket]] = {i: [] for i in ids}
    if first is not None:
        width = (last - first) / points or 1.0
        rows = conn.execute(
            "SELECT s.series, min(CAST((s.ts - ?) / ? AS INTEGER), ?) AS b, count(*),"
            # An anomaly prediction has a flag and no loss: its score is the line drawn.
            " avg(coalesce(p.error, CASE WHEN p.flag IS NOT NULL THEN p.y_pred END)),"
            " sum(coalesce(p.flag, 0)),"
            " sum(CASE WHEN s.label IN ('true', '1') THEN 1 ELSE 0 END)"
            f" FROM samples s JOIN predictions p ON p.seq = s.seq"
            f" WHERE s.series IN ({marks}) AND s.ts >= ?"
            " GROUP BY s.series, b ORDER BY s.series, b",
            (first, width, points - 1, *ids, first),
        )
        for sid, b, n, error, flagged, truth in rows:
            buckets[sid].append(Bucket(first + (b + 0.5) * width, n, error, flagged, truth))
    by_series: dict[tuple[str, str], list[Mark]] = {(r["stream"], r["key"]): [] for r in series}
    kinds = ",".join("?" * len(MARK_KINDS))
    for ts, kind, s, k, data in conn.execute(
        f"SELECT ts, kind, stream, key, data FROM events WHERE kind IN ({kinds})"
        " AND ts >= ? AND (? IS NULL OR stream = ?) AND (? IS NULL OR key = ?) ORDER BY ts, id",
        (*MARK_KINDS, start, stream, stream, key, key),
    ):
        if (s, k) in by_series:
            by_series[(s, k)].append(Mark(ts, kind, describe(kind, json.loads(data))))
    return [
        History(
            r["stream"],
            r["key"],
            r["task"],
            r["model_version"],
            buckets[r["id"]],
            by_series[(r["stream"], r["key"])],
        )
        for r in series
    ]


def _g(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def describe(kind: str, data: dict[str, Any]) -> str:
    """One line for a mark, from the event's own figures."""
    if kind == "drift":
        return f"drift: mean error {_g(data.get('mean_error'))} over the last {data.get('width')}"
    if kind == "retrain":
        return (
            f"retrain ({data.get('trigger')}): a challenger warm-started on "
            f"{data.get('warm_start')} samples"
        )
    if kind == "challenger_dropped":
        return (
            f"challenger dropped after {data.get('samples')} samples: loss "
            f"{_g(data.get('challenger_loss'))} vs {_g(data.get('champion_loss'))}"
        )
    if kind == "guard":
        return "guard: a non-finite prediction, the last good version comes back"
    text = f"{kind}: v{data.get('parent')} -> v{data.get('version')} ({data.get('reason')})"
    if "t" in data:
        text += (
            f", loss {_g(data.get('challenger_loss'))} vs {_g(data.get('champion_loss'))}"
            f" (t={_g(data.get('t'))})"
        )
    return text
