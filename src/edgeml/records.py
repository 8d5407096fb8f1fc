"""The values that flow between the stages: Delivery, Sample, Reject, Outcome, events."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, NamedTuple

__all__ = [
    "MAX_ABS_VALUE",
    "QUIET_REASONS",
    "Delivery",
    "DriftEvent",
    "Episode",
    "Label",
    "ModelEvent",
    "Outcome",
    "Reject",
    "RejectReason",
    "Request",
    "Sample",
]


# Finite numbers beyond this (1e15) are rejected: squared by a scaler they would still fit a
# float, but no sensor reads them and they only push a linear model towards overflow.
MAX_ABS_VALUE = 1e15


class Delivery(NamedTuple):
    """One message as a transport delivered it; nothing in it is specific to MQTT.

    `ack` is the transport's opaque token, handed back to it once the message is committed
    (None: nothing to acknowledge, e.g. MQTT QoS 0). `dedup` is an id the transport reuses
    when it delivers the same message again (MQTT: the packet id), stored with the sample;
    `redelivered` says the transport knows this may be a repeat (MQTT: the DUP flag).
    `retained` says the broker sent a state it kept, not a new reading (MQTT: the retain
    flag, set on what a new subscription is sent). `origin` is the reading's place in a log
    that every node reads alike (JetStream: its stream sequence; MQTT: None): what it causes
    is named after it, so that a node learning it again after a failover publishes nothing
    twice.
    """

    topic: str
    payload: bytes
    arrival: float
    ack: Any = None
    dedup: int | None = None
    redelivered: bool = False
    retained: bool = False
    origin: int | None = None


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
    BAD_LABEL = "bad_label"
    # Not garbage: the device said it has no value (`nan`, `unavailable`, an empty payload).
    MISSING_VALUE = "missing_value"
    # A retained message: the broker's copy of a state, not a new reading (`retained = "skip"`).
    RETAINED = "retained"
    # The key's previous reading again, its timestamp not advanced (`dedupe = "identical"`).
    DUPLICATE = "duplicate"


# Reasons that are expected on a healthy broker: counted, never logged one by one.
QUIET_REASONS = frozenset(
    {RejectReason.MISSING_VALUE, RejectReason.RETAINED, RejectReason.DUPLICATE}
)


# A class label, or an anomaly stream's ground-truth flag.
Label = bool | int | str


@dataclass(frozen=True, slots=True)
class Sample:
    """One decoded reading of one stream: features, target, device key and time (epoch s).

    `y` is the numeric target (regression, forecast); `label` the class (classification) or
    the ground-truth anomaly flag (anomaly), None when the payload did not carry it.
    """

    stream: str
    key: str
    ts: float
    x: dict[str, float]
    y: float | None = None
    label: Label | None = None


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
class Episode:
    """An announcement of an anomaly episode (`new`, `update` on a higher severity level,
    `end`); `published` False: recorded, not sent (cooldown or `max_per_hour`).
    """

    type: Literal["new", "update", "end"]
    id: int  # the seq of the episode's first flagged reading
    start_ts: float
    end_ts: float | None  # the time of its last flagged reading, once it has ended
    count: int  # flagged readings so far
    max_score: float
    max_severity: float  # 1 = at the detector's threshold
    severity: str  # the level of `max_severity`, a name from `[stream.alert] severity`
    field: str | None  # the field that fired at the worst reading
    published: bool


@dataclass(frozen=True, slots=True)
class ModelEvent:
    """Something that happened to a stream/key's model, with the figures behind it.

    kind: `retrain` (a challenger starts its grace period), `promotion`, `challenger_dropped`
    or `guard` (a non-finite prediction; the last good version is wanted back).
    """

    kind: str
    stream: str
    key: str
    ts: float
    seq: int
    data: dict[str, Any] = field(default_factory=dict)
    # promotion: the model that stopped being champion (the pipeline archives its state).
    retired: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Request:
    """The learner needs data only the store has before it can go on.

    `challenger`: a fresh model warm-started on the newest `samples` of the log up to `seq`;
    `restore`: the stored model of version `version` (the last good one), as a new version,
    or `in_place` under its own number (it diverged again soon after it was installed); with
    `parent`, the version that `version` came from (`version` itself keeps failing).
    """

    kind: Literal["challenger", "restore"]
    reason: str  # drift, schedule, manual, guard
    seq: int
    samples: int = 0
    version: int = 0
    drift: DriftEvent | None = None
    in_place: bool = False
    parent: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of test-then-train on one sample."""

    sample: Sample
    seq: int
    # regression/forecast: the value; classification: the probability of `label`; anomaly:
    # the score. None when the model could not predict (a forecast's first readings, a
    # classifier that has seen no label, a diverged model).
    y_pred: float | None
    # The served prediction's loss (absolute error or 0/1; the challenger's while it leads in
    # its grace period); None without a label, and for anomaly streams (no loss).
    error: float | None
    model_version: int
    label: Label | None = None  # classification: the predicted class
    proba: dict[Any, float] | None = None  # classification: the probability of each class
    flag: bool | None = None  # anomaly: above the threshold (after the warm-up)
    episode: Episode | None = None  # anomaly: an episode began, rose or ended
    forecast: tuple[float, ...] = ()  # forecast: the next `horizon` values
    drift: DriftEvent | None = None
    events: tuple[ModelEvent, ...] = ()
    request: Request | None = None
