"""The private paho hooks in edgeml._paho: fail loudly if a new aiomqtt or paho moves them."""

from __future__ import annotations

import asyncio

import aiomqtt
import paho.mqtt.client as paho

from edgeml.transport import _paho
from tests.conftest import Broker


async def test_paho_client_still_has_what_edgeml_reaches_for(broker: Broker) -> None:
    client = aiomqtt.Client(broker.host, broker.port, identifier="hooks-probe")
    inner = client._client
    assert isinstance(inner, paho.Client)
    for name in ("manual_ack_set", "ack", "publish"):
        assert callable(getattr(inner, name)), f"paho.Client.{name} is gone"
    _paho.enable_manual_ack(client)
    assert inner._manual_ack is True
    _paho.set_receiver(client, lambda m: None)
    assert inner.on_message is not None


async def _receive_once(broker: Broker, ack: bool) -> list[tuple[bytes, bool]]:
    """Connect on a persistent session, take what comes within 0.5 s, ack it or not."""
    got: list[paho.MQTTMessage] = []
    client = aiomqtt.Client(broker.host, broker.port, identifier="hooks-ack", clean_session=False)
    _paho.enable_manual_ack(client)
    _paho.set_receiver(client, got.append)
    async with client:
        await client.subscribe("hooks/#", qos=1)
        await asyncio.sleep(0.5)
        if ack:
            for m in got:
                _paho.ack(client, m.mid, m.qos)
    return [(bytes(m.payload), bool(m.dup)) for m in got]


async def test_unacknowledged_message_is_redelivered_with_dup_and_acked_one_is_not(
    broker: Broker,
) -> None:
    assert await _receive_once(broker, ack=False) == []  # creates the session
    async with aiomqtt.Client(broker.host, broker.port) as pub:
        await pub.publish("hooks/a", b"job-1", qos=1)
    assert await _receive_once(broker, ack=False) == [(b"job-1", False)]
    # Not acknowledged: the broker sends it again, flagged as a duplicate.
    assert await _receive_once(broker, ack=True) == [(b"job-1", True)]
    # Acknowledged: gone.
    assert await _receive_once(broker, ack=True) == []


async def test_publish_nowait_reaches_a_subscriber(broker: Broker) -> None:
    async with (
        aiomqtt.Client(broker.host, broker.port) as sub,
        aiomqtt.Client(broker.host, broker.port) as pub,
    ):
        await sub.subscribe("hooks/out", qos=0)
        assert _paho.publish_nowait(pub, "hooks/out", b"42")
        async with asyncio.timeout(5):
            async for m in sub.messages:
                assert m.payload == b"42"
                break
