"""The anomaly task: a score, a flag and the field that fired, per reading.

Lives apart from edgeml.learn.tasks (which re-exports it, so snapshots that name
`edgeml.learn.tasks.Anomaly` still load).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from river import metrics

from edgeml.config import AlertConfig, StreamConfig
from edgeml.learn.episodes import EpisodeTracker
from edgeml.learn.tasks import Prediction, Task
from edgeml.records import Episode, Sample

__all__ = ["Anomaly"]


class Anomaly(Task):
    """Unsupervised: a score in [0, 1], a flag and the field that fired.

    The presets' detectors (edgeml.learn.robust) calibrate their own thresholds and say per
    reading `judge_one(x, ts)`: score, severity (1 = at the threshold), z, flag (severity > 1)
    and field.
    Every reading is learned, flagged or not. The score is not a loss: nothing feeds ADWIN,
    so an anomaly stream has no drift detection and no drift retrains; the detector absorbs a
    level shift itself (see edgeml.learn.robust.ABSORB_BOUND).
    """

    name = "anomaly"
    _ts: float | None = None  # the sample time of the reading being judged
    # A scheduled challenger would never be judged (there is no loss): only `reset` retrains.
    judged_by_loss = False

    def __init__(self, stream: StreamConfig) -> None:
        self.warmup = stream.anomaly.warmup
        self.episodes = EpisodeTracker()
        self.seen = 0  # samples scored, warm-up included
        self.judged = 0  # samples past the warm-up
        self.flagged = 0
        self.labelled = 0  # judged samples that carried ground truth
        # River approximates ROC AUC on a grid of thresholds: 10 by default is too coarse for
        # scores that crowd into a part of [0, 1].
        self.roc_auc = metrics.ROCAUC(n_thresholds=100)
        self.precision = metrics.Precision()
        self.recall = metrics.Recall()

    def inputs(self, s: Sample) -> dict[str, float] | None:
        self._ts = s.ts  # for the detectors' seasonal memory (judge_one and learn_one)
        return s.x

    def predict(self, model: Any, x: dict[str, float]) -> Prediction:
        # No flags while the task warms up (`[stream.anomaly] warmup` readings).
        warm = self.seen >= self.warmup
        judge = getattr(model, "judge_one", None)
        if judge is None:
            # A model of a snapshot taken before the robust detectors (a QuantileFilter).
            score = float(model.score_one(x))
            return Prediction(score, flag=warm and bool(model.classify(score)))
        j = judge(x, self._ts)
        return Prediction(j.score, flag=warm and j.flag, field=j.field, severity=j.severity)

    def loss(self, p: Prediction, s: Sample) -> float | None:
        # The score is not an error: ADWIN watching it called every shift of the score a drift.
        return None

    def score(self, p: Prediction, s: Sample) -> None:
        self.seen += 1
        if self.seen <= self.warmup or p.value is None:
            return
        self.judged += 1
        self.flagged += bool(p.flag)
        if s.label is not None:
            self.labelled += 1
            self.roc_auc.update(bool(s.label), p.value)
            self.precision.update(bool(s.label), bool(p.flag))
            self.recall.update(bool(s.label), bool(p.flag))

    def learn(self, model: Any, x: dict[str, float] | None, s: Sample) -> None:
        if hasattr(model, "judge_one"):
            model.learn_one(x, s.ts)
        else:
            model.learn_one(x)

    def train(self, model: Any, samples: Iterable[Sample]) -> None:
        """Warm start: the detector learns every sample, flagged or not (an old QuantileFilter
        is told not to hold flagged ones back)."""
        protect = getattr(model, "protect_anomaly_detector", None)
        if protect is not None:
            model.protect_anomaly_detector = False
        try:
            super().train(model, samples)
        finally:
            if protect is not None:
                model.protect_anomaly_detector = protect

    def episode(self, p: Prediction, s: Sample, seq: int, cfg: AlertConfig) -> Episode | None:
        """Flagged readings of the key open an episode, normal ones close it; see
        edgeml.learn.episodes. (A task from a snapshot older than episodes starts a tracker.)
        """
        if p.value is None:
            return None
        tracker = self.__dict__.setdefault("episodes", EpisodeTracker())
        assert isinstance(tracker, EpisodeTracker)
        severity = p.severity if p.severity is not None else (1.0 if p.flag else 0.0)
        return tracker.update(cfg, s.ts, seq, bool(p.flag), p.value, severity, p.field)

    def metrics(self, n: int) -> dict[str, float | None]:
        out: dict[str, float | None] = {
            "anomaly_rate": self.flagged / self.judged if self.judged else None
        }
        if self.labelled:
            # Null while undefined, where River says 0: ROC AUC needs both kinds of label,
            # recall a real anomaly, precision a flag.
            cm = self.recall.cm
            positives, negatives = cm.support(True), cm.support(False)
            out["roc_auc"] = float(self.roc_auc.get()) if positives and negatives else None
            out["precision"] = float(self.precision.get()) if cm.sum_col[True] else None
            out["recall"] = float(self.recall.get()) if positives else None
        return out
