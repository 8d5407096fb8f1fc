"""The write set of one commit: named rows per table, snapshots, the heartbeat and the acks.

The engine fills a Batch; the store writes it in one transaction; the daemon hands the acks
back to the transport once it is committed. Each row is a NamedTuple whose fields are in
the column order of its INSERT, so a row is built by name and written as a tuple.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from edgeml.core.messages import Outgoing
from edgeml.records import Label

__all__ = [
    "Batch",
    "CommandResult",
    "EventRow",
    "Heartbeat",
    "PredictionRow",
    "RetiredRow",
    "SampleRow",
    "SeriesRow",
    "Snapshot",
    "StoredSample",
    "SummaryRow",
    "VersionRow",
]


class SeriesRow(NamedTuple):
    id: int
    stream: str
    key: str
    task: str
    created: float


class SampleRow(NamedTuple):
    seq: int
    series: int
    ts: float
    x: str  # JSON
    y: float | None
    # The transport's redelivery id (MQTT: the packet id) and the message's fingerprint,
    # for recognising a redelivered message after a restart; None for QoS 0.
    mid: int | None
    hash: int | None
    label: str | None  # JSON


class PredictionRow(NamedTuple):
    seq: int
    y_pred: float
    error: float | None
    model_version: int
    label: str | None  # JSON
    flag: int | None


class EventRow(NamedTuple):
    ts: float
    kind: str
    stream: str
    key: str | None
    seq: int | None
    data: str  # JSON


class SummaryRow(NamedTuple):
    series: int
    samples: int
    last_seen: float
    model_version: int
    metrics: str  # JSON
    drifts: int
    updated: float
    challenger: str | None  # JSON
    failing: str | None  # JSON: readings in a row the model raised on, and the error


class VersionRow(NamedTuple):
    """A new model version; `drift_seq` finds the drift event that caused it."""

    series: int
    version: int
    created: float
    reason: str
    parent: int | None
    metrics: str  # JSON
    river: str
    blob: bytes
    drift_seq: int | None


class RetiredRow(NamedTuple):
    """The final state of a version that stopped being champion."""

    blob: bytes
    series: int
    version: int


class CommandResult(NamedTuple):
    status: str
    result: str  # JSON
    applied: float
    id: int


class StoredSample(NamedTuple):
    """A sample as the store gives it back: y None for label-only tasks, label None when
    the reading carried none.
    """

    seq: int
    ts: float
    x: dict[str, float]
    y: float | None
    label: Label | None


@dataclass(slots=True)
class Heartbeat:
    pid: int
    node: str
    version: str
    started: float
    broker: str
    received: int
    rejected: dict[str, int]
    learned: int
    rate: float
    bytes_written: int | None
    stopped: float | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A pickled learner of one series, as of sample `seq`."""

    series: int
    seq: int
    created: float
    reason: str
    model_version: int
    river: str
    blob: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.blob).hexdigest()


@dataclass(slots=True)
class Batch:
    """Rows produced by the engine since the last commit, written in one transaction."""

    series: list[SeriesRow] = field(default_factory=list)
    samples: list[SampleRow] = field(default_factory=list)
    predictions: list[PredictionRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    summary: list[SummaryRow] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    versions: list[VersionRow] = field(default_factory=list)
    retired: list[RetiredRow] = field(default_factory=list)
    command_results: list[CommandResult] = field(default_factory=list)
    heartbeat: Heartbeat | None = None
    # Prune samples, predictions and events older than this (epoch s), a slice at a time.
    prune_before: float | None = None
    # The transport's opaque ack token of every message the batch accounts for.
    acks: list[Any] = field(default_factory=list)
    # Messages that may go out only once the batch is committed (anomaly episodes: a kill
    # between publish and commit would announce them again after the restart).
    after_commit: list[Outgoing] = field(default_factory=list)
    first_added: float = 0.0
    number: int = 0  # batches are numbered in the order they are taken

    def __len__(self) -> int:
        """Messages (or samples, when one message feeds several streams) in the batch."""
        return max(len(self.acks), len(self.samples))

    @property
    def empty(self) -> bool:
        return not (
            self.series
            or self.samples
            or self.events
            or self.summary
            or self.snapshots
            or self.versions
            or self.command_results
            or self.acks
            or self.heartbeat
        )
