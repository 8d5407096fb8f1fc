"""`edgeml plot STREAM/KEY`: one stream/key's error over time in the terminal, for SSH users.

Drawn with plotext (pure Python, no dependencies): braille lines, the model's drifts and new
versions as coloured vertical lines, and for an anomaly stream the intervals with flags.
"""

from __future__ import annotations

import time

import plotext as plt

from edgeml.store.history import History

__all__ = ["MARK_COLOURS", "render"]

# kind -> plotext colour; the same meaning as in the HTML report.
# Drawn in this order, so a drift's line shows over the retrain that starts with it.
MARK_COLOURS = {
    "retrain": "gray",
    "challenger_dropped": "gray",
    "drift": "orange",
    "promotion": "green",
    "import": "blue",
    "rollback": "red",
    "guard": "magenta",
}
_LISTED = 8  # marks listed under the plot, the newest


def _clock(ts: float, span: float) -> str:
    return time.strftime("%H:%M:%S" if span < 600 else "%H:%M" if span < 86400 else "%m-%d %H:%M",
                         time.localtime(ts))  # fmt: skip


def render(h: History, width: int = 80, height: int = 20, colour: bool = True) -> str:
    """The plot and, under it, what the marks are and the newest of them."""
    if not h.buckets:
        return f"{h.name}: no predictions in this range yet"
    x = [b.ts for b in h.buckets]
    scored = [(t, b.error) for t, b in zip(x, h.buckets, strict=True) if b.error is not None]
    plt.clear_figure()
    plt.limitsize(False, False)  # the caller knows the size: not clipped to a guessed terminal
    plt.plotsize(width, height)
    plt.theme("clear")
    plt.title(f"{h.name}: {h.error_name}, model v{h.version}")
    if scored:
        plt.plot([t for t, _ in scored], [e for _, e in scored], marker="braille")
    order = list(MARK_COLOURS)
    for m in sorted(h.marks, key=lambda m: order.index(m.kind) if m.kind in order else -1):
        plt.vline(m.ts, MARK_COLOURS.get(m.kind, "gray"))
    flagged = [(t, b.error or 0.0) for t, b in zip(x, h.buckets, strict=True) if b.flagged]
    if flagged:
        plt.scatter([t for t, _ in flagged], [e for _, e in flagged], marker="x", color="red")
    first, last = x[0], x[-1]
    span = last - first
    ticks = [first + span * i / 4 for i in range(5)] if span else [first]
    plt.xticks(ticks, [_clock(t, span) for t in ticks])
    text = plt.build()
    if not colour:
        text = plt.uncolorize(text)
    lines = text.rstrip("\n").splitlines()
    kinds = [k for k in MARK_COLOURS if any(m.kind == k for m in h.marks)]
    legend = [f"| {k} ({MARK_COLOURS[k]})" for k in kinds]
    if flagged:
        legend.append(f"x flagged readings ({sum(b.flagged for b in h.buckets)})")
    if legend:
        lines.append("  ".join(legend))
    for m in h.marks[-_LISTED:]:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.ts))
        lines.append(f"{stamp}  {m.text}")
    if len(h.marks) > _LISTED:
        lines.append(
            f"... and {len(h.marks) - _LISTED} earlier (edgeml events --stream {h.stream})"
        )
    return "\n".join(line[:width] for line in lines)
