"""The HTTP surface: /metrics, /healthz, the read API under /api/v1, predictions, a page.

One aiohttp server, a task in the daemon's TaskGroup, on the daemon's event loop. Handlers
only read what the daemon keeps: its counters and models (synchronously, between two
messages: a model is never seen half-way through learning) and the SQLite file (through
read-only connections in the loop's executor, so a slow query never holds up learning).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, Protocol

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from edgeml.core.predict import PredictError, answer
from edgeml.daemon import dashboard
from edgeml.daemon.metrics import DaemonView, commit_lag, registry
from edgeml.daemon.openapi import OPENAPI
from edgeml.errors import EdgemlError
from edgeml.store.history import read_history
from edgeml.store.queries import EVENT_KINDS, read_events, read_status
from edgeml.store.registry import list_versions

__all__ = ["serve"]

log = structlog.get_logger("edgeml.http")

# A request body larger than this is refused (413): features are a few numbers.
MAX_BODY = 64 * 1024
# Store reads at once; more wait their turn (each is a read-only SQLite connection).
_READERS = 2
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpDaemon(DaemonView, Protocol):
    ready: asyncio.Event
    stopping: bool


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda v: json.dumps(v, allow_nan=False))


def _problem(status: int, error: str, detail: str) -> web.Response:
    return _json({"error": error, "detail": detail}, status)


def _bad(detail: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=json.dumps({"error": "bad_request", "detail": detail}),
        content_type="application/json",
    )


class Api:
    def __init__(self, daemon: HttpDaemon, token: str | None) -> None:
        self.d = daemon
        self.token = None if token is None else f"Bearer {token}".encode()
        self.registry = registry(daemon)
        self.readers = asyncio.Semaphore(_READERS)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        r = app.router
        r.add_get("/", self.page)
        r.add_get("/metrics", self.metrics)
        r.add_get("/healthz", self.healthz)
        r.add_get("/api/v1/openapi.json", self.openapi)
        r.add_get("/api/v1/status", self.status)
        r.add_get("/api/v1/events", self.events)
        r.add_get("/api/v1/history/{stream}/{key}", self.history)
        r.add_get("/api/v1/models", self.models)
        r.add_post("/api/v1/predict/{stream}/{key}", self.predict)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The bearer token (when one is set); a store that cannot be read is a 503."""
        if self.token is not None:
            given = request.headers.get("Authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, self.token):
                response = _problem(401, "unauthorized", "send Authorization: Bearer <token>")
                response.headers["WWW-Authenticate"] = 'Bearer realm="edgeml"'
                return response
        try:
            return await handler(request)
        except EdgemlError as exc:
            return _problem(503, "store_unavailable", str(exc))

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self.readers:
            return await asyncio.to_thread(fn, self.d.cfg.db_path, *args)

    # -- monitoring ---------------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    async def healthz(self, request: web.Request) -> web.Response:
        d, reasons = self.d, []
        if d.stopping:
            reasons.append("stopping")
        elif not d.ready.is_set():
            reasons.append("starting: restoring the models or waiting for the broker")
        if d.transport.state != "connected":
            m = d.cfg.mqtt
            reasons.append(f"broker {m.host}:{m.port} {d.transport.state}")
        disk = getattr(d, "disk", None)  # daemon.disk.DiskGuard: a full disk holds commits
        full = disk.state.line() if disk is not None else ""
        if full:
            reasons.append(full)
        lag, most = commit_lag(d), d.cfg.http.max_commit_lag_s
        if lag > most:
            reasons.append(f"commits lag: a reading has waited {lag:.1f} s (max {most:g} s)")
        e = d.engine
        body = {
            "status": "unhealthy" if reasons else "ok",
            "reasons": reasons,
            "broker": d.transport.state,
            "commit_lag_s": round(lag, 3),
            "learned": e.learned if e is not None else 0,
            "models": len(e.learners) if e is not None else 0,
            "uptime_s": round(time.time() - d.started, 1),
        }
        return _json(body, 503 if reasons else 200)

    # -- the read API -------------------------------------------------------------------

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(OPENAPI)

    async def status(self, request: web.Request) -> web.Response:
        return _json(_finite(await self._read(read_status)))

    async def events(self, request: web.Request) -> web.Response:
        q = request.query
        kinds = q.getall("kind", [])
        unknown = sorted(set(kinds) - set(EVENT_KINDS))
        if unknown:
            raise _bad(f"unknown kind {', '.join(unknown)}; kinds: {', '.join(EVENT_KINDS)}")
        limit = _int(q.get("limit"), "limit", 100, 1, 10_000)
        since, until = _float(q.get("since"), "since"), _float(q.get("until"), "until")
        rows = await self._read(
            read_events, kinds, q.get("stream"), since, limit, q.get("key"), until
        )
        return _json(_finite(rows))

    async def history(self, request: web.Request) -> web.Response:
        stream, key = request.match_info["stream"], request.match_info["key"]
        since = _float(request.query.get("since"), "since")
        points = _int(request.query.get("points"), "points", 300, 1, 5000)
        found = await self._read(read_history, stream, key, since, points)
        if not found:
            return _problem(404, "unknown_key", f"no history for {stream}/{key}")
        return _json(_finite(asdict(found[0])))

    async def models(self, request: web.Request) -> web.Response:
        return _json(_finite(await self._read(list_versions, request.query.get("stream"))))

    async def predict(self, request: web.Request) -> web.Response:
        stream, key = request.match_info["stream"], request.match_info["key"]
        try:
            body = json.loads(await request.read())
        except (ValueError, RecursionError) as exc:
            return _problem(400, "not_json", str(exc)[:200])
        engine = self.d.engine
        if engine is None:
            return _problem(503, "starting", "the models are being restored")
        try:
            # Synchronous from here on: the learner cannot run until the answer is made.
            return _json(answer(engine, stream, key, body, time.time()))
        except PredictError as exc:
            return _problem(exc.status, exc.error, exc.detail)

    async def page(self, request: web.Request) -> web.Response:
        status, histories = await asyncio.gather(
            self._read(read_status), self._read(read_history, None, None, None, 120)
        )
        html = dashboard.render(status, histories, time.time())
        return web.Response(text=html, content_type="text/html")


def _float(raw: str | None, name: str) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _bad(f"{name}: {raw!r} is not a number (epoch seconds)") from None
    if not math.isfinite(value):
        raise _bad(f"{name}: must be finite")
    return value


def _int(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise _bad(f"{name}: {raw!r} must be a whole number from {low} to {high}")
    return int(raw)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they go out as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


async def serve(daemon: HttpDaemon, shutdown: asyncio.Event) -> None:
    """Serve until `shutdown`. A port that cannot be bound is logged, and learning goes on
    without the HTTP surface (Prometheus sees the target down).
    """
    h = daemon.cfg.http
    token = h.resolve_token(daemon.cfg.source.parent)
    runner = web.AppRunner(Api(daemon, token).app(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, h.host, h.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            log.error("http_listen_failed", listen=h.listen, error=str(exc))
            return
        log.info("http_listening", listen=h.listen, token=token is not None)
        await shutdown.wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
