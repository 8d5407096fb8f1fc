"""Username/password and TLS against a mosquitto that requires both."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import structlog

from edgeml.daemon.service import Daemon
from tests.conftest import TELEMETRY, Broker, load_config, running, settle, wait_for, write_config
from tests.helpers import telemetry


def secure_config(tmp_path: Path, broker: Broker) -> Path:
    ca = broker.workdir / "ca.crt"
    return write_config(tmp_path, broker, TELEMETRY, extra=f'[mqtt.tls]\nca_file = "{ca}"\n')


def with_auth(path: Path, auth: str) -> Path:
    text = path.read_text().replace("keepalive = 10\n", f"keepalive = 10\n{auth}\n")
    path.write_text(text)
    return path


async def test_tls_and_password_file(secure_broker: Broker, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    path = with_auth(
        secure_config(tmp_path, secure_broker),
        f'username = "edge"\npassword_file = "{tmp_path / "pw"}"',
    )
    cfg = load_config(path)
    ca = str(secure_broker.workdir / "ca.crt")
    async with running(cfg):
        async with aiomqtt.Client(
            secure_broker.host,
            secure_broker.port,
            username="edge",
            password="s3cret",
            tls_params=aiomqtt.TLSParameters(ca_certs=ca),
        ) as pub:
            for topic, payload in telemetry(50):
                await pub.publish(topic, payload, qos=1)
        assert await settle(cfg, 50) == 50


async def test_wrong_password_keeps_retrying_and_says_why(
    secure_broker: Broker, tmp_path: Path
) -> None:
    path = with_auth(secure_config(tmp_path, secure_broker), 'username = "edge"\npassword = "nope"')
    cfg = load_config(path)
    daemon = Daemon(cfg)
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(daemon.run(stop))
        # Refused twice: not connected, not crashed, it backs off and tries again.
        await wait_for(lambda: sum(e["event"] == "mqtt_disconnected" for e in logs) >= 2)
        assert not daemon.ready.is_set()
        assert not task.done()
        assert daemon.transport.state in ("connecting", "disconnected")
        stop.set()
        async with asyncio.timeout(10):
            await task
    refusals = [e for e in logs if e["event"] == "mqtt_disconnected"]
    assert len(refusals) >= 2
    assert all("Not authorized" in e["error"] for e in refusals)


async def test_untrusted_server_certificate_is_refused(
    secure_broker: Broker, tmp_path: Path
) -> None:
    path = write_config(tmp_path, secure_broker, TELEMETRY, extra="[mqtt.tls]\n")
    path = with_auth(path, 'username = "edge"\npassword = "s3cret"')
    cfg = load_config(path)
    daemon = Daemon(cfg)
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(daemon.run(stop))
        await wait_for(lambda: any(e["event"] == "mqtt_disconnected" for e in logs))
    assert not daemon.ready.is_set()
    refused = next(e for e in logs if e["event"] == "mqtt_disconnected")
    assert "certificate verify failed" in refused["error"], refused
    stop.set()
    async with asyncio.timeout(10):
        await task
