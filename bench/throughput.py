"""Throughput: `edgeml run` against a bare aiomqtt subscriber, on the same private mosquitto.

    python bench/throughput.py [-n 20000] [--qos 1] [--rounds 1] [--mode drain|live]

Both subscribers run as their own process, so the CPU each one spends is read from
/proc/<pid>/stat (utime + stime), without psutil.

* bare: aiomqtt, QoS 1 subscription on a persistent session (MQTT 3.1.1, clean_session
  False, fixed id, TCP_NODELAY like edgeml), `json.loads` on each payload, nothing else.
* edgeml: `python -m edgeml run -c <config>`: one regression stream `bench/+/telemetry`, one
  model per device (10 devices), a prediction published per reading, batches committed to
  SQLite before the QoS 1 acknowledgement.

Modes:

* drain (default): start the subscriber once to create its persistent session, stop it,
  publish N messages while it is away (the broker queues them), start it again and time the
  drain: from its first delivery (edgeml: the arrival time of the first stored sample; bare:
  its CONNACK) until all N are processed (edgeml: committed to SQLite). CPU is the process's
  CPU over that same window, read from a 5 ms trace of /proc/<pid>/stat, so import and
  start-up time are left out. The publisher's speed does not enter the figures.
* live: the subscriber is up and subscribed; N messages are published as fast as the
  publisher can (at most 500 QoS 1 messages unacknowledged); timed from the first publish
  until all N are processed. The publisher's own rate is shown: if a subscriber's rate is
  the publisher's, the publisher was the bottleneck.

Also shown: the broker's CPU per message, SQLite bytes written per sample (edgeml's own
heartbeat, written at stop), and how many cores every other process on the machine used
during the window: this machine may be shared, and a busy neighbour slows both subscribers.
Compare the ratio of the two subscribers measured in the same run, not absolute figures
from different runs. `--bare-protocol 5` gives the bare subscriber edgeml's MQTT 5 session
(Receive Maximum 1000); `--edgeml-publish none` turns off the prediction per reading;
`--edgeml-flush-ms MS` sets edgeml's store.flush_interval_ms; `--http-load` turns on edgeml's
[http] and, while edgeml is timed, scrapes /metrics once a second and makes 10 API requests
a second (status, events, models, healthz, a prediction): compare its edgeml figures with a
run without it.

The script starts its own mosquitto on a free port (persistence off, unlimited queues,
TCP_NODELAY) and needs nothing beyond what edgeml installs. It exits 1 if edgeml lost
messages, stored a duplicate or did not exit 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import queue
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
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
    free_port,
    loadavg,
    machine_busy_seconds,
    make_messages,
    mosquitto_missing,
    print_run,
    progress,
    publisher,
    publisher_result,
    start_edgeml,
    stored_totals,
    utc_now,
)
from throughput_probes import CommitLag, Latency, Strace

TOPIC_FILTER = "bench/+/telemetry"
DEVICES = 10
TRACE_EVERY_S = 0.005  # /proc/<pid>/stat
POLL_DB_EVERY_S = 0.02  # SQLite
STALL_S = 20.0  # no progress for this long: give up and report what is missing


def emit(doc: dict[str, Any]) -> None:
    print(json.dumps(doc), flush=True)


# -- children: the bare subscriber and the publisher --------------------------------------


def bare_subscriber(
    port: int, client_id: str, n: int, qos: int, create_only: bool, protocol: str
) -> None:
    """Prints `subscribed`, then (unless create_only) `done` after N messages, then waits
    for its stdin to close, so the parent reads the CPU of a finished but live process."""
    import asyncio

    import aiomqtt

    async def main() -> None:
        session: dict[str, Any] = {"clean_session": False, "protocol": aiomqtt.ProtocolVersion.V311}
        if protocol == "5":
            # What edgeml does: a session that outlives the connection, 1000 in flight.
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.ReceiveMaximum = 1000
            props.SessionExpiryInterval = 3600
            session = {
                "protocol": aiomqtt.ProtocolVersion.V5,
                "clean_start": False,
                "properties": props,
            }
        client = aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier=client_id,
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            **session,
        )
        async with client:
            t_connected = time.time()
            await client.subscribe(TOPIC_FILTER, qos=qos)
            emit({"event": "subscribed", "t_connected": t_connected, "t": time.time()})
            if create_only:
                return
            count = 0
            loads = json.loads
            async for message in client.messages:
                loads(message.payload)
                count += 1
                if count >= n:
                    break
            emit({"event": "done", "t_connected": t_connected, "t_done": time.time(), "n": count})
            await asyncio.to_thread(sys.stdin.readline)

    asyncio.run(main())


# -- the things the parent watches ------------------------------------------------------------


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class Trace:
    """Every few ms: (wall time, subscriber CPU s, broker CPU s, CPU s of everything else on
    the machine), so the CPU at any instant can be read back."""

    sub_pid: int
    broker_pid: int
    points: list[tuple[float, float, float, float]] = field(default_factory=list)

    def sample(self) -> tuple[float, float, float, float]:
        now = time.time()
        sub = cpu_seconds(self.sub_pid) or 0.0
        broker = cpu_seconds(self.broker_pid) or 0.0
        others = machine_busy_seconds() - sub - broker - own_cpu_seconds()
        point = (now, sub, broker, others)
        self.points.append(point)
        return point

    def at(self, t: float) -> tuple[float, float, float]:
        """CPU of (subscriber, broker, others) at time t, interpolated between two samples."""
        pts = self.points
        if t <= pts[0][0]:
            return pts[0][1:]
        for p0, p1 in itertools.pairwise(pts):
            if p0[0] <= t <= p1[0]:
                w = (t - p0[0]) / (p1[0] - p0[0]) if p1[0] > p0[0] else 0.0
                return (
                    p0[1] + w * (p1[1] - p0[1]),
                    p0[2] + w * (p1[2] - p0[2]),
                    p0[3] + w * (p1[3] - p0[3]),
                )
        return pts[-1][1:]


# -- one measurement -------------------------------------------------------------------------


@dataclass
class Result:
    who: str
    n: int  # messages the subscriber processed in the window
    seconds: float
    cpu_s: float
    broker_cpu_s: float
    others_cpu_s: float = 0.0  # every other process on the machine (live: the publisher too)
    exit_code: int | None = None
    bytes_per_sample: float | None = None
    publisher_rate: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.n * 1e6 if self.n else 0.0

    @property
    def broker_cpu_us(self) -> float:
        return self.broker_cpu_s / self.n * 1e6 if self.n else 0.0

    @property
    def others_cores(self) -> float:
        """How busy the rest of the machine was during the window, in cores."""
        return max(0.0, self.others_cpu_s) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    broker: Broker
    monitor: StatusMonitor

    @property
    def script(self) -> str:
        return str(Path(__file__).resolve())

    def publish(self, seed: int, rate: float | None = None) -> subprocess.Popen[bytes]:
        a = self.args
        cmd = [sys.executable, self.script, "--publisher", "--port", str(self.broker.port)]
        cmd += ["-n", str(a.n), "--qos", str(a.qos), "--seed", str(seed)]
        cmd += [] if rate is None else ["--rate", str(rate)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE)

    @staticmethod
    def publish_wait(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
        return publisher_result(proc, 180)

    # -- bare ---------------------------------------------------------------------------------

    def start_bare(self, client_id: str, create_only: bool) -> tuple[subprocess.Popen[bytes], Any]:
        a = self.args
        cmd = [sys.executable, self.script, "--bare-subscriber", "--port", str(self.broker.port)]
        cmd += ["--client-id", client_id, "-n", str(a.n), "--qos", str(a.qos)]
        cmd += ["--bare-protocol", a.bare_protocol, *(["--create-only"] if create_only else [])]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        lines: queue.Queue[dict[str, Any]] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(json.loads(line))

        threading.Thread(target=read, daemon=True).start()
        return proc, lines

    @staticmethod
    def wait_line(
        proc: subprocess.Popen[bytes],
        lines: queue.Queue[dict[str, Any]],
        event: str,
        timeout: float,
        tick: Callable[[], object] | None = None,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if tick is not None:
                tick()
            try:
                doc = lines.get(timeout=TRACE_EVERY_S)
            except queue.Empty:
                if proc.poll() is not None and lines.empty():
                    raise RuntimeError(f"bare subscriber exited ({proc.returncode})") from None
                continue
            if doc.get("event") == event:
                return doc
        raise RuntimeError(f"bare subscriber: no {event!r} within {timeout} s")

    @staticmethod
    def finish_bare(proc: subprocess.Popen[bytes]) -> int:
        assert proc.stdin is not None
        proc.stdin.close()
        return proc.wait(30)

    def run_bare(self, rnd: int) -> Result:
        a = self.args
        client_id = f"bench-bare-{a.mode}-{rnd}"
        broker_pid = self.broker.proc.pid  # type: ignore[union-attr]
        proc: subprocess.Popen[bytes] | None = None
        try:
            if a.mode == "drain":
                proc, lines = self.start_bare(client_id, create_only=True)
                self.wait_line(proc, lines, "subscribed", 30)
                if proc.wait(30) != 0:
                    raise RuntimeError(f"bare subscriber (create) exited {proc.returncode}")
                pub = self.publish_wait(self.publish(seed=rnd))
                proc, lines = self.start_bare(client_id, create_only=False)
                trace = Trace(proc.pid, broker_pid)
                done = self.wait_line(proc, lines, "done", 180, tick=trace.sample)
                _, cpu_end, broker_end, others_end = trace.sample()
                cpu_start, broker_start, others_start = trace.at(done["t_connected"])
                t_start = done["t_connected"]
            else:
                proc, lines = self.start_bare(client_id, create_only=False)
                self.wait_line(proc, lines, "subscribed", 30)
                trace = Trace(proc.pid, broker_pid)
                _, cpu_start, broker_start, others_start = trace.sample()
                pub_proc = self.publish(seed=rnd)
                done = self.wait_line(proc, lines, "done", 180)
                _, cpu_end, broker_end, others_end = trace.sample()
                pub = self.publish_wait(pub_proc)
                t_start = pub["t_first"]
            code = self.finish_bare(proc)
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
            forget_session(self.broker.port, client_id, v5=a.bare_protocol == "5")
        return Result(
            who="bare",
            n=done["n"],
            seconds=done["t_done"] - t_start,
            cpu_s=cpu_end - cpu_start,
            broker_cpu_s=broker_end - broker_start,
            others_cpu_s=others_end - others_start,
            exit_code=code,
            publisher_rate=pub["n"] / (pub["t_last"] - pub["t_first"]),
        )

    # -- edgeml -------------------------------------------------------------------------------

    def edgeml_config(self, workdir: Path, node: str) -> Path:
        flush = self.args.edgeml_flush_ms
        sections = "" if flush is None else f"[store]\nflush_interval_ms = {flush}\n\n"
        if self.args.http_load:
            self.http_port = free_port()
            sections += f'[http]\nenabled = true\nlisten = "127.0.0.1:{self.http_port}"\n\n'
        return edgeml_config(
            workdir,
            node,
            self.broker.port,
            stream="bench",
            topic=TOPIC_FILTER,
            publish=self.args.edgeml_publish,
            store=sections,
            model=self.args.model,
        )

    def http_load(self) -> HttpLoad | None:
        return HttpLoad(f"http://127.0.0.1:{self.http_port}") if self.args.http_load else None

    @staticmethod
    def stop_edgeml(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            return -9, time.monotonic() - t0
        return code, time.monotonic() - t0

    def wait_committed(
        self, db_path: Path, proc: subprocess.Popen[bytes], trace: Trace | None, node: str
    ) -> tuple[float, int, float | None]:
        """Poll until N samples are committed: (time seen, count, time `online` was seen).

        Polls `max(seq)` (an index lookup; seq counts 1, 2, ... in a fresh database and is
        committed in order), and the caller checks `count(*)` afterwards."""
        n = self.args.n
        online = None
        conn: sqlite3.Connection | None = None
        last_poll = 0.0
        last_count, last_change = -1, time.monotonic()
        try:
            while True:
                if trace is not None:
                    trace.sample()
                if online is None:
                    online = self.monitor.poll(node, b"online")
                now = time.monotonic()
                if now - last_poll >= POLL_DB_EVERY_S:
                    last_poll = now
                    count = 0
                    with contextlib.suppress(sqlite3.Error):
                        if conn is None and db_path.exists():
                            conn = sqlite3.connect(db_path, timeout=1)
                        if conn is not None:
                            count = conn.execute("SELECT max(seq) FROM samples").fetchone()[0] or 0
                    if count >= n:
                        return time.time(), count, online
                    if count != last_count:
                        last_count, last_change = count, now
                    elif now - last_change > STALL_S:
                        return time.time(), count, online
                if proc.poll() is not None:
                    raise RuntimeError(f"edgeml exited with {proc.returncode} during the run")
                time.sleep(TRACE_EVERY_S)
        finally:
            if conn is not None:
                conn.close()

    def run_edgeml(self, rnd: int) -> Result:
        a = self.args
        node = f"bench-{a.mode}-{rnd}"
        workdir = self.tmp / node
        config = self.edgeml_config(workdir, node)
        db_path = workdir / "state" / "edgeml.db"
        broker_pid = self.broker.proc.pid  # type: ignore[union-attr]
        notes: list[str] = []
        load: HttpLoad | None = None
        self.monitor.clear()
        proc = start_edgeml(config)
        try:
            self.monitor.wait(node, b"online", proc, 60)
            if a.mode == "drain":
                code, _ = self.stop_edgeml(proc)
                if code != 0:
                    notes.append(f"SIGTERM after creating the session: exit {code}")
                pub = self.publish_wait(self.publish(seed=rnd))
                self.monitor.clear()
                proc = start_edgeml(config)
                load = self.http_load()
                trace = Trace(proc.pid, broker_pid)
                t_done, count, online = self.wait_committed(db_path, proc, trace, node)
                _, cpu_end, broker_end, others_end = trace.sample()
            else:
                trace = Trace(proc.pid, broker_pid)
                load = self.http_load()
                _, cpu_start, broker_start, others_start = trace.sample()
                pub_proc = self.publish(seed=rnd)
                t_done, count, online = self.wait_committed(db_path, proc, None, node)
                _, cpu_end, broker_end, others_end = trace.sample()
                pub = self.publish_wait(pub_proc)
            if load is not None:
                notes.append(load.stop())
            code, stop_s = self.stop_edgeml(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            forget_session(self.broker.port, f"edgeml-{node}", v5=True)

        with contextlib.closing(sqlite3.connect(db_path)) as conn:
            samples, first_ts, predictions, row = stored_totals(conn)
        if a.mode == "drain":
            t_start = first_ts
            cpu_start, broker_start, others_start = trace.at(first_ts)
            if online is not None:
                notes.append(
                    f"status `online` seen {online - first_ts:.2f} s after the first delivery"
                )
        else:
            t_start = pub["t_first"]
        if samples != a.n or predictions != a.n:
            notes.append(f"MISSING: {samples} samples, {predictions} predictions of {a.n}")
        if code != 0:
            notes.append(f"SIGTERM at the end: exit {code} after {stop_s:.1f} s")
        bytes_per_sample = None
        if row is None or row[4] is None:
            notes.append("no heartbeat row with `stopped` set after SIGTERM")
        else:
            learned, received, rejected, written, _stopped = row
            if received != learned or json.loads(rejected):
                notes.append(f"received {received}, learned {learned}, rejected {rejected}")
            if written is not None and learned:
                bytes_per_sample = written / learned
        notes.extend(self.log_problems(workdir / "edgeml.log"))
        return Result(
            who="edgeml",
            n=count if count < a.n else a.n,
            seconds=t_done - t_start,
            cpu_s=cpu_end - cpu_start,
            broker_cpu_s=broker_end - broker_start,
            others_cpu_s=others_end - others_start,
            exit_code=code,
            bytes_per_sample=bytes_per_sample,
            publisher_rate=pub["n"] / (pub["t_last"] - pub["t_first"]),
            notes=notes,
        )

    def probe_edgeml(self, rnd: int) -> dict[str, Any]:
        """Two untimed runs of edgeml: its syscalls under a flood (strace attached), then
        its latency and commit lag at --latency-rate."""
        out: dict[str, Any] = {}
        for kind in ("syscalls", "latency"):
            node = f"bench-{kind}-{rnd}"
            workdir = self.tmp / node
            config = self.edgeml_config(workdir, node)
            db_path = workdir / "state" / "edgeml.db"
            self.monitor.clear()
            proc = start_edgeml(config)
            try:
                self.monitor.wait(node, b"online", proc, 60)
                if kind == "syscalls":
                    strace = Strace(proc.pid, workdir / "strace.txt")
                    pub = self.publish(seed=rnd)
                else:
                    watch, lag = Latency(self.broker.port, node), CommitLag(db_path)
                    pub = self.publish(seed=rnd, rate=self.args.latency_rate)
                _, count, _ = self.wait_committed(db_path, proc, None, node)
                if kind == "latency":
                    out.update(lag.stop())  # before the lag grows on an idle daemon
                self.publish_wait(pub)
                if kind == "syscalls":
                    calls, top = strace.stop()
                    out.update(edgeml_syscalls=calls / max(1, count), edgeml_top=top)
                else:
                    time.sleep(0.5)  # the last predictions
                    out.update(watch.stop())
                self.stop_edgeml(proc)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
                forget_session(self.broker.port, f"edgeml-{node}", v5=True)
        return out

    def probe_bare(self, rnd: int) -> dict[str, Any]:
        """The bare subscriber's syscalls under the same flood, strace attached."""
        client_id = f"bench-bare-probe-{rnd}"
        proc, lines = self.start_bare(client_id, create_only=False)
        try:
            self.wait_line(proc, lines, "subscribed", 30)
            strace = Strace(proc.pid, self.tmp / f"bare-strace-{rnd}.txt")
            pub = self.publish(seed=rnd)
            done = self.wait_line(proc, lines, "done", 180)
            calls, top = strace.stop()
            self.publish_wait(pub)
            self.finish_bare(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            forget_session(self.broker.port, client_id, v5=self.args.bare_protocol == "5")
        return {"bare_syscalls": calls / max(1, done["n"]), "bare_top": top}

    @staticmethod
    def log_problems(log: Path) -> list[str]:
        """Warnings and errors edgeml logged (config warnings about /etc/mosquitto aside)."""
        seen: dict[str, int] = {}
        for line in log.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                seen[f"non-JSON output: {line[:100]}"] = seen.get(line[:100], 0) + 1
                continue
            if doc.get("event") == "config_warning":
                continue
            key = f"log {doc.get('level')}: {doc.get('event')}"
            seen[key] = seen.get(key, 0) + 1
        return [f"{k} (x{v})" for k, v in seen.items()]


# -- report ----------------------------------------------------------------------------------


class HttpLoad:
    """Scrapes /metrics once a second and makes 10 API requests a second, in a thread."""

    PATHS = ("/api/v1/status", "/api/v1/events?limit=20", "/api/v1/models", "/healthz")

    def __init__(self, base: str) -> None:
        self.base = base
        self.done = threading.Event()
        self.counts: dict[str, int] = {"scrapes": 0, "requests": 0, "failed": 0}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _get(self, path: str, body: bytes | None = None) -> None:
        try:
            with urllib.request.urlopen(self.base + path, data=body, timeout=5) as r:
                r.read()
        except (OSError, urllib.error.URLError):
            self.counts["failed"] += 1

    def _run(self) -> None:
        predict = b'{"a": 5, "b": 0, "c": 50}'
        for i in itertools.count():
            if self.done.wait(0.1):
                return
            if i % 10 == 0:
                self._get("/metrics")
                self.counts["scrapes"] += 1
            if i % 5 == 4:
                self._get("/api/v1/predict/bench/dev0", predict)
            else:
                self._get(self.PATHS[i % len(self.PATHS)])
            self.counts["requests"] += 1

    def stop(self) -> str:
        self.done.set()
        self.thread.join(10)
        c = self.counts
        return (
            f"HTTP load: {c['scrapes']} scrapes, {c['requests']} API requests "
            f"({c['failed']} failed, refused before the server listened included)"
        )


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def report(
    args: argparse.Namespace,
    rounds: list[tuple[Result, Result]],
    started: str,
    load: str,
    probes: dict[str, Any],
) -> int:
    label = {"bare": "bare aiomqtt (json.loads only)", "edgeml": "edgeml run"}
    mode = (
        "drain: N queued while the subscriber was away, then drained"
        if args.mode == "drain"
        else "live: published while the subscriber runs"
    )
    print()
    print(f"Throughput, {mode}; QoS {args.qos}, {DEVICES} device topics, N = {args.n}")
    print_run(started)
    print(f"load average (1, 5, 15 min) before: {load}, after: {loadavg()}")
    bare_proto = (
        "MQTT 3.1.1, clean_session False"
        if args.bare_protocol == "3.1.1"
        else "MQTT 5, Receive Maximum 1000, session expiry"
    )
    print(f"bare: aiomqtt, {bare_proto}, TCP_NODELAY, auto-ack, json.loads per message")
    print(
        "edgeml: `edgeml run`, its defaults (MQTT 5, Receive Maximum 1000, batches of <= 500"
        f" committed before the ack), 1 stream, {DEVICES} models, model = {args.model},"
        f" publish = {args.edgeml_publish}"
        + (
            ""
            if args.edgeml_flush_ms is None
            else f", store.flush_interval_ms = {args.edgeml_flush_ms}"
        )
    )
    what = "median of " + str(len(rounds)) + " rounds" if len(rounds) > 1 else "1 round"
    print(f"figures: {what}")
    print()
    header = (
        "| subscriber | messages | seconds | msgs/s | CPU µs/msg | broker CPU µs/msg "
        "| SQLite B/sample | rest of machine, cores | exit |"
    )
    if args.mode == "live":
        header += " publisher msgs/s |"
    print(header)
    print(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if args.mode == "live" else "")
    )
    med: dict[str, dict[str, float | None]] = {}
    for i, who in enumerate(("bare", "edgeml")):
        rs = [r[i] for r in rounds]
        m = med[who] = {
            "n": median([r.n for r in rs]),
            "seconds": median([r.seconds for r in rs]),
            "rate": median([r.rate for r in rs]),
            "cpu_us": median([r.cpu_us for r in rs]),
            "broker_cpu_us": median([r.broker_cpu_us for r in rs]),
            "bps": median([r.bytes_per_sample for r in rs]),
            "pub": median([r.publisher_rate for r in rs]),
            "others": median([r.others_cores for r in rs]),
        }
        codes = sorted({str(r.exit_code) for r in rs})
        line = (
            f"| {label[who]} | {fmt(m['n'], '.0f')} | {fmt(m['seconds'], '.2f')} "
            f"| {fmt(m['rate'], '.0f')} | {fmt(m['cpu_us'], '.0f')} "
            f"| {fmt(m['broker_cpu_us'], '.0f')} | {fmt(m['bps'], '.0f')} "
            f"| {fmt(m['others'], '.2f')} | {','.join(codes)} |"
        )
        if args.mode == "live":
            line += f" {fmt(m['pub'], '.0f')} |"
        print(line)
    # Each ratio from one round (both subscribers under the same load), then the median.
    cpu_ratio = median([e.cpu_us / b.cpu_us if b.cpu_us else None for b, e in rounds])
    ratio = median([e.rate / b.rate if b.rate else None for b, e in rounds])
    print()
    print(f"edgeml / bare CPU per reading: {fmt(cpu_ratio, '.2f')}x (target <= 1.0x)")
    target = ">= 0.95x" if args.mode == "live" else ">= 1.0x"
    print(f"edgeml / bare msgs/s: {fmt(ratio, '.2f')}x (target {target})")
    print_probes(args, probes)
    print(
        "rest of machine: CPU used by every other process during the window, in cores"
        + (" (the publisher included)" if args.mode == "live" else "")
    )
    if len(rounds) > 1:
        for i, (b, e) in enumerate(rounds, 1):
            print(
                f"  round {i}: bare {b.rate:.0f} msgs/s {b.cpu_us:.0f} µs/msg; "
                f"edgeml {e.rate:.0f} msgs/s {e.cpu_us:.0f} µs/msg; "
                f"CPU {e.cpu_us / b.cpu_us:.2f}x, msgs/s {e.rate / b.rate:.2f}x; "
                f"rest of machine {b.others_cores:.2f} / {e.others_cores:.2f} cores"
            )
    if args.mode == "live":
        for who in ("bare", "edgeml"):
            rate, pub = med[who]["rate"] or 0, med[who]["pub"] or 0
            if pub and rate >= 0.9 * pub:
                print(
                    f"note: {who} kept up with the publisher ({rate:.0f} vs {pub:.0f} msgs/s):"
                    " the publisher, not the subscriber, set this figure"
                )
    problems = [
        (i, r.who, note) for i, pair in enumerate(rounds, 1) for r in pair for note in r.notes
    ]
    failed = False
    for i, who, note in problems:
        print(f"note (round {i}, {who}): {note}")
        failed = failed or failing(note)
    for i, pair in enumerate(rounds, 1):
        for r in pair:
            if r.exit_code != 0:
                failed = True
                print(f"PROBLEM (round {i}, {r.who}): exit code {r.exit_code}")
    return 1 if failed else 0


