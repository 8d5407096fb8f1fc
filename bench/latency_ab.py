"""Publish -> prediction latency of two edgeml sources side by side, on one broker, from one
paced publisher: both daemons live through the same load at the same moment, which a shared
machine gives no two runs taken one after the other.

    python bench/latency_ab.py --other-src /path/to/other/checkout/src [-n 15000] [--rate 1000]
                               [--rounds 3]

"this" is the edgeml this interpreter imports; "other" runs with PYTHONPATH=<other-src>.
Each daemon has its own node id and state directory, subscribes to the same readings and
publishes its own predictions; a watcher per daemon pairs each device's k-th reading with
its k-th prediction (throughput_probes.Latency).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    Broker,
    StatusMonitor,
    edgeml_config,
    make_messages,
    mosquitto_missing,
    print_run,
    progress,
    publisher,
    utc_now,
)
from throughput_probes import Latency


def one_round(work: Path, rnd: int, sources: dict[str, str | None], args: Any) -> dict[str, Any]:
    (work / f"broker-{rnd}").mkdir()
    broker = Broker(work / f"broker-{rnd}")
    broker.start()
    monitor = StatusMonitor(broker.port, f"ab-monitor-{rnd}")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    watchers: dict[str, Latency] = {}
    try:
        for who, src in sources.items():
            node = f"ab-{who}-{rnd}"
            config = edgeml_config(
                work / node, node, broker.port, stream="bench", topic="bench/+/telemetry"
            )
            env = {**os.environ, **({"PYTHONPATH": src} if src else {})}
            with (work / f"{node}.log").open("ab") as log:
                procs[who] = subprocess.Popen(
                    [sys.executable, "-m", "edgeml", "run", "-c", str(config)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            monitor.wait(node, b"online", procs[who], 60)
            watchers[who] = Latency(broker.port, node)
        messages = make_messages(args.n, 10, rnd, "bench")
        with contextlib.redirect_stdout(io.StringIO()):  # its JSON line is for a parent
            publisher(broker.port, messages, client_id=f"ab-pub-{rnd}", qos=1, rate=args.rate)
        time.sleep(2)  # the last predictions
        return {who: w.stop() for who, w in watchers.items()}
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        monitor.stop()
        broker.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--other-src", required=True, help="the other edgeml's src directory")
    p.add_argument("-n", type=int, default=15000, help="readings per round (15000)")
    p.add_argument("--rate", type=float, default=1000.0, help="readings/s (1000)")
    p.add_argument("--rounds", type=int, default=3, help="(3)")
    args = p.parse_args()
    if mosquitto_missing():
        return 2
    started = utc_now()
    sources: dict[str, str | None] = {"this": None, "other": args.other_src}
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeml-ab-") as tmp:
        for rnd in range(1, args.rounds + 1):
            result = one_round(Path(tmp), rnd, sources, args)
            progress(f"round {rnd}: {result}")
            rows.append(result)
    print()
    print(f"Publish -> prediction, both daemons at once, {args.rate:.0f} readings/s, N = {args.n}")
    print_run(started)
    print(f"other: PYTHONPATH={args.other_src}")
    print()
    print("| round | this p50 ms | this p99 ms | other p50 ms | other p99 ms | pairs |")
    print("|---:|---:|---:|---:|---:|---:|")
    for rnd, r in enumerate(rows, 1):
        t, o = r["this"], r["other"]
        print(
            f"| {rnd} | {t.get('p50_ms', 0):.1f} | {t.get('p99_ms', 0):.1f} "
            f"| {o.get('p50_ms', 0):.1f} | {o.get('p99_ms', 0):.1f} | {t['pairs']} / {o['pairs']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
