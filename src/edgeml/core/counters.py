"""What the engine counts per stream for /metrics: integer increments on the hot path, read
at scrape time. Totals since the daemon started (a restart starts them again, as Prometheus
expects of a counter).
"""

from __future__ import annotations

import collections

from edgeml.records import Outcome

__all__ = ["StreamCounters"]


class StreamCounters:
    """Counts by stream (and by reason where there is one)."""

    __slots__ = (
        "drifts",
        "episodes",
        "last_message",
        "learned",
        "model_errors",
        "predictions",
        "promotions",
        "received",
    )

    def __init__(self) -> None:
        self.received: collections.Counter[str] = collections.Counter()
        self.learned: collections.Counter[str] = collections.Counter()
        self.predictions: collections.Counter[str] = collections.Counter()  # published
        self.episodes: collections.Counter[str] = collections.Counter()  # anomaly episodes begun
        self.drifts: collections.Counter[str] = collections.Counter()
        self.model_errors: collections.Counter[str] = collections.Counter()
        self.promotions: collections.Counter[tuple[str, str]] = collections.Counter()  # reason
        self.last_message: dict[str, float] = {}  # arrival time (epoch s) of the newest

    def arrived(self, stream: str, ts: float) -> None:
        """A message of the stream was handled (learned or rejected)."""
        self.received[stream] += 1
        self.last_message[stream] = ts

    def learned_one(self, stream: str, outcome: Outcome, published: bool) -> None:
        """A sample was learned; `published`: its stream publishes every prediction."""
        self.learned[stream] += 1
        if published and outcome.y_pred is not None:
            self.predictions[stream] += 1
        if outcome.drift is not None:
            self.drifts[stream] += 1
        if outcome.episode is not None and outcome.episode.type == "new":
            self.episodes[stream] += 1
