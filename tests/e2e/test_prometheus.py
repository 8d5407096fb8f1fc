"""A real Prometheus (Debian's package) scrapes a real daemon: the counters rise as
Prometheus sees them, and the alerting rules of docs/monitoring/ load in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from edgeml.config import load
from tests.conftest import (
    TELEMETRY,
    Broker,
    free_port,
    publish_all,
    running,
    sample_count,
    unavailable,
    wait_for,
)
from tests.helpers import telemetry

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "monitoring" / "alerts.yml"
DASHBOARD = ROOT / "docs" / "monitoring" / "grafana-dashboard.json"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
# .ci/run sets it: there the tests must run, not skip for want of Prometheus.


def need(tool: str | None, name: str) -> str:
    if tool is None:
        unavailable(
            f"{name} is not installed (apt-get install prometheus)", "EDGEML_REQUIRE_PROMETHEUS"
        )
    return tool


@dataclass
class Prometheus:
    url: str
    target: int  # the port edgeml is scraped on


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    """Prometheus on a free port, scraping 127.0.0.1:<target> every second."""
    binary = need(PROMETHEUS, "prometheus")
    port, target = free_port(), free_port()
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n  - job_name: edgeml\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target}']\n"
    )
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ready(f"http://127.0.0.1:{port}/-/ready", proc, workdir / "prometheus.log")
        yield Prometheus(f"http://127.0.0.1:{port}", target)
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until Prometheus answers its readiness probe (it reads its config and rules first)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"prometheus was not ready in 60 s: {log.read_text()[-2000:]}")


async def query(client: aiohttp.ClientSession, prom: Prometheus, expr: str) -> float | None:
    """The value of an instant query with one result, None when it has none."""
    async with client.get(f"{prom.url}/api/v1/query", params={"query": expr}) as r:
        if r.status != 200:
            return None
        body = await r.json()
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if len(result) == 1 else None


async def test_prometheus_sees_the_samples_learned_rise(
    tmp_path: Path, broker: Broker, prometheus: Prometheus
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[node]\nid = "prom"\nstate_dir = "state"\n[mqtt]\nhost = "{broker.host}"\n'
        f'port = {broker.port}\n[http]\nenabled = true\nlisten = "127.0.0.1:{prometheus.target}"\n'
        + TELEMETRY
    )
    cfg = load(path)
    learned = 'edgeml_samples_learned_total{job="edgeml", stream="temp"}'

    async def scraped_above(client: aiohttp.ClientSession, floor: float) -> float:
        """Poll Prometheus (it scrapes every second) until the value is above `floor`."""
        async with asyncio.timeout(30):
            while True:
                value = await query(client, prometheus, learned)
                if value is not None and value > floor:
                    return value
                await asyncio.sleep(0.5)

    async with running(cfg), aiohttp.ClientSession() as client:
        await publish_all(broker, telemetry(50))
        first = await scraped_above(client, 0)
        await wait_for(lambda: sample_count(cfg) == 50)
        await publish_all(broker, telemetry(70, start=50))
        # Rising: Prometheus stores a larger value on a later scrape, up to all 120.
        later = await scraped_above(client, first)
        while later < 120:
            later = await scraped_above(client, later)
        assert first <= 50 < later == 120
        up = await query(client, prometheus, 'up{job="edgeml"}')
        assert up == 1
        async with client.get(f"{prometheus.url}/api/v1/rules") as r:
            groups = (await r.json())["data"]["groups"]
        names = {rule["name"] for g in groups for rule in g["rules"]}
        assert {"EdgemlBrokerDisconnected", "EdgemlCommitLag", "EdgemlStaleStream"} <= names
        assert all(rule["health"] != "err" for g in groups for rule in g["rules"])
        await _dashboard_queries_run(client, prometheus)


async def _dashboard_queries_run(client: aiohttp.ClientSession, prom: Prometheus) -> None:
    """Every query of the Grafana dashboard is valid PromQL for this Prometheus, and the
    ones over edgeml's own series find them.
    """
    panels = json.loads(DASHBOARD.read_text())["panels"]
    empty = []
    for panel in panels:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$instance", ".*")
            async with client.get(f"{prom.url}/api/v1/query", params={"query": expr}) as r:
                body = await r.json()
            assert body["status"] == "success", (panel["title"], expr, body)
            if not body["data"]["result"]:
                empty.append(panel["title"])
    # Only what needs a rate over two scrapes' worth of events may be empty here.
    assert "Samples learned per second" not in empty
    assert not {"Commit lag", "Models", "Database and WAL size", "Memory (resident)"} & set(empty)


def test_the_alerting_rules_pass_promtool() -> None:
    promtool = need(PROMTOOL, "promtool")
    out = subprocess.run(
        [promtool, "check", "rules", str(RULES)], check=False, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
