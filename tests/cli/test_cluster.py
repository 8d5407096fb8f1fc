"""`edgeml cluster init`, `edgeml status --cluster` and `edgeml check` with backend nats,
against a real nats-server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeml.cli.app import app
from tests.conftest import NatsServer

runner = CliRunner()

CONFIG = """
[ingest]
backend = "nats"

[nats]
servers = ["{url}"]
partitions = 8

[node]
id = "n1"
state_dir = "state"

[[stream]]
name = "temp"
topic = "{topic}"
key = "{key}"
target = "t"
"""


def config(
    tmp_path: Path, url: str, topic: str = "sensors/+/telemetry", key: str = "topic:1"
) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(url=url, topic=topic, key=key))
    return path


def test_init_makes_the_stream_and_prints_the_mapping_then_status_shows_it(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    nats_server.start()
    path = config(tmp_path, nats_server.url)
    r = runner.invoke(app, ["cluster", "init", "-c", str(path)], prog_name="edgeml")
    assert r.exit_code == 0, r.output
    assert "stream EDGEML_IN: 8 partitions (fixed for the life of the stream)" in r.stdout
    assert (
        '"sensors.*.telemetry": "EDGEML_IN.{{partition(8,1)}}.sensors.{{wildcard(1)}}.telemetry"'
        in r.stdout
    )
    # Again: the same stream and buckets are kept, not refused.
    r = runner.invoke(app, ["cluster", "init", "-c", str(path)], prog_name="edgeml")
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["status", "--cluster", "-c", str(path)], prog_name="edgeml")
    assert r.exit_code == 0, r.output
    assert "nodes: (none)" in r.stdout
    assert "unowned: 8 partitions" in r.stdout
    r = runner.invoke(app, ["status", "--cluster", "--json", "-c", str(path)], prog_name="edgeml")
    doc = json.loads(r.stdout)
    assert doc["nodes"] == []
    assert [p["owner"] for p in doc["partitions"]] == [None] * 8


def test_check_says_partitions_are_fixed_for_life(tmp_path: Path) -> None:
    path = config(tmp_path, "nats://127.0.0.1:1")
    r = runner.invoke(app, ["check", "-c", str(path)], prog_name="edgeml")
    assert r.exit_code == 0, r.output
    assert "stream EDGEML_IN with 8 partitions (fixed for the life of the stream)" in r.stdout


@pytest.mark.parametrize(
    ("topic", "key", "error"),
    [
        ("sensors/#", "topic:1", "stream.0.topic: 'sensors/#': a '#' filter cannot be partitioned"),
        ("sensors/dev/x", "topic:1", "the key (topic level 1) must be a '+' level"),
        ("sensors/+/telemetry", "field:id", "stream.0.key: with backend 'nats' the key must be"),
    ],
)
def test_check_refuses_streams_the_server_cannot_partition(
    tmp_path: Path, topic: str, key: str, error: str
) -> None:
    path = config(tmp_path, "nats://127.0.0.1:1", topic, key)
    r = runner.invoke(app, ["check", "-c", str(path)], prog_name="edgeml")
    assert r.exit_code == 2
    assert error in r.stderr


def test_init_without_a_server_names_it(tmp_path: Path) -> None:
    path = config(tmp_path, "nats://127.0.0.1:1")
    r = runner.invoke(app, ["cluster", "init", "-c", str(path)], prog_name="edgeml")
    assert r.exit_code == 1
    assert "nats: cannot connect to nats://127.0.0.1:1" in r.stderr
