"""/metrics: Prometheus collectors that read the daemon's own counters at scrape time.

Nothing here runs per message: the engine counts with integer increments (core.counters),
the learner times one message in LEARN_SAMPLE_EVERY, and a scrape turns what is there into
the text exposition format.
"""

from __future__ import annotations

import bisect
import platform
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from edgeml import __version__
from edgeml.config import Config
from edgeml.core.engine import Engine
from edgeml.learn import snapshot
from edgeml.records import RejectReason
from edgeml.transport.base import Transport

__all__ = ["LEARN_SAMPLE_EVERY", "DaemonView", "Histogram", "Meters", "commit_lag", "registry"]

# The learner times every 16th message (a power of two: the check is a mask).
LEARN_SAMPLE_EVERY = 16
# Learning one reading takes tens of microseconds (a linear model) to milliseconds (a forest).
LEARN_BUCKETS = (2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2, 0.1, 1.0)
# A commit is an fsync on an SD card: milliseconds to a second.
COMMIT_BUCKETS = (1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# Per-key series: the rolling metric each task reports (classification: its error rate).
_ROLLING = ("rolling_mae", "rolling_accuracy", "anomaly_rate")


class Histogram:
    """Cumulative-bucket counts of observed durations, as a Prometheus histogram wants them."""

    __slots__ = ("buckets", "count", "counts", "seen", "sum")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one: above every bound
        self.sum = 0.0
        self.count = 0
        self.seen = 0  # calls of `due`

    def due(self) -> bool:
        """One call per message: True for every LEARN_SAMPLE_EVERY-th."""
        self.seen += 1
        return not self.seen & (LEARN_SAMPLE_EVERY - 1)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        cumulative, total = [], 0
        for bound, n in zip((*map(str, self.buckets), "+Inf"), self.counts, strict=True):
            total += n
            cumulative.append((bound, float(total)))
        return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=self.sum)


class Meters:
    """What the daemon measures for /metrics beyond the engine's counters."""

    def __init__(self) -> None:
        self.learn = Histogram(LEARN_BUCKETS)
        self.commit = Histogram(COMMIT_BUCKETS)
        # first_added (monotonic) of the batch being committed, None between commits.
        self.committing: float | None = None


class DaemonView(Protocol):
    """What the HTTP surface reads of the daemon (daemon.service.Daemon)."""

    cfg: Config
    engine: Engine | None
    transport: Transport
    meters: Meters
    started: float


def commit_lag(d: DaemonView) -> float:
    """Seconds the oldest received, not yet committed reading has waited (0: none waits)."""
    mono, wall = time.monotonic(), time.time()
    ages = [0.0]
    if d.transport.inbox:
        ages.append(wall - d.transport.inbox[0].arrival)
    if d.meters.committing is not None:
        ages.append(mono - d.meters.committing)
    if d.engine is not None and not d.engine.batch.empty:
        ages.append(mono - d.engine.batch.first_added)
    return max(ages)


class EdgemlCollector(Collector):
    def __init__(self, daemon: DaemonView) -> None:
        self.d = daemon

    def collect(self) -> Iterator[Metric]:
        d = self.d
        yield from _process_metrics(d)
        engine = d.engine
        if engine is not None:
            yield from _stream_metrics(engine, [s.name for s in d.cfg.stream])
            yield from _model_metrics(engine)
            if d.cfg.http.per_key:
                yield from _key_metrics(engine, d.cfg.http.max_key_series)
        yield d.meters.learn.family(
            "edgeml_learn_duration_seconds",
            f"Time to handle one reading (decode, predict, learn), 1 in {LEARN_SAMPLE_EVERY}",
        )
        yield d.meters.commit.family(
            "edgeml_commit_duration_seconds", "Time to commit one batch to SQLite"
        )
        yield _gauge(
            "edgeml_commit_lag_seconds",
            "Age of the oldest received reading not committed yet",
            commit_lag(d),
        )
        yield from _store_metrics(d.cfg.db_path)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _process_metrics(d: DaemonView) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "edgeml_build_info",
        "edgeml's version, River's and Python's (always 1)",
        labels=("version", "river_version", "python_version"),
    )
    info.add_metric((__version__, snapshot.RIVER_VERSION, platform.python_version()), 1)
    yield info
    yield _gauge("edgeml_start_time_seconds", "When the daemon started (epoch)", d.started)
    t = d.transport
    yield _gauge("edgeml_mqtt_connected", "1 while connected to the broker", t.state == "connected")
    yield CounterMetricFamily(
        "edgeml_mqtt_connects", "Successful connections to the broker", value=t.connects
    )