def print_probes(args: argparse.Namespace, probes: dict[str, Any]) -> None:
    if not probes:
        return

    def top(rows: list[tuple[str, int]]) -> str:
        return ", ".join(f"{name} {calls / args.n:.2f}" for name, calls in rows)

    print(
        f"syscalls per reading (strace -c -f attached, live, N = {args.n}): "
        f"edgeml {probes['edgeml_syscalls']:.2f} ({top(probes['edgeml_top'])}); "
        f"bare {probes['bare_syscalls']:.2f} ({top(probes['bare_top'])})"
    )
    if probes.get("pairs"):
        print(
            f"publish -> prediction at {args.latency_rate:.0f} readings/s: "
            f"p50 {probes['p50_ms']:.1f} ms, p99 {probes['p99_ms']:.1f} ms "
            f"({probes['pairs']} readings; target p99 <= 20 ms); newest commit behind the "
            f"clock: p50 {fmt(probes.get('commit_lag_p50_ms'), '.0f')} ms, "
            f"p99 {fmt(probes.get('commit_lag_p99_ms'), '.0f')} ms (target <= 250 ms)"
        )


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", type=int, default=20000, help="messages per measurement (20000)")
    p.add_argument("--qos", type=int, choices=(0, 1), default=1, help="publish/subscribe QoS (1)")
    p.add_argument("--rounds", type=int, default=1, help="repeat and print the median (1)")
    p.add_argument("--mode", choices=("drain", "live"), default="drain", help="(drain)")
    p.add_argument(
        "--bare-protocol",
        choices=("3.1.1", "5"),
        default="3.1.1",
        help="the bare subscriber's MQTT version (3.1.1: clean_session False; 5: like edgeml,\n"
        "session expiry and Receive Maximum 1000)",
    )
    p.add_argument(
        "--edgeml-publish",
        choices=("all", "none"),
        default="all",
        help="the stream's `publish` setting (all: one prediction per reading)",
    )
    p.add_argument(
        "--edgeml-flush-ms",
        type=int,
        metavar="MS",
        help="set edgeml's store.flush_interval_ms (default: edgeml's own default)",
    )
    p.add_argument(
        "--model",
        choices=("linear", "tree", "halfspace"),
        default="linear",
        help="edgeml's preset (halfspace: an anomaly stream over a, b, c)",
    )
    p.add_argument(
        "--probes",
        action="store_true",
        help="after the rounds: syscalls per reading (strace -c -f, both subscribers, live)\n"
        "and edgeml's publish -> prediction latency at --latency-rate",
    )
    p.add_argument("--latency-rate", type=float, default=1000.0, help="readings/s (1000)")
    p.add_argument(
        "--http-load",
        action="store_true",
        help="enable edgeml's [http]; 1 scrape/s and 10 API requests/s while it is timed",
    )
    # The children this script runs of itself.
    hidden = argparse.SUPPRESS
    p.add_argument("--bare-subscriber", action="store_true", help=hidden)
    p.add_argument("--publisher", action="store_true", help=hidden)
    p.add_argument("--create-only", action="store_true", help=hidden)
    p.add_argument("--port", type=int, help=hidden)
    p.add_argument("--client-id", help=hidden)
    p.add_argument("--seed", type=int, default=0, help=hidden)
    p.add_argument("--rate", type=float, help=hidden)
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    if args.bare_subscriber:
        bare_subscriber(
            args.port, args.client_id, args.n, args.qos, args.create_only, args.bare_protocol
        )
        return 0
    if args.publisher:
        messages = make_messages(args.n, DEVICES, args.seed, "bench")
        publisher(
            args.port, messages, client_id=f"bench-pub-{os.getpid()}", qos=args.qos, rate=args.rate
        )
        return 0
    if mosquitto_missing():
        return 2
    started = utc_now()
    load = loadavg()
    results: list[tuple[Result, Result]] = []
    probes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgeml-bench-") as tmp:
        workdir = Path(tmp)
        broker = Broker(workdir)
        broker.start()
        monitor = StatusMonitor(broker.port, f"bench-monitor-{os.getpid()}")
        bench = Bench(args, workdir, broker, monitor)
        try:
            for rnd in range(1, args.rounds + 1):
                bare = bench.run_bare(rnd)
                progress(
                    f"round {rnd}/{args.rounds} bare:   {bare.n} msgs in {bare.seconds:.2f} s = "
                    f"{bare.rate:.0f} msgs/s, {bare.cpu_us:.0f} µs CPU/msg "
                    f"(publisher {bare.publisher_rate:.0f} msgs/s)"
                )
                edge = bench.run_edgeml(rnd)
                progress(
                    f"round {rnd}/{args.rounds} edgeml: {edge.n} msgs in {edge.seconds:.2f} s = "
                    f"{edge.rate:.0f} msgs/s, {edge.cpu_us:.0f} µs CPU/msg "
                    f"(publisher {edge.publisher_rate:.0f} msgs/s)"
                    + "".join(f"\n  note: {n}" for n in edge.notes)
                )
                results.append((bare, edge))
            if args.probes:
                progress("probes: syscalls (strace) and latency at a steady rate")
                probes = {**bench.probe_edgeml(1), **bench.probe_bare(1)}
        finally:
            monitor.stop()
            broker.stop()
    return report(args, results, started, load, probes)


if __name__ == "__main__":
    sys.exit(main())
