"""One stream/key: test-then-train, metrics, ADWIN drift detection, challenger retraining."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from river import drift

from edgeml.config import EARLIER_DEFAULT, StreamConfig
from edgeml.learn.anomaly_task import Anomaly
from edgeml.learn.challenger import Challenger
from edgeml.learn.changepoint import LossTail
from edgeml.learn.presets import build_model
from edgeml.learn.tasks import TASKS, Prediction, Task, usable
from edgeml.records import DriftEvent, ModelEvent, Outcome, Request, Sample

__all__ = ["Learner", "make_task"]

# A warm start takes at least this many samples, even when the change is estimated to be
# more recent: a handful is too few to fit anything.
WARM_MIN = 1
# ADWIN looks for a cut at every loss (River's default, every 32, delayed a detection by up
# to 31 samples; a look costs about a microsecond). River clears ADWIN's whole window after
# any cut; after a fall (a model converging) _watch keeps it, or a fall-cut at the first
# sample of a new regime hid the change (sensor/forest, 2 of 3 seeds).
CLOCK = 1
# A model that diverges again within this many scored readings of being installed is
# restored under its own number (see Learner._diverged).
GUARD_QUIET = 100
# A model that raises on this many readings in a row (a bundle that does not fit the stream,
# say) gives way to the version it came from (see Learner.failed).
FAILING_LIMIT = 10


def make_task(stream: StreamConfig) -> Task:
    """The task object of a stream: how to predict, score, learn and report its metrics."""
    return Anomaly(stream) if stream.task == "anomaly" else TASKS[stream.task](stream)


def _pinned(stream: StreamConfig, preset: Any) -> StreamConfig:
    """The stream as a snapshot of `preset` runs under it: a stream that names no model has
    the `auto` preset now, and a snapshot of the earlier default (`linear`, `logistic`) comes
    back as what it was, that key keeping its preset; new keys start with `auto`. Naming
    `model = "auto"` switches such keys over (their models are rebuilt from the log).
    """
    if stream.model_default and preset != stream.model and preset == EARLIER_DEFAULT[stream.task]:
        return stream.model_copy(update={"model": preset})
    return stream


class Learner:
    """Owns the models of one stream/key (champion, challenger) and what is measured about them.

    Pure and deterministic: the same samples in the same order, with the same answers to its
    requests, give the same models. That is what lets a restart replay the log.
    """

    def __init__(self, stream: StreamConfig, key: str) -> None:
        self.stream = stream
        self.key = key
        self.task: Task = make_task(stream)
        self.model: Any = build_model(stream)
        self.model_version = 1
        self.latest_version = 1  # the highest version this series has had
        self.adwin = drift.ADWIN(delta=stream.drift.delta, clock=CLOCK)
        self.watched = 0  # losses seen since the champion took over (drift warm-up)
        self.tail = LossTail()  # the champion's recent losses: where a change began
        self.challenger: Challenger | None = None
        self.samples = 0
        self.drifts = 0
        self.last_seen = 0.0
        self.last_seq = 0  # the newest sample this learner has learned
        self.next_scheduled: float | None = None  # sample time of the next scheduled retrain
        self.failing = 0  # readings in a row on which the model raised
        self.error: str | None = None  # what it raised, while it is failing

    # Everything a snapshot holds: the models and what was measured about them.
    _STATE = (
        "task",
        "model",
        "model_version",
        "latest_version",
        "adwin",
        "watched",
        "challenger",
        "samples",
        "drifts",
        "last_seen",
        "last_seq",
        "next_scheduled",
        "tail",
        "failing",
        "error",
    )
    # What snapshots of earlier versions may lack: a fresh learner's value stands in.
    _NEW = frozenset({"tail", "failing", "error"})

    def state(self) -> dict[str, Any]:
        """The learner's state, for a snapshot (the config it runs under is not part of it)."""
        return {
            "preset": self.stream.model,
            "task_name": self.stream.task,
            **{name: getattr(self, name) for name in self._STATE},
        }

    @classmethod
    def from_state(cls, stream: StreamConfig, key: str, state: dict[str, Any]) -> Learner:
        """A learner restored from `state()`; ValueError if the state does not fit the stream."""
        stream = _pinned(stream, state.get("preset"))
        if (state.get("preset"), state.get("task_name")) != (stream.model, stream.task):
            raise ValueError(
                f"snapshot is of preset {state.get('preset')!r} for {state.get('task_name')}, "
                f"the stream uses {stream.model!r} for {stream.task}"
            )
        missing = [name for name in cls._STATE if name not in state and name not in cls._NEW]
        if missing:
            raise ValueError(f"snapshot lacks {', '.join(missing)}")
        if stream.task == "anomaly" and not hasattr(state["model"], "judge_one"):
            # A QuantileFilter of an edgeml before the self-calibrated detectors: with drift
            # retrains gone it would never be replaced. A fresh detector learns the log again.
            raise ValueError("snapshot holds an anomaly detector of an older edgeml")
        learner = cls(stream, key)
        for name in cls._STATE:
            if name in state:
                setattr(learner, name, state[name])
        # The config's drift threshold wins over the one the snapshot was taken under.
        learner.use_stream(stream)
        return learner

    def use_stream(self, stream: StreamConfig) -> None:
        """Run under this stream config from now on (a SIGHUP, or a snapshot from an older
        config): River's ADWIN fixes delta when it is built, so a changed one means a new
        detector with an empty window.
        """
        if stream.model != self.stream.model:  # a key pinned to an earlier default keeps it
            stream = stream.model_copy(update={"model": self.stream.model})
        self.stream = stream
        if self.adwin.delta != stream.drift.delta:
            self.adwin = self.adwin.clone({"delta": stream.drift.delta, "clock": CLOCK})

    # -- test-then-train ----------------------------------------------------------------

    def step(self, sample: Sample, seq: int) -> tuple[Outcome, Exception | None]:
        """`process`, or, when the model raises, no prediction and what it raised: an error
        costs that reading its prediction, never the daemon, which would meet it again after
        every restart.
        """
        try:
            outcome = self.process(sample, seq)
        except Exception as exc:
            return self.failed(sample, seq, f"{type(exc).__name__}: {exc}"), exc
        if self.failing:
            self.failing, self.error = 0, None
        return outcome, None

    def failed(self, sample: Sample, seq: int, error: str) -> Outcome:
        """The model raised on this reading. At FAILING_LIMIT in a row the guard asks for
        the version this one came from (its parent; a fresh model if it has none).
        """
        self.failing += 1
        self.error = error
        self.last_seen, self.last_seq = sample.ts, seq
        if self.failing < FAILING_LIMIT:
            return Outcome(sample, seq, None, None, self.model_version)
        self.challenger = None
        data = {"version": self.model_version, "restore": "parent version",
                "detail": f"raised on {self.failing} readings in a row: {error}"}  # fmt: skip
        event = self._event("guard", sample.ts, seq, data)
        request = Request("restore", "guard", seq, version=self.model_version, parent=True)
        return Outcome(
            sample, seq, None, None, self.model_version, events=(event,), request=request
        )

    def process(self, sample: Sample, seq: int) -> Outcome:
        """Predict, score, learn, watch for drift, judge the challenger."""
        task = self.task
        version = self.model_version  # the version that made the prediction
        x = task.inputs(sample)
        p = task.predict(self.model, x) if x is not None else Prediction(None)
        self.samples += 1
        self.last_seen = sample.ts
        self.last_seq = seq
        if p.value is not None and not usable(p.value):
            return self._diverged(sample, seq, p.value)
        events: list[ModelEvent] = []
        cp = self._shadow(x, sample, seq, events)
        # While the challenger leads, its prediction is the one served and scored.
        ch = self.challenger
        served, served_by = p, self.model
        if cp is not None and ch is not None and ch.leads():
            served, served_by = cp, ch.model
        loss = task.loss(p, sample)  # the champion's: what ADWIN and the test watch
        served_loss = task.loss(served, sample)
        task.score(served, sample)
        episode = task.episode(served, sample, seq, self.stream.alert)
        if ch is not None and cp is not None:
            ch_loss = task.loss(cp, sample)
            if loss is not None and ch_loss is not None:
                ch.observe(loss, ch_loss)
            task.learn(ch.model, x, sample)
        if x is not None:
            task.learn(self.model, x, sample)
        task.observe(sample)
        forecast = task.forecast(served_by, sample)
        detected = self._watch(sample, seq, loss)
        request = self._judge(sample, seq, detected, events)
        return Outcome(sample, seq, served.value, served_loss, version, label=served.label,
                       proba=served.proba, flag=served.flag,
                       episode=episode, forecast=forecast, drift=detected,
                       events=tuple(events), request=request)  # fmt: skip

    def _shadow(
        self, x: dict[str, float] | None, sample: Sample, seq: int, events: list[ModelEvent]
    ) -> Prediction | None:
        """The challenger's prediction of the sample, if one is in its grace period; a
        challenger that diverges is dropped (no contender: it could never be judged).
        """
        ch = self.challenger
        if ch is None or x is None:
            return None
        cp = self.task.predict(ch.model, x)
        if cp.value is not None and not usable(cp.value):
            figures = {**ch.figures(), "detail": "diverged prediction"}
            self.challenger = None
            events.append(self._event("challenger_dropped", sample.ts, seq, figures))
            return None
        return cp

    def _judge(
        self, sample: Sample, seq: int, detected: DriftEvent | None, events: list[ModelEvent]
    ) -> Request | None:
        """The challenger's verdict, or what to ask the store for: a challenger after a
        drift, or on the retraining schedule.
        """
        ch = self.challenger
        if ch is not None:
            verdict = ch.verdict(self.stream.retrain.grace)
            if verdict == "promote":
                events.append(self._promote(ch.model, sample.ts, seq, ch.figures()))
            elif verdict == "drop":
                self.challenger = None
                events.append(self._event("challenger_dropped", sample.ts, seq, ch.figures()))
        elif detected is not None and self.stream.retrain.policy != "none":
            return Request("challenger", "drift", seq, self._warm_start(), drift=detected)
        judged = self.task.judged_by_loss or self.stream.retrain.policy == "reset"
        if self.challenger is None and judged and self._scheduled(sample.ts):
            return Request("challenger", "schedule", seq, self.stream.retrain.max_warm_start)
        return None

    def _watch(self, sample: Sample, seq: int, loss: float | None) -> DriftEvent | None:
        """Feed ADWIN the champion's loss once it is past its warm-up; a rising error is drift."""
        if loss is None or not math.isfinite(loss):
            return None
        self.watched += 1
        self.tail.add(self.samples, loss)  # seq counts every key's samples; this, the key's
        if self.watched <= self.stream.drift.warmup:
            return None
        before = self.adwin.estimation
        self.adwin.update(loss)
        # River's ADWIN resets its own counter on the update after a detection, so the
        # detections are counted here. ADWIN also fires when the error falls (a model
        # converging); only a rise in error is a drift.
        if not (self.adwin.drift_detected and self.adwin.estimation > before):
            if self.adwin.drift_detected:  # a fall: keep the cut window (River would clear it)
                self.adwin._drift_detected = False
            return None
        self.drifts += 1
        return DriftEvent(
            stream=sample.stream,
            key=sample.key,
            ts=sample.ts,
            seq=seq,
            detections=self.drifts,
            width=int(self.adwin.width),
            mean_error=float(self.adwin.estimation),
        )

    def _warm_start(self) -> int:
        """The samples since the change the recent losses point to (at least WARM_MIN, at
        most max_warm_start); ADWIN's window at the detection holds mostly the old regime.
        """
        start = self.tail.change_start()
        since = self.samples - start + 1 if start is not None else int(self.adwin.width)
        wanted = max(since, min(WARM_MIN, self.samples))
        return min(wanted, self.stream.retrain.max_warm_start)

    def _scheduled(self, ts: float) -> bool:
        every = self.stream.retrain.every_s
        if every is None:
            return False
        if self.next_scheduled is None:
            self.next_scheduled = ts + every
            return False
        if ts < self.next_scheduled:
            return False
        self.next_scheduled = ts + every
        return True

    def _diverged(self, sample: Sample, seq: int, value: float) -> Outcome:
        """A non-finite or absurd prediction (beyond MAX_PREDICTION): nothing is served or
        learned, the last good version is asked for (the pipeline answers with `replace_model`).

        A model that diverges again within GUARD_QUIET readings of being installed comes back
        under its own number: each restore is then the same stored model, and a new version
        per reading would fill the disk while the readings that cause it go on.
        """
        self.challenger = None
        in_place = self.watched < GUARD_QUIET
        detail = "non-finite prediction" if not math.isfinite(value) else "diverged prediction"
        data = {"version": self.model_version, "detail": detail, "value": repr(value),
                "restore": "in place" if in_place else "new version"}  # fmt: skip
        event = self._event("guard", sample.ts, seq, data)
        request = Request("restore", "guard", seq, version=self.model_version, in_place=in_place)
        return Outcome(
            sample, seq, None, None, self.model_version, events=(event,), request=request
        )

    # -- model changes --------------------------------------------------------------------

    def start_challenger(self, request: Request, samples: Sequence[Sample]) -> list[ModelEvent]:
        """A fresh model of the preset, warm-started on `samples` (the newest of the log up to
        `request.seq`, oldest first); it shadows the champion, or replaces it at once under
        the `reset` policy.
        """
        model = build_model(self.stream)
        self.task.train(model, samples)
        drift_seq = request.drift.seq if request.drift else None
        ts = self.last_seen
        started = {
            "trigger": request.reason,
            "warm_start": len(samples),
            "policy": self.stream.retrain.policy,
            "grace": self.stream.retrain.grace,
            "drift_seq": drift_seq,
        }
        events = [self._event("retrain", ts, request.seq, started)]
        if self.stream.retrain.policy == "reset":
            figures = {"trigger": request.reason, "warm_start": len(samples),
                       "drift_seq": drift_seq}  # fmt: skip
            events.append(self._promote(model, ts, request.seq, figures))
        else:
            self.challenger = Challenger(
                model, request.reason, request.seq, len(samples), drift_seq
            )
        return events

    def _promote(self, model: Any, ts: float, seq: int, figures: dict[str, Any]) -> ModelEvent:
        parent = self.model_version
        retired = self.model
        self.replace_model(model, self.latest_version + 1)
        data = {"version": self.model_version, "parent": parent, "reason": figures["trigger"],
                **figures, "metrics": self.metrics()}  # fmt: skip
        return ModelEvent("promotion", self.stream.name, self.key, ts, seq, data, retired)

    def replace_model(self, model: Any, version: int) -> None:
        """A new champion (promotion, rollback, import): metrics go on, drift detection and
        its warm-up start afresh, a running challenger is dropped.
        """
        self.model = model
        self.model_version = version
        self.latest_version = max(self.latest_version, version)
        self.adwin = drift.ADWIN(delta=self.stream.drift.delta, clock=CLOCK)
        self.watched = 0
        self.tail = LossTail()
        self.challenger = None
        self.failing, self.error = 0, None

    def _event(self, kind: str, ts: float, seq: int, data: dict[str, Any]) -> ModelEvent:
        return ModelEvent(kind, self.stream.name, self.key, ts, seq, data)

    def metrics(self) -> dict[str, float | None]:
        """The status contract's metric keys for the task; None until they mean something."""
        return self.task.metrics(self.samples)

    def grace(self) -> dict[str, Any] | None:
        """The challenger in its grace period, for `edgeml status`; None when there is none."""
        ch = self.challenger
        if ch is None:
            return None
        t = ch.t()
        return {"since_seq": ch.seq, "samples": ch.n, "grace": self.stream.retrain.grace,
                "trigger": ch.reason, "t": round(t, 2) if math.isfinite(t) else None}  # fmt: skip
