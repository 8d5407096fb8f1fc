"""The daemon's learning path without MQTT or SQLite: a learner fed in order, its requests
answered from an in-memory tail of the log and the versions it promoted. For tests,
benchmarks and notebooks; the daemon answers the same requests from the store.
"""

from __future__ import annotations

import collections
import pickle
from collections.abc import Iterable, Iterator

from edgeml.config import StreamConfig
from edgeml.learn.learner import Learner
from edgeml.records import ModelEvent, Outcome, Sample

__all__ = ["run"]


def run(
    stream: StreamConfig, samples: Iterable[Sample], learner: Learner | None = None
) -> Iterator[tuple[Outcome, list[ModelEvent]]]:
    """Test-then-train every sample; yields each outcome and the events its request caused."""
    lr = learner if learner is not None else Learner(stream, "default")
    tail: collections.deque[Sample] = collections.deque(maxlen=stream.retrain.max_warm_start)
    versions = {lr.model_version: pickle.dumps(lr.model)}
    for seq, sample in enumerate(samples, start=lr.last_seq + 1):
        tail.append(sample)
        outcome = lr.process(sample, seq)
        answered: list[ModelEvent] = []
        request = outcome.request
        if request is not None and request.kind == "challenger":
            answered = lr.start_challenger(request, list(tail)[-request.samples :])
        elif request is not None:
            version = lr.model_version if request.in_place else lr.latest_version + 1
            lr.replace_model(pickle.loads(versions[request.version]), version)
        for event in (*outcome.events, *answered):
            if event.kind == "promotion":
                versions[lr.model_version] = pickle.dumps(lr.model)
        if request is not None and request.kind == "restore":
            versions[lr.model_version] = pickle.dumps(lr.model)
        yield outcome, answered
