"""What differs between the four tasks: inputs, prediction, loss, learning and metrics.

A task object belongs to one stream/key and holds the metrics of the predictions that were
served (the champion's), plus, for a forecast, the series' recent values. It is pickled with
the learner, so it holds plain settings, never the config object.
"""

from __future__ import annotations

import collections
import math
from array import array
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from river import metrics, utils

from edgeml.config import AlertConfig, StreamConfig
from edgeml.records import MAX_ABS_VALUE, Episode, Label, Sample

__all__ = ["MAX_PREDICTION", "TASKS", "Prediction", "RollingMean", "Task", "usable"]

# A prediction beyond this has diverged: readings are at most MAX_ABS_VALUE (1e15), and squared
# by a metric a much larger one would overflow (River raises OverflowError beyond ~1e154).
MAX_PREDICTION = 1e3 * MAX_ABS_VALUE


def usable(value: float) -> bool:
    """Whether a prediction (or its loss) is a number the metrics can take."""
    return math.isfinite(value) and abs(value) <= MAX_PREDICTION


class Prediction(NamedTuple):
    # regression/forecast: the value; classification: the probability of `label`;
    # anomaly: the score in [0, 1] (0.5 at the threshold). None when the model cannot predict yet.
    value: float | None
    label: Label | None = None
    proba: dict[Any, float] | None = None
    flag: bool | None = None
    # anomaly: the feature that fired (the largest severity) and the severity, robust-z-like
    # in units of the threshold (see edgeml.learn.robust.Judgement).
    field: str | None = None
    severity: float | None = None


