"""The MQTT session against a real mosquitto: batched reads, the one-write outbox and its order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest

from edgeml.transport.mqtt import Session
from tests.conftest import TELEMETRY, Broker, load_config, publish_all, wait_for, write_config
from tests.helpers import telemetry


@asynccontextmanager
async def session(tmp_path: Path, broker: Broker, protocol: str) -> AsyncIterator[Session]:
    path = write_config(tmp_path, broker, TELEMETRY)
    path.write_text(path.read_text().replace("[mqtt]", f'[mqtt]\nprotocol = "{protocol}"'))
    s = Session(load_config(path))
    shutdown = asyncio.Event()
    task = asyncio.create_task(s.run(shutdown))
    try:
        async with asyncio.timeout(10):
            await s.subscribed.wait()
        yield s
    finally:
        shutdown.set()
        async with asyncio.timeout(10):
            await task


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_publishes_keep_their_order_across_qos(
    tmp_path: Path, broker: Broker, protocol: str
) -> None:
    """QoS 0 publishes wait for the end of the loop turn, a QoS 1 one goes through paho:
    a subscriber still gets them in the order they were made."""
    async with (
        aiomqtt.Client(broker.host, broker.port) as sub,
        session(tmp_path, broker, protocol) as s,
    ):
        await sub.subscribe("order/#", qos=1)
        sent = [(f"order/{i}", str(i).encode(), 1 if i % 7 == 3 else 0) for i in range(50)]
        for topic, payload, qos in sent:
            assert s.publish(topic, payload, qos)
        got = []
        async with asyncio.timeout(5):
            async for m in sub.messages:
                got.append((str(m.topic), m.payload, m.qos))
                if len(got) == len(sent):
                    break
        assert got == sent


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_only_what_was_acknowledged_is_not_sent_again(
    tmp_path: Path, broker: Broker, protocol: str
) -> None:
    """Many readings arrive per read; the half that is acknowledged (all in one write) is
    gone at the next connection, the other half comes again with DUP set."""
    readings = telemetry(16)  # within MQTT 3.1.1's window of 20 unacknowledged
    async with session(tmp_path, broker, protocol) as s:
        await publish_all(broker, readings)
        await wait_for(lambda: len(s.inbox) == len(readings), timeout=10)
        first = list(s.inbox)
        for d in first[::2]:
            s.ack(d.ack)
        await asyncio.sleep(0.3)  # the PUBACKs leave at the end of the loop turn
    assert [(d.topic, d.payload, d.redelivered) for d in first] == [
        (t, p, False) for t, p in readings
    ]
    async with session(tmp_path, broker, protocol) as s:
        await wait_for(lambda: len(s.inbox) == len(first[1::2]), timeout=10)
        again = list(s.inbox)
        await asyncio.sleep(0.3)
        assert len(s.inbox) == len(again)  # nothing more came
    assert [(d.payload, d.dedup, d.redelivered) for d in again] == [
        (d.payload, d.dedup, True) for d in first[1::2]
    ]
