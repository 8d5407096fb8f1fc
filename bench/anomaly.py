"""Anomaly detection you can trust: every anomaly preset on the NAB development subset and on a
fridge suite, through the daemon's learning path (`edgeml.learn.offline.run`: Learner, anomaly
task, preset), with the defaults a user gets.

    python bench/anomaly.py [--quick] [--seeds 3] [--nab DIR] [--only P ...] [--params JSON]
                            [--out FILE.md]

Detectors: every anomaly preset (`robust`, the default, and `halfspace`), and for reference
`halfspace-old`: the preset as it was before (MinMaxScaler and HalfSpaceTrees in a 0.99
QuantileFilter that keeps flagged readings out of learning), run through today's task, so
without the drift retrains it used to trigger. `--params` passes `[stream.params]` to
`robust` (for exploring; the report says which were used).

Alerts are the daemon's own: the anomaly episodes `[stream.alert]` makes with a user's
defaults (edgeml.learn.episodes: an episode ends 5 minutes of sample time after its last
flagged reading; after one ends, the next is recorded but not published for 1 hour unless it
is twice as severe). An alert is a published `new` episode, at the row that opened it: what
`.../anomaly` carries and `edgeml events --kind anomaly` lists.

NAB (../shared/benchmarks/nab, 34 files, 50 windows; bench/nab_score.py scores it from the
README's rules): standard, reward_low_FP_rate and reward_low_FN_rate scores; windows alerted
(share with an alert in them); false alerts (alerts outside every window, after the probation
period) per 1,000 normal readings; flags per 1,000 normal readings.

Fridge suite (bench/anomaly_data.py): flat, noisy and compressor-cycle series, a reading a
minute for 7 days, seeds 0..N-1, 5 spikes of 900 W each and a lasting +40 W shift on day 5.
Measured: spikes alerted (an alert on the spike's reading or the next two), false alerts a day
(alerts neither at a spike nor within an hour of the shift, per day after the warm-up), shift
alerted (an alert within an hour of it) and quiet after (minutes from the shift to the last
flag within 6 h of it).

Cost: microseconds per reading through Learner.process on 3 days of two fridge series, the
fastest of 5 rounds in which the detectors take turns (a shared machine's load varies).

Targets (PASS/FAIL; exit status 1 if one fails), for the default preset: NAB standard >= 55,
<= 0.5 false alerts per 1,000 normal readings, >= 70 % of windows alerted; fridge: every spike
alerted, <= 1 false alert a day, every shift alerted and quiet within 60 minutes; a cost per
reading no more than `halfspace`'s.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomaly_data import DAY, KINDS, Fridge, fridge, nab_files
from common import print_run, progress, utc_now
from nab_score import PROFILES, FileResult, normalised, probation, score_file
from river import anomaly, compose, preprocessing

from edgeml.config import DEFAULT_PRESET, PRESET_TASKS, StreamConfig
from edgeml.learn import offline
from edgeml.learn.learner import Learner
from edgeml.records import Sample

NAB = Path(__file__).resolve().parent.parent.parent / "shared" / "benchmarks" / "nab"
PRESETS = [p for p, tasks in PRESET_TASKS.items() if "anomaly" in tasks]
DETECTORS = [*PRESETS, "halfspace-old"]
DEFAULT = DEFAULT_PRESET["anomaly"]


# -- the detector through the learning path --------------------------------------------------


PARAMS: dict[str, Any] = {}  # --params: `[stream.params]` for the robust preset


def stream_config(preset: str) -> StreamConfig:
    model = "halfspace" if preset == "halfspace-old" else preset
    params = PARAMS if preset == "robust" else {}
    return StreamConfig(name="b", topic="b/#", task="anomaly", model=model, params=params)


def old_halfspace() -> Any:
    hst = anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=42)
    return anomaly.QuantileFilter(compose.Pipeline(preprocessing.MinMaxScaler(), hst), q=0.99)


@dataclass
class Run:
    flags: list[bool]
    alerts: list[int]  # the rows where a published episode began


def detect(preset: str, samples: list[Sample]) -> Run:
    stream = stream_config(preset)
    learner = Learner(stream, "default")
    if preset == "halfspace-old":
        learner.model = old_halfspace()
    outcomes = [o for o, _ in offline.run(stream, samples, learner)]
    alerts = [
        i
        for i, o in enumerate(outcomes)
        if o.episode is not None and o.episode.type == "new" and o.episode.published
    ]
    return Run([bool(o.flag) for o in outcomes], alerts)


# -- NAB --------------------------------------------------------------------------------------


@dataclass
class NabResult:
    scores: dict[str, float]
    windows: int
    detected: int
    false_alerts: int
    flags_normal: int
    normal_rows: int


def nab(preset: str, files: list[tuple[str, list[Sample], list[tuple[int, int]]]]) -> NabResult:
    per_profile: dict[str, list[FileResult]] = {p: [] for p in PROFILES}
    flags_normal = 0
    for _, samples, windows in files:
        run = detect(preset, samples)
        for name, profile in PROFILES.items():
            per_profile[name].append(score_file(len(samples), windows, run.alerts, profile))
        first = probation(len(samples))
        flags_normal += sum(
            1
            for i, f in enumerate(run.flags)
            if f and i >= first and not any(a <= i <= b for a, b in windows)
        )
    std = per_profile["standard"]
    return NabResult(
        {name: normalised(results, PROFILES[name]) for name, results in per_profile.items()},
        sum(r.windows for r in std),
        sum(r.detected for r in std),
        sum(r.false_alerts for r in std),
        flags_normal,
        sum(r.normal_rows for r in std),
    )


# -- the fridge suite ---------------------------------------------------------------------------


@dataclass
class FridgeResult:
    spikes: int
    caught: int
    false_alerts: int
    days: float
    shift_alerted: bool
    quiet_after: float  # minutes


def fridge_run(preset: str, f: Fridge) -> FridgeResult:
    run = detect(preset, f.samples)
    alerts = run.alerts
    near_spike = {i + d for i in f.spikes for d in range(3)}
    after_shift = range(f.shift, f.shift + 60)
    caught = sum(1 for s in f.spikes if any(s <= a <= s + 2 for a in alerts))
    false_alerts = sum(1 for a in alerts if a not in near_spike and a not in after_shift)
    shift_alerted = any(a in after_shift for a in alerts)
    late = [i for i in range(f.shift, f.shift + 360) if run.flags[i]]
    quiet = (late[-1] - f.shift + 1) if late else 0.0
    days = (len(f.samples) - f.warmup) / DAY
    return FridgeResult(len(f.spikes), caught, false_alerts, days, shift_alerted, quiet)


# -- the cost ------------------------------------------------------------------------------------


def cost(names: list[str], rounds: int = 5) -> dict[str, float]:
    """Microseconds per reading through Learner.process, on 3 days of the noisy and the
    compressor fridge (levels in use): the fastest of `rounds` rounds, the detectors taking
    turns, so that load from elsewhere on a shared machine hits them alike."""
    series = [fridge(kind, 0).samples[: 3 * DAY] for kind in ("noisy", "cycle")]
    best = dict.fromkeys(names, float("inf"))
    for _ in range(rounds):
        for name in names:
            seconds = 0.0
            for samples in series:
                learner = Learner(stream_config(name), "default")
                if name == "halfspace-old":
                    learner.model = old_halfspace()
                t0 = time.perf_counter()
                for _ in offline.run(learner.stream, samples, learner):
                    pass
                seconds += time.perf_counter() - t0
            best[name] = min(best[name], 1e6 * seconds / sum(len(s) for s in series))
    return best


# -- the report --------------------------------------------------------------------------------


def nab_table(results: dict[str, NabResult]) -> list[str]:
    out = [
        "| detector | standard | reward low FP | reward low FN | windows alerted |"
        " false alerts / 1,000 normal | flags / 1,000 normal |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        label = f"{name} (default)" if name == DEFAULT else name
        s = r.scores
        out.append(
            f"| {label} | {s['standard']:.1f} | {s['reward_low_FP_rate']:.1f} | "
            f"{s['reward_low_FN_rate']:.1f} | {r.detected}/{r.windows} "
            f"({100 * r.detected / r.windows:.0f} %) | "
            f"{1000 * r.false_alerts / r.normal_rows:.2f} | "
            f"{1000 * r.flags_normal / r.normal_rows:.2f} |"
        )
    return out


def fridge_table(results: dict[tuple[str, str], list[FridgeResult]]) -> list[str]:
    out = [
        "| detector | series | spikes alerted | false alerts / day | shift alerted |"
        " quiet after the shift, min (worst) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (name, kind), runs in results.items():
        label = f"{name} (default)" if name == DEFAULT else name
        caught = sum(r.caught for r in runs)
        spikes = sum(r.spikes for r in runs)
        per_day = sum(r.false_alerts for r in runs) / sum(r.days for r in runs)
        shifts = sum(r.shift_alerted for r in runs)
        quiet = [r.quiet_after for r in runs]
        out.append(
            f"| {label} | {kind} | {caught}/{spikes} | {per_day:.2f} | {shifts}/{len(runs)} | "
            f"{sum(quiet) / len(quiet):.0f} ({max(quiet):.0f}) |"
        )
    return out


def targets(
    nab_r: NabResult, fr: list[FridgeResult], us: dict[str, float]
) -> list[tuple[str, bool]]:
    per_day = sum(r.false_alerts for r in fr) / sum(r.days for r in fr)
    out = [
        (f"NAB standard {nab_r.scores['standard']:.1f} >= 55", nab_r.scores["standard"] >= 55),
        (
            f"NAB false alerts {1000 * nab_r.false_alerts / nab_r.normal_rows:.2f} / 1,000 <= 0.5",
            1000 * nab_r.false_alerts / nab_r.normal_rows <= 0.5,
        ),
        (
            f"NAB windows alerted {100 * nab_r.detected / nab_r.windows:.0f} % >= 70 %",
            nab_r.detected >= 0.7 * nab_r.windows,
        ),
        (
            f"fridge spikes alerted {sum(r.caught for r in fr)}/{sum(r.spikes for r in fr)}",
            all(r.caught == r.spikes for r in fr),
        ),
        (f"fridge false alerts {per_day:.2f} / day <= 1", per_day <= 1),
        (
            f"fridge shifts alerted {sum(r.shift_alerted for r in fr)}/{len(fr)}",
            all(r.shift_alerted for r in fr),
        ),
        (
            f"fridge quiet after the shift, worst {max(r.quiet_after for r in fr):.0f} min <= 60",
            all(r.quiet_after <= 60 for r in fr),
        ),
    ]
    if "halfspace" in us:
        out.append((
            f"cost {us[DEFAULT]:.0f} µs / reading <= halfspace's {us['halfspace']:.0f}",
            us[DEFAULT] <= us["halfspace"],
        ))  # fmt: skip
    return out


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="1 seed, NAB files of one category")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--nab", type=Path, default=NAB)
    ap.add_argument("--only", nargs="*", default=DETECTORS, choices=DETECTORS)
    ap.add_argument("--out", type=Path, help="also write the report (markdown) here")
    ap.add_argument("--params", type=json.loads, default={}, help="JSON params for `robust`")
    args = ap.parse_args(list(argv) if argv is not None else None)
    PARAMS.update(args.params)
    started = utc_now()
    files = nab_files(args.nab)
    seeds = 1 if args.quick else args.seeds
    if args.quick:
        files = [f for f in files if f[0].startswith("realAWS")]
    nab_results: dict[str, NabResult] = {}
    fridge_results: dict[tuple[str, str], list[FridgeResult]] = {}
    suites = {(kind, seed): fridge(kind, seed) for kind in KINDS for seed in range(seeds)}
    for name in args.only:
        progress(f"NAB: {name}")
        nab_results[name] = nab(name, files)
        progress(f"fridge: {name}")
        for (kind, _), f in suites.items():
            fridge_results.setdefault((name, kind), []).append(fridge_run(name, f))
    progress("cost")
    us = cost(args.only)
    lines = [
        f"### NAB development subset ({len(files)} files, "
        f"{sum(len(f[1]) for f in files):,} readings, {sum(len(f[2]) for f in files)} windows)",
        "",
        *nab_table(nab_results),
        "",
        f"### Fridge suite (3 series x {seeds} seeds, 7 days at one reading a minute, 5 spikes "
        "and a lasting +40 W shift each)",
        "",
        *fridge_table(fridge_results),
        "",
        "### Cost (µs per reading through Learner.process, the fastest of 5 interleaved rounds)",
        "",
        "| detector | µs / reading |",
        "|---|---:|",
        *(f"| {n}{' (default)' if n == DEFAULT else ''} | {v:.1f} |" for n, v in us.items()),
        "",
    ]
    failed = False
    if DEFAULT in nab_results:
        default_fridge = [r for (n, _), rs in fridge_results.items() if n == DEFAULT for r in rs]
        lines.append(f"Targets, default preset `{DEFAULT}`:")
        lines.append("")
        for text, ok in targets(nab_results[DEFAULT], default_fridge, us):
            lines.append(f"- {'PASS' if ok else 'FAIL'}: {text}")
            failed |= not ok
        lines.append("")
    print_run(started, ("python", "river", "edgeml"))
    if PARAMS:
        print(f"robust params: {json.dumps(PARAMS)}")
    print(f"per-key state of the default preset, pickled learner of one feature after a week of "
          f"readings: {state_bytes()} bytes")  # fmt: skip
    print()
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


def state_bytes() -> int:
    """The pickled size of a default-preset learner after a week of fridge readings."""
    stream = stream_config(DEFAULT)
    learner = Learner(stream, "default")
    for _ in offline.run(stream, fridge("noisy", 0).samples, learner):
        pass
    return len(pickle.dumps(learner.state()))


if __name__ == "__main__":
    sys.exit(main())
