"""Preset name -> a fresh River pipeline."""

from __future__ import annotations

from typing import Any

from river import compose, linear_model, preprocessing

__all__ = ["PRESETS", "build_model"]


def _linear() -> Any:
    return compose.Pipeline(preprocessing.StandardScaler(), linear_model.LinearRegression())


PRESETS = {"linear": _linear}


def build_model(preset: str) -> Any:
    """A new, untrained model for a preset name (validated by the config already)."""
    return PRESETS[preset]()
