"""Presets: per-message CPU time, snapshot size, restore time and memory of one stream/key.

    python bench/presets.py [-n 5000] [--forest-n N] [--quick] [--seed 1] [--presets auto]

For each preset/task pair, a synthetic sensor stream (one reading per 10 minutes) goes
through one `Learner` in-process: the daemon's full test-then-train path (predict, metrics,
learn, ADWIN) with `retrain.policy = "none"`, so only the champion model is measured. No
MQTT, no SQLite. Features temperature, humidity, pressure, vibration; regression's target is
a nonlinear function of them; classification's label is a threshold rule; anomaly sees the
same features with rare spikes (no ground-truth label); forecast (x = {}) is a daily-seasonal
temperature series with AR(1) noise; `seasonal` gets season = 144 (one day).

* per message: time.perf_counter_ns around `Learner.process`, median and p99 in µs, after
  gc.collect() + gc.freeze() (as the daemon freezes after start-up); msgs/s = 1e6 / median.
* x linear: the median divided by linear regression's median in the same run.
* snapshot: len(snapshot.dump(learner)) after the n samples; restore: `snapshot.load` of it
  (sha256 check, unpickle, Learner.from_state), median of 5, in ms.
* live: tracemalloc's traced size after building a second learner and feeding it the same n
  samples, minus before (gc.collect() both times); measured in its own pass, untimed.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import math
import random
import statistics
import sys
import time
import tracemalloc
from typing import Any

from common import print_run, progress, utc_now

from edgeml.config import StreamConfig
from edgeml.learn import snapshot
from edgeml.learn.learner import Learner
from edgeml.records import Sample

CASES = [
    ("linear", "regression"),  # first: the others' "x linear" is against it
    ("auto", "regression"),
    ("tree", "regression"),
    ("forest", "regression"),
    ("logistic", "classification"),
    ("auto", "classification"),
    ("tree", "classification"),
    ("forest", "classification"),
    ("halfspace", "anomaly"),
    ("linear", "forecast"),
    ("auto", "forecast"),
    ("seasonal", "forecast"),
    ("tree", "forecast"),
    ("forest", "forecast"),
]
T0 = 1_793_491_200.0  # 2026-11-01 00:00 UTC
STEP = 600.0  # one reading per 10 minutes
DAY = 86_400.0


def readings(n: int, seed: int) -> list[tuple[float, dict[str, float]]]:
    """n readings of four sensors: daily cycles, a pressure random walk, vibration bursts."""
    rng = random.Random(seed)
    out, walk = [], 0.0
    for i in range(n):
        ts = T0 + i * STEP
        day = 2 * math.pi * (ts % DAY) / DAY
        walk = 0.995 * walk + rng.gauss(0, 0.4)
        burst = rng.random() < 0.05
        x = {
            "temperature": 20 + 6 * math.sin(day - 2) + rng.gauss(0, 0.5),
            "humidity": min(100.0, max(5.0, 55 - 12 * math.sin(day - 2) + rng.gauss(0, 3))),
            "pressure": 1013 + walk + rng.gauss(0, 0.3),
            "vibration": rng.lognormvariate(math.log(0.2), 0.25) * (4 if burst else 1),
        }
        out.append((ts, x))
    return out


def samples(task: str, n: int, seed: int) -> list[Sample]:
    rng = random.Random(seed + 1)
    out = []
    if task == "forecast":
        noise = 0.0
        for i in range(n):
            ts = T0 + i * STEP
            day = 2 * math.pi * (ts % DAY) / DAY
            noise = 0.9 * noise + rng.gauss(0, 0.3)
            y = 20 + 6 * math.sin(day - 2) + 1.5 * math.sin(day / 7) + noise
            out.append(Sample("s", "default", ts, {}, y))
        return out
    for ts, x in readings(n, seed):
        t, h, p, v = x["temperature"], x["humidity"], x["pressure"], x["vibration"]
        if task == "regression":  # e.g. a cooling unit's power draw, W
            y = 40 + 0.08 * t * h + 3 * max(0.0, t - 22) ** 2 - 0.5 * (p - 1013) + 60 * v**2
            out.append(Sample("s", "default", ts, x, y + rng.gauss(0, 2)))
        elif task == "classification":  # "needs service"
            out.append(Sample("s", "default", ts, x, None, (t > 23 and h < 50) or v > 0.45))
        else:  # anomaly: one sensor in 300 readings spikes
            if rng.random() < 1 / 300:
                name = rng.choice(list(x))
                x = {**x, name: x[name] * rng.choice((1.5, 0.5)) + 10}  # noqa: PLW2901
            out.append(Sample("s", "default", ts, x))
    return out


def stream(preset: str, task: str) -> StreamConfig:
    extra: dict[str, Any] = {} if task == "anomaly" else {"target": "y"}
    if preset == "seasonal":
        extra["forecast"] = {"season": 144}
    return StreamConfig(
        name="s", topic="t", task=task, model=preset, retrain={"policy": "none"}, **extra
    )


def feed(cfg: StreamConfig, data: list[Sample], times: list[int] | None = None) -> Learner:
    learner = Learner(cfg, "default")
    clock = time.perf_counter_ns
    for seq, s in enumerate(data, 1):
        t = clock()
        learner.process(s, seq)
        if times is not None:
            times.append(clock() - t)
    return learner


def measure(preset: str, task: str, n: int, seed: int, repeats: int) -> dict[str, float]:
    cfg, data = stream(preset, task), samples(task, n, seed)
    gc.collect()
    gc.freeze()
    times: list[int] = []
    learner = feed(cfg, data, times)
    gc.unfreeze()
    times.sort()
    blob = snapshot.dump(learner)
    digest, loads = hashlib.sha256(blob).hexdigest(), []
    for _ in range(repeats):
        t = time.perf_counter_ns()
        snapshot.load(cfg, "default", blob, digest, snapshot.RIVER_VERSION)
        loads.append(time.perf_counter_ns() - t)
    del learner
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    live = feed(cfg, data)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del live
    return {
        "n": n,
        "median": times[len(times) // 2] / 1e3,
        "p99": times[min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)] / 1e3,
        "snap": len(blob) / 1024,
        "load": statistics.median(loads) / 1e6,
        "live": (after - before) / 1024,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=5000, help="samples per preset (default 5000)")
    ap.add_argument("--forest-n", type=int, help="samples for forest (default: n)")
    ap.add_argument("--quick", action="store_true", help="n = 1000, 3 restores")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--presets", help="these presets only, comma-separated (linear is kept)")
    args = ap.parse_args()
    wanted = {"linear", *args.presets.split(",")} if args.presets else None
    n = 1000 if args.quick else args.n
    repeats = 3 if args.quick else 5
    started, wall = utc_now(), time.monotonic()
    rows = []
    for preset, task in CASES:
        if wanted is not None and preset not in wanted:
            continue
        k = args.forest_n or n if preset == "forest" else n
        progress(f"{preset} {task}: {k} samples")
        rows.append((preset, task, measure(preset, task, k, args.seed, repeats)))
    base = rows[0][2]["median"]
    print_run(started, order=("python", "river", "edgeml"))
    print(f"wall time: {time.monotonic() - wall:.0f} s\n")
    print(
        "| preset | task | samples | median µs | p99 µs | x linear | max msgs/s, 1 core "
        "| snapshot KiB | restore ms | live KiB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for preset, task, r in rows:
        print(
            f"| {preset} | {task} | {r['n']} | {r['median']:.0f} | {r['p99']:.0f} "
            f"| {r['median'] / base:.1f} | {1e6 / r['median']:.0f} | {r['snap']:.1f} "
            f"| {r['load']:.2f} | {r['live']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
