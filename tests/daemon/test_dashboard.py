"""GET / renders in a real headless Chromium with a plot per stream/key."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import Broker, db_rows, publish_all, running, wait_for
from tests.helpers import http_config, telemetry

# .ci/run sets this: there a missing Chromium is a failure, not a skip.


async def chromium(browser: str, tmp_path: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,1600",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(120):
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode()


async def test_the_page_renders_in_headless_chromium(
    tmp_path: Path, broker: Broker, chromium_path: str
) -> None:
    cfg, base = http_config(tmp_path, broker)
    async with running(cfg) as daemon:
        await publish_all(broker, telemetry(150))
        await wait_for(lambda: daemon.engine is not None and daemon.engine.learned == 150)
        await wait_for(lambda: db_rows(cfg, "SELECT count(*) FROM summary")[0][0] == 3)
        dom = await chromium(chromium_path, tmp_path, "--dump-dom", f"{base}/")
        shot = tmp_path / "page.png"
        await chromium(chromium_path, tmp_path, f"--screenshot={shot}", f"{base}/")
    # The browser parsed the page: a row and a drawn error line per stream/key.
    assert dom.count('class="plot"') == 3 and dom.count("<polyline") == 3
    for key in ("dev0", "dev1", "dev2"):
        assert f"<h2>temp/{key}</h2>" in dom
    assert "<title>edgeml: test-http</title>" in dom
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
