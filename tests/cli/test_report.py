"""The history, `edgeml report` (HTML, rendered in a real headless Chromium) and `edgeml plot`,
on the state file of one real demo run: a concept change, a promotion, flagged spikes."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeml.cli.app import app
from edgeml.cli.demo import run_demo
from edgeml.cli.plot import render
from edgeml.cli.report import write
from edgeml.store.history import History, read_history

runner = CliRunner()
# .ci/run sets this: there a missing Chromium is a failure, not a skip.


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo")
    result = asyncio.run(
        run_demo(duration=8, rate=60, seed=3, state_dir=path, say=lambda _line: None)
    )
    assert result.promoted_at is not None  # what the marks below are about
    return path


def _one(state: Path, stream: str, key: str) -> History:
    (h,) = read_history(state / "edgeml.db", stream, key)
    return h


def _sql(state: Path, query: str, *args: object) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(state / "edgeml.db")) as conn:
        return conn.execute(query, args).fetchall()


def test_history_buckets_hold_every_prediction_and_the_marks_in_order(state: Path) -> None:
    histories = read_history(state / "edgeml.db", points=50)
    assert [h.name for h in histories] == [
        f"{s}/{k}" for s in ("boiler", "vibration") for k in ("dev0", "dev1", "dev2")
    ]
    for h in histories:
        stored = _sql(
            state,
            "SELECT count(*), sum(coalesce(p.flag, 0)) FROM predictions p"
            " JOIN samples s ON s.seq = p.seq JOIN series r ON r.id = s.series"
            " WHERE r.stream = ? AND r.key = ?",
            h.stream,
            h.key,
        )
        assert len(h.buckets) <= 50
        assert [b.ts for b in h.buckets] == sorted(b.ts for b in h.buckets)
        assert (sum(b.samples for b in h.buckets), sum(b.flagged for b in h.buckets)) == stored[0]
    drifting = histories[1]
    assert [m.kind for m in drifting.marks] == ["drift", "retrain", "promotion"]
    assert "v1 -> v2 (drift)" in drifting.marks[-1].text
    assert drifting.version == 2
    # The error rises after the change: the worst interval after the drift mark is far above
    # the typical one of the learned model before it (its first intervals are still learning).
    before = [b.error for b in drifting.buckets if b.ts < drifting.marks[0].ts]
    after = [b.error for b in drifting.buckets if b.ts >= drifting.marks[0].ts]
    typical = statistics.median(e for e in before if e is not None)
    assert max(e for e in after if e is not None) > 5 * typical
    # The three labelled spikes of the vibration demo are counted as ground truth.
    assert sum(b.truth for b in histories[5].buckets) == 3


def test_history_since_keeps_only_what_came_after(state: Path) -> None:
    promotion = _one(state, "boiler", "dev1").marks[-1]
    (h,) = read_history(state / "edgeml.db", "boiler", "dev1", since=promotion.ts, points=20)
    assert [m.kind for m in h.marks] == ["promotion"]
    assert h.buckets and h.buckets[0].ts >= promotion.ts
    (n,) = _sql(
        state,
        "SELECT count(*) FROM predictions p JOIN samples s ON s.seq = p.seq"
        " JOIN series r ON r.id = s.series WHERE r.key = 'dev1' AND r.stream = 'boiler'"
        " AND s.ts >= ?",
        promotion.ts,
    )[0]
    assert sum(b.samples for b in h.buckets) == n


def test_report_is_one_offline_file_with_a_plot_per_stream_key(state: Path) -> None:
    out = state / "r.html"
    assert write(out, state / "edgeml.db") == 6
    text = out.read_text()
    assert text.count("<section id=") == 6
    assert text.count("Plotly.newPlot(") == 6
    # plotly.js is inside the file, once; nothing is fetched from a network.
    assert text.count("plotly.js v") == 1
    assert re.search(r"<(script|link|img)\b[^>]*\b(src|href)=", text) is None
    assert "promotion: v1 -&gt; v2 (drift)" in text  # the marks' list under the plot
    assert "labelled anomalies" in text  # the spiking pump's ground truth
    # The demo wrote the same report next to its state.
    assert (state / "report.html").stat().st_size > 1_000_000


def test_report_renders_in_headless_chromium(
    state: Path, tmp_path: Path, chromium_path: str
) -> None:
    page = state / "report.html"
    flags = [
        chromium_path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400",
        "--virtual-time-budget=10000",
    ]  # fmt: skip
    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # plotly.js ran: each plot became an SVG whose legend names the traces.
    assert dom.count('class="plot-container plotly"') == 6
    assert dom.count('class="main-svg"') >= 6
    for legend in ("drift (1)", "retrain (1)", "promotion (1)", "flagged", "readings"):
        assert f">{legend}</text>" in dom, legend
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120, check=True)  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_report_command_writes_the_file_and_names_what_is_wrong(state: Path) -> None:
    config = str(state / "config.toml")
    out = state / "cli.html"
    r = runner.invoke(app, ["report", "-c", config, "-o", str(out), "--stream", "vibration"])
    assert r.exit_code == 0, r.output
    assert f"wrote {out} (3 stream/keys" in r.stdout
    assert out.read_text().count("<section id=") == 3
    r = runner.invoke(app, ["report", "-c", config, "--stream", "nope"])
    assert r.exit_code == 2
    assert "no stream 'nope'" in r.stderr and "boiler, vibration" in r.stderr


def test_report_without_plotly_says_how_to_install_it(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "plotly", None)  # import plotly raises ImportError
    r = runner.invoke(
        app, ["report", "-c", str(state / "config.toml"), "-o", str(state / "x.html")]
    )
    assert r.exit_code == 1
    assert "pip install 'edgeml[report]'" in r.stderr
    assert not (state / "x.html").exists()


@pytest.mark.parametrize("width", [80, 200])
def test_plot_fits_the_terminal_and_lists_the_marks(state: Path, width: int) -> None:
    drifting = _one(state, "boiler", "dev1")
    text = render(drifting, width, 20, colour=False)
    lines = text.splitlines()
    assert max(len(line) for line in lines) == width  # the whole width, not more
    assert "boiler/dev1: mean absolute error, model v2" in lines[0]
    assert "| retrain (gray)  | drift (orange)  | promotion (green)" in text
    assert lines[-1].endswith(drifting.marks[-1].text)  # the newest mark, last
    assert "\x1b[" not in text
    # The braille line and the three vertical marks are drawn inside the frame.
    frame = "\n".join(lines[1:21])
    assert any("\u2800" < ch <= "\u28ff" for ch in frame) and frame.count("│") > 20


def test_plot_command(state: Path) -> None:
    config = str(state / "config.toml")
    r = runner.invoke(app, ["plot", "vibration/dev2", "-c", config, "--width", "100"])
    assert r.exit_code == 0, r.output
    assert "vibration/dev2: mean anomaly score" in r.stdout
    assert "x flagged readings (" in r.stdout
    r = runner.invoke(app, ["plot", "boiler/nokey", "-c", config])
    assert r.exit_code == 1 and "boiler/nokey: no such stream/key" in r.stderr
    r = runner.invoke(app, ["plot", "boiler", "-c", config])
    assert r.exit_code == 2 and "give STREAM/KEY" in r.stderr
