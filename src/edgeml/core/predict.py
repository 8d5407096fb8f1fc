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

from edgeml.config import StreamConfig
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


def request_sample(
    stream: StreamConfig, key: str, value: Any, now: float, max_bytes: int
) -> Sample | Reject:
    """The features of a request body, checked by the stream's decoder rules.

    The body holds the features as one whole reading of the stream would (the target, label
    and key may be left out: the target is not needed to predict, and the key comes from the
    URL). So the body is read as a JSON reading of the stream without its key, join or plain
    payload settings, which only say how readings arrive.
    """
    as_json = stream.model_copy(update={"key": None, "join_window": "0s", "payload": "json"})
    if not isinstance(value, dict):
        return Reject(stream.name, RejectReason.NOT_OBJECT, type(value).__name__)
    body = dict(value)
    for field in (stream.target, stream.label):
        if field is not None:
            body.pop(field, None)
    if stream.task in ("regression", "forecast") and stream.target is not None:
        body[stream.target] = 0.0  # a stand-in: the target is never a feature
    result = Decoder(as_json, max_bytes).extract("", body, now)
    if isinstance(result, Reject):
        return result
    if not isinstance(result, Sample):  # a join's part: not with join_window 0
        return Reject(stream.name, RejectReason.NOT_OBJECT, "not a whole reading")
    return Sample(stream.name, key, result.ts, result.x)


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
    cfg = engine.streams[stream]
    sample = request_sample(cfg, key, body, now, engine.cfg.mqtt.max_payload_bytes)
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
