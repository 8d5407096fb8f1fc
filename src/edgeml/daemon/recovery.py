"""Models back from the store: start-up restore, evicted models on demand, and the answers
to what learners ask of the store (warm-start samples, an earlier version).

Each model is its newest usable snapshot plus the samples that followed it, so a killed and
restarted daemon ends with the model it would have had without the kill.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Awaitable, Callable

import structlog

from edgeml.config import Config
from edgeml.core.engine import Engine
from edgeml.core.messages import Outgoing
from edgeml.core.models import SeriesKey
from edgeml.daemon.sdnotify import Notifier
from edgeml.failpoints import failpoint
from edgeml.learn import Learner, build_model, snapshot
from edgeml.records import Request
from edgeml.store.writer import Store, StoredSnapshot

__all__ = ["Recovery"]

log = structlog.get_logger("edgeml.daemon")


class Recovery:
    """Reads models and samples back for the engine; `flush` commits what it learned so far."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        notifier: Notifier,
        flush: Callable[[Engine], Awaitable[None]],
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.notifier = notifier
        self.flush = flush

    async def restore(self) -> Engine:
        """Bring back the most recently active models (at most `max_live`): each from its
        newest usable snapshot, then the samples that followed it. The others stay in the
        store and come back when their next reading arrives.
        """
        store = self.store
        series = await store.series()
        engine = Engine(self.cfg, await store.next_seq(), series, await store.recent_deliveries())
        t0 = time.monotonic()
        index = await store.snapshot_index()
        wanted = [(sk, sid) for sk, sid in series.items() if sk[0] in engine.streams]
        # A series without a snapshot has learned nothing since start-up yet: first in line.
        wanted.sort(key=lambda item: -index[item[1]][0].seq if item[1] in index else -(2**62))
        after: dict[int, int] = {}
        for sk, sid in wanted[: self.cfg.models.max_live]:
            after[sid] = await self.load(engine, sk, index.get(sid, []))
        n = 0
        async for stream, key, row in store.replay(after):
            engine.replay(stream, key, row)
            if engine.requests:
                await self.answer(engine, None)
            n += 1
            if n % 100_000 == 0:
                log.info("replay_progress", samples=n)
                # Start-up may last as long as the replay makes progress (TimeoutStartSec=).
                self.notifier.send("EXTEND_TIMEOUT_USEC=60000000", f"STATUS=replaying: {n} samples")
        if engine.learners:
            log.info(
                "restored",
                snapshots=sum(1 for seq in after.values() if seq),
                replayed=n,
                models=len(engine.learners),
                parked=len(wanted) - len(engine.learners),
                seconds=round(time.monotonic() - t0, 2),
            )
            engine.add_summary()
        return engine

    async def load(self, engine: Engine, sk: SeriesKey, snapshots: list[StoredSnapshot]) -> int:
        """Restore one model from its newest usable snapshot; returns the seq it has learned
        (0: no usable snapshot, a fresh model that must learn the series' whole log).
        """
        stream_name, key = sk
        stream = engine.streams[stream_name]
        for i, snap in enumerate(snapshots):
            try:
                blob = await self.store.load_blob(snap.id)
                learner = snapshot.load(stream, key, blob, snap.sha256, snap.river)
            except snapshot.SnapshotError as exc:
                log.warning("snapshot_unusable", stream=stream_name, key=key,
                            snapshot_id=snap.id, seq=snap.seq, reason=str(exc))  # fmt: skip
                continue
            engine.restore(learner)
            if i:
                detail = f"using an older snapshot (seq {snap.seq}) and a longer replay"
                log.warning("snapshot_fallback", stream=stream_name, key=key, detail=detail)
            return snap.seq
        if snapshots:
            detail = "no usable snapshot: a fresh model learns the whole log again"
            log.warning("snapshot_fallback", stream=stream_name, key=key, detail=detail)
        engine.restore(Learner(stream, key))
        return 0

    async def bring_back(self, engine: Engine, keys: list[SeriesKey]) -> None:
        """Reload evicted models from the store (snapshot + the samples that followed it)."""
        for sk in keys:
            sid = engine.series[sk]
            seq = await self.load(engine, sk, await self.store.snapshots_of(sid))
            for row in await self.store.replay_series(sid, seq):
                engine.replay(sk[0], sk[1], row)
                if engine.requests:
                    await self.answer(engine, None)

    async def answer(self, engine: Engine, out: list[Outgoing] | None) -> None:
        """Give learners what they asked for from the store, before the next sample, so a
        replay of the log asks and gets the same. `out` None: a replay of the log.

        What an answer records (the retrain event, a new version) is committed after the
        sample that asked: a kill in between loses it, and the replay records it then,
        without publishing it (its moment has passed).
        """
        if out is not None:
            await self.flush(engine)
        while engine.requests:
            sk, request = engine.requests.pop(0)
            if sk not in engine.learners:  # evicted by the message that asked
                await self.bring_back(engine, [sk])
            if request.kind == "challenger":
                await self._warm_start(engine, sk, request, out)
            else:
                await self._restore_version(engine, sk, request, out)

    async def _warm_start(
        self, engine: Engine, sk: SeriesKey, request: Request, out: list[Outgoing] | None
    ) -> None:
        sid, learner = engine.series[sk], engine.learners[sk]
        rows = await self.store.recent_samples(sid, request.samples, request.seq)
        lost = out is None and not await self.store.has_event(
            "retrain", sk[0], sk[1], request.seq, learner.last_seen
        )
        engine.start_challenger(sk, request, rows, [] if lost else out)
        failpoint("warm_start")

    async def _restore_version(
        self, engine: Engine, sk: SeriesKey, request: Request, out: list[Outgoing] | None
    ) -> None:
        """The guard: a model that predicted a non-finite number gives way to the stored
        state of its version as it was promoted, one that keeps raising to its parent's (a
        fresh model if there is none or it fails too).
        """
        sid, learner = engine.series[sk], engine.learners[sk]
        wanted: int | None = request.version
        if request.parent:  # the version keeps failing: the one it came from
            wanted = await self.store.parent_version(sid, request.version)
        blob = await self.store.version_blob(sid, wanted) if wanted else None
        try:
            model = pickle.loads(blob) if blob else build_model(learner.stream)
        except Exception:  # an unloadable blob must not stop the daemon; start afresh
            model = build_model(learner.stream)
        if request.in_place:
            learner.replace_model(model, learner.model_version)
            return
        version = learner.latest_version + 1
        if out is None and await self.store.has_version(sid, version):
            learner.replace_model(model, version)
        else:
            engine.promote(sk[0], sk[1], model, version, "guard", [] if out is None else out)
            failpoint("guard")
