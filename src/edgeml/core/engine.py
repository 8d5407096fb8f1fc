"""Deliveries -> decode -> learn -> rows for the store and messages to publish; synchronous.

The pipeline owns every model (exactly one task calls it). It knows nothing of asyncio,
MQTT clients or SQLite connections: it fills a Batch and a list of outgoing messages.
"""

from __future__ import annotations

import collections
import hashlib
import json
import pickle
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

from edgeml.config import Config
from edgeml.core.decode import Decoder, parse
from edgeml.core.messages import drift_message, event_message, prediction_message
from edgeml.learn import Learner, snapshot
from edgeml.logs import RateLimitedLog
from edgeml.records import ModelEvent, Outcome, Reject, Request, Sample
from edgeml.store.writer import Batch, Row, Snapshot
from edgeml.transport.mqtt import Delivery

__all__ = ["NeedsLearner", "Outgoing", "Pipeline", "delivery_hash"]

log = structlog.get_logger("edgeml.pipeline")

Outgoing = tuple[str, bytes, int]  # topic, payload, qos


# One encoder for the hot path: json.dumps with any option builds a new encoder per call.
_compact = json.JSONEncoder(separators=(",", ":")).encode

# Rejected payloads become at most one `reject` event per stream in this many seconds.
REJECT_EVENT_EVERY_S = 60.0


@dataclass(slots=True)
class _Rejects:
    """The payloads one stream rejected since its last `reject` event."""

    since: float
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    topic: str = ""
    detail: str = ""


class NeedsLearner(Exception):
    """These stream/keys were evicted: read their snapshots back, then handle again."""

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        super().__init__(keys)
        self.keys = keys


