"""Footprint: start to READY=1, resident memory idle and at a steady rate, CPU per message.

    python bench/pi_footprint.py [--rate 100] [--seconds 60] [--devices 10] [--restarts 3]
                                 [--drop-caches]

`python -m edgeml run` is started the way systemd starts it (Type=notify): with a
NOTIFY_SOCKET of its own, so "ready" is the moment READY=1 arrives from the daemon's pid
(database open, models restored, broker subscriptions acknowledged), timed from just before
the exec. Then:

1. first start, empty state directory: seconds to READY=1;
2. idle for 10 s: RSS (VmRSS) and CPU;
3. a steady `--rate` readings/s (QoS 1, `--devices` devices, one model each) for `--seconds`:
   RSS at the end and its peak (VmHWM), CPU per message over the window (utime + stime from
   /proc/<pid>/stat, divided by the readings stored), CPU as a share of one core;
4. SIGTERM: seconds until the process has drained, committed and exited;
5. `--restarts` more starts with that state (samples and snapshots): seconds to READY=1.

`--drop-caches` (root) empties the page cache before every start, for a truly cold start
(imports read from storage, as after a reboot); without it the files are in the page cache.
The script starts its own mosquitto on a free port and needs nothing beyond what edgeml
installs. Figures are for the machine it runs on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from common import (
    Broker,
    cpu_model,
    cpu_seconds,
    edgeml_source,
    loadavg,
    status_kib,
    utc_now,
    versions,
)

TOPIC = "bench/{}/telemetry"


class NotifySocket:
    """systemd's side of sd_notify: datagrams on an abstract socket, with the sender's pid."""

    def __init__(self) -> None:
        self.name = f"@edgeml-footprint-{uuid.uuid4().hex[:8]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages: list[tuple[float, int, str]] = []  # (monotonic, pid, text)
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            data, anc, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(12))
            pid = next(
                (struct.unpack("3i", v[:12])[0] for lvl, kind, v in anc
                 if lvl == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS),
                -1,
            )  # fmt: skip
            with self.cond:
                self.messages.append((time.monotonic(), pid, data.decode()))
                self.cond.notify_all()

    def wait(self, pid: int, line: str, timeout: float = 120.0) -> float:
        """Monotonic time at which `pid` sent a message with this line."""
        with self.cond:
            ok = self.cond.wait_for(
                lambda: any(p == pid and line in m.split("\n") for _, p, m in self.messages),
                timeout,
            )
            if not ok:
                raise TimeoutError(f"no {line} from pid {pid} in {timeout} s")
            return next(t for t, p, m in self.messages if p == pid and line in m.split("\n"))


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    fields = status_kib(pid)
    return fields["VmRSS"], fields["VmHWM"]


def stored(db: Path) -> int:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
    except sqlite3.Error:
        return 0


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


class Daemon:
    def __init__(self, config: Path, notify: NotifySocket, log: Path) -> None:
        self.config, self.notify, self.log = config, notify, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, cold: bool) -> float:
        """Start it; seconds until READY=1."""
        if cold:
            drop_caches()
        env = {**os.environ, "NOTIFY_SOCKET": self.notify.name, "WATCHDOG_USEC": "30000000"}
        env.pop("WATCHDOG_PID", None)
        with self.log.open("ab") as out:
            t0 = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgeml", "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        return self.notify.wait(self.proc.pid, "READY=1") - t0

    def stop(self) -> tuple[float, int]:
        """SIGTERM; (seconds until it exited, exit code)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.terminate()
        code = self.proc.wait(120)
        return time.monotonic() - t0, code


