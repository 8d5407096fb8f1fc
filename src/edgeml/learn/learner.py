"""One stream/key: test-then-train, cumulative and rolling metrics, ADWIN drift detection."""

from __future__ import annotations

import math
from typing import Any

from river import drift, metrics, utils

from edgeml.config import StreamConfig
from edgeml.learn.presets import build_model
from edgeml.records import DriftEvent, Outcome, Sample

__all__ = ["Learner"]


class Learner:
    """Owns the model of one stream/key and everything measured about it."""

    def __init__(self, stream: StreamConfig, key: str) -> None:
        self.stream = stream
        self.key = key
        self.model: Any = build_model(stream.model)
        self.model_version = 1
        self.mae = metrics.MAE()
        self.rmse = metrics.RMSE()
        self.rolling_mae: Any = utils.Rolling(metrics.MAE, window_size=stream.rolling_window)
        self.adwin = drift.ADWIN(delta=stream.drift.delta)
        self.samples = 0
        self.drifts = 0
        self.resets = 0
        self.last_seen = 0.0
        self.last_seq = 0  # the newest sample this learner has learned

    # Everything a snapshot holds: the model and what was measured about it.
    _STATE = (
        "model",
        "model_version",
        "mae",
        "rmse",
        "rolling_mae",
        "adwin",
        "samples",
        "drifts",
        "resets",
        "last_seen",
        "last_seq",
    )

    def state(self) -> dict[str, Any]:
        """The learner's state, for a snapshot (the config it runs under is not part of it)."""
        return {"preset": self.stream.model, **{name: getattr(self, name) for name in self._STATE}}

    @classmethod
    def from_state(cls, stream: StreamConfig, key: str, state: dict[str, Any]) -> Learner:
        """A learner restored from `state()`; ValueError if the state does not fit the stream."""
        if state.get("preset") != stream.model:
            raise ValueError(
                f"snapshot is of preset {state.get('preset')!r}, the stream uses {stream.model!r}"
            )
        missing = [name for name in cls._STATE if name not in state]
        if missing:
            raise ValueError(f"snapshot lacks {', '.join(missing)}")
        learner = cls(stream, key)
        for name in cls._STATE:
            setattr(learner, name, state[name])
        # The config's drift threshold wins over the one the snapshot was taken under.
        learner.use_stream(stream)
        return learner

    def use_stream(self, stream: StreamConfig) -> None:
        """Run under this stream config from now on (a SIGHUP, or a snapshot from an older
        config): River's ADWIN fixes delta when it is built, so a changed one means a new
        detector with an empty window.
        """
        self.stream = stream
        if self.adwin.delta != stream.drift.delta:
            self.adwin = self.adwin.clone({"delta": stream.drift.delta})

    def process(self, sample: Sample, seq: int) -> Outcome:
        """Predict, score, learn; the prediction is always finite."""
        y_pred = float(self.model.predict_one(sample.x))
        reset = not math.isfinite(y_pred)
        if reset:
            # A model can still diverge on finite but extreme inputs; start it afresh rather
            # than publish or learn from a non-finite number.
            self.model = build_model(self.stream.model)
            self.resets += 1
            y_pred = float(self.model.predict_one(sample.x))
        error = abs(sample.y - y_pred)
        self.mae.update(sample.y, y_pred)
        self.rmse.update(sample.y, y_pred)
        self.rolling_mae.update(sample.y, y_pred)
        self.model.learn_one(sample.x, sample.y)
        self.samples += 1
        self.last_seen = sample.ts
        self.last_seq = seq
        event = None
        if math.isfinite(error):
            before = self.adwin.estimation
            self.adwin.update(error)
            # River's ADWIN resets its own counter on the update after a detection, so the
            # detections are counted here. ADWIN also fires when the error falls (a model
            # converging after a start or a change); only a rise in error is a drift.
            if self.adwin.drift_detected and self.adwin.estimation > before:
                self.drifts += 1
                event = DriftEvent(
                    stream=sample.stream,
                    key=sample.key,
                    ts=sample.ts,
                    seq=seq,
                    detections=self.drifts,
                    width=int(self.adwin.width),
                    mean_error=float(self.adwin.estimation),
                )
        return Outcome(sample, seq, y_pred, error, self.model_version, event, reset)

    def replace_model(self, model: Any, version: int) -> None:
        """A new champion (rollback, import): metrics go on, drift detection starts afresh."""
        self.model = model
        self.model_version = version
        self.adwin = drift.ADWIN(delta=self.stream.drift.delta)

    def metrics(self) -> dict[str, float | None]:
        """The status contract's metric keys; None until the first sample."""
        if not self.samples:
            return {"mae": None, "rmse": None, "rolling_mae": None}
        return {
            "mae": float(self.mae.get()),
            "rmse": float(self.rmse.get()),
            "rolling_mae": float(self.rolling_mae.get()),
        }
