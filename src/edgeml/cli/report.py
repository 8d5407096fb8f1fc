"""`edgeml report`: one self-contained HTML file (it works offline) with, per stream/key, the
error over time with drifts, retraining and new versions marked, and anomalies over time.

Drawn with plotly, an optional dependency (`pip install 'edgeml[report]'`): its JavaScript is
embedded once in the file, so the report opens in any browser without a network.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from edgeml.errors import EdgemlError
from edgeml.store.history import History, Mark, read_history
from edgeml.store.queries import PROMOTIONS, read_status

__all__ = ["MARK_STYLES", "build", "write"]

# kind -> (colour, line dash): colours that mean something (a drift is a warning, a new
# version good news, a rollback or a guard a step back).
MARK_STYLES = {
    "drift": ("#e6550d", "dash"),
    "retrain": ("#969696", "dot"),
    "challenger_dropped": ("#636363", "dot"),
    "promotion": ("#31a354", "solid"),
    "import": ("#3182bd", "solid"),
    "rollback": ("#de2d26", "solid"),
    "guard": ("#756bb1", "solid"),
}
_ERROR = "#08519c"
_MARKS_LISTED = 50  # per stream/key, the newest

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1100px;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; } h2 { font-size: 1.15rem; margin: 0; }
.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0 1rem; }
th, td { text-align: left; padding: 0.2rem 0.7rem 0.2rem 0; border-bottom: 1px solid #ddd; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
section { border-top: 2px solid #ccc; padding-top: 0.8rem; margin-top: 1.2rem; }
details { font-size: 0.9rem; } .empty { color: #777; }
"""