def publish_steady(port: int, rate: float, seconds: float, devices: int) -> int:
    """QoS 1 readings at `rate` per second, spread over `devices` devices; returns how many."""
    rng = random.Random(7)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="footprint-publisher")
    client.connect("127.0.0.1", port)
    client.loop_start()
    n = int(rate * seconds)
    t0 = time.monotonic()
    infos = []
    for i in range(n):
        a, b, c = rng.uniform(0, 10), rng.uniform(-5, 5), rng.uniform(0, 100)
        body = {"a": round(a, 4), "b": round(b, 4), "c": round(c, 4), "y": 2 * a - b + 0.05 * c}
        infos.append(
            client.publish(TOPIC.format(f"dev{i % devices}"), json.dumps(body).encode(), qos=1)
        )
        time.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
    for info in infos:
        info.wait_for_publish(30)
    client.loop_stop()
    client.disconnect()
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=100.0, help="readings per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the steady phase")
    ap.add_argument("--devices", type=int, default=10, help="devices (one model each)")
    ap.add_argument("--restarts", type=int, default=3, help="starts with existing state")
    ap.add_argument("--drop-caches", action="store_true", help="cold starts (root)")
    args = ap.parse_args()

    started = utc_now()
    load = loadavg()
    with tempfile.TemporaryDirectory(prefix="edgeml-footprint-") as tmp:
        work = Path(tmp)
        (work / "broker").mkdir()
        broker = Broker(work / "broker")
        broker.start()
        config = work / "config.toml"
        config.write_text(
            f'[node]\nid = "footprint"\nstate_dir = "{work / "state"}"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n\n'
            '[log]\nlevel = "info"\nformat = "json"\n\n'
            '[[stream]]\nname = "bench"\ntopic = "bench/+/telemetry"\nkey = "topic:1"\n'
            'features = ["a", "b", "c"]\ntarget = "y"\n'
        )
        notify = NotifySocket()
        daemon = Daemon(config, notify, work / "daemon.log")
        db = work / "state" / "edgeml.db"
        try:
            first = daemon.start(args.drop_caches)
            assert daemon.proc is not None
            pid = daemon.proc.pid
            time.sleep(2)
            cpu0, t0 = cpu_seconds(pid) or 0.0, time.monotonic()
            time.sleep(10)
            idle_cpu = ((cpu_seconds(pid) or 0.0) - cpu0) / (time.monotonic() - t0)
            idle_rss, _ = rss_kib(pid)

            before = stored(db)
            cpu0, t0 = cpu_seconds(pid) or 0.0, time.monotonic()
            sent = publish_steady(broker.port, args.rate, args.seconds, args.devices)
            deadline = time.monotonic() + 60
            while stored(db) < before + sent and time.monotonic() < deadline:
                time.sleep(0.05)
            learned = stored(db) - before
            window = time.monotonic() - t0
            busy = (cpu_seconds(pid) or 0.0) - cpu0
            load_rss, peak_rss = rss_kib(pid)
            stop_s, code = daemon.stop()

            restarts = []
            for _ in range(args.restarts):
                restarts.append(daemon.start(args.drop_caches))
                daemon.stop()
        finally:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.proc.kill()
            broker.stop()

    cold = "cold (page cache dropped)" if args.drop_caches else "page cache warm"
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores ({cpu_model()}), {started}, "
          f"load {load}. Software: {versions()}. edgeml: {edgeml_source()}.\n")  # fmt: skip
    rows = [
        ("start to READY=1, empty state", f"{first:.2f} s ({cold})"),
        (
            f"start to READY=1, {before + learned} samples stored",
            f"{statistics.median(restarts):.2f} s median of {len(restarts)} "
            f"({', '.join(f'{r:.2f}' for r in restarts)})",
        ),
        ("RSS idle (connected, 10 s after READY)", f"{idle_rss / 1024:.0f} MiB"),
        ("CPU idle", f"{idle_cpu * 100:.2f} % of one core"),
        (
            f"RSS after {args.seconds:.0f} s at {args.rate:.0f} msg/s ({args.devices} models)",
            f"{load_rss / 1024:.0f} MiB (peak {peak_rss / 1024:.0f} MiB)",
        ),
        (
            f"CPU per message at {args.rate:.0f} msg/s",
            f"{busy / max(learned, 1) * 1e6:.0f} µs ({busy / window * 100:.1f} % of one core)",
        ),
        ("SIGTERM to exit (drain, commit, offline)", f"{stop_s:.2f} s, exit {code}"),
    ]
    print("| what | measured |\n|---|---|")
    for what, value in rows:
        print(f"| {what} | {value} |")
    ok = code == 0 and learned == sent
    if not ok:
        print(f"\nproblem: exit {code}, {learned} of {sent} readings stored", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
