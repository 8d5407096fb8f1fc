"""The `edgeml status` view (rich), once or live with `--watch`; rendering is pure."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.markup import escape
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
    parts.append(_Table(doc["streams"], now, history, last_drift))
    for s in doc["streams"]:
        c = s.get("challenger")
        if c:
            parts.append(
                Text.from_markup(
                    f"[cyan]challenger[/] {s['stream']}/{s['key']}: {c['samples']}/{c['grace']} "
                    f"samples of grace, t {num(c['t'])}, started by {c['trigger']}"
                )
            )
        if s.get("failing"):
            f = s["failing"]
            parts.append(Text.from_markup(
                f"[red]model error[/] {s['stream']}/{s['key']}: raised on {f['readings']} "
                f"readings in a row: {escape(str(f['error']))}"
            ))  # fmt: skip
        if s.get("anomalies_1h"):
            parts.append(
                Text.from_markup(
                    f"[red]anomaly episodes[/] {s['stream']}/{s['key']}: "
                    f"{s['anomalies_1h']} began in the last hour"
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
        *_disk_line(d.get("disk"), now),
        Text.from_markup(health),
        # Messages and readings differ: a message feeds every stream whose topic it matches.
        Text.from_markup(
            f"received {d['received']} messages  learned {d['learned']} readings "
            f"({d['rate']:.1f}/s)  "
            + (f"[yellow]rejected {d['rejected']} ({reasons})[/]" if reasons else "rejected 0")
            + (f"  {per_sample:.0f} B/reading" if per_sample else "")
        ),
    ]


def _disk_line(disk: dict[str, Any] | None, now: float) -> list[RenderableType]:
    if not disk or disk["state"] != "full":
        return []
    free = disk["free_bytes"]
    return [
        Text.from_markup(
            f"[red]disk full[/]: {disk['path']}  "
            f"{'?' if free is None else f'{free / 2**20:.1f} MiB'} free  since "
            f"{ago(disk['since'], now)}: not acknowledging (the broker keeps the readings), "
            f"{disk['retries']} retries; resumes by itself when space returns"
        )
    ]


class _Table:
    """The stream/key table, laid out for the width it is drawn at: columns that do not fit
    are left out (least useful first) and the trend is shortened; no cell is cut with `…`.
    At 80 columns: stream/key, samples, seen, version, rolling error, an 8-step trend and
    drifts; from 100 the last drift; from 120 a 16-step trend.
    """

    def __init__(
        self,
        streams: list[dict[str, Any]],
        now: float,
        history: History | None,
        last_drift: dict[tuple[str, str], float] | None,
    ) -> None:
        self.streams, self.now, self.history, self.last_drift = streams, now, history, last_drift

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)

    def table(self, width: int) -> Table:
        columns = self._columns(width)
        # The key column gets what is left, and folds a long name onto a second line.
        others = sum(max(_cell_len(c) for c in cells) for _, cells in columns[1:])
        key_width = max(12, width - others - 2 * (len(columns) - 1))
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
                      collapse_padding=True)  # fmt: skip
        for i, (name, _) in enumerate(columns):
            if i == 0:
                table.add_column(name, overflow="fold", max_width=key_width)
            else:
                table.add_column(name, justify="left" if name == "trend" else "right", no_wrap=True)
        for row in zip(*(cells[1:] for _, cells in columns), strict=True):
            table.add_row(*row)
        return table

    def _columns(self, width: int) -> list[tuple[str, list[str]]]:
        """(header, [header, cell, ...]) per column that fits `width`."""
        now, streams, live = self.now, self.streams, self.history is not None
        cols: list[tuple[str, list[str]]] = [
            ("stream/key", [f"{s['stream']}/{s['key']}" for s in streams]),
            ("samples", [_count(s["samples"]) for s in streams]),
            ("seen", [_seen(s["last_seen"], now) for s in streams]),
            ("ver", [_version(s) for s in streams]),
        ]
        if self.history is not None:
            steps = HISTORY if width >= 120 else HISTORY // 2
            trend = [sparkline(self.history.of(s["stream"], s["key"])[-steps:]) for s in streams]
            cols += [("rolling", [_rolling_cell(s) for s in streams]),
                     ("trend", [f"[cyan]{t}[/]" for t in trend])]  # fmt: skip
        else:
            cols += [("metric", [_metric(s) for s in streams]),
                     ("rolling", [_rolling_cell(s) for s in streams])]  # fmt: skip
        if not live or width >= 80:
            cols.append(("drifts", [_drifts(s) for s in streams]))
        if self.last_drift is not None and width >= 100:
            cols.append(("last drift", [self._last(s) for s in streams]))
        return [(name, [name, *cells]) for name, cells in cols]

    def _last(self, s: dict[str, Any]) -> str:
        assert self.last_drift is not None
        when = self.last_drift.get((s["stream"], s["key"]))
        text = ago(when, self.now).removesuffix(" ago")
        return f"[yellow]{text}[/]" if when is not None and self.now - when < 3600 else text


def _cell_len(cell: str) -> int:
    return Text.from_markup(cell).cell_len


def _count(n: int) -> str:
    """Samples in at most 6 characters: 12345, 123.4k, 12.3M."""
    if n < 100_000:
        return str(n)
    return f"{n / 1000:.1f}k" if n < 1_000_000 else f"{n / 1_000_000:.1f}M"


def _seen(ts: float | None, now: float) -> str:
    text = ago(ts, now).removesuffix(" ago")
    return f"[yellow]{text}[/]" if ts is not None and now - ts > 300 else text


def _version(s: dict[str, Any]) -> str:
    # "+c": a challenger is in its grace period (details below the table)
    return f"{s['model_version']}[cyan]+c[/]" if s.get("challenger") else str(s["model_version"])


def _metric(s: dict[str, Any]) -> str:
    key, label, _ = _METRICS.get(s["task"], _METRICS["regression"])
    return f"{label} {num(s['metrics'].get(key))}"


def _rolling_cell(s: dict[str, Any]) -> str:
    # Labelled like the metric column: the rolling window's mae (the target's unit), acc or
    # rate, so a table of several tasks says what each number is.
    label = _METRICS.get(s["task"], _METRICS["regression"])[1]
    return f"{label} {num(_rolling(s))}"


def _drifts(s: dict[str, Any]) -> str:
    return str(s["drifts"]) if not s["drifts"] else f"[yellow]{s['drifts']}[/]"


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
