"""Fixtures: a real mosquitto per test on a free port, configs in tmp_path, daemon helpers."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import aiomqtt
import pytest

from edgeml.config import Config, load
from edgeml.daemon.service import Daemon

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    """A private mosquitto: persistent sessions survive `restart()` (persistence on)."""

    workdir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    listener_conf: str = "allow_anonymous true\n"

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"{self.listener_conf}"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "max_queued_messages 0\n"
            "set_tcp_nodelay true\n"
            # Started as root, mosquitto would switch to user `mosquitto`, who cannot write here.
            f"user {getpass.getuser()}\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
        )
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed (.ci/run installs it with apt)")
    workdir = tmp_path / "broker"
    workdir.mkdir()
    b = Broker(workdir)
    b.start()
    yield b
    b.stop()


NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


@dataclass
class NatsServer:
    """A private nats-server with JetStream and its MQTT listener, each on a free port;
    `extra` lines (the mappings `edgeml cluster init` prints) go into its config at `start`.
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.workdir / "nats.conf"
        conf.write_text(
            f"server_name: edgeml_test_{self.port}\n"
            f"listen: 127.0.0.1:{self.port}\n"
            f'jetstream {{ store_dir: "{self.workdir}/js" }}\n'
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port} }}\n"
            + "".join(f"{line}\n" for line in self.extra)
        )
        log = (self.workdir / "nats.log").open("ab")
        self.proc = subprocess.Popen([NATS_SERVER, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.mqtt_port), 0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"nats-server did not listen on {self.mqtt_port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server, not yet started (a test sets its `extra` config first)."""
    if not Path(NATS_SERVER).exists():
        pytest.fail("nats-server is not installed (.ci/run installs it with apt)")
    workdir = tmp_path / "nats"
    workdir.mkdir()
    server = NatsServer(workdir)
    yield server
    server.stop()


def unavailable(message: str, required_by: str) -> NoReturn:
    """Skip a test that needs what this machine lacks, or fail it where .ci/run requires it
    (it sets `required_by`, an EDGEML_REQUIRE_* variable, to 1).
    """
    if os.environ.get(required_by) == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def chromium_path() -> str:
    """Debian's headless browser, for the report and the live page."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        unavailable(
            "chromium is not installed (apt-get install chromium)", "EDGEML_REQUIRE_CHROMIUM"
        )
    return found


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs of its own, unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)],
        check=False,
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        message = f"cannot mount a tmpfs here (needs root): {mount.stderr.strip()[-200:]}"
        unavailable(message, "EDGEML_REQUIRE_TMPFS")  # CI runs as root: there it mounts
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[Broker]:
    """A mosquitto that wants TLS (our own CA) and a username/password."""
    workdir = tmp_path / "secure-broker"
    workdir.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=workdir)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=workdir)  # fmt: skip
    (workdir / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
             cwd=workdir)  # fmt: skip
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(workdir / "passwd"), "edge", "s3cret"],
        check=True,
        capture_output=True,
    )
    b = Broker(
        workdir,
        listener_conf=(
            "allow_anonymous false\n"
            f"password_file {workdir}/passwd\n"
            f"cafile {workdir}/ca.crt\n"
            f"certfile {workdir}/server.crt\n"
            f"keyfile {workdir}/server.key\n"
        ),
    )
    b.start()
    yield b
    b.stop()


def write_config(tmp_path: Path, broker: Broker, streams: str, extra: str = "") -> Path:
    """A config for a test: its own node id, state dir and client id."""
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[node]
id = "test-{tmp_path.name[-20:].replace("_", "-")}"
state_dir = "state"

[mqtt]
host = "{broker.host}"
port = {broker.port}
keepalive = 10

[log]
level = "info"
format = "json"
{extra}
{streams}
"""
    )
    return path


TELEMETRY = """
[[stream]]
name = "temp"
topic = "sensors/+/telemetry"
key = "topic:1"
target = "t"
features = ["i", "h"]
"""


def db_rows(cfg: Config, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(cfg.db_path, timeout=10)) as conn:
        return conn.execute(sql, args).fetchall()


def sample_count(cfg: Config) -> int:
    if not cfg.db_path.exists():
        return 0
    try:
        return int(db_rows(cfg, "SELECT count(*) FROM samples")[0][0])
    except sqlite3.OperationalError:
        return 0  # not migrated yet


async def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(interval)


async def settle(cfg: Config, target: int, quiet_s: float = 3.0, timeout: float = 60.0) -> int:
    """Wait until `target` samples are stored or the count stops moving; return the count."""
    last, since = -1, time.monotonic()
    async with asyncio.timeout(timeout):
        while True:
            n = sample_count(cfg)
            if n >= target:
                return n
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since > quiet_s:
                return n
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(cfg: Config) -> AsyncIterator[Daemon]:
    """An in-process daemon, ready (subscribed) on entry, stopped cleanly on exit."""
    daemon = Daemon(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        async with asyncio.timeout(20):
            ready = asyncio.create_task(daemon.ready.wait())
            await asyncio.wait((ready, task), return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # raises what made the daemon fail
            yield daemon
    finally:
        stop.set()
        async with asyncio.timeout(20):
            await task


async def publish_all(
    broker: Broker, messages: list[tuple[str, bytes]], qos: int = 1, window: int = 500
) -> None:
    """Publish with at most `window` QoS 1 messages unconfirmed (packet ids must not wrap)."""
    async with aiomqtt.Client(broker.host, broker.port, max_inflight_messages=window) as pub:
        pub.pending_calls_threshold = window + 1
        pending: set[asyncio.Task[None]] = set()
        for topic, payload in messages:
            if len(pending) >= window:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            pending.add(asyncio.create_task(pub.publish(topic, payload, qos=qos)))
        if pending:
            await asyncio.gather(*pending)


class DaemonProcess:
    """`python -m edgeml run` in a subprocess: for what only a process shows (signals, kill -9)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.parent / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **env_vars: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_vars}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgeml", "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the daemon has logged `ready` since it was started."""
        assert self.proc is not None
        pid = self.proc.pid

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited: {self.log.read_text()[-2000:]}")
            return any(
                json.loads(line).get("event") == "ready" and json.loads(line).get("pid") == pid
                for line in self.log.read_text().splitlines()
                if line.startswith("{")
            )

        await wait_for(ready, timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)


@pytest.fixture
def daemon_process() -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def make(config: Path) -> DaemonProcess:
        d = DaemonProcess(config)
        started.append(d)
        return d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)


def load_config(path: Path) -> Config:
    return load(path)
