"""What `throughput.py --probes` measures beside CPU and rate, each in a run of its own (strace
slows the process it counts, and a paced run is not a flood):

* syscalls per reading: `strace -c -f` attached to the subscriber (every thread) while it
  takes N readings published as fast as the publisher can, for edgeml and for the bare
  subscriber;
* publish -> prediction latency at a steady rate: a watcher subscribed to the readings and to
  edgeml's predictions takes, for each device, its k-th prediction's arrival minus its k-th
  reading's arrival (one process, one clock; the broker's hop is in both);
* how far the commits lag: the newest committed sample's arrival time (`samples.ts`) against
  the clock, polled every 20 ms during the paced run.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# strace -c's last line: `100.00    0.123456           1     12345       123 total`
_TOTAL = re.compile(r"^\s*100\.00\s+\S+\s+\S+\s+(\d+)\s+(?:\d+\s+)?total\s*$")
_ROW = re.compile(r"^\s*[\d.]+\s+\S+\s+\S+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


class Strace:
    """`strace -c -f -p PID` from `start` until `stop`: (calls, the five most made)."""

    def __init__(self, pid: int, out: Path) -> None:
        exe = shutil.which("strace")
        if exe is None:
            raise RuntimeError("strace is not installed (apt-get install strace)")
        self.out = out
        self.proc = subprocess.Popen(
            [exe, "-c", "-f", "-p", str(pid), "-o", str(out)], stderr=subprocess.DEVNULL
        )
        time.sleep(0.5)  # strace attaches to every thread before this returns

    def stop(self) -> tuple[int, list[tuple[str, int]]]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        total, rows = 0, []
        for line in self.out.read_text().splitlines():
            if m := _TOTAL.match(line):
                total = int(m.group(1))
            elif m := _ROW.match(line):
                rows.append((m.group(2), int(m.group(1))))
        return total, sorted(rows, key=lambda r: -r[1])[:5]


@dataclass
class Latency:
    """Watches readings and predictions (paho, in its own thread) and pairs them per device."""

    port: int
    node: str
    readings: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    predictions: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        ready = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-latency-{self.node}")
        client.on_connect = lambda c, *_a: c.subscribe(
            [("bench/+/telemetry", 0), (f"edgeml/{self.node}/bench/+/prediction", 0)]
        )
        client.on_subscribe = lambda *_a: ready.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        if not ready.wait(10):
            raise RuntimeError("latency watcher did not subscribe")
        self.client = client

    def _on_message(self, _c: Any, _u: Any, m: Any) -> None:
        now = time.time()
        parts = m.topic.split("/")
        if parts[0] == "bench":
            self.readings[parts[1]].append(now)
        else:
            self.predictions[parts[3]].append(now)

    def stop(self) -> dict[str, float]:
        """p50 and p99 in ms, and how many pairs they come from."""
        self.client.loop_stop()
        self.client.disconnect()
        gaps = sorted(
            p - r
            for device, times in self.readings.items()
            for r, p in zip(times, self.predictions.get(device, ()), strict=False)
        )
        if not gaps:
            return {"pairs": 0}
        return {"pairs": len(gaps), "p50_ms": pct(gaps, 0.5) * 1e3, "p99_ms": pct(gaps, 0.99) * 1e3}


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


NEWEST = "SELECT ts FROM samples ORDER BY seq DESC LIMIT 1"


class CommitLag:
    """Polls the newest committed sample's arrival time against the clock, in a thread."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.lags: list[float] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self.done.wait(0.02):
            with contextlib.suppress(sqlite3.Error):
                if conn is None and self.db.exists():
                    conn = sqlite3.connect(self.db, timeout=1)
                if conn is not None:
                    row = conn.execute(NEWEST).fetchone()
                    if row is not None:
                        self.lags.append(time.time() - row[0])
        if conn is not None:
            conn.close()

    def stop(self) -> dict[str, float]:
        """p50 and p99 of the lag in ms, over the polls once samples were flowing."""
        self.done.set()
        self.thread.join(10)
        lags = sorted(self.lags)
        if not lags:
            return {}
        return {
            "commit_lag_p50_ms": pct(lags, 0.5) * 1e3,
            "commit_lag_p99_ms": pct(lags, 0.99) * 1e3,
        }
