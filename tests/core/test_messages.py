"""What goes out: computed figures to 6 significant digits, readings as they came."""

from __future__ import annotations

import json

from edgeml.core.messages import prediction_message
from edgeml.records import Outcome, Sample


def test_computed_figures_are_published_to_six_significant_digits() -> None:
    s = Sample("temp", "k", 1795363773.123456, {"h": 1.0}, y=21.537)
    doc = json.loads(prediction_message(Outcome(s, 1, 21.45699999999999, 0.08000000000000185, 3)))
    assert doc == {"ts": 1795363773.123456, "y": 21.537, "y_pred": 21.457, "error": 0.08,
                   "model_version": 3}  # fmt: skip
    forecast = Outcome(s, 1, 1234567.891, 2.0, 1, forecast=(1.23456789, 1e-12))
    doc = json.loads(prediction_message(forecast))
    assert (doc["y_pred"], doc["forecast"]) == (1234570.0, [1.23457, 1e-12])
    anomaly = json.loads(prediction_message(Outcome(s, 1, 0.933512345, None, 1, flag=True)))
    assert anomaly["score"] == 0.933512 and anomaly["anomaly"] is True
