"""Predictions asked over MQTT 5 (request/response), answered like POST /api/v1/predict.

A client publishes the features to `<prefix>/<node>/<stream>/<key>/predict` with a Response
Topic (and usually Correlation Data); the champion's answer, or an error payload, goes to
that topic with the same Correlation Data. Nothing is learned. The transport hands the
request over from its receive callback, on the event loop, between two readings.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

import structlog

from edgeml.core.engine import Engine
from edgeml.core.predict import PredictError, answer
from edgeml.logs import RateLimitedLog

__all__ = ["Responder", "attach"]

log = structlog.get_logger("edgeml.requests")


class _Transport(Protocol):
    def respond(self, topic: str, payload: bytes, correlation: bytes | None) -> bool: ...


class _Daemon(Protocol):
    engine: Engine | None


class Responder:
    def __init__(self, daemon: _Daemon, transport: _Transport, under: str) -> None:
        self.daemon = daemon
        self.transport = transport
        self.under = under  # "<prefix>/<node>/"
        self.answered = 0
        self._warn = RateLimitedLog(log)

    def __call__(
        self, topic: str, payload: bytes, reply_to: str | None, correlation: bytes | None
    ) -> None:
        if not reply_to:
            self._warn.warning("predict_request_ignored", "no-reply", topic=topic,
                               detail="no Response Topic (MQTT 5) to answer on")  # fmt: skip
            return
        body = self.reply(topic, payload)
        self.answered += 1
        self.transport.respond(reply_to, json.dumps(body).encode(), correlation)

    def reply(self, topic: str, payload: bytes) -> dict[str, Any]:
        parts = topic[len(self.under) :].split("/")
        if len(parts) != 3:
            return _error(404, "unknown_stream", f"{topic!r} is not <stream>/<key>/predict")
        stream, key, _ = parts
        engine = self.daemon.engine
        if engine is None:
            return _error(503, "starting", "the models are being restored")
        try:
            features = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            return _error(400, "not_json", str(exc)[:200])
        try:
            return answer(engine, stream, key, features, time.time())
        except PredictError as exc:
            return _error(exc.status, exc.error, exc.detail)


def _error(status: int, error: str, detail: str) -> dict[str, Any]:
    return {"error": error, "detail": detail, "status": status}


def attach(daemon: _Daemon, transport: Any) -> Responder | None:
    """Answer the transport's requests, if it takes them (mqtt.predict_requests, MQTT 5)."""
    under = getattr(transport, "requests_under", None)
    if under is None or not hasattr(transport, "respond"):
        return None
    responder = Responder(daemon, transport, under)
    transport.on_request = responder
    return responder
