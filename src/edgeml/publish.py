"""Outcomes and events -> MQTT messages (topic, payload); pure builders, no I/O."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from edgeml.records import DriftEvent, Outcome

__all__ = ["drift_message", "event_message", "prediction_message"]


def prediction_message(outcome: Outcome) -> bytes:
    """`{"ts", "y", "y_pred", "error", "model_version"}` as compact JSON.

    Formatted by hand: this runs once per reading, and every number in it is finite (the
    decoder and the learner guarantee it), so a float's repr is valid JSON.
    """
    s = outcome.sample
    return (
        f'{{"ts":{s.ts!r},"y":{s.y!r},"y_pred":{outcome.y_pred!r},'
        f'"error":{outcome.error!r},"model_version":{outcome.model_version}}}'
    ).encode()


def event_message(kind: str, fields: dict[str, Any]) -> bytes:
    return json.dumps({"event": kind, **fields}, separators=(",", ":")).encode()


def drift_message(event: DriftEvent) -> bytes:
    return event_message("drift_detected", asdict(event))
