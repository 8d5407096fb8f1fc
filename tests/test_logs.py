"""Log setup and rate limiting: JSON lines when piped, repeats held back and counted."""

from __future__ import annotations

import json
import subprocess
import sys

import structlog

from edgeml.logs import RateLimitedLog


def test_rate_limited_log_holds_back_repeats_and_reports_how_many() -> None:
    clock = [0.0]
    limited = RateLimitedLog(
        structlog.get_logger("t"), burst=3, window_s=60, clock=lambda: clock[0]
    )
    with structlog.testing.capture_logs() as logs:
        for _ in range(10):
            limited.warning("payload_rejected", "s:not_json", reason="not_json")
        limited.warning("payload_rejected", "s:too_large", reason="too_large")
        clock[0] = 61.0
        limited.warning("payload_rejected", "s:not_json", reason="not_json")
    reasons = [(e["reason"], e.get("suppressed")) for e in logs]
    assert reasons == [
        ("not_json", None),
        ("not_json", None),
        ("not_json", None),
        ("too_large", None),
        ("not_json", 7),
    ]


def test_piped_output_is_json_lines_including_stdlib_loggers() -> None:
    code = (
        "import logging, structlog\n"
        "from edgeml.logs import configure\n"
        "configure('info', 'auto')\n"
        "structlog.get_logger('edgeml.x').info('drift_detected', stream='s', key='k')\n"
        "logging.getLogger('mqtt').warning('Message queue is full')\n"
        "logging.getLogger('edgeml.x').debug('hidden')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(e["event"], e["level"], e["logger"]) for e in lines] == [
        ("drift_detected", "info", "edgeml.x"),
        ("Message queue is full", "warning", "mqtt"),
    ]
    assert lines[0]["stream"] == "s" and "timestamp" in lines[0]
