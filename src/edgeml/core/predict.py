"""On-demand predictions: a champion's answer to features sent by a client, without learning.

Pure and synchronous like the engine: the HTTP surface calls `answer` on the event loop
between two messages, so the learner never sees a model half-way through a request. The
features pass through the stream's own decoder (the same rules as a reading from MQTT), and
the model is asked exactly as the learner asks it before it learns: `task.inputs`, then
`task.predict`. Nothing is learned, scored or recorded.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from edgeml.core.decode import Decoder
from edgeml.core.engine import Engine
from edgeml.learn import Learner, snapshot
from edgeml.learn.tasks import usable
from edgeml.records import Reject, RejectReason, Sample

__all__ = ["PredictError", "answer", "request_sample"]


class PredictError(Exception):
    """Why a request cannot be answered: an HTTP status, a short code and a sentence."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def _topic_for(decoder: Decoder, key: str) -> str:
    """A topic of the stream's filter whose key level is `key` (wildcards filled in)."""
    level = decoder.stream.key_level
    out = []
    for i, part in enumerate(decoder.stream.topic.split("/")):
        if part == "#":
            out += ["_"] * max(0, (level or 0) - i) + ([key] if level is not None else ["_"])
            break
        out.append(key if i == level else ("_" if part == "+" else part))
    return "/".join(out)


def request_sample(decoder: Decoder, key: str, value: Any, now: float) -> Sample | Reject:
    """The features of a request body, checked by the stream's decoder rules.

    The body holds the features as a reading would (the target, label and key may be left
    out: the target is not needed to predict, and the key comes from the URL).
    """
    s = decoder.stream
    if not isinstance(value, dict):
        return Reject(s.name, RejectReason.NOT_OBJECT, type(value).__name__)
    body = dict(value)
    for field in (s.target, s.label):
        if field is not None:
            body.pop(field, None)
    if s.task in ("regression", "forecast") and s.target is not None:
        body[s.target] = 0.0  # a stand-in: the target is never a feature
    if s.key_field is not None:
        body[s.key_field] = key
    result = decoder.extract(_topic_for(decoder, key), body, now)
    if isinstance(result, Reject):
        return result
    return Sample(s.name, key, result.ts, result.x)


def _learner(engine: Engine, stream: str, key: str) -> Learner:
    sk = (stream, key)
    live = engine.learners.get(sk)
    if live is not None:
        return live
    parked = engine.models.parked.get(sk)
    if parked is not None:  # evicted, its snapshot not committed yet: a copy from it
        snap = parked[0]
        return snapshot.load(engine.streams[stream], key, snap.blob, snap.sha256, snap.river)
    if sk in engine.series:
        raise PredictError(
            503,
            "not_in_memory",
            f"{stream}/{key} was evicted (models.max_live); its model comes back into memory "
            "with its next reading",
        )
    raise PredictError(404, "unknown_key", f"stream {stream!r} has no model for key {key!r}")


def answer(engine: Engine, stream: str, key: str, body: Any, now: float) -> dict[str, Any]:
    """The champion's prediction for the features in `body`; PredictError when it cannot be."""
    if stream not in engine.streams:
        raise PredictError(404, "unknown_stream", f"no stream {stream!r} in the config")
    decoder = next(d for d in engine.decoders if d.name == stream)
    sample = request_sample(decoder, key, body, now)
    if isinstance(sample, Reject):
        raise PredictError(422, sample.reason.value, sample.detail)
    lr = _learner(engine, stream, key)
    task, model = lr.task, lr.model
    if lr.stream.task == "anomaly":
        # The detectors keep the last judgement's working values (for the learn_one that
        # follows it): a request judges a copy, so the next reading is judged as without it.
        task, model = copy.deepcopy((task, model))
    x = task.inputs(sample)
    if x is None:
        raise PredictError(409, "not_ready", "the model cannot predict yet (too few readings)")
    p = task.predict(model, x)
    if p.value is None:
        raise PredictError(409, "not_ready", "the model cannot predict yet (nothing learned)")
    if not usable(p.value):
        raise PredictError(503, "diverged", "the model's prediction is not a usable number")
    out: dict[str, Any] = {
        "stream": stream,
        "key": key,
        "task": lr.stream.task,
        "model_version": lr.model_version,
        "prediction": p.value,
        "features": x,
    }
    if p.label is not None:
        out["label"] = p.label
        out["proba"] = {str(k): v for k, v in (p.proba or {}).items() if math.isfinite(v)}
    if p.flag is not None:
        severity = p.severity if p.severity is not None and math.isfinite(p.severity) else None
        out.update(flag=p.flag, severity=severity, field=p.field)
    forecast = task.forecast(model, sample)
    if forecast:
        out["forecast"] = list(forecast)
    return out  # every float in it is finite: it goes out as JSON
