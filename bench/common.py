"""What the benchmark scripts in bench/ share: a private mosquitto, the QoS 1 publisher they run
as a child, the /proc readers, the `edgeml/+/status` monitor and the lines that describe the
machine and the software under every report.

Not a script: throughput.py, footprint.py and pi_footprint.py import it (`from common import`),
which works because `python bench/X.py` puts bench/ first on sys.path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import queue
import random
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
WINDOW = 500  # QoS 1 messages the publisher leaves unacknowledged at most


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the publisher (a child process of the scripts) ------------------------------------------


def make_messages(n: int, devices: int, seed: int, prefix: str) -> list[tuple[str, bytes]]:
    """N regression readings (y = 2a - b + 0.05c + noise), round-robin over
    `<prefix>/dev<i>/telemetry` for `devices` devices."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b, c = rng.uniform(0, 10), rng.uniform(-5, 5), rng.uniform(0, 100)
        y = 2 * a - b + 0.05 * c + rng.gauss(0, 0.1)
        body = {"a": round(a, 4), "b": round(b, 4), "c": round(c, 4), "y": round(y, 4)}
        out.append((f"{prefix}/dev{i % devices}/telemetry", json.dumps(body).encode()))
    return out


def publisher(
    port: int,
    messages: list[tuple[str, bytes]],
    *,
    client_id: str,
    qos: int = 1,
    rate: float | None = None,
    timeout: float = 120.0,
) -> None:
    """Publish the messages with at most WINDOW unacknowledged; as fast as possible, or
    message i at t0 + i / rate. Prints one JSON line: t_first, t_last, n.

    paho, on one thread (its own network thread made it slower: GIL hand-offs), because
    what is measured is the subscriber. The window keeps packet ids from wrapping (API_NOTES).
    """
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    n = len(messages)
    acked = 0

    def on_publish(_c: Any, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        nonlocal acked
        acked += 1

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)
    client.max_inflight_messages_set(WINDOW)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port, keepalive=60)
    deadline = time.monotonic() + 10
    while not client.is_connected():
        if time.monotonic() > deadline:
            raise SystemExit("publisher: no CONNACK")
        client.loop(0.01)
    t0 = time.monotonic()
    t_first = time.time()
    sent = 0
    deadline = t0 + timeout + (n / rate if rate else 0)
    while acked < n:
        now = time.monotonic()
        while (
            sent < n
            and (not qos or sent - acked < WINDOW)
            and (rate is None or now >= t0 + sent / rate)
        ):
            info = client.publish(*messages[sent], qos=qos)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise SystemExit(f"publisher: publish failed: {info.rc}")
            sent += 1
        wait = 0.01
        if rate is not None and sent < n:
            wait = max(0.0, min(wait, t0 + sent / rate - time.monotonic()))
        # Reads PUBACKs and writes what is pending; on_publish counts a QoS 0 message once
        # written.
        client.loop(wait)
        if time.monotonic() > deadline:
            raise SystemExit(f"publisher: only {acked} of {n} acknowledged")
    t_last = time.time()
    client.disconnect()
    print(json.dumps({"t_first": t_first, "t_last": t_last, "n": n}), flush=True)


def publisher_result(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """Wait for a publisher child and return its JSON line."""
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"publisher failed with {proc.returncode}")
    doc: dict[str, Any] = json.loads(out.splitlines()[-1])
    return doc


