"""The NATS JetStream transport: the partitions this node holds, each read in order from
the stream by an ordered consumer; outputs published once (Nats-Msg-Id) for JetStream
and, through nats-server's MQTT listener, for MQTT subscribers.

Which partitions it holds is `nats_leases.Ownership`'s business; where each one starts
(the checkpoint) and what it learned is the daemon's (`daemon.cluster`). A delivery's ack
token is `(partition, stream sequence, epoch)`: the epoch changes each time the partition
is started, so a delivery of an earlier ownership is recognised and dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Sequence

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from edgeml.config import Config
from edgeml.partitions import subject_of, topic_of
from edgeml.records import Delivery
from edgeml.transport.base import Doorbell, Listener
from edgeml.transport.nats_leases import Ownership
from edgeml.transport.nats_link import Client, KeyValue, command_subject, connect, open_buckets

__all__ = ["NatsTransport"]

log = structlog.get_logger("edgeml.ingest")


class NatsTransport:
    """Implements transport.base.Transport over JetStream; see the module's docstring."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.n = cfg.nats
        self.inbox: collections.deque[Delivery] = collections.deque()
        self.subscribed = asyncio.Event()
        self.state = "connecting"
        self.received = 0
        self.connects = 0
        self.nc: Client | None = None
        self.ownership: Ownership | None = None
        self.snapshots: KeyValue | None = None
        self.epochs: dict[int, int] = {}  # partition -> epoch of its running consumer
        self.committed: dict[int, int] = {}  # partition -> last sequence committed here
        self._subs: dict[int, Subscription] = {}
        self._next_epoch = 0
        self._bell = Doorbell()
        self._room = asyncio.Event()
        self._room.set()
        self._out: collections.deque[tuple[str, bytes, dict[str, str] | None]] = collections.deque()
        self._sent = asyncio.Event()
        self._pending_out = asyncio.Event()
        self._listens: dict[str, Subscription] = {}
        # `edgeml models import/rollback/retrain` for a key of a held partition, to answer
        # (msg.respond) once applied; the daemon takes them in its learner task.
        self.commands: collections.deque[Msg] = collections.deque()
        self._command_subs: dict[int, Subscription] = {}
        self._sender: asyncio.Task[None] | None = None

    @property
    def max_unacked(self) -> int:
        return self.n.max_pending

    # -- the connection --------------------------------------------------------------

    async def run(self, shutdown: asyncio.Event) -> None:
        """Connect, set up the buckets, keep the leases until `shutdown`."""
        name = f"edgeml-{self.cfg.node.id}"
        nc = self.nc = await connect(
            self.n, name, disconnected_cb=self._down, reconnected_cb=self._up, error_cb=self._error
        )
        self.connects += 1
        self.state = "connected"
        js = nc.jetstream()
        leases, self.snapshots = await open_buckets(js, self.n)
        self.ownership = Ownership(leases, self.n, self.cfg.node.id)
        self._sender = asyncio.create_task(self._send_loop(), name="nats-out")
        self.publish(self.cfg.status_topic, b"online")
        log.info("nats_connected", servers=list(self.n.servers), stream=self.n.stream,
                 node=self.cfg.node.id)  # fmt: skip
        self.subscribed.set()
        stop_leases = asyncio.Event()
        # The daemon learns of partitions won, to release or lost when its wait ends.
        leases_task = asyncio.create_task(self.ownership.run(stop_leases, self.wake))
        try:
            await shutdown.wait()
        finally:
            stop_leases.set()
            await leases_task
            self.publish(self.cfg.status_topic, b"offline")
            await self.flush()
            self._sender.cancel()
            with contextlib.suppress(nats.errors.Error):
                await nc.drain()
            self.state = "disconnected"

    async def _error(self, exc: Exception) -> None:
        log.warning("nats_error", error=f"{type(exc).__name__}: {exc}")

    async def _down(self) -> None:
        self.state = "disconnected"

    async def _up(self) -> None:
        self.connects += 1
        self.state = "connected"

    # -- partitions --------------------------------------------------------------------

    async def start(self, partition: int, from_seq: int) -> None:
        """Read a partition from stream sequence `from_seq` on, in order."""
        assert self.nc is not None
        await self.stop(partition)
        self._next_epoch += 1
        epoch = self.epochs[partition] = self._next_epoch
        js = self.nc.jetstream()

        async def on_message(msg: Msg) -> None:
            while len(self.inbox) >= self.n.max_pending and self.epochs.get(partition) == epoch:
                self._room.clear()
                await self._room.wait()
            if self.epochs.get(partition) != epoch:
                return
            seq = msg.metadata.sequence.stream
            topic = topic_of(msg.subject.split(".", 2)[2])  # after `<stream>.<partition>.`
            self.received += 1
            token = (partition, seq, epoch)
            self.inbox.append(Delivery(topic, msg.data, time.time(), token, seq, origin=seq))
            self.wake()

        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, from_seq)
        )

        async def on_command(msg: Msg) -> None:
            self.commands.append(msg)
            self.wake()

        self._command_subs[partition] = await self.nc.subscribe(
            command_subject(self.n.stream, partition), cb=on_command
        )
        self._subs[partition] = await js.subscribe(
            f"{self.n.stream}.{partition}.>",
            stream=self.n.stream,
            cb=on_message,
            ordered_consumer=True,
            config=config,
        )

    async def stop(self, partition: int) -> None:
        """Stop reading a partition; what of it waits in the inbox is no longer `current`
        (the learner skips it; the stream keeps it for the next owner).
        """
        self.epochs.pop(partition, None)
        self._room.set()
        for subs in (self._subs, self._command_subs):
            sub = subs.pop(partition, None)
            if sub is not None:
                with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                    await sub.unsubscribe()

    def current(self, token: tuple[int, int, int]) -> bool:
        """Whether a delivery comes from the running consumer of a partition still held."""
        partition, _, epoch = token
        return self.epochs.get(partition) == epoch

    # -- called from the learner and the store writer ---------------------------------

    def ack(self, token: tuple[int, int, int]) -> None:
        """A delivery is committed to the local log: kept for the lag `status` shows (the
        stream keeps the reading; the snapshot in KV is what moves the checkpoint).
        """
        partition, seq, _ = token
        if seq > self.committed.get(partition, 0):
            self.committed[partition] = seq

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        return self.publish_once(topic, payload, None)

    def publish_once(self, topic: str, payload: bytes, msg_id: str | None) -> bool:
        """Queue an output; with `msg_id`, JetStream keeps only its first copy."""
        if self.nc is None:
            return False
        headers = None if msg_id is None else {"Nats-Msg-Id": msg_id}
        self._out.append((subject_of(topic), payload, headers))
        self._pending_out.set()
        return True

    async def flush(self) -> None:
        """Return once every queued output has reached the server."""
        while self._out and self._sender is not None and not self._sender.done():
            self._sent.clear()
            await self._sent.wait()
        if self.nc is not None and self.nc.is_connected:
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await self.nc.flush(timeout=10)

    async def _send_loop(self) -> None:
        assert self.nc is not None
        while True:
            await self._pending_out.wait()
            self._pending_out.clear()
            while self._out:
                subject, payload, headers = self._out[0]
                try:
                    await self.nc.publish(subject, payload, headers=headers)
                except nats.errors.Error as exc:  # closed: what is left is never sent
                    log.warning("nats_publish_failed", subject=subject, error=str(exc))
                self._out.popleft()
            self._sent.set()

    async def wait_for_messages(self, seconds: float) -> None:
        if self.inbox:
            return
        self._room.set()
        await self._bell.wait(seconds)

    def wake(self) -> None:
        self._bell.ring()

    async def listen(self, filters: Sequence[str], handler: Listener) -> None:
        assert self.nc is not None
        for f in filters:
            subject = subject_of(f).replace("+", "*").replace("#", ">")

            async def relay(msg: Msg, handler: Listener = handler) -> None:
                handler(topic_of(msg.subject), msg.data, False)

            self._listens[f] = await self.nc.subscribe(subject, cb=relay)

    async def unlisten(self, filters: Sequence[str]) -> None:
        for f in filters:
            sub = self._listens.pop(f, None)
            if sub is not None:
                await sub.unsubscribe()
