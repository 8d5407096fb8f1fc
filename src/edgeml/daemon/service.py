"""The composition root: one event loop, a TaskGroup of session, learner and store writer."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import pickle
import signal
import time
from pathlib import Path

import structlog

from edgeml import __version__, logs
from edgeml.config import Config, load, parse_duration, warnings_for
from edgeml.core.engine import NeedsLearner, Outgoing, Pipeline
from edgeml.daemon import reload
from edgeml.daemon.sdnotify import Notifier
from edgeml.errors import ConfigError
from edgeml.learn import Learner, build_model, snapshot
from edgeml.records import Request
from edgeml.store.writer import Batch, Command, Heartbeat, Store, StoredSnapshot
from edgeml.transport.mqtt import Delivery, Session

__all__ = ["Daemon", "run"]

log = structlog.get_logger("edgeml.daemon")

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


# A test names a point to be killed at (kill -9) where no timing from outside can hit it.
_FAILPOINT = os.environ.get("EDGEML_FAILPOINT")


def _failpoint(name: str) -> None:
    if name == _FAILPOINT:
        os.kill(os.getpid(), signal.SIGKILL)


def _bytes_written() -> int | None:
    """Bytes this process caused to be written to storage (Linux), for the SD-card budget."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class CommandError(Exception):
    """A command that cannot be applied; its message is the result the CLI shows."""


