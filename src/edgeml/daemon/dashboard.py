"""GET /: a light live page, rendered from the store on each request and reloading itself.

The report's overview (every stream/key, its model and metrics) and, per stream/key, its
error per interval with drifts and new versions marked, drawn as inline SVG: no JavaScript
library, nothing fetched from a network, a few kilobytes per stream/key. (`edgeml report`
draws the same data with plotly, an optional dependency the daemon does not need.)
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

from edgeml.store.history import History

__all__ = ["REFRESH_S", "render"]

REFRESH_S = 10  # the page reloads itself this often
_W, _H = 640, 140  # the plot's size in SVG units
_MARKS = {"drift": "#e6550d", "promotion": "#31a354", "import": "#3182bd",
          "rollback": "#de2d26", "guard": "#756bb1", "retrain": "#969696"}  # fmt: skip
_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1000px;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.4rem; margin-bottom: 0.2rem; } h2 { font-size: 1.05rem; margin: 0.2rem 0; }
.meta { color: #555; margin-top: 0; } .bad { color: #b00; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0 1rem; }
th, td { text-align: left; padding: 0.2rem 0.7rem 0.2rem 0; border-bottom: 1px solid #ddd; }
section { border-top: 1px solid #ccc; padding-top: 0.6rem; margin-top: 1rem; }
svg { width: 100%; max-width: 640px; height: auto; background: #fafafa; }
"""


def _stamp(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _metrics(m: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in m.items()
        if v is not None
    )


def plot(h: History) -> str:
    """The error per interval as a polyline, marks as vertical lines; '' with no data."""
    points = [(b.ts, b.error) for b in h.buckets if b.error is not None]
    if not points:
        return ""
    t0, t1 = h.buckets[0].ts, h.buckets[-1].ts
    top = max(e for _, e in points) or 1.0
    span = (t1 - t0) or 1.0

    def x(ts: float) -> float:
        return round(4 + (ts - t0) / span * (_W - 8), 1)

    def y(v: float) -> float:
        return round(_H - 4 - v / top * (_H - 12), 1)

    line = " ".join(f"{x(ts)},{y(e)}" for ts, e in points)
    marks = "".join(
        f'<line x1="{x(m.ts)}" x2="{x(m.ts)}" y1="0" y2="{_H}" stroke="{_MARKS[m.kind]}" '
        f'stroke-dasharray="4 2"><title>{html.escape(m.text)}</title></line>'
        for m in h.marks
        if m.kind in _MARKS and t0 <= m.ts <= t1
    )
    label = html.escape(f"{h.error_name}, max {top:.4g}")
    return (
        f'<svg viewBox="0 0 {_W} {_H}" role="img" aria-label="{label}" class="plot">{marks}'
        f'<polyline fill="none" stroke="#08519c" stroke-width="1.5" points="{line}"/>'
        f'<text x="6" y="12" font-size="10" fill="#555">{label}</text></svg>'
    )


def _section(h: History, metrics: dict[str, Any]) -> str:
    drawn = plot(h) or "<p class='meta'>No scored predictions yet.</p>"
    legend = ", ".join(
        f"<span style='color:{c}'>{k}</span>" for k, c in _MARKS.items() if any(
            m.kind == k for m in h.marks))  # fmt: skip
    return (
        f"<section><h2>{html.escape(h.name)}</h2><p class='meta'>{html.escape(h.task)}, "
        f"model v{h.version}; {html.escape(_metrics(metrics) or 'no metrics yet')}"
        f"{'; marks: ' + legend if legend else ''}</p>{drawn}</section>"
    )


def render(status: dict[str, Any], histories: Sequence[History], now: float) -> str:
    d = status.get("daemon", {})
    streams = status.get("streams", [])
    metrics = {(s["stream"], s["key"]): s["metrics"] for s in streams}
    broker = d.get("broker", "?")
    rows = "".join(
        f"<tr><td>{html.escape(s['stream'])}/{html.escape(s['key'])}</td>"
        f"<td>{html.escape(s['task'])}</td><td>v{s['model_version']}</td><td>{s['samples']}</td>"
        f"<td>{html.escape(_metrics(s['metrics']) or '-')}</td><td>{s['drifts']}</td>"
        f"<td>{_stamp(s['last_seen'])}</td></tr>"
        for s in streams
    )
    table = (
        "<table><tr><th>stream/key</th><th>task</th><th>model</th><th>readings</th>"
        f"<th>metrics</th><th>drifts</th><th>last reading</th></tr>{rows}</table>"
        if streams
        else "<p class='meta'>No stream/key has learned anything yet.</p>"
    )
    sections = "".join(_section(h, metrics.get((h.stream, h.key), {})) for h in histories)
    node = html.escape(str(d.get("node", "?")))
    state = f"<span class='{'' if broker == 'connected' else 'bad'}'>{html.escape(broker)}</span>"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='refresh' content='{REFRESH_S}'>"
        f"<title>edgeml: {node}</title><style>{_CSS}</style></head><body>"
        f"<h1>edgeml: node {node}</h1><p class='meta'>broker {state}; "
        f"{d.get('learned', 0)} samples learned, {d.get('rate', 0)}/s; "
        f"updated {_stamp(now)}, every {REFRESH_S} s.</p>{table}{sections}</body></html>"
    )