def _per_stream(
    name: str, doc: str, streams: list[str], counts: dict[str, int], counter: bool = True
) -> Metric:
    kind = CounterMetricFamily if counter else GaugeMetricFamily
    family = kind(name, doc, labels=("stream",))
    for s in streams:
        family.add_metric((s,), counts.get(s, 0))
    return family


def _stream_metrics(e: Engine, streams: list[str]) -> Iterator[Metric]:
    c = e.counts
    yield _per_stream(
        "edgeml_messages_received", "Messages handled, per stream", streams, c.received
    )
    rejected = CounterMetricFamily(
        "edgeml_messages_rejected",
        "Messages that did not become a sample, per stream and reason",
        labels=("stream", "reason"),
    )
    for s in streams:
        for reason in RejectReason:
            rejected.add_metric((s, reason.value), e.rejects.by_stream.get((s, reason.value), 0))
    yield rejected
    yield _per_stream("edgeml_samples_learned", "Samples learned", streams, c.learned)
    yield _per_stream(
        "edgeml_predictions_published", "Predictions published", streams, c.predictions
    )
    yield _per_stream("edgeml_anomaly_episodes", "Anomaly episodes begun", streams, c.episodes)
    yield _per_stream("edgeml_drifts", "Drifts detected", streams, c.drifts)
    yield _per_stream(
        "edgeml_model_errors", "Samples on which the model raised", streams, c.model_errors
    )
    promotions = CounterMetricFamily(
        "edgeml_promotions",
        "New champion versions, per stream and reason (drift, schedule, guard, rollback, ...)",
        labels=("stream", "reason"),
    )
    for (stream, why), n in sorted(c.promotions.items()):
        promotions.add_metric((stream, why), n)
    yield promotions
    last = GaugeMetricFamily(
        "edgeml_stream_last_message_timestamp_seconds",
        "Arrival time (epoch) of the newest message of the stream",
        labels=("stream",),
    )
    for s in streams:
        if s in c.last_message:
            last.add_metric((s,), c.last_message[s])
    yield last


def _model_metrics(e: Engine) -> Iterator[Metric]:
    models = GaugeMetricFamily(
        "edgeml_models",
        "Models by state: live in memory, evicted (in the store), with a challenger",
        labels=("state",),
    )
    live = len(e.learners)
    models.add_metric(("live",), live)
    models.add_metric(("evicted",), len(e.series) - live)
    models.add_metric(
        ("challenger",), sum(1 for lr in e.learners.values() if lr.challenger is not None)
    )
    yield models


def _key_metrics(e: Engine, cap: int) -> Iterator[Metric]:
    """A few series per live stream/key, for the first `cap` keys by when they appeared."""
    labels = ("stream", "key")
    samples = GaugeMetricFamily("edgeml_key_samples", "Samples the model learned", labels=labels)
    version = GaugeMetricFamily("edgeml_key_model_version", "The champion's version", labels=labels)
    rolling = GaugeMetricFamily(
        "edgeml_key_rolling_metric",
        "The task's rolling metric (rolling_mae, rolling_accuracy or anomaly_rate)",
        labels=labels,
    )
    live = sorted(e.learners, key=lambda sk: e.series.get(sk, 0))
    for sk in live[:cap]:
        lr = e.learners[sk]
        samples.add_metric(sk, lr.samples)
        version.add_metric(sk, lr.model_version)
        metrics = lr.metrics()
        value = next((metrics[m] for m in _ROLLING if metrics.get(m) is not None), None)
        if value is not None:
            rolling.add_metric(sk, value)
    yield from (samples, version, rolling)
    yield _gauge(
        "edgeml_key_series_dropped",
        "Live stream/keys left out of the per-key series by http.max_key_series",
        max(0, len(live) - cap),
    )


def _store_metrics(db: Path) -> Iterator[Metric]:
    sizes = GaugeMetricFamily(
        "edgeml_database_bytes", "Size of the SQLite file and its WAL", labels=("file",)
    )
    for label, path in (("db", db), ("wal", db.with_name(db.name + "-wal"))):
        try:
            sizes.add_metric((label,), path.stat().st_size)
        except OSError:
            sizes.add_metric((label,), 0)
    yield sizes


def registry(daemon: DaemonView) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one): edgeml's collector and the
    process collector (CPU, memory, open files of this process).
    """
    reg = CollectorRegistry(auto_describe=False)
    reg.register(EdgemlCollector(daemon))
    ProcessCollector(registry=reg)
    return reg