# -- the broker, edgeml and what is read from /proc ------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A private mosquitto on a free port (copied in spirit from tests/conftest.py):
    persistence off, unlimited queues, TCP_NODELAY; `queue_qos0` also queues QoS 0 messages
    for a persistent session that is away."""

    def __init__(self, workdir: Path, queue_qos0: bool = True) -> None:
        self.workdir = workdir
        self.queue_qos0 = queue_qos0
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 0\n"
            + ("queue_qos0_messages true\n" if self.queue_qos0 else "")
            + "set_tcp_nodelay true\n"
            # Started as root, mosquitto would switch to user `mosquitto`, who cannot write here.
            f"user {getpass.getuser()}\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
        )
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def mosquitto_missing() -> bool:
    """True (and says so) if there is no mosquitto to start."""
    if Path(MOSQUITTO).exists():
        return False
    progress("mosquitto is not installed (apt-get install mosquitto)")
    return True


def edgeml_config(
    workdir: Path,
    node: str,
    port: int,
    *,
    stream: str,
    topic: str,
    log_level: str = "warning",
    publish: str = "all",
    store: str = "",
    model: str = "linear",
) -> Path:
    """workdir/config.toml: one regression stream over `topic`, key = topic level 1, features
    a, b, c, target y; `store` is a `[store]` section (with its blank line) or nothing.
    `model`: the preset; `halfspace` makes it an anomaly stream over a, b, c (no target)."""
    task = 'task = "anomaly"' if model == "halfspace" else 'task = "regression"\ntarget = "y"'
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.toml"
    path.write_text(
        f"""[node]
id = "{node}"
state_dir = "{workdir / "state"}"

[mqtt]
host = "127.0.0.1"
port = {port}

{store}[log]
level = "{log_level}"
format = "json"

[[stream]]
name = "{stream}"
topic = "{topic}"
key = "topic:1"
{task}
model = "{model}"
features = ["a", "b", "c"]
publish = "{publish}"
"""
    )
    return path


def start_edgeml(config: Path) -> subprocess.Popen[bytes]:
    """`python -m edgeml run -c config`, its output to edgeml.log beside the config, without
    the systemd variables this script may have inherited."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(var, None)
    with (config.parent / "edgeml.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "edgeml", "run", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def stored_totals(
    conn: sqlite3.Connection,
) -> tuple[int, Any, int, Any]:
    """After a run: (samples stored, the first sample's ts, predictions, the heartbeat row
    `learned, received, rejected, bytes_written, stopped` or None)."""
    samples, first_ts = conn.execute("SELECT count(*), min(ts) FROM samples").fetchone()
    predictions = conn.execute("SELECT count(*) FROM predictions").fetchone()[0]
    heartbeat = conn.execute(
        "SELECT learned, received, rejected, bytes_written, stopped FROM daemon"
    ).fetchone()
    return samples, first_ts, predictions, heartbeat


