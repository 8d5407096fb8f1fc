"""What every config table shares: frozen models that refuse unknown keys, and durations."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

__all__ = ["Duration", "Frozen", "PositiveDuration", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """`"30s"`, `"5m"`, `"24h"`, `"7d"`, `"200ms"` -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration such as '30s', '5m', '24h' or '7d'")
    return float(m.group(1)) * _UNITS[m.group(2)]


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(text: str) -> str:
    parse_duration(text)
    return text


def _positive(text: str) -> str:
    if parse_duration(text) <= 0:
        raise ValueError("must be more than 0")
    return text


# A config value such as "30s" (kept as written; `parse_duration` gives the seconds).
Duration = Annotated[str, AfterValidator(_duration)]
PositiveDuration = Annotated[str, AfterValidator(_positive)]
