"""A Numenta Anomaly Benchmark scorer, written from the rules in
../shared/benchmarks/nab/README.md (not NAB's code), for bench/anomaly.py.

Pure functions on row indices: a file is its length, its labelled windows as (first row, last
row) and the rows where the detector raised an alert. tests/test_nab_score.py pins it to
hand-computed cases.

- Probation: the first min(floor(0.15 n), 750) rows; alerts there are not scored.
- S(p) = 2 sigmoid(-5 p) - 1, and -1 for p > 3.
- A window (width w rows, right edge r) with an alert: its earliest alert i earns
  tp S(p) / S(-1), p = -(r - i + 1) / w; other alerts inside it count for nothing. A window
  without one costs fn.
- An alert outside every window costs fp S(p) (a negative number), p = |r_prev - i| /
  (w_prev - 1) from the right edge of the preceding window; before the first window the full fp.
- Normalised over files: 100 (raw - null) / (perfect - null), null = -fn per window,
  perfect = tp per window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["PROFILES", "FileResult", "normalised", "probation", "score_file", "sigmoid_s"]

# name: (tpWeight, fnWeight, fpWeight)
PROFILES: dict[str, tuple[float, float, float]] = {
    "standard": (1.0, 1.0, 0.11),
    "reward_low_FP_rate": (1.0, 1.0, 0.22),
    "reward_low_FN_rate": (1.0, 2.0, 0.11),
}


def sigmoid_s(p: float) -> float:
    """S(p) = 2 sigmoid(-5 p) - 1, -1 beyond p = 3."""
    if p > 3:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * p)) - 1.0


def probation(n: int) -> int:
    """Rows at the start of a file whose alerts are not scored."""
    return min(math.floor(0.15 * n), 750)


@dataclass(frozen=True)
class FileResult:
    raw: float  # the file's raw score
    windows: int
    detected: int  # windows with an alert in them
    false_alerts: int  # scored alerts outside every window
    normal_rows: int  # scored rows outside every window


def score_file(
    n: int,
    windows: Sequence[tuple[int, int]],
    alerts: Iterable[int],
    profile: tuple[float, float, float],
) -> FileResult:
    """Score one file: `windows` are (first row, last row), sorted and disjoint."""
    tp_w, fn_w, fp_w = profile
    start = probation(n)
    scored = sorted({i for i in alerts if start <= i < n})
    raw = 0.0
    detected = 0
    false_alerts = 0
    earliest: dict[int, int] = {}  # window index -> its earliest alert
    for i in scored:
        inside = next((k for k, (a, b) in enumerate(windows) if a <= i <= b), None)
        if inside is not None:
            earliest.setdefault(inside, i)
            continue
        false_alerts += 1
        before = [k for k, (_, b) in enumerate(windows) if b < i]
        if not before:
            raw -= fp_w
            continue
        a, r = windows[before[-1]]
        width = r - a + 1
        raw += fp_w * sigmoid_s(abs(r - i) / max(width - 1, 1))
    for k, (a, r) in enumerate(windows):
        width = r - a + 1
        if k in earliest:
            detected += 1
            raw += tp_w * sigmoid_s(-(r - earliest[k] + 1) / width) / sigmoid_s(-1.0)
        else:
            raw -= fn_w
    in_windows = sum(b - a + 1 for a, b in windows if b >= start)
    in_windows -= sum(max(0, start - a) for a, b in windows if b >= start)
    return FileResult(raw, len(windows), detected, false_alerts, n - start - in_windows)


def normalised(results: Iterable[FileResult], profile: tuple[float, float, float]) -> float:
    """100 (raw - null) / (perfect - null) over the files."""
    tp_w, fn_w, _ = profile
    results = list(results)
    windows = sum(r.windows for r in results)
    raw = sum(r.raw for r in results)
    null, perfect = -fn_w * windows, tp_w * windows
    return 100.0 * (raw - null) / (perfect - null)
