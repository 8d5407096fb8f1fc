"""The daemon as one node of a cluster on NATS JetStream (`[ingest] backend = "nats"`).

It holds partitions through leases (`transport.nats_leases`); for each, it reads the
stream from the partition's checkpoint, loads each device key's snapshot from the KV
bucket the first time the key shows up, skips what that snapshot already covers and
learns the rest, exactly as the single-box daemon does (the engine and the local SQLite
log are the same). Every `snapshot_interval`, and before it hands a partition over, it
writes the snapshot of each key that learned (compare-and-set, only forward), then the
partition's checkpoint. A partition whose lease is lost stops at once: `fenced`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

import structlog

from edgeml.config import Config, parse_duration
from edgeml.core import handover
from edgeml.core.engine import Engine
from edgeml.core.messages import Outgoing
from edgeml.daemon import service
from edgeml.daemon.commands import apply_commands
from edgeml.daemon.service import Daemon
from edgeml.daemon.timers import Every
from edgeml.learn import Learner
from edgeml.partitions import matches, partition_of
from edgeml.records import Delivery
from edgeml.store import registry
from edgeml.transport.nats import NatsTransport
from edgeml.transport.nats_link import (
    FAILURES,
    Conflict,
    checkpoint_key,
    kv_get,
    kv_put,
    snapshot_key,
)

__all__ = ["ClusterDaemon"]

log = structlog.get_logger("edgeml.cluster")

# The learner lets the loop turn after this many readings (the single-box daemon: 200), so a
# lease renewal, whose step waits on several replies, is not held back a whole TTL on a
# busy, CPU-starved node.
_YIELD_EVERY = 20


@dataclass
class Unit:
    """One device key of a held partition: what its KV snapshot covers, what it learned."""

    partition: int
    covered: int  # stream sequence the KV snapshot covers (0: none)
    revision: int  # KV revision of that snapshot (0: none yet)
    last: int = 0  # stream sequence of the last reading learned here
    dirty: bool = False


@dataclass
class Held:
    """A partition this node reads: its checkpoint and how far it got."""

    checkpoint: int
    revision: int
    position: int  # the last stream sequence handled


class ClusterDaemon(Daemon):
    """`Daemon` with the partitions of a NATS cluster as its source."""

    def __init__(self, cfg: Config) -> None:
        self.nats = NatsTransport(cfg)
        super().__init__(cfg, self.nats)
        self.units: dict[str, Unit] = {}
        self._handled = 0
        self.held: dict[int, Held] = {}
        self._rounds = Every(parse_duration(cfg.models.snapshot_interval))
        # The snapshots that matter are the rounds to KV; the local file gets one at a stop
        # (and on eviction), not a second pickling of every model each interval.
        self._snapshots = Every(float("inf"))
        # Each topic filter and the level of its key: what the server partitions by.
        self._levels = [(t, s.key_level) for s in cfg.stream for t in s.topics]
        self._prefix = f"{cfg.mqtt.topic_prefix}/{cfg.node.id}/"

    def status(self) -> str:
        """The single-box line, with the NATS servers and our partitions for the broker."""
        m, servers = self.cfg.mqtt, ",".join(self.cfg.nats.servers)
        line = super().status().replace(f"at {m.host}:{m.port}", f"at {servers}")
        return line.replace(
            f"broker {m.host}:{m.port}", f"{len(self.held)} partitions of {servers}"
        )

    # -- one delivery --------------------------------------------------------------------

    async def _handle(self, engine: Engine, d: Delivery, out: list[Outgoing]) -> None:
        self._handled += 1
        if self._handled % _YIELD_EVERY == 0:
            await asyncio.sleep(0)  # the leases' renewals wait for a turn of the loop
        p, seq, _ = d.ack
        held = self.held.get(p)
        if held is None or not self.nats.current(d.ack):
            return  # a partition given up since: its next owner reads it again
        own = self.nats.ownership
        if own is None or not await own.confirm(p):
            await self._drop(engine, p)
            return
        token = self._token(d.topic)
        if token is None:  # matches no stream: the engine counts it, nothing to snapshot
            await super()._handle(engine, d, out)
            held.position = seq
            return
        unit = self.units.get(token)
        if unit is None:
            try:
                unit = await self._adopt(engine, p, token)
            except FAILURES as exc:
                await self._give_up(engine, p, f"snapshot of {token} unreadable: {exc!r}")
                return
        if seq > unit.covered:
            first = len(out)
            await super()._handle(engine, d, out)
            self._publish_once(out, first, token, seq)
            unit.last, unit.dirty = seq, True
        held.position = seq

    def _token(self, topic: str) -> str | None:
        """The key the server partitioned this reading by."""
        for topic_filter, level in self._levels:
            if level is not None and matches(topic_filter, topic):
                return topic.split("/")[level]
        return None

    def _publish_once(self, out: list[Outgoing], first: int, token: str, seq: int) -> None:
        """Send what this reading caused, each with an id the output stream dedupes on: a
        prediction's is `stream:key:seq`; any other message's its topic after the node,
        `:key:seq` and its place among what the reading caused (`events:dev1:812:1`).
        """
        for i, (topic, payload, *_) in enumerate(out[first:]):
            tail = topic.removeprefix(self._prefix).split("/")
            if len(tail) == 3 and tail[2] == "prediction":
                msg_id = f"{tail[0]}:{token}:{seq}"
            else:
                msg_id = f"{'/'.join(tail)}:{token}:{seq}:{i}"
            if payload.startswith(b"{"):  # the id in the message too, for MQTT consumers
                tagged = b'{"id":"%s",%s' % (msg_id.encode(), payload[1:])
                self.nats.publish_once(topic, tagged, msg_id)
            else:
                self.nats.publish_once(topic, payload, msg_id)
        del out[first:]

    def _send(self, out: list[Outgoing]) -> None:
        """Messages named for the output stream's dedup (anomaly episodes) go once; the
        rest as in the single-box daemon.
        """
        for m in out:
            if m.msg_id is not None:
                self.nats.publish_once(m.topic, m.payload, m.msg_id)
        super()._send([m for m in out if m.msg_id is None])
        out.clear()

    async def _adopt(self, engine: Engine, p: int, token: str) -> Unit:
        """Take a key's models from its snapshot in KV (fresh ones when it has none), never
        from the local store: another node may have learned it since.
        """
        assert self.nats.snapshots is not None
        found = await kv_get(self.nats.snapshots, snapshot_key(p, token))
        restored: dict[str, Learner] = {}
        unit = Unit(p, 0, 0)
        if found is not None:
            snap = handover.decode(found[1])
            restored = handover.learners(snap, engine.streams, token)
            unit = Unit(p, snap.covered, found[0])
        for name, stream in engine.streams.items():
            sk = (name, token)
            if name not in restored and sk not in engine.series:
                continue  # a fresh model when its first reading comes
            if sk not in engine.series:
                engine.create(name, token)
            engine.restore(restored.get(name) or Learner(stream, token))
        self.units[token] = unit
        return unit

    # -- ownership -------------------------------------------------------------------------

    async def _housekeep(self, engine: Engine, now: float, out: list[Outgoing]) -> None:
        await super()._housekeep(engine, now, out)
        await self._follow_leases(engine)
        while self.nats.commands:
            msg = self.nats.commands.popleft()
            answer = await self._command(engine, msg.headers or {}, msg.data, out)
            with contextlib.suppress(*FAILURES):
                await msg.respond(json.dumps(answer).encode())
        if self._rounds.due(now):
            for p in list(self.held):
                await self._snapshot(engine, p)

    async def _command(
        self, engine: Engine, headers: dict[str, str], blob: bytes, out: list[Outgoing]
    ) -> dict[str, str]:
        """Apply an `edgeml models` command for a key of ours as the single-box daemon does
        (through the local commands table), then snapshot the key's partition, so that the
        change survives a failover; the answer the CLI prints.
        """
        cmd = json.loads(headers.get("Edgeml-Command", "{}"))
        stream, key, kind = cmd.get("stream", ""), cmd.get("key", ""), cmd.get("kind", "")
        p = partition_of(key, self.cfg.nats.partitions)
        own = self.nats.ownership
        if p not in self.held or own is None or not await own.confirm(p):
            return {"status": "failed", "result": f"partition {p} changed hands: try again"}
        try:
            if key not in self.units:
                await self._adopt(engine, p, key)
        except FAILURES as exc:
            return {"status": "failed", "result": f"snapshot of {key} unreadable: {exc!r}"}
        args = cmd.get("args", {})
        cid = await asyncio.to_thread(
            registry.send_command, self.cfg.db_path, kind, stream, key, args, blob or None
        )
        await apply_commands(self._store, engine, self.recovery, out, self._flush)
        self._send(out)
        done = [r for r in engine.batch.command_results if r.id == cid]
        if not done:
            return {"status": "failed", "result": "the command was not applied"}
        self.units[key].dirty = True
        if not await self._snapshot(engine, p):
            return {"status": "failed", "result": f"applied, but partition {p} was fenced"}
        return {"status": done[0].status, "result": json.loads(done[0].result)}

    async def _follow_leases(self, engine: Engine) -> None:
        own = self.nats.ownership
        if own is None:
            return
        while own.fenced:
            await self._drop(engine, own.fenced.pop(0))
        while own.acquired:
            p = own.acquired.pop(0)
            if await own.confirm(p):  # else fenced: its lease lapsed before we got here
                try:
                    await self._start(p)
                except FAILURES as exc:
                    await self._give_up(engine, p, f"cannot start reading: {exc!r}")
        for p in sorted(own.release):
            if p in self.held:
                await self.nats.stop(p)  # what waits in the inbox is the next owner's
                if await self._snapshot(engine, p):
                    await self._drop(engine, p)
                    await own.hand_over(p)
            else:
                await own.hand_over(p)

    async def _give_up(self, engine: Engine, p: int, reason: str) -> None:
        """The servers failed us on `p`: stop it as if fenced; its lease runs out and the
        node it is meant for (maybe this one) takes it again from its checkpoint.
        """
        if self.nats.ownership is not None:
            self.nats.ownership.fence(p, reason)
        await self._drop(engine, p)

    async def _start(self, p: int) -> None:
        assert self.nats.snapshots is not None
        found = await kv_get(self.nats.snapshots, checkpoint_key(p))
        checkpoint = int(json.loads(found[1])["seq"]) if found else 0
        self.held[p] = Held(checkpoint, found[0] if found else 0, checkpoint)
        await self.nats.start(p, checkpoint + 1)
        log.info("partition_started", partition=p, from_seq=checkpoint + 1)

    async def _drop(self, engine: Engine, p: int) -> None:
        """Forget a partition and its keys' models (the next owner has them from KV)."""
        await self.nats.stop(p)
        self.held.pop(p, None)
        for token in [t for t, u in self.units.items() if u.partition == p]:
            del self.units[token]
            for name in engine.streams:
                sk = (name, token)
                engine.models.drop(sk)
                engine.dirty.discard(sk)
                engine.unsnapped.discard(sk)
                engine.silence.forget(name, token)
            engine.requests[:] = [r for r in engine.requests if r[0][1] != token]

    async def _snapshot(self, engine: Engine, p: int) -> bool:
        """Write the snapshot of each key of `p` that learned, then the checkpoint; False
        (and the partition fenced) when the lease is gone or another node wrote first.
        """
        own, kv, held = self.nats.ownership, self.nats.snapshots, self.held.get(p)
        assert own is not None and kv is not None
        if held is None:
            return False
        await self.nats.flush()  # the outputs of what the snapshots cover go out first
        try:
            for token, unit in list(self.units.items()):
                if unit.partition == p and unit.dirty:
                    await self._write_key(engine, p, token, unit)
            if held.position > held.checkpoint:
                lease = await self._check(p)
                mark = {"seq": held.position, "node": self.cfg.node.id, "lease": lease}
                value = json.dumps(mark).encode()
                held.revision = await kv_put(kv, checkpoint_key(p), value, held.revision)
                held.checkpoint = held.position
        except Conflict as exc:
            await self._give_up(engine, p, f"another node wrote {exc}")
            return False
        except LeaseLost:
            await self._drop(engine, p)
            return False
        except FAILURES as exc:
            await self._give_up(engine, p, f"snapshot not written: {exc!r}")
            return False
        return True

    async def _write_key(self, engine: Engine, p: int, token: str, unit: Unit) -> None:
        assert self.nats.snapshots is not None
        keys = [(name, token) for name in engine.streams]
        for sk in keys:  # evicted under max_live: back as it was unloaded
            if sk in engine.models.parked:
                engine.models.get(*sk)
            elif sk in engine.series and sk not in engine.learners:
                await self.recovery.bring_back(engine, [sk])
        lease = await self._check(p)
        models = {sk[0]: engine.learners[sk] for sk in keys if sk in engine.learners}
        value = handover.encode(unit.last, self.cfg.node.id, lease, models)
        unit.revision = await kv_put(
            self.nats.snapshots, snapshot_key(p, token), value, unit.revision
        )
        unit.covered, unit.dirty = unit.last, False

    async def _check(self, p: int) -> int:
        """The revision of our lease on `p`; LeaseLost (and `p` fenced) if it is no longer
        ours: no write for a partition after its lease ran out.
        """
        own = self.nats.ownership
        assert own is not None
        if not await own.confirm(p):
            raise LeaseLost(p)
        return own.held[p].revision

    # -- stopping ------------------------------------------------------------------------

    async def _drain(self, engine: Engine, out: list[Outgoing]) -> None:
        """Learn what was received, snapshot every held partition, hand each over."""
        own = self.nats.ownership
        for p in list(self.held):
            await self.nats.stop(p)
        if own is not None:
            await own.leave()
            for p in list(self.held):
                if await self._snapshot(engine, p):
                    await own.hand_over(p)
        await super()._drain(engine, out)


class LeaseLost(Exception):
    """The lease of a partition is no longer trusted: stop writing for it."""


async def run(cfg: Config, stop: asyncio.Event | None = None) -> None:
    """`service.run` with a ClusterDaemon."""
    await service.run(cfg, stop, ClusterDaemon(cfg))
