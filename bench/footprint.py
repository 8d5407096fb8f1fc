"""Footprint: edgeml's memory and the bytes it writes to storage per sample.

    python bench/footprint.py [-n 100000] [--devices 10 1000] [--rate R]
                              [--no-restart] [--keep] [--log-level warning] [--fsyncs]

For each device count, `python -m edgeml run -c <config>` runs as a subprocess with one
regression stream `fp/+/telemetry` (key = topic level 1, features a, b, c, target y,
publish = "all"), its state in a temporary directory, log level warning, JSON logs. N
readings are published round-robin over the device topics with QoS 1 (at most 500
unacknowledged, from a publisher process), and the script reads from /proc, without psutil:

* RSS: VmRSS from /proc/<pid>/status every 0.2 s: idle after start (before any reading),
  peak while processing, and at the end (all N committed). VmHWM (the kernel's own peak,
  which sees between samples) and RssAnon at the end are printed below the table. Also the
  RSS of a restart on the finished state file, idle once `online`, with every model restored.
* storage writes: write_bytes of /proc/<pid>/io (what the kernel accounts as written to
  storage for the process and all its threads, SQLite's included), over the whole life of
  the process that processed the readings (read from the zombie, so the commit and WAL
  checkpoint at stop are in it), and over the processing window only; each divided by N.
  Cross-checked with edgeml's heartbeat (`daemon.bytes_written / daemon.learned` in its
  SQLite file, written at stop, so without the last commit and the close).
* the SQLite file at the end: edgeml.db plus edgeml.db-wal if present, and per stored sample.
* elapsed seconds, msgs/s and edgeml's CPU µs per message over the processing window, from
  the first reading's arrival (min(samples.ts)) until `SELECT count(*) FROM samples`
  (polled every 0.2 s) reaches N. CPU is utime + stime from /proc/<pid>/stat.

Modes:

* drain (default): edgeml starts once to create its persistent session (its idle RSS is
  read then), stops, the N readings are queued at the broker while it is away, then it
  starts again and drains them as fast as it can take them.
* --rate R: edgeml is up; the readings are published at R msg/s (use a smaller -n). This is
  the steady state of a live installation, where the group commit waits up to
  store.flush_interval_ms (200 ms) for company, so fewer samples share each commit.

* --fsyncs: strace (attached to the running edgeml and all its threads, `-e
  trace=fsync,fdatasync`) counts the fsyncs edgeml makes: per second and per committed
  sample over the processing window. ptrace costs edgeml some CPU, so read msgs/s and CPU
  from a run without it; bytes written are not affected.

At the end edgeml gets SIGTERM and must exit 0. The script starts its own mosquitto on a
free port (persistence off, unlimited queues, TCP_NODELAY) and exits 1 if a reading is
missing or edgeml did not exit 0. Warnings edgeml logged are listed under the tables, and the
`reconnects` / `redelivered` columns show whether edgeml lost its connection during the run.
`--keep` leaves the temporary directory (configs, edgeml.log, the state, trace.csv with the
0.2 s samples) for a closer look; `--log-level` sets edgeml's log.level for that.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    Broker,
    StatusMonitor,
    cpu_seconds,
    edgeml_config,
    failing,
    fmt,
    forget_session,
    io_counters,
    loadavg,
    make_messages,
    mosquitto_missing,
    print_run,
    proc_state,
    progress,
    publisher,
    publisher_result,
    start_edgeml,
    status_kib,
    stored_totals,
    utc_now,
)

TOPIC_FILTER = "fp/+/telemetry"
SAMPLE_EVERY_S = 0.2  # RSS, CPU, write_bytes and count(*)
IDLE_S = 3.0  # how long edgeml idles after `online` before its idle RSS is read
STALL_S = 30.0  # no new sample committed for this long: give up and report what is missing
# The order of the `versions:` line in this script's reports.
FOOTPRINT_VERSIONS = ("python", "river", "aiomqtt", "paho-mqtt", "SQLite", "mosquitto", "edgeml")


# -- what is read from /proc ------------------------------------------------------------------


@dataclass
class Point:
    t: float
    cpu: float
    rss_kib: int
    write_bytes: int


@dataclass
class Trace:
    pid: int
    points: list[Point] = field(default_factory=list)

    def sample(self) -> Point | None:
        now = time.time()
        cpu = cpu_seconds(self.pid)
        st = status_kib(self.pid)
        io = io_counters(self.pid)
        if cpu is None or "VmRSS" not in st or "write_bytes" not in io:
            return None
        point = Point(now, cpu, st["VmRSS"], io["write_bytes"])
        self.points.append(point)
        return point

    def cpu_at(self, t: float) -> float:
        """CPU seconds at time t, interpolated between two samples."""
        pts = self.points
        if t <= pts[0].t:
            return pts[0].cpu
        for p0, p1 in itertools.pairwise(pts):
            if p0.t <= t <= p1.t:
                w = (t - p0.t) / (p1.t - p0.t) if p1.t > p0.t else 0.0
                return p0.cpu + w * (p1.cpu - p0.cpu)
        return pts[-1].cpu

    def last_before(self, t: float) -> Point:
        before = [p for p in self.points if p.t <= t]
        return before[-1] if before else self.points[0]


# -- one measurement -------------------------------------------------------------------------


@dataclass
class Stopped:
    code: int
    seconds: float
    write_bytes: int | None  # the whole life of the process, read from its zombie
    cancelled_write_bytes: int | None
    maxrss_kib: int  # getrusage via wait4: the kernel's peak RSS


@dataclass
class Result:
    devices: int
    n: int
    committed: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0
    rss_idle_kib: int = 0
    rss_peak_kib: int = 0
    rss_end_kib: int = 0
    rss_anon_end_kib: int = 0
    hwm_kib: int = 0
    rss_restart_kib: int | None = None
    write_run: int | None = None
    write_window: int | None = None
    cancelled: int | None = None
    heartbeat_written: int | None = None
    heartbeat_learned: int | None = None
    heartbeat_received: int | None = None
    disconnects: int = 0
    db_bytes: int = 0
    wal_bytes: int = 0
    snapshot_bytes: float | None = None  # mean size of the newest snapshot per model
    snapshots: int = 0
    publisher_rate: float | None = None
    fsyncs_window: int | None = None  # fsync + fdatasync calls in the processing window
    fsyncs_run: int | None = None  # from the attach until the exit
    exit_code: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.committed / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.committed * 1e6 if self.committed else 0.0

    @property
    def redelivered(self) -> int | None:
        """Deliveries beyond the N readings (the broker sent them again after a reconnect)."""
        if self.heartbeat_received is None or self.heartbeat_learned is None:
            return None
        return self.heartbeat_received - self.heartbeat_learned

    def per_sample(self, value: int | None) -> float | None:
        return None if value is None or not self.n else value / self.n

    @property
    def fsyncs_per_s(self) -> float | None:
        if self.fsyncs_window is None or self.seconds <= 0:
            return None
        return self.fsyncs_window / self.seconds


class FsyncTrace:
    """strace attached to a running edgeml: every fsync/fdatasync of any thread, timed."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        cmd = ["strace", "-f", "-qq", "-ttt", "-e", "trace=fsync,fdatasync", "-o", str(out)]
        self.proc = subprocess.Popen([*cmd, "-p", str(pid)], stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # strace attaches to every thread before it returns from this

    def times(self) -> list[float]:
        """When each call started (epoch s); waits for strace, which ends with edgeml."""
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        out = []
        for line in self.out.read_text(errors="replace").splitlines():
            parts = line.split(None, 2)
            if len(parts) == 3 and parts[2].startswith(("fsync(", "fdatasync(")):
                out.append(float(parts[1]))
        return out


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    broker: Broker
    monitor: StatusMonitor

    def publish(self, devices: int, seed: int) -> subprocess.Popen[bytes]:
        a = self.args
        cmd = [sys.executable, str(Path(__file__).resolve()), "--publisher"]
        cmd += ["--port", str(self.broker.port), "-n", str(a.n), "--devices", str(devices)]
        cmd += ["--seed", str(seed), *(["--rate", str(a.rate)] if a.rate else [])]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE)

    @staticmethod
    def publish_wait(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
        return publisher_result(proc, timeout)

    def config(self, workdir: Path, node: str) -> Path:
        return edgeml_config(
            workdir,
            node,
            self.broker.port,
            stream="fp",
            topic=TOPIC_FILTER,
            log_level=self.args.log_level,
        )

    @staticmethod
    def start(config: Path) -> subprocess.Popen[bytes]:
        return start_edgeml(config)

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], timeout: float = 120) -> Stopped:
        """SIGTERM; read the zombie's /proc/<pid>/io before reaping it with wait4."""
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        killed = False
        while proc_state(proc.pid) not in ("Z", "X", None):
            if time.monotonic() - t0 > timeout:
                proc.kill()
                killed = True
                break
            time.sleep(0.01)
        io = io_counters(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        return Stopped(
            code=-9 if killed else proc.returncode,
            seconds=time.monotonic() - t0,
            write_bytes=io.get("write_bytes"),
            cancelled_write_bytes=io.get("cancelled_write_bytes"),
            maxrss_kib=usage.ru_maxrss,
        )

    def idle_rss(self, proc: subprocess.Popen[bytes], node: str) -> int:
        """Wait for `online`, let edgeml idle IDLE_S, return its RSS (KiB) then."""
        self.monitor.wait(node, b"online", proc, 120)
        deadline = time.monotonic() + IDLE_S
        while time.monotonic() < deadline:
            time.sleep(SAMPLE_EVERY_S)
        rss = status_kib(proc.pid).get("VmRSS")
        if rss is None or proc.poll() is not None:
            raise RuntimeError(f"edgeml exited while idle ({proc.poll()})")
        return rss

    def wait_committed(
        self, db_path: Path, proc: subprocess.Popen[bytes], trace: Trace
    ) -> tuple[float, int]:
        """Sample /proc and poll count(*) every 0.2 s until N samples are committed
        (or nothing new for STALL_S): (time seen, count)."""
        n = self.args.n
        conn: sqlite3.Connection | None = None
        last_count, last_change = -1, time.monotonic()
        try:
            while True:
                t0 = time.monotonic()
                trace.sample()
                count = 0
                with contextlib.suppress(sqlite3.Error):
                    if conn is None and db_path.exists():
                        conn = sqlite3.connect(db_path, timeout=1)
                    if conn is not None:
                        # fetchall: the statement ends, so no read transaction holds the WAL.
                        count = conn.execute("SELECT count(*) FROM samples").fetchall()[0][0]
                if count >= n:
                    return time.time(), count
                if count != last_count:
                    last_count, last_change = count, t0
                elif t0 - last_change > STALL_S:
                    return time.time(), count
                if proc.poll() is not None:
                    raise RuntimeError(f"edgeml exited with {proc.returncode} during the run")
                time.sleep(max(0.0, SAMPLE_EVERY_S - (time.monotonic() - t0)))
        finally:
            if conn is not None:
                conn.close()

    def run(self, devices: int) -> Result:
        a = self.args
        node = f"fp-{devices}"
        workdir = self.tmp / node
        config = self.config(workdir, node)
        db_path = workdir / "state" / "edgeml.db"
        res = Result(devices=devices, n=a.n)
        self.monitor.clear()
        proc = self.start(config)
        pub: dict[str, Any] | None = None
        try:
            res.rss_idle_kib = self.idle_rss(proc, node)
            if a.rate is None:
                # Drain: the session exists now; queue the readings while edgeml is away.
                first = self.stop(proc)
                if first.code != 0:
                    res.notes.append(f"SIGTERM after creating the session: exit {first.code}")
                progress(f"  {devices} devices: publishing {a.n} readings while edgeml is down")
                pub = self.publish_wait(self.publish(devices, seed=devices), 600)
                progress(f"  {devices} devices: starting edgeml to drain them")
                proc = self.start(config)
                fsyncs = FsyncTrace(proc.pid, workdir / "fsyncs.txt") if a.fsyncs else None
                trace = Trace(proc.pid)
                t_done, res.committed = self.wait_committed(db_path, proc, trace)
            else:
                fsyncs = FsyncTrace(proc.pid, workdir / "fsyncs.txt") if a.fsyncs else None
                trace = Trace(proc.pid)
                trace.sample()
                progress(f"  {devices} devices: publishing {a.n} readings at {a.rate:g} msg/s")
                pub_proc = self.publish(devices, seed=devices)
                t_done, res.committed = self.wait_committed(db_path, proc, trace)
                pub = self.publish_wait(pub_proc, 60)
            end = trace.sample() or trace.points[-1]
            st = status_kib(proc.pid)
            stopped = self.stop(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

        if a.keep:
            with (workdir / "trace.csv").open("w") as f:
                f.write("time,cpu_s,rss_kib,write_bytes\n")
                f.writelines(
                    f"{p.t:.3f},{p.cpu:.2f},{p.rss_kib},{p.write_bytes}\n" for p in trace.points
                )
        res.exit_code = stopped.code
        fsync_times = fsyncs.times() if fsyncs is not None else None
        if stopped.code != 0:
            res.notes.append(
                f"SIGTERM at the end: exit {stopped.code} after {stopped.seconds:.1f} s"
            )
        else:
            res.notes.append(f"stop (SIGTERM to exit) took {stopped.seconds:.2f} s")
        if pub is not None:
            res.publisher_rate = pub["n"] / max(1e-9, pub["t_last"] - pub["t_first"])
        res.rss_end_kib = end.rss_kib
        res.rss_anon_end_kib = st.get("RssAnon", 0)
        res.hwm_kib = max(stopped.maxrss_kib, st.get("VmHWM", 0))
        res.write_run = stopped.write_bytes
        res.cancelled = stopped.cancelled_write_bytes

        with contextlib.closing(sqlite3.connect(db_path)) as conn:
            samples, first_ts, predictions, hb = stored_totals(conn)
            snap = conn.execute(
                "SELECT count(*), avg(size) FROM snapshots WHERE id IN"
                " (SELECT max(id) FROM snapshots GROUP BY series)"
            ).fetchone()
        res.snapshots, res.snapshot_bytes = snap[0], snap[1]
        # The processing window: from the first reading's arrival until all N were seen.
        if first_ts is not None:
            res.seconds = t_done - first_ts
            res.cpu_s = trace.cpu_at(t_done) - trace.cpu_at(first_ts)
            inside = [p for p in trace.points if first_ts <= p.t <= t_done]
            res.rss_peak_kib = max(p.rss_kib for p in inside or trace.points)
            res.write_window = end.write_bytes - trace.last_before(first_ts).write_bytes
            if fsync_times is not None:
                res.fsyncs_run = len(fsync_times)
                res.fsyncs_window = sum(first_ts <= t <= t_done for t in fsync_times)
        if samples != a.n or predictions != a.n:
            res.notes.append(f"MISSING: {samples} samples, {predictions} predictions of {a.n}")
        if hb is None or hb[4] is None:
            res.notes.append("no heartbeat row with `stopped` set after SIGTERM")
        else:
            learned, received, rejected, written, _ = hb
            res.heartbeat_learned, res.heartbeat_written = learned, written
            res.heartbeat_received = received
            if learned != a.n or json.loads(rejected):
                res.notes.append(
                    f"heartbeat: received {received}, learned {learned}, rejected {rejected}"
                )
        res.db_bytes = db_path.stat().st_size
        wal = db_path.with_name(db_path.name + "-wal")
        res.wal_bytes = wal.stat().st_size if wal.exists() else 0

        # A restart on the finished file: RSS with every model restored, nothing to do.
        if not a.no_restart:
            self.monitor.clear()
            proc = self.start(config)
            try:
                res.rss_restart_kib = self.idle_rss(proc, node)
                again = self.stop(proc)
                if again.code != 0:
                    res.notes.append(f"SIGTERM after the restart: exit {again.code}")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        forget_session(self.broker.port, f"edgeml-{node}", v5=True)
        res.notes.extend(self.log_problems(workdir / "edgeml.log"))
        res.disconnects = sum(
            int(note.split("(x", 1)[1].split(")", 1)[0])
            for note in res.notes
            if note.startswith("log warning: mqtt_disconnected")
        )
        return res

    @staticmethod
    def log_problems(log: Path) -> list[str]:
        """Warnings and errors edgeml logged (config warnings about /etc/mosquitto aside),
        counted, with the fields of the first of each kind."""
        seen: dict[str, int] = {}
        first: dict[str, str] = {}
        for line in log.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
                level, event = doc.get("level"), doc.get("event")
                detail = {k: v for k, v in doc.items() if k not in ("event", "level", "logger")}
                key = f"log {level}: {event}"
            except (ValueError, AttributeError):
                level, event, detail = "?", None, {}
                key = f"non-JSON output: {line[:100]}"
            if level in ("warning", "error", "critical", "?") and event != "config_warning":
                seen[key] = seen.get(key, 0) + 1
                first.setdefault(key, json.dumps(detail)[:300])
        return [f"{k} (x{v}), first: {first[k]}" for k, v in seen.items()]


# -- report ----------------------------------------------------------------------------------


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def report(
    args: argparse.Namespace, results: list[Result], started: str, load: str, elapsed: float
) -> int:
    mode = (
        f"live at {args.rate:g} msg/s (edgeml up, publisher paced)"
        if args.rate
        else "drain (queued while edgeml was down, then drained as fast as it can)"
    )
    print()
    print(f"Footprint, {mode}; QoS 1, N = {args.n}")
    print_run(started, FOOTPRINT_VERSIONS, digest=True)
    print(
        "edgeml: `edgeml run` with its defaults (MQTT 5, Receive Maximum 1000, batches of <= 500,"
        f' flush_interval_ms 200), 1 stream "{TOPIC_FILTER}", one model per device,'
        ' publish = "all"'
    )
    print(f"load average (1, 5, 15 min) before: {load}, after: {loadavg()}")
    print(f"run time of this script: {elapsed:.0f} s")
    print()
    print(
        "| devices | messages | seconds | msgs/s | CPU µs/msg | RSS idle MiB | RSS peak MiB "
        "| RSS end MiB | RSS restarted MiB | reconnects | redelivered | exit |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.devices} | {r.committed} | {r.seconds:.2f} | {r.rate:.0f} | {r.cpu_us:.0f} "
            f"| {mib(r.rss_idle_kib)} | {mib(r.rss_peak_kib)} | {mib(r.rss_end_kib)} "
            f"| {mib(r.rss_restart_kib)} | {r.disconnects} | {fmt(r.redelivered, 'd')} "
            f"| {r.exit_code} |"
        )
    print()
    print(
        "| devices | written B/sample, whole run | written B/sample, processing "
        "| heartbeat B/sample | edgeml.db + -wal MB | file B/sample | snapshot B/model "
        "| fsyncs/s | fsyncs/sample |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        hb = (
            r.heartbeat_written / r.heartbeat_learned
            if r.heartbeat_written is not None and r.heartbeat_learned
            else None
        )
        size = r.db_bytes + r.wal_bytes
        print(
            f"| {r.devices} | {fmt(r.per_sample(r.write_run), '.0f')} "
            f"| {fmt(r.per_sample(r.write_window), '.0f')} | {fmt(hb, '.0f')} "
            f"| {size / 1e6:.2f} | {fmt(r.per_sample(size), '.0f')} "
            f"| {fmt(r.snapshot_bytes, '.0f')} | {fmt(r.fsyncs_per_s, '.1f')} "
            f"| {fmt(r.per_sample(r.fsyncs_window), '.3f')} |"
        )
    print()
    idle = "the first start, no models yet" if args.rate is None else "no models yet"
    print(
        f"RSS idle: VmRSS {IDLE_S:g} s after `online`, before any reading ({idle}). RSS peak /"
        " end: VmRSS sampled every 0.2 s while processing / once all N were committed. RSS"
        " restarted: a restart on the finished file, every model restored, idle. reconnects:"
        " mqtt_disconnected warnings edgeml logged; redelivered: daemon.received -"
        " daemon.learned (deliveries the broker repeated after a reconnect, recognised and not"
        " stored twice)."
    )
    print(
        "written: /proc/<pid>/io write_bytes / N. whole run = the life of the process that"
        " processed the readings (start-up, the snapshots and the WAL checkpoint at stop);"
        " processing = from the first arrival until all N were committed. heartbeat = edgeml's"
        " own daemon.bytes_written / daemon.learned (written at stop: without the last commit"
        " and the close). file = edgeml.db + edgeml.db-wal after the stop, / N."
        " fsyncs (--fsyncs): fsync + fdatasync calls of any edgeml thread in the processing"
        " window, per second of it and per sample (strace -f -p)."
    )
    failed = False
    for r in results:
        extra = (
            f"VmHWM {mib(r.hwm_kib)} MiB, RssAnon at end {mib(r.rss_anon_end_kib)} MiB, "
            f"cancelled_write_bytes {fmt(r.cancelled, 'd')}, edgeml.db {r.db_bytes} B, "
            f"-wal {r.wal_bytes} B, {r.snapshots} models snapshotted"
        )
        if r.publisher_rate is not None:
            extra += f", publisher {r.publisher_rate:.0f} msg/s"
        print(f"note ({r.devices} devices): {extra}")
        for note in r.notes:
            print(f"note ({r.devices} devices): {note}")
            failed = failed or failing(note)
        if r.exit_code != 0:
            failed = True
            print(f"PROBLEM ({r.devices} devices): exit code {r.exit_code}")
    return 1 if failed else 0


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", type=int, default=100_000, help="readings per device count (100000)")
    p.add_argument(
        "--devices", type=int, nargs="+", default=[10, 1000], help="device counts (10 1000)"
    )
    p.add_argument(
        "--rate", type=float, help="publish at R msg/s to a running edgeml (default: drain)"
    )
    p.add_argument(
        "--no-restart", action="store_true", help="skip the idle restart on the finished file"
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (configs, logs, state, trace.csv)",
    )
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="warning",
        help="edgeml's log.level (warning), for a look at its log with --keep",
    )
    p.add_argument(
        "--fsyncs",
        action="store_true",
        help="count edgeml's fsync/fdatasync calls with strace (costs it CPU)",
    )
    hidden = argparse.SUPPRESS
    p.add_argument("--publisher", action="store_true", help=hidden)
    p.add_argument("--port", type=int, help=hidden)
    p.add_argument("--seed", type=int, default=0, help=hidden)
    args = p.parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        p.error("--rate must be > 0")
    return args


def main() -> int:
    args = parse_args()
    if args.publisher:
        messages = make_messages(args.n, args.devices[0], args.seed, "fp")
        client_id = f"fp-pub-{os.getpid()}"
        publisher(args.port, messages, client_id=client_id, rate=args.rate, timeout=300)
        return 0
    if mosquitto_missing():
        return 2
    started = utc_now()
    load = loadavg()
    t0 = time.monotonic()
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = tempfile.mkdtemp(prefix="edgeml-footprint-")
            progress(f"keeping the broker's and edgeml's files in {tmp}")
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeml-footprint-"))
        workdir = Path(tmp)
        broker = Broker(workdir, queue_qos0=False)
        broker.start()
        monitor = StatusMonitor(broker.port, f"fp-monitor-{os.getpid()}")
        bench = Bench(args, workdir, broker, monitor)
        try:
            for devices in args.devices:
                r = bench.run(devices)
                progress(
                    f"{devices} devices: {r.committed} in {r.seconds:.2f} s = {r.rate:.0f} msgs/s,"
                    f" {r.cpu_us:.0f} µs CPU/msg, RSS {mib(r.rss_idle_kib)} / "
                    f"{mib(r.rss_peak_kib)} / {mib(r.rss_end_kib)} MiB, "
                    f"{fmt(r.per_sample(r.write_run), '.0f')} B written/sample"
                )
                results.append(r)
        finally:
            monitor.stop()
            broker.stop()
    return report(args, results, started, load, time.monotonic() - t0)


if __name__ == "__main__":
    sys.exit(main())