class RollingMean:
    """The mean of the last `size` values, in an array of floats with a running sum.

    It replaces River's `utils.Rolling(metrics.MAE)` and `Rolling(metrics.Accuracy)`, which
    keep every update's arguments as tuples: 110 KiB per stream/key at 500 values, against
    4 KiB here. The sum is recomputed exactly each time the window wraps, so rounding errors
    cannot build up over years of readings.
    """

    __slots__ = ("_next", "_sum", "_values", "count", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._values = array("d", bytes(8 * size))
        self._next = 0
        self.count = 0
        self._sum = 0.0

    def update(self, value: float) -> None:
        if self.count == self.size:
            self._sum -= self._values[self._next]
        else:
            self.count += 1
        self._values[self._next] = value
        self._sum += value
        self._next = (self._next + 1) % self.size
        if self._next == 0:
            self._sum = math.fsum(self._values)

    def get(self) -> float:
        return self._sum / self.count if self.count else 0.0

    def __getstate__(self) -> tuple[int, bytes, int, int, float]:
        return self.size, self._values.tobytes(), self._next, self.count, self._sum

    def __setstate__(self, state: tuple[int, bytes, int, int, float]) -> None:
        self.size, values, self._next, self.count, self._sum = state
        self._values = array("d", values)


class Task:
    """Regression: the base every task refines."""

    name = "regression"
    # Whether a challenger can be judged by this task's loss (anomaly: there is none).
    judged_by_loss = True

    def __init__(self, stream: StreamConfig) -> None:
        self.mae = metrics.MAE()
        self.rmse = metrics.RMSE()
        self.r2 = metrics.R2()
        self.rolling = RollingMean(stream.rolling_window)  # of the absolute error
        self.scored = 0  # predictions the metrics have seen

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Snapshots taken before RollingMean hold River's utils.Rolling: keep its window.
        old = state.get("rolling")
        if isinstance(old, utils.Rolling):
            state["rolling"] = RollingMean(old.window_size)
            for (y_true, y_pred), _ in old.window:
                state["rolling"].update(self._rolled(y_true, y_pred))
        self.__dict__.update(state)

    @staticmethod
    def _rolled(y_true: Any, y_pred: Any) -> float:
        """What the rolling metric averages for one prediction (of a pre-RollingMean window)."""
        return float(abs(y_true - y_pred))

    def inputs(self, s: Sample) -> dict[str, float] | None:
        """The model's input for this sample; None when it cannot be predicted yet."""
        return s.x

    def predict(self, model: Any, x: dict[str, float]) -> Prediction:
        return Prediction(float(model.predict_one(x)))

    def loss(self, p: Prediction, s: Sample) -> float | None:
        """The per-sample loss ADWIN watches and the challenger is judged by."""
        if p.value is None or s.y is None:
            return None
        return abs(s.y - p.value)

    def score(self, p: Prediction, s: Sample) -> None:
        """Update the metrics of the served prediction."""
        if p.value is None or s.y is None:
            return
        self.scored += 1
        self.mae.update(s.y, p.value)
        self.rmse.update(s.y, p.value)
        self.r2.update(s.y, p.value)
        self.rolling.update(abs(s.y - p.value))

    def learn(self, model: Any, x: dict[str, float] | None, s: Sample) -> None:
        model.learn_one(x, s.y)

    def observe(self, s: Sample) -> None:
        """Called once per sample after every model has learned it."""

    def train(self, model: Any, samples: Iterable[Sample]) -> None:
        """Warm-start a fresh model on samples of the log, oldest first."""
        for s in samples:
            self.learn(model, s.x, s)

    def forecast(self, model: Any, s: Sample) -> tuple[float, ...]:
        return ()

    def episode(self, p: Prediction, s: Sample, seq: int, cfg: AlertConfig) -> Episode | None:
        """What this reading does to the key's anomaly episode (anomaly streams)."""
        return None

    def metrics(self, n: int) -> dict[str, float | None]:
        if not self.scored:
            return {"mae": None, "rmse": None, "r2": None, "rolling_mae": None}
        return {
            "mae": float(self.mae.get()),
            "rmse": float(self.rmse.get()),
            "r2": float(self.r2.get()),
            "rolling_mae": float(self.rolling.get()),
        }


class Classification(Task):
    """Predict every reading; learn from those that carry a label."""

    name = "classification"

    def __init__(self, stream: StreamConfig) -> None:
        self.accuracy = metrics.Accuracy()
        self.f1 = metrics.F1()  # binary: the positive class is True (or 1)
        self.macro_f1 = metrics.MacroF1()
        self.logloss = metrics.CrossEntropy()  # log loss, for two classes or more
        self.rolling = RollingMean(stream.rolling_window)  # of 1 for right, 0 for wrong
        self.classes: set[Label] = set()
        self.scored = 0

    @staticmethod
    def _rolled(y_true: Any, y_pred: Any) -> float:
        return float(y_true == y_pred)

    def predict(self, model: Any, x: dict[str, float]) -> Prediction:
        proba = model.predict_proba_one(x)
        if not proba:
            return Prediction(None)
        # As River's predict_one: the most probable class, the first one on a tie.
        label = max(proba, key=proba.get)
        return Prediction(float(proba[label]), label, proba)

    def loss(self, p: Prediction, s: Sample) -> float | None:
        if p.label is None or s.label is None:
            return None
        return 0.0 if p.label == s.label else 1.0

    def score(self, p: Prediction, s: Sample) -> None:
        if s.label is None:
            return
        self.classes.add(s.label)
        if p.label is None:
            return
        self.scored += 1
        self.accuracy.update(s.label, p.label)
        self.f1.update(s.label, p.label)  # type: ignore[arg-type]  # any label; True is positive
        self.macro_f1.update(s.label, p.label)
        self.logloss.update(s.label, p.proba)
        self.rolling.update(float(p.label == s.label))

    def learn(self, model: Any, x: dict[str, float] | None, s: Sample) -> None:
        if s.label is not None:
            model.learn_one(x, s.label)

    def metrics(self, n: int) -> dict[str, float | None]:
        if not self.scored:
            return {"accuracy": None, "f1": None, "logloss": None, "rolling_accuracy": None}
        binary = self.classes <= {True, False}
        f1 = self.f1 if binary else self.macro_f1
        return {
            "accuracy": float(self.accuracy.get()),
            "f1": float(f1.get()),
            "logloss": float(self.logloss.get()),
            "rolling_accuracy": float(self.rolling.get()),
        }


class Forecast(Task):
    """The target's next value from its own recent values (and the time of day and week).

    The model predicts the change from the last value: on smooth sensor series the naive
    "same as last" forecast is hard to beat, and SGD on raw lags diverges.
    """

    name = "forecast"

    def __init__(self, stream: StreamConfig) -> None:
        super().__init__(stream)
        self.smape = metrics.SMAPE()
        f = stream.forecast
        self.lags = f.lags
        self.horizon = f.horizon
        self.time_features = f.time_features
        self.season = f.season if stream.model == "seasonal" else 0
        self.history: collections.deque[float] = collections.deque(
            maxlen=max(self.lags, self.season) + 1
        )
        self.last_ts: float | None = None
        self.step = 0.0  # seconds between readings, for the time features of a horizon

    def inputs(self, s: Sample) -> dict[str, float] | None:
        return self._features(self.history, s.ts)

    def _features(self, h: collections.deque[float], ts: float) -> dict[str, float] | None:
        if len(h) < self.lags + 1 or (self.season and len(h) < self.season + 1):
            return None
        x = {f"d{i}": h[-i] - h[-i - 1] for i in range(1, self.lags + 1)}
        if self.season:
            m = self.season
            x["season_d"] = h[-m] - h[-m - 1]  # the same step one season ago
            x["season_gap"] = h[-m] - h[-1]
        if self.time_features:
            t = datetime.fromtimestamp(ts, UTC)
            hour = (t.hour + t.minute / 60) * (2 * math.pi / 24)
            day = (t.weekday() + hour / (2 * math.pi)) * (2 * math.pi / 7)
            x.update(hour_sin=math.sin(hour), hour_cos=math.cos(hour),
                     week_sin=math.sin(day), week_cos=math.cos(day))  # fmt: skip
        return x

    def predict(self, model: Any, x: dict[str, float]) -> Prediction:
        return Prediction(self.history[-1] + float(model.predict_one(x)))

    def score(self, p: Prediction, s: Sample) -> None:
        super().score(p, s)
        if p.value is not None and s.y is not None:
            self.smape.update(s.y, p.value)

    def learn(self, model: Any, x: dict[str, float] | None, s: Sample) -> None:
        if x is not None and s.y is not None:
            model.learn_one(x, s.y - self.history[-1])

    def observe(self, s: Sample) -> None:
        if s.y is None:
            return
        if self.last_ts is not None and s.ts > self.last_ts:
            self.step = s.ts - self.last_ts
        self.last_ts = s.ts
        self.history.append(s.y)

    def train(self, model: Any, samples: Iterable[Sample]) -> None:
        h: collections.deque[float] = collections.deque(maxlen=self.history.maxlen)
        for s in samples:
            if s.y is None:
                continue
            x = self._features(h, s.ts)
            if x is not None:
                model.learn_one(x, s.y - h[-1])
            h.append(s.y)

    def forecast(self, model: Any, s: Sample) -> tuple[float, ...]:
        """The next `horizon` values, each predicted from the ones before it."""
        h = collections.deque(self.history, maxlen=self.history.maxlen)
        out = []
        for k in range(1, self.horizon + 1):
            x = self._features(h, s.ts + k * self.step)
            if x is None:
                return ()
            v = h[-1] + float(model.predict_one(x))
            if not usable(v):
                return ()
            out.append(v)
            h.append(v)
        return tuple(out)

    def metrics(self, n: int) -> dict[str, float | None]:
        base = super().metrics(n)
        return {
            "mae": base["mae"],
            "rmse": base["rmse"],
            "smape": float(self.smape.get()) if self.scored else None,
            "rolling_mae": base["rolling_mae"],
        }


TASKS: dict[str, type[Task]] = {
    "regression": Task,
    "classification": Classification,
    "forecast": Forecast,
}


def __getattr__(name: str) -> Any:
    # `edgeml.learn.tasks.Anomaly`: where snapshots taken before anomaly_task.py find it.
    if name == "Anomaly":
        from edgeml.learn.anomaly_task import Anomaly

        return Anomaly
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
