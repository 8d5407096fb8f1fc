"""On-demand predictions in the pure core: the champion's answer, the decoder's rules, and a
model left exactly as it was (anomaly detectors included), with no broker and no store.
"""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import pytest

from edgeml.config import load
from edgeml.core.engine import Engine
from edgeml.core.predict import PredictError, answer
from edgeml.records import Delivery, Sample

STREAMS = """
[[stream]]
name = "vib"
topic = "plant/+/vibration/#"
key = "topic:1"
task = "anomaly"
features = ["rms"]

[[stream]]
name = "level"
topic = "tanks"
key = "field:tank"
task = "forecast"
target = "litres"
"""


def engine(tmp_path: Path) -> Engine:
    path = tmp_path / "c.toml"
    path.write_text(STREAMS)
    return Engine(load(path), 1, {}, {})


def feed(e: Engine, topic: str, body: dict[str, object], ts: float) -> None:
    e.handle(Delivery(topic, json.dumps(body).encode(), ts), [])


def test_an_anomaly_request_leaves_the_detector_as_it_was(tmp_path: Path) -> None:
    e, rng = engine(tmp_path), random.Random(1)
    for i in range(400):
        feed(e, "plant/m1/vibration/x", {"rms": 1 + rng.gauss(0, 0.1)}, 1e9 + 60 * i)
    lr = e.learners[("vib", "m1")]
    twin = copy.deepcopy(lr)
    got = answer(e, "vib", "m1", {"rms": 9.0}, 1e9 + 60 * 400)
    assert got["flag"] is True and got["field"] == "rms" and 0.5 < got["prediction"] <= 1
    # The next reading is judged exactly as the untouched twin judges it.
    feed(e, "plant/m1/vibration/x", {"rms": 1.05}, 1e9 + 60 * 401)
    expected = twin.process(Sample("vib", "m1", 1e9 + 60 * 401, {"rms": 1.05}), 0)
    assert e.batch.predictions[-1].y_pred == expected.y_pred


def test_a_forecast_needs_no_target_and_the_key_comes_from_the_url(tmp_path: Path) -> None:
    e = engine(tmp_path)
    for i in range(50):
        feed(e, "tanks", {"tank": "t1", "litres": 100 + i}, 1e9 + i)
    got = answer(e, "level", "t1", {}, 1e9 + 50)
    assert math.isfinite(got["prediction"]) and len(got["forecast"]) == 1
    with pytest.raises(PredictError) as err:
        answer(e, "level", "t2", {}, 1e9)
    assert (err.value.status, err.value.error) == (404, "unknown_key")
    with pytest.raises(PredictError) as err:
        answer(e, "vib", "m1", {"rms": 1.0}, 1e9)
    assert err.value.status == 404  # m1 never sent a reading here
    with pytest.raises(PredictError) as err:  # a key no reading could have is just unknown
        answer(e, "level", "a/b", {}, 1e9)
    assert (err.value.status, err.value.error) == (404, "unknown_key")
    # A target sent along is not used: the forecast comes from the series' own values.
    assert answer(e, "level", "t1", {"tank": "t1", "litres": 1}, 1e9 + 50) == got
