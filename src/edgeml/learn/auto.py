"""The `auto` preset's models: for regression and forecast a mixture of diverse experts
weighted by their recent error, for classification a bagging of trees that replaces its worst.

Four experts learn every sample: linear regression with SGD (adapts fast, right when the
relation is linear), linear regression with Adam (converges on badly scaled inputs), a
Hoeffding tree with linear leaves (piecewise linear relations) and a Hoeffding adaptive tree
(replaces its own branches when the relation changes). The prediction is their weighted mean,
the weights a softmax of each expert's fading mean standardized absolute error (its error
divided by the experts' mean error on the same sample): an expert whose error is one mean
error above the best one's weighs exp(-sharpness) as much. The fading mean forgets,
so an expert that becomes good again gets its weight back (River's `EWARegressor` multiplies
weights by exp(-loss) and they underflow to 0 for good after a bad spell).

Pure Python floats in a fixed order and seeded trees: the same samples give the same model,
which is what lets a snapshot plus the log replay exactly.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

from river import base, drift, ensemble, linear_model, optim, tree

from edgeml.learn.tasks import usable

__all__ = ["Mixture", "WeightedBagging"]


class Mixture(base.Regressor):
    """Weighted mean of four experts' predictions; weights follow their fading errors.

    fading: the weight of the newest standardized error in each expert's fading mean (0.02:
    the last ~50 samples count). sharpness: how strongly a larger error lowers a weight.
    clip_gradient: the linear experts' (a forecaster's SGD on lagged differences needs 1.0).
    max_size: each tree's memory cap in MiB, checked every 500 samples (River's default is 500
    MiB, checked every million samples).
    """

    def __init__(
        self,
        fading: float = 0.02,
        sharpness: float = 4.0,
        clip_gradient: float = 1e12,
        max_size: float = 0.05,
        seed: int = 42,
    ) -> None:
        self.fading = fading
        self.sharpness = sharpness
        self.clip_gradient = clip_gradient
        self.max_size = max_size
        self.seed = seed
        tree_args: dict[str, Any] = {
            "max_size": max_size,
            "memory_estimate_period": 500,
        }
        # Quantization splitters: River's default (an exhaustive binary search tree of every
        # value seen) made the trees twice as slow and their memory grow with the data.
        self.experts: list[base.Regressor] = [
            linear_model.LinearRegression(clip_gradient=clip_gradient),
            linear_model.LinearRegression(optimizer=optim.Adam(), clip_gradient=clip_gradient),
            tree.HoeffdingTreeRegressor(
                leaf_prediction="model", splitter=tree.splitter.QOSplitter(), **tree_args
            ),
            tree.HoeffdingAdaptiveTreeRegressor(
                seed=seed, splitter=tree.splitter.QOSplitter(), **tree_args
            ),
        ]
        # Each expert's fading mean of its standardized absolute error (1: as good as the
        # average expert; from 0 to the number of experts).
        self.errors = [1.0] * len(self.experts)

    def weights(self) -> list[float]:
        """The experts' weights (sum 1): equal until the first sample is learned."""
        best = min(self.errors)
        raw = [math.exp(-self.sharpness * (e - best)) for e in self.errors]
        total = math.fsum(raw)
        return [r / total for r in raw]

    def _predictions(self, x: dict[Hashable, Any]) -> list[float]:
        return [float(expert.predict_one(x)) for expert in self.experts]

    def predict_one(self, x: dict[Hashable, Any]) -> float:
        # An expert whose prediction diverged is left out (any weight times it would be absurd).
        pairs = [
            (w, p) for w, p in zip(self.weights(), self._predictions(x), strict=True) if usable(p)
        ]
        total = math.fsum(w for w, _ in pairs)
        if total <= 0:
            return 0.0
        return math.fsum(w * p for w, p in pairs) / total

    def learn_one(self, x: dict[Hashable, Any], y: float) -> None:
        # Each error is standardized by the mean of the experts' errors on this sample, so a
        # sample counts the same whatever its scale: after readings of 1e15 the weights
        # recover as fast as after ordinary ones.
        errors = [abs(y - p) if usable(p) else math.inf for p in self._predictions(x)]
        n = len(errors)
        finite = [e for e in errors if math.isfinite(e)]
        scale = math.fsum(finite) / n if finite else 0.0
        for i, e in enumerate(errors):
            standard = (e / scale if scale > 0 else 1.0) if math.isfinite(e) else float(n)
            self.errors[i] += self.fading * (standard - self.errors[i])
        for expert in self.experts:
            expert.learn_one(x, y)


class WeightedBagging(ensemble.LeveragingBaggingClassifier):
    """Leveraging bagging (River's), each member learning a sample once with its Poisson(w)
    draw as the sample's weight instead of learning it that many times (a Hoeffding tree's
    statistics take weights): about five times cheaper. Each member's ADWIN watches its 0/1
    loss; when one detects a rise, the member with the highest estimated error is replaced
    by a fresh one.
    """

    def learn_one(self, x: Any, y: Any, **kwargs: Any) -> None:
        change = False
        for i, model in enumerate(self):
            k = self._bagging_fct(x=x, y=y, model_idx=i)
            if k:
                model.learn_one(x, y, w=k)
            y_pred = model.predict_one(x)
            if y_pred is None:
                continue
            detector = self._drift_detectors[i]
            before = detector.estimation
            detector.update(int(y_pred != y))
            change = change or (detector.drift_detected and detector.estimation > before)
        if change:
            self.n_detected_changes += 1
            errors = [d.estimation for d in self._drift_detectors]
            worst = errors.index(max(errors))
            self[worst] = self.model.clone()
            self._drift_detectors[worst] = drift.ADWIN(delta=self.adwin_delta)
