"""The `edgeml status` view (rich), once or live with `--watch`; rendering is pure."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from edgeml.store.queries import read_events, read_status

__all__ = ["History", "render", "watch"]

_BARS = "▁▂▃▄▅▆▇█"
HISTORY = 16  # refreshes of rolling error kept per stream/key for the sparkline


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    s = max(0.0, now - ts)
    if s < 60:
        return f"{s:.0f}s ago"
    if s < 3600:
        return f"{s / 60:.0f}m ago"
    if s < 86400:
        return f"{s / 3600:.1f}h ago"
    return f"{s / 86400:.1f}d ago"


def num(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    return "".join(_BARS[min(7, int((v - lo) / span * 8))] for v in values)


# Per task: the cumulative metric shown (its label) and the rolling one.
_METRICS = {
    "regression": ("mae", "mae", "rolling_mae"),
    "forecast": ("mae", "mae", "rolling_mae"),
    "classification": ("accuracy", "acc", "rolling_accuracy"),
    "anomaly": ("anomaly_rate", "rate", "anomaly_rate"),
}


def _rolling(s: dict[str, Any]) -> float | None:
    value = s["metrics"].get(_METRICS.get(s["task"], _METRICS["regression"])[2])
    return None if value is None else float(value)


class History:
    """Rolling error per stream/key over the refreshes of one `--watch` session."""

    def __init__(self) -> None:
        self.errors: dict[tuple[str, str], deque[float]] = {}

    def add(self, doc: dict[str, Any]) -> None:
        for s in doc["streams"]:
            value = _rolling(s)
            if value is not None:
                self.errors.setdefault((s["stream"], s["key"]), deque(maxlen=HISTORY)).append(value)

    def of(self, stream: str, key: str) -> list[float]:
        return list(self.errors.get((stream, key), ()))


def render(
    doc: dict[str, Any],
    now: float,
    history: History | None = None,
    last_drift: dict[tuple[str, str], float] | None = None,
) -> RenderableType:
    """The daemon's health, then a row per stream/key; colours: green ok, yellow look, red bad."""
    parts = _daemon_lines(doc["daemon"], now)
    if not doc["streams"]:
        parts.append(Text("no stream has learned anything yet"))
        return Group(*parts)
    parts.append(_table(doc["streams"], now, history, last_drift))
    for s in doc["streams"]:
        c = s.get("challenger")
        if c:
            parts.append(
                Text.from_markup(
                    f"[cyan]challenger[/] {s['stream']}/{s['key']}: {c['samples']}/{c['grace']} "
                    f"samples of grace, t {num(c['t'])}, started by {c['trigger']}"
                )
            )
        if s.get("anomalies_1h"):
            parts.append(
                Text.from_markup(
                    f"[red]anomalies[/] {s['stream']}/{s['key']}: "
                    f"{s['anomalies_1h']} in the last hour"
                )
            )
    return Group(*parts)


def _daemon_lines(d: dict[str, Any], now: float) -> list[RenderableType]:
    if "pid" not in d:
        return [Text.from_markup("daemon: [yellow]never ran[/] with this state directory")]
    broker = "[green]connected[/]" if d["broker_connected"] else f"[yellow]{d['broker']}[/]"
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(d["rejected_by_reason"].items()))
    per_sample = d["bytes_per_sample"]
    if d["running"]:
        health = (
            f"daemon: [green]running[/]  pid {d['pid']}  node {d['node']}  "
            f"up {d['uptime_s']:.0f}s  broker {broker}  last beat {ago(d['last_beat'], now)}"
        )
    elif d.get("stopped") is not None:
        health = (
            f"daemon: [yellow]stopped[/] {ago(d['stopped'], now)} (a clean stop)  "
            f"node {d['node']}  ran {d['uptime_s']:.0f}s"
        )
    else:
        health = (
            f"daemon: [red]not running[/]: pid {d['pid']} ended without a clean stop (killed "
            f"or crashed), last beat {ago(d['last_beat'], now)}  node {d['node']}"
        )
    return [
        Text.from_markup(health),
        Text.from_markup(
            f"received {d['received']}  learned {d['learned']}  "
            + (f"[yellow]rejected {d['rejected']} ({reasons})[/]" if reasons else "rejected 0")
            + f"  rate {d['rate']:.1f}/s"
            + (f"  {per_sample:.0f} B written/sample" if per_sample else "")
        ),
    ]


def _table(
    streams: list[dict[str, Any]],
    now: float,
    history: History | None,
    last_drift: dict[tuple[str, str], float] | None,
) -> Table:
    # No vertical rules and one space between columns: the view must fit 80 columns over SSH.
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    longest = max(len(f"{s['stream']}/{s['key']}") for s in streams)
    table.add_column("stream/key", no_wrap=True, min_width=min(longest, 40))
    # Live, the rolling error and its trend say more than the cumulative figures.
    columns = ["samples", "seen", "ver", "rolling", "trend"] if history is not None else [
        "samples", "seen", "ver", "metric", "rolling"]  # fmt: skip
    columns += ["drifts", "last drift"] if last_drift is not None else ["drifts"]
    for col in columns:
        table.add_column(col, justify="left" if col == "trend" else "right", no_wrap=True)
    for s in streams:
        table.add_row(*_row(s, now, history, last_drift))
    return table


def _row(
    s: dict[str, Any],
    now: float,
    history: History | None,
    last_drift: dict[tuple[str, str], float] | None,
) -> list[str]:
    stale = s["last_seen"] is not None and now - s["last_seen"] > 300
    row = [
        f"{s['stream']}/{s['key']}",
        str(s["samples"]),
        f"[yellow]{ago(s['last_seen'], now)}[/]" if stale else ago(s["last_seen"], now),
        # "+c": a challenger is in its grace period (details below the table)
        f"{s['model_version']}[cyan]+c[/]" if s.get("challenger") else str(s["model_version"]),
    ]
    if history is not None:
        row += [num(_rolling(s)), f"[cyan]{sparkline(history.of(s['stream'], s['key']))}[/]"]
    else:
        key, label, _ = _METRICS.get(s["task"], _METRICS["regression"])
        row += [f"{label} {num(s['metrics'].get(key))}", num(_rolling(s))]
    row.append(str(s["drifts"]) if not s["drifts"] else f"[yellow]{s['drifts']}[/]")
    if last_drift is not None:
        when = last_drift.get((s["stream"], s["key"]))
        recent = when is not None and now - when < 3600
        row.append(f"[yellow]{ago(when, now)}[/]" if recent else ago(when, now))
    return row


def _last_drifts(db: Path) -> dict[tuple[str, str], float]:
    last: dict[tuple[str, str], float] = {}
    for e in read_events(db, ["drift"], limit=1000):
        last.setdefault((e["stream"], e["key"]), e["ts"])
    return last


def snapshot_view(db: Path, history: History) -> RenderableType:
    doc = read_status(db)
    history.add(doc)
    return render(doc, time.time(), history, _last_drifts(db))


def watch(db: Path, interval: float = 1.0) -> None:
    """Refresh the view every `interval` seconds until Ctrl-C."""
    history = History()
    with Live(snapshot_view(db, history), auto_refresh=False, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(snapshot_view(db, history), refresh=True)
        except KeyboardInterrupt:
            pass
