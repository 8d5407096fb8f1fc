"""Partition leases on a real nats-server: sharing out, handing over, and fencing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest

from edgeml.config import NatsConfig
from edgeml.transport.nats_leases import Ownership
from edgeml.transport.nats_link import KeyValue, buckets
from tests.conftest import NatsServer

P = 4


@pytest.fixture
async def kv(nats_server: NatsServer) -> AsyncIterator[tuple[NatsConfig, KeyValue]]:
    nats_server.start()
    n = NatsConfig(servers=(nats_server.url,), partitions=P, lease_ttl="1s")
    nc = await nats.connect(nats_server.url)
    leases, _ = await buckets(nc.jetstream(), n)
    yield n, leases
    await nc.close()


async def test_a_joining_node_gets_its_share_by_handover(kv: tuple[NatsConfig, KeyValue]) -> None:
    n, leases = kv
    x = Ownership(leases, n, "x")
    await x.step()
    assert sorted(x.held) == list(range(P)) and sorted(x.acquired) == list(range(P))
    y = Ownership(leases, n, "y")
    await y.step()  # y is a member now; x still holds everything
    assert not y.held
    await x.step()
    assert x.release  # what is meant for y
    for p in sorted(x.release):
        await x.hand_over(p)
    await y.step()
    assert sorted(y.held) == sorted(set(range(P)) - set(x.held))
    assert y.held and x.held


async def test_a_slow_node_keeps_its_lease_and_an_absent_one_is_fenced(
    kv: tuple[NatsConfig, KeyValue],
) -> None:
    n, leases = kv
    x = Ownership(leases, n, "x")
    await x.step()
    # Not trusted any more here, but never expired on the server: renewed, kept.
    x.held[0].sent -= 10
    assert not x.valid(0)
    assert await x.confirm(0)
    assert not x.fenced
    # Away past the TTL (x steps no more): the server forgets its lease and its node entry,
    # and another node takes the partition.
    y = Ownership(leases, n, "y")
    async with asyncio.timeout(20):
        while 0 not in y.held:
            await asyncio.sleep(0.2)
            await y.step()
    assert not await x.confirm(0)
    assert x.fenced == [0]