class Daemon:
    """Wires the stages together; `run` returns after a clean stop."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.session = Session(cfg)
        self.started = time.time()
        self.ready = asyncio.Event()
        self.pipeline: Pipeline | None = None  # set once the models are restored
        self._batches: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=2)
        self._summary_every = parse_duration(cfg.store.summary_interval)
        self._snapshot_every = parse_duration(cfg.models.snapshot_interval)
        self._retention = parse_duration(cfg.store.retention)
        # Group commit: a batch waits up to flush_interval_ms for company, which divides the
        # bytes written per sample (an SD card wears out) by the messages per batch. It is
        # committed sooner when it holds half the messages the broker lets us leave unacked
        # (Receive Maximum; 20 for MQTT 3.1.1), or the broker would stop and wait for us.
        self._flush_after = cfg.store.flush_interval_ms / 1000
        window = cfg.mqtt.receive_maximum if cfg.mqtt.protocol == "5" else 20
        self._batch_limit = max(1, min(cfg.store.batch_size, window // 2))
        self._rate = (time.monotonic(), 0, 0.0)  # (when, learned then, msgs/s)
        self._bytes_at_start = _bytes_written()
        self.notifier = Notifier()  # systemd, when it started us
        self.stopping = False
        self._reload_pending = False
        self._writing = False  # the store writer task runs

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.cfg
        async with await Store.open(cfg.db_path, cfg.models.keep_snapshots) as store:
            pipeline = self.pipeline = await self._restore(store)
            self._store = store
            # Commands given while no daemon ran are applied now, before any new reading.
            await self._apply_commands(pipeline, [])
            await store.write(pipeline.take_batch())
            # What exists now (modules, models) lives as long as the daemon: keep it out of
            # the garbage collector's full passes, which otherwise walk it every few seconds.
            gc.freeze()
            shutdown = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.session.run(shutdown), name="session")
                tg.create_task(self._store_loop(store), name="store")
                self._writing = True
                learner = tg.create_task(self._learn_loop(pipeline, stop), name="learn")
                announcer = tg.create_task(self._announce_ready(), name="ready")
                # Pings from this loop: if it blocks, they stop and systemd restarts us.
                watchdog = tg.create_task(
                    self.notifier.keepalive(self.ready, self.status), name="watchdog"
                )
                # The learner returns after the last batch is queued; the writer after it is
                # committed and acknowledged; only then does the session say offline and leave.
                await learner
                await self._batches.join()
                shutdown.set()
                announcer.cancel()  # never connected: nothing to announce
                watchdog.cancel()
        log.info(
            "stopped",
            learned=pipeline.learned,
            rejected=sum(pipeline.rejected.values()),
            duplicates=pipeline.duplicates,
        )

    async def _announce_ready(self) -> None:
        await self.session.subscribed.wait()
        self.ready.set()
        log.info(
            "ready",
            pid=os.getpid(),
            db=str(self.cfg.db_path),
            streams=[s.name for s in self.cfg.stream],
        )
        self.notifier.ready(self.status())
        if self._reload_pending:
            self.reload()

    def status(self) -> str:
        """One line for `systemctl status` (systemd's STATUS=)."""
        m = self.cfg.mqtt
        if self.stopping:
            return "stopping: learning and committing what was received"
        if not self.ready.is_set():
            return f"waiting for the broker at {m.host}:{m.port} ({self.session.state})"
        p = self.pipeline
        models = f"; {p.learned} samples learned, {len(p.learners)} models" if p else ""
        return f"broker {m.host}:{m.port} {self.session.state}{models}; {self._rate[2]:.1f}/s"

    def reload(self) -> None:
        """SIGHUP: read the config file again, apply what can change live, name the rest.

        A file that does not validate changes nothing: the daemon goes on as it was.
        """
        if self.pipeline is None or not self.ready.is_set():
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
        reload.apply(self.pipeline, result.config)
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

    async def _restore(self, store: Store) -> Pipeline:
        """Bring back the most recently active models (at most `max_live`): each from its
        newest usable snapshot, then the samples that followed it. The others stay in the
        store and come back when their next reading arrives.
        """
        series = await store.series()
        pipeline = Pipeline(
            self.cfg, await store.next_seq(), series, await store.recent_deliveries()
        )
        t0 = time.monotonic()
        index = await store.snapshot_index()
        wanted = [(sk, sid) for sk, sid in series.items() if sk[0] in pipeline.streams]
        # A series without a snapshot has learned nothing since start-up yet: first in line.
        wanted.sort(key=lambda item: -index[item[1]][0].seq if item[1] in index else -(2**62))
        after: dict[int, int] = {}
        for sk, sid in wanted[: self.cfg.models.max_live]:
            after[sid] = await self._load(store, pipeline, sk, sid, index.get(sid, []))
        n = 0
        async for stream, key, row in store.replay(after):
            pipeline.replay(stream, key, row)
            if pipeline.requests:
                await self._answer(store, pipeline, None)
            n += 1
            if n % 100_000 == 0:
                log.info("replay_progress", samples=n)
                # Start-up may last as long as the replay makes progress (TimeoutStartSec=).
                self.notifier.send("EXTEND_TIMEOUT_USEC=60000000", f"STATUS=replaying: {n} samples")
        if pipeline.learners:
            log.info(
                "restored",
                snapshots=sum(1 for seq in after.values() if seq),
                replayed=n,
                models=len(pipeline.learners),
                parked=len(wanted) - len(pipeline.learners),
                seconds=round(time.monotonic() - t0, 2),
            )
            pipeline.add_summary()
        return pipeline

    async def _load(
        self,
        store: Store,
        pipeline: Pipeline,
        sk: tuple[str, str],
        sid: int,
        snapshots: list[StoredSnapshot],
    ) -> int:
        """Restore one model from its newest usable snapshot; returns the seq it has learned
        (0: no usable snapshot, a fresh model that must learn the series' whole log).
        """
        stream_name, key = sk
        stream = pipeline.streams[stream_name]
        for i, snap in enumerate(snapshots):
            try:
                blob = await store.load_blob(snap.id)
                learner = snapshot.load(stream, key, blob, snap.sha256, snap.river)
            except snapshot.SnapshotError as exc:
                log.warning(
                    "snapshot_unusable",
                    stream=stream_name,
                    key=key,
                    snapshot_id=snap.id,
                    seq=snap.seq,
                    reason=str(exc),
                )
                continue
            pipeline.restore(learner)
            if i:
                log.warning(
                    "snapshot_fallback",
                    stream=stream_name,
                    key=key,
                    detail=f"using an older snapshot (seq {snap.seq}) and a longer replay",
                )
            return snap.seq
        if snapshots:
            log.warning(
                "snapshot_fallback",
                stream=stream_name,
                key=key,
                detail="no usable snapshot: a fresh model learns the whole log again",
            )
        pipeline.restore(Learner(stream, key))
        return 0

    async def _bring_back(self, pipeline: Pipeline, keys: list[tuple[str, str]]) -> None:
        """Reload evicted models from the store (snapshot + the samples that followed it)."""
        for sk in keys:
            sid = pipeline.series[sk]
            seq = await self._load(
                self._store, pipeline, sk, sid, await self._store.snapshots_of(sid)
            )
            for row in await self._store.replay_series(sid, seq):
                pipeline.replay(sk[0], sk[1], row)
                if pipeline.requests:
                    await self._answer(self._store, pipeline, None)

    async def _handle(self, pipeline: Pipeline, d: Delivery, out: list[Outgoing]) -> None:
        try:
            pipeline.handle(d, out)
        except NeedsLearner as need:
            await self._bring_back(pipeline, need.keys)
            pipeline.handle(d, out)
        if pipeline.requests:
            await self._answer(self._store, pipeline, out)

    async def _flush(self, pipeline: Pipeline) -> None:
        """Commit everything learned so far, so the store holds the newest samples."""
        if self._writing:
            await self._batches.put(pipeline.take_batch())
            await self._batches.join()

    async def _answer(self, store: Store, pipeline: Pipeline, out: list[Outgoing] | None) -> None:
        """Give learners what they asked for from the store, before the next sample, so a
        replay of the log asks and gets the same. `out` None: a replay of the log.

        What an answer records (the retrain event, a new version) is committed after the
        sample that asked: a kill in between loses it, and the replay records it then,
        without publishing it (its moment has passed).
        """
        if out is not None:
            await self._flush(pipeline)
        while pipeline.requests:
            sk, request = pipeline.requests.pop(0)
            if sk not in pipeline.learners:  # evicted by the message that asked
                await self._bring_back(pipeline, [sk])
            sid = pipeline.series[sk]
            learner = pipeline.learners[sk]
            if request.kind == "challenger":
                rows = await store.recent_samples(sid, request.samples, request.seq)
                lost = out is None and not await store.has_event(
                    "retrain", sk[0], sk[1], request.seq, learner.last_seen
                )
                pipeline.start_challenger(sk, request, rows, [] if lost else out)
                _failpoint("warm_start")
                continue
            # The guard: a model that predicted a non-finite number gives way to the stored
            # state of its version as it was promoted (a fresh model if that fails too).
            blob = await store.version_blob(sid, request.version)
            try:
                model = pickle.loads(blob) if blob else build_model(learner.stream)
            except Exception:  # an unloadable blob must not stop the daemon; start afresh
                model = build_model(learner.stream)
            if request.in_place:
                learner.replace_model(model, learner.model_version)
                continue
            version = learner.latest_version + 1
            if out is None and await store.has_version(sid, version):
                learner.replace_model(model, version)
            else:
                pipeline.promote(sk[0], sk[1], model, version, "guard", [] if out is None else out)
                _failpoint("guard")

    async def _apply_commands(self, pipeline: Pipeline, out: list[Outgoing]) -> None:
        """Apply what the CLI asked for (rollback, import); each gets a result row."""
        for cmd in await self._store.pending_commands():
            try:
                result = await self._apply(pipeline, cmd, out)
                status = "done"
            except CommandError as exc:
                result, status = str(exc), "failed"
            log.info("command_applied", id=cmd.id, kind=cmd.kind, stream=cmd.stream,
                     key=cmd.key, status=status, result=result)  # fmt: skip
            pipeline.batch.command_results.append((status, json.dumps(result), time.time(), cmd.id))

    async def _apply(self, pipeline: Pipeline, cmd: Command, out: list[Outgoing]) -> str:
        sk = (cmd.stream, cmd.key)
        if cmd.stream not in pipeline.streams:
            raise CommandError(f"no stream {cmd.stream!r} in the running config")
        sid = pipeline.series.get(sk)
        if sid is None:
            raise CommandError(f"{cmd.stream}/{cmd.key} has no model yet")
        if sk not in pipeline.learners:
            await self._bring_back(pipeline, [sk])
        learner = pipeline.learners[sk]
        version = max(await self._store.max_version(sid), learner.latest_version) + 1
        if cmd.kind == "retrain":
            # The same path as a drift: a challenger warm-started on the newest samples.
            n = int(cmd.args.get("samples", learner.stream.retrain.max_warm_start))
            request = Request("challenger", "manual", learner.last_seq, n)
            await self._flush(pipeline)
            rows = await self._store.recent_samples(sid, n)
            if not rows:
                raise CommandError(f"{cmd.stream}/{cmd.key} has no stored samples to train on")
            events = pipeline.start_challenger(sk, request, rows, out)
            if any(e.kind == "promotion" for e in events):
                return (
                    f"version {learner.model_version} is the champion: a fresh model trained "
                    f"on the newest {len(rows)} samples (policy reset)"
                )
            return (
                f"a challenger trained on the newest {len(rows)} samples is in its grace "
                f"period: it becomes the champion only if its error is reliably lower within "
                f"{learner.stream.retrain.grace} samples (see `edgeml events --kind promotion`)"
            )
        if cmd.kind == "rollback":
            to = int(cmd.args["to"])
            if to == learner.model_version:
                raise CommandError(f"version {to} is already the champion")
            blob_or_none = await self._store.version_blob(sid, to)
            if blob_or_none is None:
                raise CommandError(f"{cmd.stream}/{cmd.key} has no version {to}")
            blob, reason = blob_or_none, "rollback"
        elif cmd.kind == "import" and cmd.blob is not None:
            blob, reason = bytes(cmd.blob), "import"
        else:
            raise CommandError(f"unknown command {cmd.kind!r}")
        try:
            model = pickle.loads(blob)
        except Exception as exc:  # a model that does not unpickle is refused, whatever the cause
            raise CommandError(f"the model does not load: {type(exc).__name__}: {exc}") from exc
        pipeline.promote(cmd.stream, cmd.key, model, version, reason, out)
        if reason == "rollback":
            return f"version {version} is the champion: the model of version {to}"
        return f"version {version} is the champion: the imported model"

    # -- the learner task -----------------------------------------------------------

    async def _learn_loop(self, pipeline: Pipeline, stop: asyncio.Event) -> None:
        inbox = self.session.inbox
        out: list[Outgoing] = []
        last_summary = time.monotonic() - self._summary_every  # a heartbeat at once
        last_snapshot = time.monotonic()
        last_commands = time.monotonic()
        stopping = asyncio.create_task(self._wake_on(stop))
        try:
            while not stop.is_set():
                batch = pipeline.batch
                if not inbox:
                    deadline = min(
                        last_summary + self._summary_every, last_commands + _COMMANDS_EVERY
                    )
                    if len(batch):
                        deadline = min(deadline, batch.first_added + self._flush_after)
                    await self.session.wait_for_messages(deadline - time.monotonic())
                for _ in range(min(len(inbox), _CHUNK)):
                    await self._handle(pipeline, inbox.popleft(), out)
                self._send(out)
                now = time.monotonic()
                if now - last_commands >= _COMMANDS_EVERY:
                    last_commands = now
                    await self._apply_commands(pipeline, out)
                    self._send(out)
                due = now - last_summary >= self._summary_every
                if due:
                    last_summary = now
                    pipeline.add_summary()
                    pipeline.add_rejects(out)
                    self._send(out)
                    pipeline.batch.heartbeat = self._heartbeat(pipeline)
                    if now - last_snapshot >= self._snapshot_every:
                        last_snapshot = now
                        pipeline.add_snapshots("interval")
                    pipeline.batch.prune_before = time.time() - self._retention
                batch = pipeline.batch
                if not batch.empty and (
                    due
                    or len(batch) >= self._batch_limit
                    or (not inbox and len(batch) >= _DRY_BATCH)
                    or now - batch.first_added >= self._flush_after
                ):
                    await self._batches.put(pipeline.take_batch())
                elif inbox:
                    await asyncio.sleep(0)
            # Stop intake: what was received is learned and committed; anything that arrives
            # from now on stays unacknowledged and the broker sends it again next time.
            for _ in range(len(inbox)):
                await self._handle(pipeline, inbox.popleft(), out)
            pipeline.add_rejects(out, final=True)
            self._send(out)
            pipeline.add_summary()
            pipeline.add_snapshots("shutdown")
            pipeline.batch.heartbeat = self._heartbeat(pipeline, stopped=time.time())
            await self._batches.put(pipeline.take_batch())
            await self._batches.put(None)
        finally:
            stopping.cancel()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.session.wake()

    def _send(self, out: list[Outgoing]) -> None:
        for topic, payload, qos in out:
            self.session.publish(topic, payload, qos)
        out.clear()

    def _heartbeat(self, pipeline: Pipeline, stopped: float | None = None) -> Heartbeat:
        now = time.monotonic()
        then, learned_then, rate = self._rate
        if now - then >= 1.0:
            rate = (pipeline.learned - learned_then) / (now - then)
            self._rate = (now, pipeline.learned, rate)
        written = _bytes_written()
        return Heartbeat(
            pid=os.getpid(),
            node=self.cfg.node.id,
            version=__version__,
            started=self.started,
            broker=self.session.state,
            received=self.session.received,
            rejected=dict(pipeline.rejected),
            learned=pipeline.learned,
            rate=round(rate, 1),
            bytes_written=(
                written - self._bytes_at_start
                if written is not None and self._bytes_at_start is not None
                else None
            ),
            stopped=stopped,
        )

    # -- the store writer task ------------------------------------------------------

    async def _store_loop(self, store: Store) -> None:
        while True:
            batch = await self._batches.get()
            try:
                if batch is None:
                    return
                await store.write(batch)
                if self.pipeline is not None:
                    self.pipeline.written_batches = batch.number
                # Only now, with the batch committed, may the broker forget these messages.
                for mid, qos, generation in batch.acks:
                    self.session.ack(mid, qos, generation)
            finally:
                self._batches.task_done()


async def run(cfg: Config, stop: asyncio.Event | None = None) -> None:
    """Run the daemon until SIGTERM/SIGINT (or `stop`), then drain, commit, ack and leave.

    SIGHUP re-reads the config file (`Daemon.reload`).
    """
    stop = stop or asyncio.Event()
    daemon = Daemon(cfg)
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
