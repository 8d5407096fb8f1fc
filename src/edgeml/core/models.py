"""The models in memory: at most `max_live` learners, least recently used first; evicted ones
stay parked (their snapshot in memory) until the batch that stores the snapshot is written.
"""

from __future__ import annotations

import collections
import json
import pickle
import time
from collections.abc import Iterator, Mapping
from typing import Any

from edgeml.config import StreamConfig
from edgeml.core.batch import Snapshot, SummaryRow
from edgeml.learn import Learner, snapshot

__all__ = ["LiveModels", "NeedsLearner", "SeriesKey", "pickled", "snapshot_row", "summary_row"]

SeriesKey = tuple[str, str]  # (stream, key)


class NeedsLearner(Exception):
    """These stream/keys were evicted: read their snapshots back, then handle again."""

    def __init__(self, keys: list[SeriesKey]) -> None:
        super().__init__(keys)
        self.keys = keys


class LiveModels:
    def __init__(
        self, streams: Mapping[str, StreamConfig], series: Mapping[SeriesKey, int], max_live: int
    ) -> None:
        self.streams = streams
        self.learners: collections.OrderedDict[SeriesKey, Learner] = collections.OrderedDict()
        self.max_live = max_live
        # Snapshots of evicted learners and the number of the batch that stores them.
        self.parked: dict[SeriesKey, tuple[Snapshot, int]] = {}
        self.series = dict(series)  # every stream/key ever seen -> its series id
        self._next_series = max(self.series.values(), default=0) + 1
        self.evictions = 0

    def restore(self, learner: Learner) -> SeriesKey:
        """Put a learner loaded from a snapshot in place (before replaying what followed it)."""
        sk = (learner.stream.name, learner.key)
        self.learners[sk] = learner
        self.parked.pop(sk, None)
        return sk

    def available(self, sk: SeriesKey) -> bool:
        """Live, parked in memory, or never seen (a new model): no store read needed."""
        return sk in self.learners or sk in self.parked or sk not in self.series

    def get(self, stream: str, key: str) -> tuple[Learner, int | None]:
        """The learner of stream/key, now the most recently used, and the id of its series
        when this call created it (None for a series that exists).
        """
        sk = (stream, key)
        learner = self.learners.get(sk)
        if learner is not None:
            self.learners.move_to_end(sk)
            return learner, None
        parked = self.parked.pop(sk, None)
        if parked is not None:
            snap = parked[0]
            learner = snapshot.load(self.streams[stream], key, snap.blob, snap.sha256, snap.river)
            self.learners[sk] = learner
            return learner, None
        learner = self.learners[sk] = Learner(self.streams[stream], key)
        if sk in self.series:
            return learner, None
        sid = self.series[sk] = self._next_series
        self._next_series += 1
        return learner, sid

    def excess(self) -> Iterator[tuple[SeriesKey, Learner]]:
        """Unload the least recently used learners beyond `max_live`; the caller parks them."""
        while len(self.learners) > self.max_live:
            self.evictions += 1
            yield self.learners.popitem(last=False)

    def drop(self, sk: SeriesKey) -> None:
        """Forget a model without a snapshot (a cluster node gave its key to another node)."""
        self.learners.pop(sk, None)
        self.parked.pop(sk, None)

    def park(self, sk: SeriesKey, snap: Snapshot, batch_number: int) -> None:
        self.parked[sk] = (snap, batch_number)

    def forget_parked(self, written: int) -> None:
        """Drop the parked snapshots of batches up to number `written`: the store has them."""
        for sk in [sk for sk, (_, n) in self.parked.items() if n <= written]:
            del self.parked[sk]


def pickled(model: Any) -> bytes:
    return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


def summary_row(series: int, lr: Learner, now: float) -> SummaryRow:
    """The live summary of one stream/key (what `edgeml status` shows)."""
    grace = None if lr.challenger is None else json.dumps(lr.grace())
    failing = json.dumps({"readings": lr.failing, "error": lr.error}) if lr.failing else None
    return SummaryRow(series, lr.samples, lr.last_seen, lr.model_version,
                      json.dumps(lr.metrics()), lr.drifts, now, grace, failing)  # fmt: skip


def snapshot_row(series: int, lr: Learner, reason: str) -> Snapshot:
    """A checkpoint of the learner as of the last sample it learned."""
    return Snapshot(series, lr.last_seq, time.time(), reason, lr.model_version,
                    snapshot.RIVER_VERSION, snapshot.dump(lr))  # fmt: skip
