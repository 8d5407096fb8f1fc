"""`edgeml check` on `[stream.params]`: every preset's estimator must take them, and the
model they make must learn a few gentle readings without diverging.
"""

from __future__ import annotations

import inspect

from edgeml.config import Config, StreamConfig
from edgeml.errors import ConfigError
from edgeml.learn.learner import Learner
from edgeml.learn.presets import build_model, estimator_class
from edgeml.records import Sample

__all__ = ["check_params"]


def _try(stream: StreamConfig) -> None:
    """Build the stream's model and let it learn a few made-up readings: River checks some
    parameters only when it rebuilds a model, and others only when it learns.
    """
    build_model(stream).clone()
    learner = Learner(stream, "check")
    x = dict.fromkeys(stream.features or ("a", "b"), 0.5)
    label = True if stream.task == "classification" else None
    y = None if stream.task in ("classification", "anomaly") else 1.0
    for i in range(max(stream.forecast.lags, stream.forecast.season) + 3):
        s = Sample(stream.name, "check", float(i), x, y and y + i, label)
        for event in learner.process(s, i + 1).events:
            if event.kind == "guard":
                raise ValueError(
                    f"the model diverges on a few gentle readings ({event.data['detail']}: "
                    f"{event.data['value']})"
                )


def check_params(cfg: Config) -> None:
    """ConfigError naming every `[stream.params]` entry that its preset's estimator refuses."""
    problems = []
    for i, stream in enumerate(cfg.stream):
        estimator = estimator_class(stream)
        where = f"{cfg.source}: stream.{i}.params"
        accepted = [p for p in inspect.signature(estimator).parameters if p != "self"]
        unknown = [p for p in stream.params if p not in accepted]
        if unknown:
            problems.append(
                f"{where}: {', '.join(map(repr, unknown))} is not a parameter of preset "
                f"{stream.model!r} ({estimator.__name__}); its parameters: "
                f"{', '.join(accepted)}"
            )
            continue
        try:
            _try(stream)
        except Exception as exc:  # River raises many kinds; each means "bad parameter"
            problems.append(f"{where}: {estimator.__name__} refuses them: {exc}")
    if problems:
        raise ConfigError("\n".join(problems))
