"""Deliveries -> decode -> test-then-train -> the write set of one commit + outgoing messages.

The engine owns every model (exactly one task calls it) and is synchronous: it knows nothing
of asyncio, transports or SQLite. It fills a Batch (core.batch) and a list of Outgoing
messages (core.messages); the daemon commits the one and sends the other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import structlog

from edgeml.config import Config
from edgeml.core import batch as tables
from edgeml.core import messages as msg
from edgeml.core.counters import StreamCounters
from edgeml.core.dedup import Redeliveries
from edgeml.core.homeassistant_state import StateTopics
from edgeml.core.intake import Intake
from edgeml.core.messages import Outgoing
from edgeml.core.models import (
    LiveModels,
    NeedsLearner,
    SeriesKey,
    pickled,
    snapshot_row,
    summary_row,
)
from edgeml.core.rejects import RejectTally
from edgeml.core.silence import SilenceWatch
from edgeml.failpoints import failpoint
from edgeml.learn import Learner, snapshot
from edgeml.logs import RateLimitedLog
from edgeml.records import Delivery, Episode, ModelEvent, Outcome, Reject, Request, Sample

__all__ = ["Engine", "NeedsLearner"]

log = structlog.get_logger("edgeml.pipeline")

# One encoder for the hot path: json.dumps with any option builds a new encoder per call.
_compact = json.JSONEncoder(separators=(",", ":")).encode


class Engine:
    """Test-then-train every delivery; the rows and messages it causes wait in `batch`."""

    def __init__(
        self,
        cfg: Config,
        next_seq: int,
        series: Mapping[SeriesKey, int],
        recent: Mapping[int, int],
    ) -> None:
        self.cfg = cfg
        self.intake = Intake(cfg)  # decode, join, dedupe
        self.streams = {s.name: s for s in cfg.stream}
        self.models = LiveModels(self.streams, series, cfg.models.max_live)
        self.learners = self.models.learners  # the live ones, least recently used first
        self.series = self.models.series
        self.written_batches = 0  # set by the store writer
        self._batch_number = 0
        self.next_seq = next_seq
        self.redeliveries = Redeliveries(recent)
        self.silence = SilenceWatch(self.streams)
        self.batch = tables.Batch()
        self.rejects = RejectTally()
        self.duplicates = 0
        self.unmatched = 0
        self.counts = StreamCounters()  # per stream, for /metrics
        self.dirty: set[SeriesKey] = set()
        self.unsnapped: set[SeriesKey] = set()  # learned since their last snapshot
        # What learners asked for that only the store has (warm-start samples, an old
        # version); the daemon answers each before the next message is handled.
        self.requests: list[tuple[SeriesKey, Request]] = []
        self._topic_prefix = f"{cfg.mqtt.topic_prefix}/{cfg.node.id}"
        self._warn = RateLimitedLog(log)
        self.ha = StateTopics(cfg) if cfg.homeassistant.enabled else None

    # -- start-up -------------------------------------------------------------------

    @property
    def learned(self) -> int:
        """Samples learned since start (the per-stream counts of /metrics, summed)."""
        return self.counts.learned.total()

    @property
    def model_errors(self) -> int:
        """Samples on which River raised, since start."""
        return self.counts.model_errors.total()

    def restore(self, learner: Learner) -> None:
        """Put a learner loaded from a snapshot in place (before replaying what followed it)."""
        self.dirty.add(self.models.restore(learner))

    def replay(self, stream: str, key: str, row: tables.StoredSample) -> None:
        """Learn a stored sample again (after a restart); nothing is written or published:
        what it caused (events, promotions) was committed with it the first time.

        The stream/key must be live (restored) already: replay never starts a fresh model.
        A request it makes again is queued in `requests`, to be answered before the next.
        """
        seq, ts, x, y, label = row
        outcome = self._process(
            self.learners[(stream, key)], Sample(stream, key, ts, x, y, label), seq
        )
        if outcome.request is not None:
            self.requests.append(((stream, key), outcome.request))
        self.intake.repeats.note(outcome.sample)
        self.dirty.add((stream, key))
        self.unsnapped.add((stream, key))

    # -- the hot path -----------------------------------------------------------------

    def handle(self, d: Delivery, out: list[Outgoing]) -> None:
        """Test-then-train every stream that the delivery's topic matches.

        Raises NeedsLearner, before changing anything, when a model it needs was evicted and
        must be read back from the store first (the caller does that and calls again).
        """
        fingerprint = self.redeliveries.fingerprint(d)
        # Stored already (a crash or a reconnect between commit and ack): only acknowledge it.
        if self.redeliveries.is_repeat(d, fingerprint):
            self._note_first()
            self.duplicates += 1
            self.batch.acks.append(d.ack)
            return
        matched, results, partials = self.intake.results(d)
        missing = [
            (r.stream, r.key)
            for r in results
            if isinstance(r, Sample) and not self.models.available((r.stream, r.key))
        ]
        if missing:
            raise NeedsLearner(missing)
        self._note_first()
        held = bool(partials) and self.intake.keep(d, results, partials, fingerprint)
        if d.ack is not None and not held:
            self.redeliveries.remember(d, fingerprint)
            self.batch.acks.append(d.ack)
        if partials:  # acks a join no longer holds
            for token, dedup, released in self.intake.joins.released():
                self.redeliveries.remember_id(dedup, released)
                self.batch.acks.append(token)
        for result in results:
            if result is not None:
                self.counts.arrived(result.stream, d.arrival)
            if isinstance(result, Reject):
                self.rejects.note(result, d.topic, self._warn)
            elif result is not None:
                self._learn(result, d, fingerprint, out)
        if not matched:
            self.unmatched += 1
        self._evict_excess()
        if held:
            failpoint("join_held")

    def _note_first(self) -> None:
        if not self.batch.acks and not self.batch.samples:
            self.batch.first_added = time.monotonic()

    def _evict_excess(self) -> None:
        """Snapshot and unload the least recently used models beyond `max_live`."""
        for sk, lr in self.models.excess():
            self.silence.forget(*sk)
            snap = snapshot_row(self.series[sk], lr, "evict")
            self.batch.snapshots.append(snap)
            self.unsnapped.discard(sk)
            self.dirty.discard(sk)
            self.batch.summary.append(summary_row(self.series[sk], lr, time.time()))
            self.models.park(sk, snap, self._batch_number + 1)  # the number this batch gets

    def _learn(
        self, sample: Sample, d: Delivery, fingerprint: int | None, out: list[Outgoing]
    ) -> None:
        stream = self.streams[sample.stream]
        back = self.silence.seen(sample.stream, sample.key, d.arrival)
        if back is not None:
            self._event("back", back, out)
        sk = (sample.stream, sample.key)
        learner = self._learner(sample.stream, sample.key)
        seq = self.next_seq
        self.next_seq += 1
        outcome = self._process(learner, sample, seq)
        self.counts.learned_one(sample.stream, outcome, stream.publish == "all")
        if self.intake.repeats.streams:
            self.intake.repeats.note(sample)
        sid = self.series[sk]
        b = self.batch
        label = None if sample.label is None else _compact(sample.label)
        mid = d.dedup if fingerprint is not None else None
        b.samples.append(
            tables.SampleRow(
                seq, sid, sample.ts, _compact(sample.x), sample.y, mid, fingerprint, label
            )
        )
        if outcome.y_pred is not None:
            b.predictions.append(
                tables.PredictionRow(
                    seq,
                    outcome.y_pred,
                    outcome.error,
                    outcome.model_version,
                    None if outcome.label is None else _compact(outcome.label),
                    None if outcome.flag is None else int(outcome.flag),
                )
            )
        self.dirty.add(sk)
        self.unsnapped.add(sk)
        if stream.publish == "all" and outcome.y_pred is not None:
            topic = msg.prediction_topic(self._topic_prefix, sample.stream, sample.key)
            out.append(Outgoing(topic, msg.prediction_message(outcome)))
        if outcome.episode is not None:
            self._episode(outcome, outcome.episode, stream.publish != "none", d.origin)
        if outcome.drift is not None:
            ev = asdict(outcome.drift)
            self._record("drift", ev)
            out.append(Outgoing(self.cfg.events_topic, msg.drift_message(outcome.drift), 1))
            log.info("drift_detected", model_version=outcome.model_version, **ev)
        if self.ha is not None:
            self.ha.observe(sk, outcome, learner, time.monotonic(), out)
        for event in outcome.events:
            self._model_event(learner, event, out)
        if outcome.request is not None:
            self.requests.append((sk, outcome.request))

    def _process(self, learner: Learner, sample: Sample, seq: int) -> Outcome:
        """Test-then-train one sample; an error the model raises is counted and logged."""
        outcome, exc = learner.step(sample, seq)
        if exc is not None:
            self.counts.model_errors[sample.stream] += 1
            where = f"{sample.stream}/{sample.key}"
            self._warn.error("model_error", where, stream=sample.stream, key=sample.key,
                             seq=seq, error=learner.error, exc_info=exc)  # fmt: skip
        return outcome

    def _episode(self, outcome: Outcome, ep: Episode, publish: bool, origin: int | None) -> None:
        """Record an anomaly episode's announcement; its messages go out once it is
        committed, so a kill before the commit cannot announce it twice. In NATS mode
        (`origin`: the reading's stream sequence) they are named after the reading, so the
        output stream drops them when a new owner learns the reading again.
        """
        s = outcome.sample
        fields = msg.episode_fields(ep, s.stream, s.key, outcome.seq, s.ts, outcome.model_version)
        self._record("anomaly", fields)
        if publish and ep.published:
            ref = None if origin is None else f"{s.stream}:{s.key}:{origin}"
            self.batch.after_commit += msg.episode_messages(self._topic_prefix, ep, fields, ref)
        log.info("anomaly", **fields)

    def _model_event(self, lr: Learner, ev: ModelEvent, out: list[Outgoing]) -> None:
        """Record and publish what happened to a model; a promotion also makes a version."""
        fields = {"stream": ev.stream, "key": ev.key, "seq": ev.seq, "ts": ev.ts, **ev.data}
        self._event(ev.kind, fields, out)
        level = log.warning if ev.kind == "guard" else log.info
        level(f"model_{ev.kind}", **fields)
        if ev.kind == "promotion":
            data = ev.data
            self._archive(lr, ev.retired, data["reason"], data["parent"], data.get("drift_seq"))

    def _archive(
        self, lr: Learner, retired: Any, reason: str, parent: int, drift_seq: int | None
    ) -> None:
        """The registry rows of a new champion (the retired one's final state, the new
        version) and a snapshot of the learner in the same batch.
        """
        sk = (lr.stream.name, lr.key)
        sid = self.series[sk]
        self.counts.promotions[(sk[0], reason)] += 1
        self.batch.retired.append(tables.RetiredRow(pickled(retired), sid, parent))
        self.batch.versions.append(
            tables.VersionRow(sid, lr.model_version, time.time(), reason, parent,
                       json.dumps(lr.metrics()), snapshot.RIVER_VERSION, pickled(lr.model),
                       drift_seq)
        )  # fmt: skip
        self.dirty.add(sk)
        self.unsnapped.add(sk)
        self.add_snapshots(reason, only=sk)

    def _event(
        self, kind: str, fields: dict[str, Any], out: list[Outgoing], topic: str | None = None
    ) -> None:
        """Store an event and publish it (on the events topic unless another is given)."""
        self._record(kind, fields)
        out.append(Outgoing(topic or self.cfg.events_topic, msg.event_message(kind, fields), 1))

    def create(self, stream: str, key: str) -> None:
        """A model for a key that has none yet (a bundle imported for a new device)."""
        self._learner(stream, key)
        self._evict_excess()

    def _record(self, kind: str, fields: dict[str, Any]) -> None:
        row = tables.EventRow(fields["ts"], kind, fields["stream"], fields["key"], fields["seq"],
                       json.dumps(fields))  # fmt: skip
        self.batch.events.append(row)

    def _learner(self, stream: str, key: str) -> Learner:
        learner, sid = self.models.get(stream, key)
        if sid is not None:  # a new series: its row and its first version
            now = time.time()
            self.batch.series.append(
                tables.SeriesRow(sid, stream, key, self.streams[stream].task, now)
            )
            self.batch.versions.append(
                tables.VersionRow(sid, 1, now, "initial", None, "{}", snapshot.RIVER_VERSION,
                           pickled(learner.model), None)
            )  # fmt: skip
            log.info("series_created", stream=stream, key=key)
        return learner

    # -- batching ---------------------------------------------------------------------

    def add_summary(self) -> None:
        """Add summary rows for every stream/key that learned since the last call."""
        now = time.time()
        for sk in self.dirty:
            self.batch.summary.append(summary_row(self.series[sk], self.learners[sk], now))
        self.dirty.clear()

    def add_silences(self, now: float, out: list[Outgoing]) -> None:
        """A `silent` event for each key that has just stopped sending."""
        for fields in self.silence.check(now):
            self._event("silent", fields, out)

    def add_rejects(self, out: list[Outgoing], final: bool = False) -> None:
        """A `reject` event per stream whose first unreported reject is a minute old (or
        any, when `final`): how many, by reason, and the last one's topic and detail.
        """
        for fields in self.rejects.due(final):
            self._event("reject", fields, out)

    def promote(
        self, stream: str, key: str, model: Any, version: int, reason: str, out: list[Outgoing]
    ) -> None:
        """Make `model` the champion of stream/key as a new version (rollback, import, the
        guard's restore of the last good version).
        """
        sk = (stream, key)
        lr = self.learners[sk]
        parent, retired = lr.model_version, lr.model
        lr.replace_model(model, version)
        fields = {"stream": stream, "key": key, "seq": lr.last_seq, "ts": time.time(),
                  "version": version, "parent": parent, "reason": reason}  # fmt: skip
        self._event(reason if reason in ("rollback", "import") else "promotion", fields, out)
        log.info("model_promoted", **fields)
        self._archive(lr, retired, reason, parent, None)

    def start_challenger(
        self,
        sk: SeriesKey,
        request: Request,
        rows: list[tables.StoredSample],
        out: list[Outgoing] | None,
    ) -> list[ModelEvent]:
        """Answer a challenger request with the samples the store returned; `out` None: a
        replay (what this causes was recorded the first time).
        """
        lr = self.learners[sk]
        samples = [Sample(sk[0], sk[1], ts, x, y, label) for _, ts, x, y, label in rows]
        events = lr.start_challenger(request, samples)
        if out is not None:
            for event in events:
                self._model_event(lr, event, out)
            # A checkpoint with the challenger in it: a manual retrain is not in the log.
            self.unsnapped.add(sk)
            self.add_snapshots(request.reason, only=sk)
        self.dirty.add(sk)
        return events

    def add_snapshots(self, reason: str, only: SeriesKey | None = None) -> int:
        """Snapshot every learner that learned since its last snapshot; how many were taken.

        The snapshot rides in the same batch as (or a later one than) the samples it has
        learned, so it is never committed ahead of them.
        """
        chosen = self.unsnapped if only is None else {only} & self.unsnapped
        for sk in chosen:
            self.batch.snapshots.append(snapshot_row(self.series[sk], self.learners[sk], reason))
        taken = len(chosen)
        self.unsnapped -= chosen
        return taken

    def take_batch(self) -> tables.Batch:
        """Hand the batch to the writer; forget parked snapshots the store now holds."""
        batch, self.batch = self.batch, tables.Batch()
        batch.number = self._batch_number = self._batch_number + 1
        self.models.forget_parked(self.written_batches)
        return batch
