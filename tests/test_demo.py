"""`edgeml demo` end to end: the injected concept change is detected, on both kinds of broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeml.demo import run_demo
from edgeml.queries import read_status


@pytest.mark.parametrize("broker", [None, "embedded"], ids=["mosquitto", "amqtt"])
async def test_demo_detects_the_injected_change(tmp_path: Path, broker: str | None) -> None:
    lines: list[str] = []
    result = await run_demo(
        duration=8, rate=60, seed=3, broker=broker, state_dir=tmp_path, say=lines.append
    )
    assert result.detected_at is not None, "\n".join(lines)
    assert result.injected_at <= result.detected_at <= result.injected_at + 150
    doc = read_status(tmp_path / "edgeml.db")
    drifts = {s["key"]: s["drifts"] for s in doc["streams"]}
    assert drifts["dev1"] >= 1
    assert drifts["dev0"] == drifts["dev2"] == 0  # no false alarm on the steady devices
    assert all(s["samples"] == 480 for s in doc["streams"])
    assert any(line.startswith("summary: concept change injected on dev1") for line in lines)
