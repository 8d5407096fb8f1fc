"""The HTTP API fuzzed from its own OpenAPI document (schemathesis): no request the document
allows, nor a mangled one, gets a 5xx, and the daemon keeps learning through it.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from edgeml.config import load
from edgeml.daemon.openapi import OPENAPI
from tests.conftest import TELEMETRY, Broker, free_port, publish_all, sample_count, wait_for
from tests.helpers import telemetry

EXAMPLES = 30  # per operation and generation mode


def fuzz(base: str) -> dict[str, int]:
    """Every operation of the document, 2 x EXAMPLES cases each; the statuses seen, by class."""
    seen: dict[str, int] = {}
    schema = schemathesis.openapi.from_dict(OPENAPI)
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation, mode in itertools.product(operations, GenerationMode):
        # positive: what the document allows; negative: what it does not (wrong types,
        # out-of-range numbers, bodies that are not objects).
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            response = case.call(base_url=base, timeout=10)
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)
            key = f"{response.status_code // 100}xx"
            seen[key] = seen.get(key, 0) + 1

        try:
            check()
        except Unsatisfiable:
            # An operation with no parameters and no body has no wrong request to make.
            assert mode is GenerationMode.NEGATIVE
    return seen


async def test_the_api_survives_fuzzing_and_the_daemon_keeps_learning(
    tmp_path: Path, broker: Broker, daemon_process: Any
) -> None:
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[node]\nid = "fuzz"\nstate_dir = "state"\n[mqtt]\nhost = "{broker.host}"\n'
        f'port = {broker.port}\n[log]\nformat = "json"\n'
        f'[http]\nenabled = true\nlisten = "127.0.0.1:{port}"\n{TELEMETRY}'
    )
    daemon = daemon_process(config)
    daemon.start()
    await daemon.wait_ready()
    cfg = load(config)
    await publish_all(broker, telemetry(100))
    await wait_for(lambda: sample_count(cfg) == 100)
    seen = await asyncio.to_thread(fuzz, f"http://127.0.0.1:{port}")
    assert seen.get("2xx", 0) > 0 and seen.get("4xx", 0) > 0
    await publish_all(broker, telemetry(100, start=100))
    await wait_for(lambda: sample_count(cfg) == 200)
    assert daemon.proc.poll() is None
