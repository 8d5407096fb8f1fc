"""The private paho hooks in edgeml._paho: fail loudly if a new aiomqtt or paho moves them."""

from __future__ import annotations

import asyncio

import aiomqtt
import paho.mqtt.client as paho

from edgeml.transport import _paho
from edgeml.transport._wire import Publish, encode_puback
from tests.conftest import Broker


async def test_paho_client_still_has_what_edgeml_reaches_for(broker: Broker) -> None:
    client = aiomqtt.Client(broker.host, broker.port, identifier="hooks-probe")
    inner = client._client
    assert isinstance(inner, paho.Client)
    for name in (
        "manual_ack_set",
        "ack",
        "publish",
        "_packet_handle",
        "_loop_rc_handle",
        "_call_socket_register_write",
        "loop_read",
    ):
        assert callable(getattr(inner, name)), f"paho.Client.{name} is gone"
    for name in ("_out_packet", "_in_packet", "_sock", "_last_bytes_received", "_protocol"):
        assert hasattr(inner, name), f"paho.Client.{name} is gone"
    aiomqtt_open = inner.on_socket_open
    assert aiomqtt_open is not None, "aiomqtt no longer registers its reader in on_socket_open"
    _paho.Reader(client, lambda m, p: None)
    assert inner._manual_ack is True
    assert inner.on_message is not None
    assert inner.on_socket_open is not aiomqtt_open


async def _receive_once(broker: Broker, ack: bool) -> list[tuple[bytes, bool]]:
    """Connect on a persistent session, take what comes within 0.5 s, ack it or not."""
    got: list[Publish] = []
    client = aiomqtt.Client(broker.host, broker.port, identifier="hooks-ack", clean_session=False)
    _paho.Reader(client, lambda m, _props: got.append(m))
    outbox = _paho.Outbox(client)
    async with client:
        await client.subscribe("hooks/#", qos=1)
        await asyncio.sleep(0.5)
        if ack:
            for m in got:
                outbox.add(encode_puback(m.mid))
            await asyncio.sleep(0.1)  # the outbox writes at the end of the loop turn
    return [(m.payload, m.dup) for m in got]


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