def stat_fields(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat after the command name (state is [0]); also for a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (also of a zombie not reaped yet), in seconds."""
    fields = stat_fields(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_state(pid: int) -> str | None:
    fields = stat_fields(pid)
    return None if fields is None else fields[0].decode()


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile ... of /proc/<pid>/status, in KiB (empty for a zombie)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.endswith(" kB"):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0])
    return out


def io_counters(pid: int) -> dict[str, int]:
    """/proc/<pid>/io (readable for a zombie too): write_bytes, cancelled_write_bytes, ..."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            name, value = line.split(":", 1)
            out[name] = int(value)
    return out


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (every field of /proc/stat's
    `cpu` line but idle and iowait)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


class StatusMonitor:
    """Watches `edgeml/+/status` (retained online/offline) with a paho client in a thread."""

    def __init__(self, port: int, client_id: str) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.events: queue.Queue[tuple[float, str, bytes]] = queue.Queue()
        ready = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        client.on_connect = lambda c, *_a: c.subscribe("edgeml/+/status", qos=1)
        client.on_subscribe = lambda *_a: ready.set()
        client.on_message = lambda _c, _u, m: self.events.put(
            (time.time(), m.topic, bytes(m.payload))
        )
        client.connect("127.0.0.1", port)
        client.loop_start()
        if not ready.wait(10):
            raise RuntimeError("status monitor did not subscribe")
        self.client = client

    def clear(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.events.get_nowait()

    def poll(self, node: str, payload: bytes) -> float | None:
        """Time the status of `node` became `payload` since the last call, if it did."""
        found = None
        with contextlib.suppress(queue.Empty):
            while True:
                t, topic, body = self.events.get_nowait()
                if topic == f"edgeml/{node}/status" and body == payload and found is None:
                    found = t
        return found

    def wait(
        self, node: str, payload: bytes, proc: subprocess.Popen[bytes], timeout: float
    ) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = self.poll(node, payload)
            if t is not None:
                return t
            if proc.poll() is not None:
                raise RuntimeError(f"edgeml exited with {proc.returncode} before {payload!r}")
            time.sleep(0.02)
        raise RuntimeError(f"edgeml did not report {payload!r} within {timeout} s")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def forget_session(port: int, client_id: str, v5: bool) -> None:
    """Connect clean with a subscriber's id, so the broker stops queueing for its old session."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    connected = threading.Event()
    api = CallbackAPIVersion.VERSION2
    if v5:
        client = paho.Client(api, client_id=client_id, protocol=paho.MQTTv5)
    else:
        client = paho.Client(api, client_id=client_id, protocol=paho.MQTTv311, clean_session=True)
    client.on_connect = lambda *_a: connected.set()
    if v5:
        client.connect("127.0.0.1", port, clean_start=True)
    else:
        client.connect("127.0.0.1", port)
    client.loop_start()
    connected.wait(10)
    client.disconnect()
    client.loop_stop()


# -- what the reports say about the machine and the software ---------------------------------

VERSIONS = ("python", "aiomqtt", "paho-mqtt", "river", "edgeml", "SQLite", "mosquitto")


def versions(order: Sequence[str] = VERSIONS) -> str:
    """`python 3.x, aiomqtt 2.x, ...`: the names of VERSIONS, in the order given."""

    def v(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    try:
        mosq = subprocess.run(
            [MOSQUITTO, "-h"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        mosq = "mosquitto ?"
    special = {
        "python": f"python {platform.python_version()}",
        "SQLite": f"SQLite {sqlite3.sqlite_version}",
        "mosquitto": mosq,
    }
    return ", ".join(special.get(name) or f"{name} {v(name)}" for name in order)


def edgeml_source(digest: bool = False) -> str:
    """Where the edgeml that `python -m edgeml` runs comes from, and its git commit; with
    `digest`, a dirty tree is identified by a digest of its diff and untracked files."""
    spec = importlib.util.find_spec("edgeml")
    if spec is None or spec.origin is None:
        return "edgeml not found"
    where = str(Path(spec.origin).parent)
    git = ["git", "-C", where]
    try:
        rev = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"{where} (not a git checkout)"
    if not dirty:
        return f"{where} at {rev}"
    if not digest:
        return f"{where} at {rev} + uncommitted changes"
    # Identify the exact working tree: a digest of the diff and of the untracked files.
    diff = subprocess.run(
        [*git, "diff", "HEAD", "--", "."], capture_output=True, check=False
    ).stdout
    for line in sorted(dirty.splitlines()):
        if line.startswith("??"):
            path = Path(where) / line[3:].strip()
            files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
            for f in files:
                with contextlib.suppress(OSError):
                    diff += f.read_bytes()
    return (
        f"{where} at {rev} + uncommitted changes"
        f" (working-tree digest {hashlib.sha256(diff).hexdigest()[:12]})"
    )


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def failing(note: str) -> bool:
    """A note that makes the run fail: a reading missing, a bad exit, no final heartbeat."""
    return note.startswith(("MISSING", "SIGTERM", "no heartbeat"))


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_run(started: str, order: Sequence[str] = VERSIONS, digest: bool = False) -> None:
    """The command, date, machine, versions and edgeml source lines of a report."""
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(f"date: {started}   nproc: {len(os.sched_getaffinity(0))}   cpu: {cpu_model()}")
    print(f"versions: {versions(order)}")
    print(f"edgeml source: {edgeml_source(digest)}")
