"""The composition root: one event loop, a TaskGroup of transport, learner and store writer."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import structlog

from edgeml import __version__, logs
from edgeml.config import Config, load, parse_duration, warnings_for
from edgeml.core.batch import Batch, Heartbeat
from edgeml.core.engine import Engine, NeedsLearner
from edgeml.core.messages import Outgoing
from edgeml.daemon import http, predict_requests, reload
from edgeml.daemon.commands import apply_commands
from edgeml.daemon.disk import DiskGuard
from edgeml.daemon.homeassistant import HomeAssistant
from edgeml.daemon.metrics import Meters
from edgeml.daemon.recovery import Recovery
from edgeml.daemon.sdnotify import Notifier
from edgeml.daemon.timers import Every, bytes_written
from edgeml.errors import ConfigError
from edgeml.records import Delivery
from edgeml.store.writer import Store
from edgeml.transport.base import Transport
from edgeml.transport.mqtt import Session

__all__ = ["Daemon", "run"]

log = structlog.get_logger("edgeml.daemon")

T = TypeVar("T")

# The learner yields to the event loop after this many messages, so the socket is read and
# the writer runs even under a flood.
_CHUNK = 200
# How often the learner looks for commands from the CLI (the contract: applied within 2 s).
_COMMANDS_EVERY = 1.0
# When the learner runs dry with at least this many messages in its batch, it commits at
# once: the broker is streaming, and waiting would only hold back acknowledgements (measured
# here: 0.37x -> 0.49x of a bare subscriber's throughput). A smaller batch waits up to
# flush_interval_ms for company, which is what spares the SD card at low rates.
_DRY_BATCH = 32
# With nothing new to say, a heartbeat is still written this often. Each costs about 80 KB
# of writes to storage (WAL, its index, the file system's journal: bench/idle.py), so this is
# what an idle daemon writes: ~4 MB a day. Whether it runs, `edgeml status` tells by its pid
# and that process's start time; the heartbeat's age is the fallback where /proc is missing.
IDLE_BEAT_S = 1800.0


class Daemon:
    """Wires the stages together; `run` returns after a clean stop."""

    def __init__(self, cfg: Config, transport: Transport | None = None) -> None:
        self.cfg = cfg
        self.transport: Transport = transport or Session(cfg)
        self.started = time.time()
        self.ready = asyncio.Event()
        self.engine: Engine | None = None  # set once the models are restored
        self._batches: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=2)
        self._retention = parse_duration(cfg.store.retention)
        # Group commit: a batch waits up to flush_interval_ms for company, which divides the
        # bytes written per sample (an SD card wears out) by the messages per batch. It is
        # committed sooner when it holds half the messages the source lets us leave unacked
        # (MQTT's Receive Maximum; 20 for MQTT 3.1.1), or the source would stop and wait.
        self._flush_after = cfg.store.flush_interval_ms / 1000
        self._batch_limit = max(1, min(cfg.store.batch_size, self.transport.max_unacked // 2))
        self._commands = Every(_COMMANDS_EVERY)
        self._summary = Every(parse_duration(cfg.store.summary_interval), at_once=True)
        self._snapshots = Every(parse_duration(cfg.models.snapshot_interval))
        self._rate = (time.monotonic(), 0, 0.0)  # (when, learned then, msgs/s)
        self._last_beat: tuple[Any, float] = (None, 0.0)  # (figures, when) of the last written
        self._bytes_at_start = bytes_written()
        self.notifier = Notifier()  # systemd, when it started us
        self.stopping = False
        self._reload_pending = False
        self._writing = False  # the store writer task runs
        self.disk: DiskGuard | None = None  # the disk's state: set once the file is open
        self.unstored = 0  # readings left unstored at a stop on a full disk
        self.homeassistant = (
            HomeAssistant(cfg, self.transport) if cfg.homeassistant.enabled else None
        )
        self.meters = Meters()  # for /metrics

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.cfg
        disk = self.disk = DiskGuard(cfg.db_path)
        sync = not cfg.store.ack_before_sync
        opened = await self._pinging(
            disk.retry(lambda: Store.open(cfg.db_path, cfg.models.keep_snapshots, sync), stop)
        )
        if opened is None:  # stopped while the disk was too full to open the file
            disk.close()
            return
        async with opened as store:
            self._store = store
            self.recovery = Recovery(cfg, store, self.notifier, self._flush)
            engine = self.engine = await self.recovery.restore()
            # Commands given while no daemon ran are applied now, before any new reading.
            await apply_commands(store, engine, self.recovery, [], self._flush)
            await self._pinging(disk.write(store, engine.take_batch(), stop))
            # What exists now (modules, models) lives as long as the daemon: keep it out of
            # the garbage collector's full passes, which otherwise walk it every few seconds.
            gc.freeze()
            # mqtt.predict_requests: predictions asked over MQTT 5 are answered from now on.
            predict_requests.attach(self, self.transport)
            shutdown = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.transport.run(shutdown), name="transport")
                tg.create_task(self._store_loop(store, disk, stop), name="store")
                if cfg.http.enabled:
                    tg.create_task(http.serve(self, shutdown), name="http")
                self._writing = True
                learner = tg.create_task(self._learn_loop(engine, stop), name="learn")
                announcer = tg.create_task(self._announce_ready(), name="ready")
                if self.homeassistant is not None:
                    tg.create_task(self.homeassistant.run(engine, shutdown), name="homeassistant")
                # Pings from this loop: if it blocks, they stop and systemd restarts us.
                watchdog = tg.create_task(
                    self.notifier.keepalive(self.ready, self.status), name="watchdog"
                )
                # The learner returns after the last batch is queued; the writer after it is
                # committed and acknowledged; only then does the transport say offline.
                await learner
                await self._batches.join()
                shutdown.set()
                announcer.cancel()  # never connected: nothing to announce
                watchdog.cancel()
            disk.close()
        log.info("stopped", learned=engine.learned, rejected=engine.rejects.total.total(),
                 duplicates=engine.duplicates)  # fmt: skip
        if self.unstored:
            # Not acknowledged: the broker sends them again at the next start.
            log.warning("stopped_unstored_disk_full", readings=self.unstored,
                        db=str(cfg.db_path))  # fmt: skip

    async def _pinging(self, aw: Awaitable[T]) -> T:
        """Await `aw` while systemd hears from the loop: on a full disk it waits for space."""
        pings = asyncio.create_task(self.notifier.keepalive(self.ready, self.status))
        try:
            return await aw
        finally:
            pings.cancel()

    async def _announce_ready(self) -> None:
        await self.transport.subscribed.wait()
        self.ready.set()
        log.info("ready", pid=os.getpid(), db=str(self.cfg.db_path),
                 streams=[s.name for s in self.cfg.stream])  # fmt: skip
        self.notifier.ready(self.status())
        if self._reload_pending:
            self.reload()

    def status(self) -> str:
        """One line for `systemctl status` (systemd's STATUS=)."""
        m, state = self.cfg.mqtt, self.transport.state
        full = self.disk.state.line() if self.disk is not None else ""
        if full:
            return full
        if self.stopping:
            return "stopping: learning and committing what was received"
        if not self.ready.is_set():
            return f"waiting for the broker at {m.host}:{m.port} ({state})"
        e = self.engine
        models = f"; {e.learned} samples learned, {len(e.learners)} models" if e else ""
        return f"broker {m.host}:{m.port} {state}{models}; {self._rate[2]:.1f}/s"

    def reload(self) -> None:
        """SIGHUP: read the config file again, apply what can change live, name the rest.

        A file that does not validate changes nothing: the daemon goes on as it was.
        """
        if self.engine is None or not self.ready.is_set():
            self._reload_pending = True  # the models are not restored yet: once ready
            log.info("config_reload_deferred", source=str(self.cfg.source))
            return
        self._reload_pending = False
        self.notifier.reloading()
        try:
            new = load(self.cfg.source)
        except ConfigError as exc:
            log.error("config_reload_failed", source=str(self.cfg.source), error=str(exc))
            self.notifier.ready(f"config reload failed, running as before; {self.status()}")
            return
        result = reload.plan(self.cfg, new)
        if result.config.log != self.cfg.log:
            logs.configure(result.config.log.level, result.config.log.format)
        reload.apply(self.engine, result.config)
        self.cfg = result.config
        (log.warning if result.restart_needed else log.info)(
            "config_reload",
            source=str(self.cfg.source),
            applied=list(result.applied),
            restart_needed=list(result.restart_needed),
        )
        for warning in warnings_for(new):
            log.warning("config_warning", detail=warning)
        pending = len(result.restart_needed)
        self.notifier.ready(
            f"config reloaded{f', {pending} changes need a restart' if pending else ''}; "
            + self.status()
        )

    async def _flush(self, engine: Engine) -> None:
        """Commit everything learned so far, so the store holds the newest samples."""
        if self._writing:
            await self._batches.put(engine.take_batch())
            await self._batches.join()

    async def _handle(self, engine: Engine, d: Delivery, out: list[Outgoing]) -> None:
        t0 = time.perf_counter() if self.meters.learn.due() else None  # 1 in 16 is timed
        try:
            engine.handle(d, out)
        except NeedsLearner as need:
            await self.recovery.bring_back(engine, need.keys)
            engine.handle(d, out)
        if engine.requests:
            await self.recovery.answer(engine, out)
        if t0 is not None:
            self.meters.learn.observe(time.perf_counter() - t0)

    # -- the learner task -----------------------------------------------------------

    async def _learn_loop(self, engine: Engine, stop: asyncio.Event) -> None:
        inbox = self.transport.inbox
        out: list[Outgoing] = []
        stopping = asyncio.create_task(self._wake_on(stop))
        try:
            while not stop.is_set():
                if not inbox:
                    await self.transport.wait_for_messages(self._deadline(engine))
                for _ in range(min(len(inbox), _CHUNK)):
                    await self._handle(engine, inbox.popleft(), out)
                self._send(out)
                now = time.monotonic()
                await self._housekeep(engine, now, out)
                batch = engine.batch
                if not batch.empty and (
                    batch.heartbeat is not None  # a summary was due: commit it now
                    or len(batch) >= self._batch_limit
                    or (not inbox and len(batch) >= _DRY_BATCH)
                    or now - batch.first_added >= self._flush_after
                ):
                    await self._batches.put(engine.take_batch())
                elif inbox:
                    await asyncio.sleep(0)
            await self._drain(engine, out)
        finally:
            stopping.cancel()

    def _deadline(self, engine: Engine) -> float:
        """Seconds the learner may wait for a message before some housekeeping is due."""
        deadline = min(self._summary.next, self._commands.next)
        if len(engine.batch):
            deadline = min(deadline, engine.batch.first_added + self._flush_after)
        return deadline - time.monotonic()

    async def _housekeep(self, engine: Engine, now: float, out: list[Outgoing]) -> None:
        """The timers: commands every second; summary, reject events, heartbeat, snapshots
        and retention every summary interval.
        """
        if self._commands.due(now):
            await apply_commands(self._store, engine, self.recovery, out, self._flush)
            self._send(out)
        if not self._summary.due(now):
            return
        engine.add_summary()
        engine.add_rejects(out)
        engine.add_silences(time.time(), out)
        self._send(out)
        beat = self._heartbeat(engine)
        if self._beat_changed(beat, now):
            engine.batch.heartbeat = beat
        if self._snapshots.due(now):
            engine.add_snapshots("interval")
        engine.batch.prune_before = time.time() - self._retention

    async def _drain(self, engine: Engine, out: list[Outgoing]) -> None:
        """Stop intake: what was received is learned and committed; anything that arrives
        from now on stays unacknowledged and the broker sends it again next time.
        """
        inbox = self.transport.inbox
        for _ in range(len(inbox)):
            await self._handle(engine, inbox.popleft(), out)
        engine.add_rejects(out, final=True)
        self._send(out)
        engine.add_summary()
        engine.add_snapshots("shutdown")
        engine.batch.heartbeat = self._heartbeat(engine, stopped=time.time())
        await self._batches.put(engine.take_batch())
        await self._batches.put(None)

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.transport.wake()

    def _send(self, out: list[Outgoing]) -> None:
        if self.homeassistant is not None and self.engine is not None:
            self.homeassistant.mirror(self.engine, out)
        for message in out:
            self.transport.publish(message.topic, message.payload, message.qos, message.retain)
        out.clear()

    def _beat_changed(self, beat: Heartbeat, now: float) -> bool:
        """Whether a heartbeat is worth a commit: when one of its figures changed, or every
        IDLE_BEAT_S. An idle daemon then writes a few kilobytes a minute, not every 2 s.
        """
        figures = (
            beat.broker,
            beat.received,
            beat.learned,
            beat.rate,
            sorted(beat.rejected.items()),
        )
        if figures == self._last_beat[0] and now - self._last_beat[1] < IDLE_BEAT_S:
            return False
        self._last_beat = (figures, now)
        return True

    def _heartbeat(self, engine: Engine, stopped: float | None = None) -> Heartbeat:
        now = time.monotonic()
        then, learned_then, rate = self._rate
        if now - then >= 1.0:
            rate = (engine.learned - learned_then) / (now - then)
            self._rate = (now, engine.learned, rate)
        written = bytes_written()
        at_start = self._bytes_at_start
        return Heartbeat(
            pid=os.getpid(),
            node=self.cfg.node.id,
            version=__version__,
            started=self.started,
            broker=self.transport.state,
            received=self.transport.received,
            rejected=dict(engine.rejects.total),
            learned=engine.learned,
            rate=round(rate, 1),
            bytes_written=None if written is None or at_start is None else written - at_start,
            stopped=stopped,
        )

    # -- the store writer task ------------------------------------------------------

    async def _store_loop(self, store: Store, disk: DiskGuard, stop: asyncio.Event) -> None:
        abandoned = False
        while True:
            batch = await self._batches.get()
            try:
                if batch is None:
                    return
                # A full disk holds the batch here (and the learner behind the queue) until
                # it commits; only a stop gives up on it, and on every batch after it.
                self.meters.committing, t0 = batch.first_added, time.perf_counter()
                written = not abandoned and await disk.write(store, batch, stop)
                self.meters.committing = None
                if not written:
                    abandoned = True
                    self.unstored += len(batch.acks)
                    continue
                self.meters.commit.observe(time.perf_counter() - t0)
                if self.engine is not None:
                    self.engine.written_batches = batch.number
                # Only now, with the batch committed, may the source forget these messages.
                for token in batch.acks:
                    self.transport.ack(token)
                self._send(batch.after_commit)
            finally:
                self._batches.task_done()


async def run(cfg: Config, stop: asyncio.Event | None = None, daemon: Daemon | None = None) -> None:
    """Run the daemon until SIGTERM/SIGINT (or `stop`), then drain, commit, ack and leave.

    SIGHUP re-reads the config file (`Daemon.reload`).
    """
    stop = stop or asyncio.Event()
    daemon = daemon or Daemon(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig, stop, daemon)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload)
    try:
        await daemon.run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def _on_signal(sig: signal.Signals, stop: asyncio.Event, daemon: Daemon) -> None:
    log.info("stopping", signal=sig.name)
    daemon.stopping = True
    daemon.notifier.stopping(f"stopping on {sig.name}")
    stop.set()
