"""Outcomes and events -> outgoing messages (topic, payload); pure builders, no I/O."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, NamedTuple

from edgeml.core.decode import output_key
from edgeml.records import DriftEvent, Episode, Outcome

__all__ = [
    "EVENT_TYPES",
    "Outgoing",
    "drift_message",
    "episode_fields",
    "episode_messages",
    "event_message",
    "prediction_message",
    "prediction_topic",
]


class Outgoing(NamedTuple):
    """A message to publish; `retain` asks the broker to keep it for later subscribers;
    `msg_id` (NATS mode) names it for the output stream, which keeps only its first copy.
    """

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    msg_id: str | None = None


_compact = json.JSONEncoder(separators=(",", ":")).encode


def _g6(value: float | None) -> str:
    return "null" if value is None else f"{value:.6g}"


def _r6(value: float | None) -> float | None:
    """A computed figure as published: 6 significant digits."""
    return None if value is None else float(f"{value:.6g}")


def prediction_topic(prefix: str, stream: str, key: str) -> str:
    # Built per reading rather than cached: a cache would grow with every device ever seen.
    # A key taken by a regex may hold `/`: it is written `__`.
    return f"{prefix}/{stream}/{output_key(key)}/prediction"


def prediction_message(outcome: Outcome) -> bytes:
    """The prediction of one reading as compact JSON; its fields depend on the task:

    - regression: `{"ts", "y", "y_pred", "error", "model_version"}`
    - forecast: the same plus `"forecast"`, the next `horizon` values
    - classification: `{"ts", "label", "probability", "probabilities", "y", "model_version"}`
      (`probabilities`: of each class; `y`: the true label when the reading carried one)
    - anomaly: `{"ts", "score", "anomaly", "model_version"}`

    What the model computed (`y_pred`, `error`, `probability`, `score`, `forecast`) is
    published to 6 significant digits, more than any sensor measures; `ts` and `y` as they
    came. A regression prediction is formatted by hand: this runs once per reading, and every
    number in it is finite (the decoder and the learner guarantee it), so `:.6g` and a
    float's repr are valid JSON.
    """
    s = outcome.sample
    if outcome.label is None and outcome.flag is None and not outcome.forecast:
        return (
            f'{{"ts":{s.ts!r},"y":{s.y!r},"y_pred":{_g6(outcome.y_pred)},'
            f'"error":{_g6(outcome.error)},"model_version":{outcome.model_version}}}'
        ).encode()
    doc: dict[str, Any] = {"ts": s.ts}
    if outcome.flag is not None:
        doc.update(score=_r6(outcome.y_pred), anomaly=outcome.flag)
    elif outcome.label is not None:
        # `probability` is the predicted class's; `probabilities` every class's, so that
        # P(smoke) needs no inverting when the predicted label is false.
        probabilities = {str(k).lower() if isinstance(k, bool) else str(k): _r6(v)
                         for k, v in (outcome.proba or {}).items()}  # fmt: skip
        doc.update(label=outcome.label, probability=_r6(outcome.y_pred),
                   probabilities=probabilities, y=s.label)  # fmt: skip
    else:
        forecast = [_r6(v) for v in outcome.forecast]
        doc.update(y=s.y, y_pred=_r6(outcome.y_pred), error=_r6(outcome.error), forecast=forecast)
    doc["model_version"] = outcome.model_version
    return _compact(doc).encode()


# An event's `event_type`: its kind as `edgeml events` lists it (what a Home Assistant event
# entity fires). The payload keeps `event` as it was; `event_type` was added beside it.
# EVENT_TYPES: those of a model (HA's Model events entity); episodes have their own entity.
EVENT_TYPES = (
    "drift",
    "retrain",
    "promotion",
    "challenger_dropped",
    "rollback",
    "import",
    "guard",
    "silent",
    "back",
)
_EVENT_TYPE = {"drift_detected": "drift"}


def event_message(kind: str, fields: dict[str, Any]) -> bytes:
    return _compact({"event": kind, "event_type": _EVENT_TYPE.get(kind, kind), **fields}).encode()


def drift_message(event: DriftEvent) -> bytes:
    return event_message("drift_detected", asdict(event))


def episode_fields(
    ep: Episode, stream: str, key: str, seq: int, ts: float, model_version: int
) -> dict[str, Any]:
    """An anomaly episode's announcement as stored (`edgeml events`) and published."""
    return {"stream": stream, "key": key, "seq": seq, "ts": ts, "type": ep.type, "id": ep.id,
            "start_ts": ep.start_ts, "end_ts": ep.end_ts, "count": ep.count,
            "max_score": round(ep.max_score, 4), "severity": ep.severity,
            "max_severity": round(ep.max_severity, 3), "field": ep.field,
            "published": ep.published, "model_version": model_version}  # fmt: skip


def episode_messages(
    prefix: str, ep: Episode, fields: dict[str, Any], ref: str | None = None
) -> list[Outgoing]:
    """`<prefix>/<stream>/<key>/anomaly` (new, update, end) and, when an episode begins or
    ends, the retained `.../anomaly/state` ON or OFF (what Home Assistant's binary sensor
    shows after a restart).

    `ref` (NATS mode): `stream:key:seq` of the reading that caused it, by its stream
    sequence. The messages are then named `<ref>:<type>` and `<ref>:state` for the output
    stream's dedup, the first also in its payload as `msg_id` (`id` is the episode's).
    """
    topic = f"{prefix}/{fields['stream']}/{output_key(fields['key'])}/anomaly"
    if ref is None:
        out = [Outgoing(topic, event_message("anomaly", fields), 1)]
    else:
        named = {**fields, "msg_id": f"{ref}:{ep.type}"}
        out = [Outgoing(topic, event_message("anomaly", named), 1, msg_id=named["msg_id"])]
    if ep.type != "update":
        state = b"ON" if ep.type == "new" else b"OFF"
        msg_id = None if ref is None else f"{ref}:state"
        out.append(Outgoing(f"{topic}/state", state, 1, retain=True, msg_id=msg_id))
    return out