def delivery_hash(topic: str, payload: bytes) -> int:
    """A signed 64-bit fingerprint of one message, as SQLite stores integers."""
    digest = hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Pipeline:
    def __init__(
        self,
        cfg: Config,
        next_seq: int,
        series: Mapping[tuple[str, str], int],
        recent: Mapping[int, int],
    ) -> None:
        self.cfg = cfg
        self.decoders = [Decoder(s, cfg.mqtt.max_payload_bytes) for s in cfg.stream]
        self.streams = {s.name: s for s in cfg.stream}
        # The live models, least recently used first; at most `max_live` stay in memory.
        self.learners: collections.OrderedDict[tuple[str, str], Learner] = collections.OrderedDict()
        self.max_live = cfg.models.max_live
        # Snapshots of evicted learners, kept until the batch that holds them is written.
        self.parked: dict[tuple[str, str], tuple[Snapshot, int]] = {}
        self.written_batches = 0  # set by the store writer
        self._batch_number = 0
        self.evictions = 0
        self.series = dict(series)
        self._next_series = max(self.series.values(), default=0) + 1
        self.next_seq = next_seq
        # mid -> fingerprint of the latest delivery with that packet id (redelivery detection).
        self.recent = dict(recent)
        self.batch = Batch()
        self.rejected: collections.Counter[str] = collections.Counter()
        self._rejects: dict[str, _Rejects] = {}  # by stream, until their event is added
        self.learned = 0
        self.model_errors = 0  # samples on which River raised
        self.duplicates = 0
        self.unmatched = 0
        self.dirty: set[tuple[str, str]] = set()
        self.unsnapped: set[tuple[str, str]] = set()  # learned since their last snapshot
        # What learners asked for that only the store has (warm-start samples, an old
        # version); the daemon answers each before the next message is handled.
        self.requests: list[tuple[tuple[str, str], Request]] = []
        self._topic_prefix = f"{cfg.mqtt.topic_prefix}/{cfg.node.id}"
        self._warn = RateLimitedLog(log)

    # -- start-up -------------------------------------------------------------------

    def restore(self, learner: Learner) -> None:
        """Put a learner loaded from a snapshot in place (before replaying what followed it)."""
        sk = (learner.stream.name, learner.key)
        self.learners[sk] = learner
        self.parked.pop(sk, None)
        self.dirty.add(sk)

    def replay(self, stream: str, key: str, row: Row) -> None:
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
        self.dirty.add((stream, key))
        self.unsnapped.add((stream, key))

    # -- the hot path -----------------------------------------------------------------

    def handle(self, d: Delivery, out: list[Outgoing]) -> None:
        """Test-then-train every stream that the delivery's topic matches.

        Raises NeedsLearner, before changing anything, when a model it needs was evicted and
        must be read back from the store first (the caller does that and calls again).
        """
        fingerprint = None
        if d.qos:
            fingerprint = delivery_hash(d.topic, d.payload)
            # A broker resends an unacknowledged message with DUP set and the same packet id;
            # if we stored it already (a crash or a reconnect between commit and PUBACK), only
            # acknowledge it.
            if d.dup and self.recent.get(d.mid) == fingerprint:
                self._note_first()
                self.duplicates += 1
                self.batch.acks.append((d.mid, d.qos, d.generation))
                return
        value: Any = None
        matched = False
        results: list[Sample | Reject] = []
        for decoder in self.decoders:
            if not decoder.matches(d.topic):
                continue
            if not matched:
                matched = True
                value = parse(d.payload, decoder.max_payload_bytes)
            if isinstance(value, Reject):
                results.append(Reject(decoder.name, value.reason, value.detail))
            else:
                results.append(decoder.extract(d.topic, value, d.arrival))
        missing = [
            (r.stream, r.key)
            for r in results
            if isinstance(r, Sample) and not self._available((r.stream, r.key))
        ]
        if missing:
            raise NeedsLearner(missing)
        self._note_first()
        if d.qos:
            self.recent[d.mid] = fingerprint  # type: ignore[assignment]
            self.batch.acks.append((d.mid, d.qos, d.generation))
        for result in results:
            if isinstance(result, Reject):
                self._reject(result, d.topic)
            else:
                self._learn(result, d, fingerprint, out)
        if not matched:
            self.unmatched += 1
        self._evict_excess()

    def _note_first(self) -> None:
        if not self.batch.acks and not self.batch.samples:
            self.batch.first_added = time.monotonic()

    def _available(self, sk: tuple[str, str]) -> bool:
        """Live, parked in memory, or never seen (a new model): no store read needed."""
        return sk in self.learners or sk in self.parked or sk not in self.series

    def _evict_excess(self) -> None:
        """Snapshot and unload the least recently used models beyond `max_live`."""
        while len(self.learners) > self.max_live:
            sk, lr = self.learners.popitem(last=False)
            snap = self._snapshot(sk, lr, "evict")
            self.batch.snapshots.append(snap)
            self.unsnapped.discard(sk)
            self.dirty.discard(sk)
            self.batch.summary.append(self._summary_row(sk, lr, time.time()))
            self.parked[sk] = (snap, self._batch_number + 1)  # the number this batch will get
            self.evictions += 1

    def _reject(self, r: Reject, topic: str) -> None:
        self.rejected[r.reason.value] += 1
        burst = self._rejects.get(r.stream)
        if burst is None:
            burst = self._rejects[r.stream] = _Rejects(time.time())
        burst.reasons[r.reason.value] += 1
        burst.topic, burst.detail = topic, r.detail
        self._warn.warning(
            "payload_rejected",
            f"{r.stream}:{r.reason}",
            stream=r.stream,
            topic=topic,
            reason=r.reason.value,
            detail=r.detail,
        )

    def _learn(
        self, sample: Sample, d: Delivery, fingerprint: int | None, out: list[Outgoing]
    ) -> None:
        stream = self.streams[sample.stream]
        sk = (sample.stream, sample.key)
        learner = self._learner(sample.stream, sample.key)
        seq = self.next_seq
        self.next_seq += 1
        outcome = self._process(learner, sample, seq)
        self.learned += 1
        sid = self.series[sk]
        b = self.batch
        label = None if sample.label is None else _compact(sample.label)
        b.samples.append(
            (
                seq,
                sid,
                sample.ts,
                _compact(sample.x),
                sample.y,
                d.mid if d.qos else None,
                fingerprint,
                label,
            )
        )
        if outcome.y_pred is not None:
            b.predictions.append(
                (
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
            out.append((self._topic(sample.stream, sample.key), prediction_message(outcome), 0))
        if outcome.alert and stream.publish != "none":
            self._alert(outcome, out)
        if outcome.drift is not None:
            ev = asdict(outcome.drift)
            self.batch.events.append(
                (ev["ts"], "drift", ev["stream"], ev["key"], ev["seq"], json.dumps(ev))
            )
            out.append((self.cfg.events_topic, drift_message(outcome.drift), 1))
            log.info("drift_detected", model_version=outcome.model_version, **ev)
        for event in outcome.events:
            self._model_event(learner, event, out)
        if outcome.request is not None:
            self.requests.append((sk, outcome.request))

    def _process(self, learner: Learner, sample: Sample, seq: int) -> Outcome:
        """Test-then-train one sample. An error River raises on it costs that reading its
        prediction, never the daemon, which would meet it again after every restart.
        """
        try:
            return learner.process(sample, seq)
        except Exception as exc:
            self.model_errors += 1
            self._warn.error(
                "model_error",
                f"{sample.stream}/{sample.key}",
                stream=sample.stream,
                key=sample.key,
                seq=seq,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
            return Outcome(sample, seq, None, None, learner.model_version)

    def _alert(self, outcome: Outcome, out: list[Outgoing]) -> None:
        s = outcome.sample
        fields = {"stream": s.stream, "key": s.key, "seq": outcome.seq, "ts": s.ts,
                  "score": outcome.y_pred, "x": s.x,
                  "model_version": outcome.model_version}  # fmt: skip
        self._event("anomaly", fields, out, f"{self._topic_prefix}/{s.stream}/{s.key}/anomaly")
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
        self.batch.retired.append(
            (pickle.dumps(retired, protocol=pickle.HIGHEST_PROTOCOL), sid, parent)
        )
        self.batch.versions.append(
            (sid, lr.model_version, time.time(), reason, parent, json.dumps(lr.metrics()),
             snapshot.RIVER_VERSION, pickle.dumps(lr.model, protocol=pickle.HIGHEST_PROTOCOL),
             drift_seq)
        )  # fmt: skip
        self.dirty.add(sk)
        self.unsnapped.add(sk)
        self.add_snapshots(reason, only=sk)

    def _event(
        self, kind: str, fields: dict[str, Any], out: list[Outgoing], topic: str | None = None
    ) -> None:
        """Store an event and publish it (on the events topic unless another is given)."""
        self.batch.events.append(
            (fields["ts"], kind, fields["stream"], fields["key"], fields["seq"], json.dumps(fields))
        )
        out.append((topic or self.cfg.events_topic, event_message(kind, fields), 1))

    def _learner(self, stream: str, key: str) -> Learner:
        sk = (stream, key)
        learner = self.learners.get(sk)
        if learner is not None:
            self.learners.move_to_end(sk)
            return learner
        parked = self.parked.pop(sk, None)
        if parked is not None:
            learner = self.learners[sk] = snapshot.load(
                self.streams[stream], key, parked[0].blob, parked[0].sha256, parked[0].river
            )
            return learner
        learner = self.learners[sk] = Learner(self.streams[stream], key)
        if sk not in self.series:
            sid = self.series[sk] = self._next_series
            self._next_series += 1
            self.batch.series.append((sid, stream, key, self.streams[stream].task, time.time()))
            self.batch.versions.append(
                (sid, 1, time.time(), "initial", None, "{}", snapshot.RIVER_VERSION,
                 pickle.dumps(learner.model, protocol=pickle.HIGHEST_PROTOCOL), None)
            )  # fmt: skip
            log.info("series_created", stream=stream, key=key)
        return learner

    def _topic(self, stream: str, key: str) -> str:
        # Built per reading rather than cached: a cache would grow with every device ever seen.
        return f"{self._topic_prefix}/{stream}/{key}/prediction"

    # -- batching ---------------------------------------------------------------------

    def add_summary(self) -> None:
        """Add summary rows for every stream/key that learned since the last call."""
        now = time.time()
        for sk in self.dirty:
            self.batch.summary.append(self._summary_row(sk, self.learners[sk], now))
        self.dirty.clear()

    def add_rejects(self, out: list[Outgoing], final: bool = False) -> None:
        """A `reject` event per stream whose first unreported reject is a minute old (or
        any, when `final`): how many, by reason, and the last one's topic and detail.
        """
        now = time.time()
        for stream, burst in list(self._rejects.items()):
            if not final and now - burst.since < REJECT_EVENT_EVERY_S:
                continue
            del self._rejects[stream]
            fields = {"stream": stream, "key": None, "seq": None, "ts": now,
                      "since": burst.since, "count": burst.reasons.total(),
                      "reasons": dict(burst.reasons), "topic": burst.topic,
                      "detail": burst.detail}  # fmt: skip
            self._event("reject", fields, out)

    def _summary_row(self, sk: tuple[str, str], lr: Learner, now: float) -> tuple[Any, ...]:
        return (
            self.series[sk],
            lr.samples,
            lr.last_seen,
            lr.model_version,
            json.dumps(lr.metrics()),
            lr.drifts,
            now,
            None if lr.challenger is None else json.dumps(lr.grace()),
        )

    def _snapshot(self, sk: tuple[str, str], lr: Learner, reason: str) -> Snapshot:
        return Snapshot(
            self.series[sk],
            lr.last_seq,
            time.time(),
            reason,
            lr.model_version,
            snapshot.RIVER_VERSION,
            snapshot.dump(lr),
        )

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
        self, sk: tuple[str, str], request: Request, rows: list[Row], out: list[Outgoing] | None
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

    def add_snapshots(self, reason: str, only: tuple[str, str] | None = None) -> int:
        """Snapshot every learner that learned since its last snapshot; how many were taken.

        The snapshot rides in the same batch as (or a later one than) the samples it has
        learned, so it is never committed ahead of them.
        """
        chosen = self.unsnapped if only is None else {only} & self.unsnapped
        for sk in chosen:
            self.batch.snapshots.append(self._snapshot(sk, self.learners[sk], reason))
        taken = len(chosen)
        self.unsnapped -= chosen
        return taken

    def take_batch(self) -> Batch:
        """Hand the batch to the writer; forget parked snapshots the store now holds."""
        batch, self.batch = self.batch, Batch()
        batch.number = self._batch_number = self._batch_number + 1
        if self.parked:
            done = self.written_batches
            for sk in [sk for sk, (_, n) in self.parked.items() if n <= done]:
                del self.parked[sk]
        return batch
