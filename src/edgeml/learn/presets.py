"""Preset name + task + `[stream.params]` -> a fresh River pipeline.

Every preset has a fixed seed where River draws random numbers, so a model rebuilt from the
log (after a crash, or as a challenger) is the same model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from river import anomaly, compose, forest, linear_model, preprocessing, tree

from edgeml.config import StreamConfig
from edgeml.learn.auto import Mixture, WeightedBagging
from edgeml.learn.robust import CalibratedHalfSpace, RobustZ

__all__ = ["build_model", "estimator_class", "estimator_of"]


@dataclass(frozen=True)
class _Recipe:
    estimator: type
    defaults: dict[str, Any]
    # Wraps the estimator in what it needs in front (scaling) and around it.
    wrap: Callable[[Any, StreamConfig], Any]


def _scaled(est: Any, _: StreamConfig) -> Any:
    return compose.Pipeline(preprocessing.StandardScaler(), est)


def _bare(est: Any, _: StreamConfig) -> Any:
    return est


def _halfspace(est: Any, _: StreamConfig) -> Any:
    # HalfSpaceTrees scores 0 for everything unless features are in [0, 1]: robustly scaled
    # (rolling median/MAD, which forgets, where MinMaxScaler never did) and squashed into them;
    # its score flagged by the same self-calibrated threshold as `robust`, every reading
    # learned (the old QuantileFilter flagged a fixed share and kept flagged readings out).
    return CalibratedHalfSpace(est)


# A forecaster predicts the change from the last value: on a smooth sensor series SGD on raw
# lags diverges, and the naive "same as last" forecast is already hard to beat.
_FORECAST_LINEAR = {"clip_gradient": 1.0}

# `auto` for classification: leveraging bagging of Hoeffding trees (naive Bayes leaves: they
# classify well from the first labels, where majority-class leaves guessed the majority until
# the first split), each watched by its own ADWIN and replaced when its error rises; the tree
# is cloned for each member, never trained itself; each tree is capped at 50 KiB.
_BAGGED = {
    "model": tree.HoeffdingTreeClassifier(
        grace_period=50, max_size=0.05, memory_estimate_period=500
    ),
    "n_models": 3,
    "seed": 42,
}

_RECIPES: dict[tuple[str, str], _Recipe] = {
    ("auto", "regression"): _Recipe(Mixture, {}, _scaled),
    ("auto", "forecast"): _Recipe(Mixture, _FORECAST_LINEAR, _scaled),
    ("auto", "classification"): _Recipe(WeightedBagging, _BAGGED, _bare),
    ("linear", "regression"): _Recipe(linear_model.LinearRegression, {}, _scaled),
    ("linear", "forecast"): _Recipe(linear_model.LinearRegression, _FORECAST_LINEAR, _scaled),
    ("seasonal", "forecast"): _Recipe(linear_model.LinearRegression, _FORECAST_LINEAR, _scaled),
    ("logistic", "classification"): _Recipe(linear_model.LogisticRegression, {}, _scaled),
    ("tree", "regression"): _Recipe(tree.HoeffdingAdaptiveTreeRegressor, {"seed": 42}, _scaled),
    ("tree", "forecast"): _Recipe(tree.HoeffdingAdaptiveTreeRegressor, {"seed": 42}, _scaled),
    ("tree", "classification"): _Recipe(tree.HoeffdingAdaptiveTreeClassifier, {"seed": 42}, _bare),
    ("forest", "regression"): _Recipe(forest.ARFRegressor, {"n_models": 3, "seed": 42}, _scaled),
    ("forest", "forecast"): _Recipe(forest.ARFRegressor, {"n_models": 3, "seed": 42}, _scaled),
    ("forest", "classification"): _Recipe(forest.ARFClassifier, {"n_models": 3, "seed": 42}, _bare),
    ("robust", "anomaly"): _Recipe(RobustZ, {}, _bare),
    ("halfspace", "anomaly"): _Recipe(
        anomaly.HalfSpaceTrees,
        {"n_trees": 10, "height": 8, "window_size": 250, "seed": 42},
        _halfspace,
    ),
}


def estimator_class(stream: StreamConfig) -> type:
    """The River estimator class a stream's preset builds."""
    return _RECIPES[(stream.model, stream.task)].estimator


def estimator_of(stream: StreamConfig) -> str:
    """The River estimator class a stream's preset uses, e.g. 'HoeffdingAdaptiveTreeRegressor'."""
    return estimator_class(stream).__name__


def build_model(stream: StreamConfig) -> Any:
    """A new, untrained model for a stream (its preset, task and params are valid)."""
    recipe = _RECIPES[(stream.model, stream.task)]
    return recipe.wrap(recipe.estimator(**{**recipe.defaults, **stream.params}), stream)
