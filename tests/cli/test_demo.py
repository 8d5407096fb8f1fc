"""`edgeml demo` end to end, on both kinds of broker: the injected concept change is detected,
a challenger promoted, the vibration spikes flagged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeml.cli.app import app
from edgeml.cli.demo import run_demo
from edgeml.store.queries import read_events, read_status

ROOT = Path(__file__).resolve().parents[2]


def capture(page: str, name: str) -> list[str]:
    """The lines of a documented capture (scripts/captures.py writes them)."""
    text = (ROOT / page).read_text()
    block = text.split(f"<!-- capture: {name} -->\n```\n", 1)[1].split("\n```", 1)[0]
    return block.splitlines()


def shape(line: str) -> str:
    """A line with its numbers, times and paths masked: what must not drift from the docs."""
    line = line.replace(".venv/bin/edgeml", "edgeml")  # as `make demo` names it
    line = re.sub(r"/\S+", "PATH", line)
    line = re.sub(r"\d+(\.\d+)?", "N", line)
    return " ".join(line.split())


@pytest.mark.parametrize("broker", [None, "embedded"], ids=["mosquitto", "amqtt"])
async def test_demo_detects_the_injected_change(tmp_path: Path, broker: str | None) -> None:
    lines: list[str] = []
    result = await run_demo(
        duration=8, rate=60, seed=3, broker=broker, state_dir=tmp_path, say=lines.append
    )
    assert result.detected_at is not None, "\n".join(lines)
    assert result.injected_at <= result.detected_at <= result.injected_at + 150
    assert result.promoted_at is not None and result.promoted_at > result.detected_at
    doc = read_status(tmp_path / "edgeml.db")
    boiler = {s["key"]: s for s in doc["streams"] if s["stream"] == "boiler"}
    assert boiler["dev1"]["drifts"] >= 1 and boiler["dev1"]["model_version"] == 2
    # no false alarm, no new version on the steady devices
    assert [(boiler[k]["drifts"], boiler[k]["model_version"]) for k in ("dev0", "dev2")] == [
        (0, 1),
        (0, 1),
    ]
    assert all(s["samples"] == 480 for s in doc["streams"])
    # The three spikes on dev2's pump are three anomaly episodes; at most two others.
    events = read_events(tmp_path / "edgeml.db", ["anomaly"])
    episodes = {e["data"]["id"] for e in events if e["data"]["type"] == "new"}
    assert result.spikes and result.alerts == len(episodes)
    assert {e["data"]["id"] for e in events if e["data"]["type"] == "end"} <= episodes
    spiking = {s["key"]: s for s in doc["streams"] if s["stream"] == "vibration"}["dev2"]
    assert spiking["metrics"]["recall"] == 1.0
    assert result.caught == len(result.spikes) == 3, "\n".join(lines)
    assert result.alerts - result.caught <= 2, "\n".join(lines)
    assert any(line.startswith("summary: concept change injected on dev1") for line in lines)
    assert any("version 1 -> 2" in line for line in lines)
    # Then the drifting boiler's error as a terminal plot, and where the HTML report is.
    assert any(line.lstrip().startswith("boiler/dev1: mean absolute error") for line in lines)
    assert f"report: {tmp_path / 'report.html'}   (open it in a browser)" in lines
    assert (tmp_path / "report.html").read_text().count("Plotly.newPlot(") == 6
    if broker is None:
        check_captures(lines, tmp_path)


def check_captures(lines: list[str], state: Path) -> None:
    """The README's demo capture and the status capture keep the real output's shape: a
    column, a line or a word that changed is regenerated with scripts/captures.py.
    """
    documented = capture("README.md", "demo")
    progress = {shape(x) for x in lines if re.match(r"\s*\d+\.\ds ", x)}
    assert progress == {shape(x) for x in documented if re.match(r"\s*\d+\.\ds ", x)}
    for start in ("broker", "injecting a concept", "drift detected", "injecting a vibration",
                  "summary:", "state and config:", "report:", "in a terminal:"):  # fmt: skip
        real = [shape(x) for x in lines if x.startswith(start)]
        doc = [shape(x) for x in documented if x.startswith(start)]
        assert real[:1] == doc[:1], (start, real, doc)
    r = CliRunner().invoke(app, ["status", "-c", str(state / "config.toml")], prog_name="edgeml")
    real_status = r.stdout.splitlines()
    doc_status = capture("docs/cli.md", "status")
    header = next(x for x in doc_status if x.startswith("stream/key"))
    assert header.split() == next(x for x in real_status if x.startswith("stream/key")).split()
    assert shape(doc_status[1]) == shape(real_status[1])  # received ... learned ... rejected
