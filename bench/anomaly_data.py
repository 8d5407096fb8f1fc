"""The data of bench/anomaly.py: the NAB development subset, read from
../shared/benchmarks/nab, and the fridge suite, generated.

Fridge suite, one reading a minute for 7 days, seeded: `flat` (120 W, sd 0.2 W, 0.1 W
resolution), `noisy` (120 W, sd 8 W) and `cycle` (the compressor: on 20-30 min at 120 W sd 3 W
with a 180-220 W first minute, off 30-45 min at 2 W sd 0.3 W). Each has 5 single-reading spikes
of 900 W (sd 20 W) between the end of the anomaly warm-up and day 5, at least 2 hours apart,
and from day 5 a lasting level shift (+40 W; `cycle`: its on level).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from edgeml.config import AnomalyConfig
from edgeml.records import Sample

__all__ = ["DAY", "KINDS", "MINUTE", "Fridge", "fridge", "nab_files"]

MINUTE = 60.0
DAY = 1440  # readings, one a minute
WARMUP = AnomalyConfig().warmup


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def nab_files(root: Path) -> list[tuple[str, list[Sample], list[tuple[int, int]]]]:
    windows = json.loads((root / "windows.json").read_text())
    out = []
    for name in sorted(windows):
        lines = (root / "data" / name).read_text().splitlines()[1:]
        samples = []
        for line in lines:
            stamp, value = line.split(",")
            samples.append(Sample("b", "default", _ts(stamp), {"value": float(value)}, None))
        stamps = [s.ts for s in samples]
        rows = []
        for start, end in windows[name]:
            a, b = _ts(start), _ts(end)
            inside = [i for i, t in enumerate(stamps) if a <= t <= b]
            rows.append((inside[0], inside[-1]))
        out.append((name, samples, rows))
    return out


# -- the fridge suite ---------------------------------------------------------------------------

KINDS = ("flat", "noisy", "cycle")


@dataclass
class Fridge:
    samples: list[Sample]
    spikes: list[int]
    shift: int
    warmup: int


def fridge(kind: str, seed: int, days: int = 7, warmup: int = WARMUP) -> Fridge:
    rng = random.Random(f"{kind}-{seed}")
    n = days * DAY
    shift = 5 * DAY
    spikes: list[int] = []
    while len(spikes) < 5:
        i = rng.randrange(warmup + 60, shift - 120)
        if all(abs(i - j) > 120 for j in spikes):
            spikes.append(i)
    spikes.sort()
    values = []
    on, left = True, 0
    for i in range(n):
        extra = 40.0 if i >= shift else 0.0
        if kind == "flat":
            v = round(120 + extra + rng.gauss(0, 0.2), 1)
        elif kind == "noisy":
            v = 120 + extra + rng.gauss(0, 8)
        else:
            if left == 0:
                on = not on
                left = rng.randint(20, 30) if on else rng.randint(30, 45)
                first = on
            else:
                first = False
            left -= 1
            if on:
                v = rng.uniform(180, 220) if first else 120 + extra + rng.gauss(0, 3)
            else:
                v = 2 + rng.gauss(0, 0.3)
        if i in spikes:
            v = 900 + rng.gauss(0, 20)
        values.append(v)
    t0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
    samples = [
        Sample("b", "default", t0 + i * MINUTE, {"power": v}, None) for i, v in enumerate(values)
    ]
    return Fridge(samples, spikes, shift, warmup)
