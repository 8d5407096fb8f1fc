"""Partition ownership through leases in a KV bucket whose entries expire `lease_ttl` after
their last write: a node creates a partition's lease, renews it by compare-and-set on its
revision, and hands it over by deleting it. Which node should own which partition is
`partitions.assign` over the nodes alive (each renews its own `node.<id>` entry).

A lease is trusted locally only until a fraction of the TTL after the renewal was *sent*,
so a node that was paused (SIGSTOP, a long GC) stops before the server lets another node
take its partitions. A failed renewal or an expired lease is a fence: the partition stops
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
import structlog
from nats.js.errors import NoKeysError

from edgeml.config import NatsConfig
from edgeml.partitions import assign
from edgeml.transport.nats_link import Conflict, KeyValue, kv_put

__all__ = ["Lease", "Ownership"]

log = structlog.get_logger("edgeml.cluster")

# A lease is trusted for this share of its TTL after the renewal that granted it was sent.
# The server lets it expire `ttl` after it *received* the renewal, later than we sent it:
# the rest of the TTL is the margin for a write checked against it to reach the server.
TRUST = 0.85


@dataclass
class Lease:
    partition: int
    revision: int
    sent: float  # monotonic time the request that granted or renewed it was sent


class Ownership:
    """The partitions this node holds, and what the daemon must do about the others.

    `acquired`, `release` and `fenced` are read and cleared by the daemon (in its learner
    task); `step` runs every quarter of the TTL in the transport's task.
    """

    def __init__(self, kv: KeyValue, n: NatsConfig, node: str) -> None:
        self.kv = kv
        self.n = n
        self.node = node
        self.ttl = n.lease_ttl_s
        self.held: dict[int, Lease] = {}
        self.acquired: list[int] = []  # won, not yet started by the daemon
        self.release: set[int] = set()  # another node should own it: hand it over
        self.fenced: list[int] = []  # lost: the daemon drops it
        self.nodes: list[str] = [node]
        self.active = True  # False while stopping: take nothing new
        self._renewing: dict[int, asyncio.Lock] = {}

    def valid(self, partition: int, now: float | None = None) -> bool:
        lease = self.held.get(partition)
        if lease is None:
            return False
        return (time.monotonic() if now is None else now) < lease.sent + TRUST * self.ttl

    async def confirm(self, partition: int) -> bool:
        """Whether we may act for `partition` now: a trusted lease, or one renewed now. A
        renewal by compare-and-set on our revision succeeds only if the entry never expired
        (an expired entry is gone, and a new owner's has another revision), so a node that
        was merely slow keeps its partition and one that was away is fenced.
        """
        if partition not in self.held:
            return False
        if self.valid(partition):
            return True
        try:
            await self._renew(partition)
        except (nats.errors.Error, TimeoutError) as exc:
            self.fence(partition, f"lease not renewed: {exc!r}")
        return self.valid(partition)

    def fence(self, partition: int, reason: str) -> None:
        """Stop owning a partition at once (no write for it from now on)."""
        if self.held.pop(partition, None) is not None:
            self.release.discard(partition)
            self.fenced.append(partition)
            log.warning("fenced", partition=partition, node=self.node, reason=reason)

    async def step(self) -> bool:
        """Renew, heartbeat, look at the members, take free partitions meant for us and mark
        ours meant for others; True when something changed for the daemon.
        """
        # All at once, pipelined on the one connection: a step must stay far below the TTL
        # even when each of its waits queues behind the learner.
        beat = [self._beat()] if self.active else []
        renewed = await asyncio.gather(*(self._renew(p) for p in list(self.held)), *beat)
        changed = any(renewed)
        if not self.active:
            return changed
        targets = assign(self.n.partitions, self.nodes)
        for p, owner in targets.items():
            if owner != self.node and p in self.held and p not in self.release:
                self.release.add(p)
                changed = True
        wanted = [p for p, owner in targets.items() if owner == self.node and p not in self.held]
        won = [p for p in await asyncio.gather(*(self._take(p) for p in wanted)) if p is not None]
        if won:
            self.acquired += won
            log.info("partitions_acquired", node=self.node, partitions=won)
        return changed or bool(won)

    async def _beat(self) -> bool:
        """Say we are alive, and see who else is."""
        await asyncio.gather(
            self.kv.put(f"node.{self.node}", str(time.time()).encode()), self._members()
        )
        return False

    async def _take(self, p: int) -> int | None:
        sent = time.monotonic()
        try:
            rev = await kv_put(self.kv, f"p.{p}", self.node.encode(), 0)
        except Conflict:
            return None  # still held: its owner hands it over, or its lease runs out
        self.held[p] = Lease(p, rev, sent)
        return p

    async def _renew(self, p: int) -> bool:
        """Renew one lease; True if it was lost (fenced). One renewal of a partition at a
        time (the step and a `confirm` may both want it): two with the same revision would
        fence each other.
        """
        async with self._renewing.setdefault(p, asyncio.Lock()):
            lease = self.held.get(p)
            if lease is None:
                return False
            sent = time.monotonic()
            try:
                rev = await kv_put(self.kv, f"p.{p}", self.node.encode(), lease.revision)
            except Conflict:
                self.fence(p, "lease expired or taken by another node")
                return True
            if self.held.get(p) is lease:  # not fenced nor handed over meanwhile
                self.held[p] = Lease(p, rev, sent)
            return False

    async def _members(self) -> None:
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            keys = []
        nodes = sorted({k[5:] for k in keys if k.startswith("node.")} | {self.node})
        if nodes != self.nodes:
            log.info("cluster_members", node=self.node, nodes=nodes)
            self.nodes = nodes

    async def hand_over(self, partition: int) -> None:
        """Delete our lease (after the daemon snapshotted the partition): the node it is
        meant for takes it at its next step.
        """
        async with self._renewing.setdefault(partition, asyncio.Lock()):
            lease = self.held.pop(partition, None)
            self.release.discard(partition)
            if lease is None:
                return
            with contextlib.suppress(nats.errors.Error):
                await self.kv.delete(f"p.{partition}", last=lease.revision)
        log.info("partition_released", partition=partition, node=self.node)

    async def leave(self) -> None:
        """Stopping: take nothing more, and say we are gone."""
        self.active = False
        with contextlib.suppress(nats.errors.Error):
            await self.kv.delete(f"node.{self.node}")

    async def run(self, stop: asyncio.Event, wake: Callable[[], None]) -> None:
        """Step every quarter of the TTL until `stop`; `wake` when the daemon has work."""
        while not stop.is_set():
            try:
                if await self.step():
                    wake()
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("lease_step_failed", node=self.node, error=str(exc))
                for p in list(self.held):
                    if not self.valid(p):
                        self.fence(p, "lease expired: the servers did not answer")
                        wake()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.ttl / 4)