def require_plotly() -> None:
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise EdgemlError(
            "edgeml report draws with plotly, which is not installed: "
            "pip install 'edgeml[report]' (plotly 7.1 or newer)"
        ) from None


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts)


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def figure(h: History) -> Any:
    """The plotly figure of one stream/key: the error on top, the readings or anomalies below."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    anomaly = h.task == "anomaly"
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.07
    )
    x = [_when(b.ts) for b in h.buckets]
    errors = [b.error for b in h.buckets]
    fig.add_trace(
        go.Scatter(x=x, y=errors, mode="lines", name=h.error_name, line={"color": _ERROR}),
        row=1,
        col=1,
    )
    top = max((e for e in errors if e is not None), default=1.0) * 1.05 or 1.0
    for trace in _mark_traces(h, top):
        fig.add_trace(trace, row=1, col=1)
    for trace in _count_traces(h, x):
        fig.add_trace(trace, row=2, col=1)
    fig.update_yaxes(title_text=h.error_name, rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="anomalies" if anomaly else "readings", row=2, col=1)
    fig.update_layout(
        height=460,
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 30, "b": 40},
        legend={"orientation": "h", "y": 1.08},
        barmode="group",
        bargap=0.05,
    )
    return fig


def _mark_traces(h: History, top: float) -> list[Any]:
    """One trace per kind of event: a vertical line per event, broken by None, its text on
    hover.
    """
    import plotly.graph_objects as go

    traces = []
    for kind, (colour, dash) in MARK_STYLES.items():
        marks = [m for m in h.marks if m.kind == kind]
        if not marks:
            continue
        xs: list[datetime | None] = []
        ys: list[float | None] = []
        texts: list[str | None] = []
        for m in marks:
            xs += [_when(m.ts), _when(m.ts), None]
            ys += [0.0, top, None]
            texts += [m.text, m.text, None]
        traces.append(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                name=f"{kind} ({len(marks)})",
                line={"color": colour, "dash": dash, "width": 1.5},
                hovertext=texts,
                hoverinfo="x+text",
            )
        )
    return traces


def _count_traces(h: History, x: list[datetime]) -> list[Any]:
    """The bottom panel: readings per interval, or flags (and labelled anomalies)."""
    import plotly.graph_objects as go

    if h.task != "anomaly":
        samples = [b.samples for b in h.buckets]
        return [go.Bar(x=x, y=samples, name="readings", marker_color="#9ecae1")]
    flagged = [b.flagged for b in h.buckets]
    traces = [go.Bar(x=x, y=flagged, name="flagged", marker_color="#de2d26")]
    if any(b.truth for b in h.buckets):
        truth = [b.truth for b in h.buckets]
        traces.append(go.Bar(x=x, y=truth, name="labelled anomalies", marker_color="#252525"))
    return traces


def _summary_row(h: History, metrics: dict[str, Any]) -> str:
    shown = " ".join(
        f"{k}={v + 0.0:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in metrics.items()
        if v is not None
    )
    cells = [
        f'<a href="#{_anchor(h)}">{html.escape(h.name)}</a>',
        html.escape(h.task),
        f"v{h.version}" if h.version is not None else "-",
        str(sum(b.samples for b in h.buckets)),
        html.escape(shown or "-"),
        str(sum(m.kind == "drift" for m in h.marks)),
        str(sum(m.kind in PROMOTIONS for m in h.marks)),
        str(sum(b.flagged for b in h.buckets)) if h.task == "anomaly" else "-",
    ]
    numeric = {3, 5, 6, 7}
    return (
        "<tr>"
        + "".join(
            f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(cells)
        )
        + "</tr>"
    )


def _anchor(h: History) -> str:
    return "s-" + "".join(c if c.isalnum() else "-" for c in h.name)


def _marks_table(marks: Sequence[Mark]) -> str:
    newest = list(reversed(marks))[:_MARKS_LISTED]
    rows = "".join(
        f"<tr><td>{_stamp(m.ts)}</td><td>{html.escape(m.kind)}</td>"
        f"<td>{html.escape(m.text)}</td></tr>"
        for m in newest
    )
    more = f" (the newest {_MARKS_LISTED})" if len(marks) > _MARKS_LISTED else ""
    return (
        f"<details><summary>{len(marks)} model events{more}</summary>"
        f"<table><tr><th>time</th><th>kind</th><th>what</th></tr>{rows}</table></details>"
    )


def build(
    histories: Sequence[History],
    status: dict[str, Any],
    source: Path,
    since: float | None = None,
    now: float | None = None,
) -> str:
    """The whole HTML document (plotly must be installed: `write` checks that first)."""
    now = time.time() if now is None else now
    metrics = {(s["stream"], s["key"]): s["metrics"] for s in status.get("streams", [])}
    daemon = status.get("daemon", {})
    node = daemon.get("node", "?")
    starts = [b.ts for h in histories for b in h.buckets]
    span = (
        f"readings from {_stamp(min(starts))} to {_stamp(max(starts))}"
        if starts
        else "no readings in this range"
    )
    zone = time.strftime("%Z (UTC%z)", time.localtime(now))
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>edgeml report: {html.escape(node)}</title><style>{_CSS}</style></head><body>",
        f"<h1>edgeml report: node {html.escape(node)}</h1>",
        f"<p class='meta'>{html.escape(str(source))}, made {_stamp(now)}; {span}"
        f"{'' if since is None else ' (since ' + _stamp(since) + ')'}. Times are {zone}.</p>",
    ]
    if not histories:
        parts.append("<p class='empty'>No stream/key has learned anything yet.</p>")
    else:
        parts.append(
            "<table><tr><th>stream/key</th><th>task</th><th>model</th><th>readings</th>"
            "<th>metrics now</th><th>drifts</th><th>new versions</th><th>flagged readings</th></tr>"
            + "".join(_summary_row(h, metrics.get((h.stream, h.key), {})) for h in histories)
            + "</table>"
        )
    # plotly.js (about 4.6 MB) goes into the file once, with the first plot.
    plotted = [h for h in histories if h.buckets]
    parts += [_section(h, first=bool(plotted) and h is plotted[0]) for h in histories]
    parts.append("</body></html>")
    return "\n".join(parts)


def _section(h: History, first: bool) -> str:
    """One stream/key: its plot and the list of its events."""
    parts = [
        f"<section id='{_anchor(h)}'><h2>{html.escape(h.name)}</h2>"
        f"<p class='meta'>{html.escape(h.task)}, model v{h.version}; the top panel is the "
        f"{html.escape(h.error_name)} per interval, the bottom one "
        f"{'the anomalies flagged' if h.task == 'anomaly' else 'the readings'} per interval."
        "</p>"
    ]
    if not h.buckets:
        parts.append("<p class='empty'>No predictions in this range.</p>")
    else:
        config = {"displaylogo": False, "responsive": True}
        parts.append(figure(h).to_html(full_html=False, include_plotlyjs=first, config=config))
    if h.marks:
        parts.append(_marks_table(h.marks))
    parts.append("</section>")
    return "\n".join(parts)


def write(
    output: Path, db: Path, stream: str | None = None, since: float | None = None, points: int = 300
) -> int:
    """Write the report of the state file `db` to `output` (whole or not at all); return the
    number of stream/keys in it.
    """
    require_plotly()
    histories = read_history(db, stream, None, since, points)
    doc = build(histories, read_status(db), db, since)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(output)
    return len(histories)
