"""The values that flow between the stages: Sample, Reject, Outcome, DriftEvent."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["DriftEvent", "Outcome", "Reject", "RejectReason", "Sample"]


class RejectReason(StrEnum):
    """Why a payload did not become a sample; each is counted separately."""

    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    TOO_DEEP = "too_deep"
    NOT_OBJECT = "not_object"
    MISSING_TARGET = "missing_target"
    MISSING_FEATURE = "missing_feature"
    NON_NUMERIC = "non_numeric"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_KEY = "bad_key"


@dataclass(frozen=True, slots=True)
class Sample:
    """One decoded reading of one stream: features, target, device key and time (epoch s)."""

    stream: str
    key: str
    ts: float
    x: dict[str, float]
    y: float


@dataclass(frozen=True, slots=True)
class Reject:
    """A payload that was not decoded, with the reason and a short human detail."""

    stream: str
    reason: RejectReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """ADWIN saw the error distribution change for one stream/key."""

    stream: str
    key: str
    ts: float
    seq: int
    detections: int
    width: int
    mean_error: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of test-then-train on one sample."""

    sample: Sample
    seq: int
    y_pred: float
    error: float
    model_version: int
    drift: DriftEvent | None = None
    # The model had diverged (a non-finite prediction) and was replaced by a fresh one.
    reset: bool = False
