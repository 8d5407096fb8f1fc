"""`edgeml report` and `edgeml plot` on a large state file: time and memory against one plain
scan of the samples table, in the same run.

    python bench/report.py [--readings 1000000] [--points 300]

A short demo run (mosquitto, the daemon, 6 stream/keys with a drift, a promotion and anomaly
flags) makes a real state file; its samples and predictions are then copied, shifted in time
and sequence, until the file holds --readings readings (the events stay as the demo made
them). Then, each in a fresh child process (so peak RSS is its own):

* scan: `SELECT count(*), sum(ts) FROM samples JOIN predictions` (the floor: one pass over
  the rows the history reads);
* history: `read_history` for every stream/key (--points intervals each);
* report: `report.write`, the whole HTML file (history + plotly figures + the file);
* plot: `read_history` of one stream/key + `plot.render` at 80 columns.

Reported: wall seconds, x scan (ratio to the scan in the same run), the child's peak RSS
(VmHWM), imports included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from common import print_run, progress, utc_now

CHILD = """
import json, sqlite3, sys, time
from pathlib import Path
state, what, points = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
db = state / "edgeml.db"
t = time.perf_counter()
if what == "scan":
    conn = sqlite3.connect(db)
    conn.execute("SELECT count(*), sum(s.ts) FROM samples s JOIN predictions p ON p.seq = s.seq")
    conn.close()
elif what == "history":
    from edgeml.store.history import read_history
    read_history(db, points=points)
elif what == "report":
    from edgeml.cli.report import write
    write(state / "bench.html", db, points=points)
else:
    from edgeml.store.history import read_history
    from edgeml.cli.plot import render
    (h,) = read_history(db, "boiler", "dev1", points=160)
    render(h, 80, 20, colour=False)
seconds = time.perf_counter() - t
# VmHWM, not ru_maxrss: on Linux the latter keeps the forking parent's peak across exec.
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"s": seconds, "rss": hwm}))
"""


def grow(db: Path, readings: int) -> int:
    """Copy the demo's samples/predictions, later in time, until `readings` are stored."""
    conn = sqlite3.connect(db)
    query = "SELECT count(*), min(ts), max(ts), max(seq) FROM samples"
    n, first, last, top = conn.execute(query).fetchone()
    span = last - first + 0.05
    copy = 1
    while n * (copy + 1) <= readings:
        shift, offset = span * copy, top * copy
        conn.execute(
            "INSERT INTO samples SELECT seq + ?, series, ts + ?, x, y, NULL, NULL, label"
            " FROM samples WHERE seq <= ?",
            (offset, shift, top),
        )
        conn.execute(
            "INSERT INTO predictions SELECT seq + ?, y_pred, error, model_version, label, flag"
            " FROM predictions WHERE seq <= ?",
            (offset, top),
        )
        copy += 1
        if copy % 50 == 0:
            progress(f"  {n * copy:,} readings")
    conn.commit()
    total = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    conn.close()
    return int(total)


def measure(state: Path, what: str, points: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(state), what, str(points)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--points", type=int, default=300)
    args = ap.parse_args()
    started = utc_now()
    from edgeml import logs
    from edgeml.cli.demo import run_demo

    logs.configure("warning", "console")

    with tempfile.TemporaryDirectory(prefix="edgeml-bench-report-") as tmp:
        state = Path(tmp)
        progress("a demo run makes the state file")
        asyncio.run(run_demo(duration=8, rate=60, seed=3, state_dir=state, say=lambda _: None))
        progress(f"growing it to {args.readings:,} readings")
        total = grow(state / "edgeml.db", args.readings)
        size = (state / "edgeml.db").stat().st_size / 2**20
        rows = {}
        for what in ("scan", "history", "report", "plot"):
            progress(f"measuring {what}")
            rows[what] = measure(state, what, args.points)
        html = (state / "bench.html").stat().st_size / 2**20
    print(f"## edgeml report/plot on {total:,} readings ({size:.0f} MiB state file)\n")
    print(f"`python bench/report.py --readings {args.readings} --points {args.points}`\n")
    print("| what | seconds | x scan | peak RSS MiB |")
    print("|---|---:|---:|---:|")
    base = rows["scan"]["s"]
    for what, r in rows.items():
        print(f"| {what} | {r['s']:.2f} | {r['s'] / base:.1f} | {r['rss'] / 1024:.0f} |")
    print(f"\nreport file: {html:.1f} MiB for 6 stream/keys x {args.points} intervals")
    print_run(started)


if __name__ == "__main__":
    main()
