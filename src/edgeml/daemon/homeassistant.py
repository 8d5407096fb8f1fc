"""Home Assistant: when to announce, what to clear, and the retrain buttons.

A task beside the learner. At the first connection it collects this node's retained
discovery configs and clears those the current config no longer produces (a removed
stream, a renamed node's old ids stay: they are another node's). On every connection, and
whenever HA says `online` on its status topic, it sends every config and then every state
after a uniform random delay up to `announce_delay_max` (so a fleet does not answer HA's
restart all at once). New stream/keys are announced as they appear; held-back states are
sent when due. A retrain button queues the same command as `edgeml models retrain`.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time

import structlog

from edgeml import __version__
from edgeml.config import Config
from edgeml.core.engine import Engine
from edgeml.core.homeassistant import Discovery, key_topic
from edgeml.core.messages import Outgoing
from edgeml.core.models import SeriesKey
from edgeml.errors import EdgemlError
from edgeml.store.registry import send_command
from edgeml.transport.base import Transport

__all__ = ["HomeAssistant"]

log = structlog.get_logger("edgeml.homeassistant")

_TICK_S = 0.25
# Collecting retained configs at start: done after this long without one more, or at most:
_QUIET_S = 0.5
_COLLECT_MAX_S = 3.0


class HomeAssistant:
    """Announces this node to Home Assistant and takes its button presses."""

    def __init__(self, cfg: Config, transport: Transport) -> None:
        self.cfg = cfg
        self.ha = cfg.homeassistant
        self.transport = transport
        self.discovery = Discovery(cfg, __version__)
        self.announced: set[SeriesKey] = set()
        self.announces = 0  # full announcements sent (tests and logs)
        self.cleared: list[str] = []  # config topics cleared at start
        self._announce_at: float | None = None
        self._pressed: list[SeriesKey] = []
        self._buttons: dict[str, SeriesKey] = {}
        self._warned_full = False
        self._series_seen = 0

    @property
    def command_filter(self) -> str:
        return f"{self.cfg.mqtt.topic_prefix}/{self.cfg.node.id}/+/+/retrain/set"

    async def run(self, engine: Engine, shutdown: asyncio.Event) -> None:
        t = self.transport
        await t.listen([self.ha.status_topic], self._on_status)
        if self.ha.commands:
            await t.listen([self.command_filter], self._on_command)
        connects = 0
        while not shutdown.is_set():
            try:
                if t.connects != connects and t.state == "connected" and t.subscribed.is_set():
                    if connects == 0:
                        await self.clean(engine)
                    connects = t.connects
                    self.schedule()
                await self._tick(engine)
            except Exception as exc:  # HA is an extra: it must never stop the learning
                log.error("homeassistant_error", error=f"{type(exc).__name__}: {exc}",
                          exc_info=exc)  # fmt: skip
            await asyncio.sleep(_TICK_S)

    async def _tick(self, engine: Engine) -> None:
        now = time.monotonic()
        if self._announce_at is not None and now >= self._announce_at:
            self.announce(engine)
        elif self.transport.state == "connected":
            self._announce_new(engine)
        if engine.ha is not None:
            out: list[Outgoing] = []
            engine.ha.due(now, out)
            self._send(out)
        await self._apply_presses()

    # -- announcing ---------------------------------------------------------------------

    def schedule(self) -> None:
        """Announce after a random delay (an announcement already due stays as it is)."""
        at = time.monotonic() + random.uniform(0.0, self.ha.announce_delay_max_s)
        if self._announce_at is None or at < self._announce_at:
            self._announce_at = at

    def _keys(self, engine: Engine) -> list[SeriesKey]:
        """The stream/keys to show, of configured streams, at most `max_devices`."""
        keys = sorted(k for k in engine.series if k[0] in self.discovery.streams)
        if len(keys) > self.ha.max_devices and not self._warned_full:
            self._warned_full = True
            log.warning("homeassistant_max_devices", known=len(keys), shown=self.ha.max_devices)
        return keys[: self.ha.max_devices]

    def announce(self, engine: Engine) -> None:
        """Every config, then every state."""
        self._announce_at = None
        keys = self._keys(engine)
        configs = self.discovery.messages(keys)
        states = engine.ha.states() if engine.ha is not None else []
        counts = {"configs": len(configs), "states": len(states), "devices": len(keys) + 1}
        self._send(configs)
        self.announced = set(keys)
        self._remember_buttons(keys)
        self._send(states)
        self.announces += 1
        log.info("homeassistant_announced", **counts)

    def _announce_new(self, engine: Engine) -> None:
        if len(self.announced) >= self.ha.max_devices or len(engine.series) <= len(self.announced):
            return
        new = [k for k in self._keys(engine) if k not in self.announced]
        for stream, key in new:
            self._send(self.discovery.encode(*self.discovery.key_config(stream, key)))
            self.announced.add((stream, key))
        self._remember_buttons(new)

    def _remember_buttons(self, keys: list[SeriesKey]) -> None:
        if self.ha.commands:
            for stream, key in keys:
                self._buttons[key_topic(self.cfg, stream, key, "retrain/set")] = (stream, key)

    def _send(self, out: list[Outgoing]) -> None:
        for message in out:
            self.transport.publish(message.topic, message.payload, message.qos, message.retain)
        out.clear()

    # -- cleaning up --------------------------------------------------------------------

    async def collect(self) -> dict[str, bytes]:
        """This node's retained configs as the broker holds them now."""
        found: dict[str, bytes] = {}
        last = [time.monotonic()]

        def keep(topic: str, payload: bytes, retained: bool) -> None:
            if retained and payload and self.discovery.is_ours(topic):
                found[topic] = payload
            last[0] = time.monotonic()

        filters = self.discovery.owned_filters()
        start = time.monotonic()
        await self.transport.listen(filters, keep)
        try:
            while time.monotonic() - start < _COLLECT_MAX_S:
                if time.monotonic() - last[0] >= _QUIET_S:
                    break
                await asyncio.sleep(0.05)
        finally:
            await self.transport.unlisten(filters)
        return found

    async def clean(self, engine: Engine) -> None:
        """Clear the retained configs of this node that the current config does not make."""
        found = await self.collect()
        current = {m.topic for m in self.discovery.messages(self._keys(engine))}
        stale = sorted(set(found) - current)
        # The retained states of stream/keys whose stream is gone go too.
        gone = [key_topic(self.cfg, s, k, "state") for s, k in engine.series
                if s not in self.discovery.streams]  # fmt: skip
        for topic in [*stale, *gone]:
            self.transport.publish(topic, b"", 1, True)
        self.cleared = stale
        if stale:
            log.info("homeassistant_cleared", configs=len(stale))

    # -- the events of a key -------------------------------------------------------------

    def mirror(self, engine: Engine, out: list[Outgoing]) -> None:
        """Before the daemon sends `out`: a key's events again on its own `event` topic (HA's
        Model events entity), and `silent` and `back` on its availability topic too.
        """
        extra: list[Outgoing] = []
        for m in out:
            if m.topic != self.cfg.events_topic:
                continue
            doc = json.loads(m.payload)
            sk = (doc.get("stream"), doc.get("key"))
            if sk[1] is None or sk[0] not in self.discovery.streams:
                continue
            extra.append(Outgoing(key_topic(self.cfg, *sk, "event"), m.payload, 1))
            if doc.get("event") in ("silent", "back") and engine.ha is not None:
                engine.ha.availability(sk, doc["event"] == "back", extra)
        out += extra

    # -- from Home Assistant ------------------------------------------------------------

    def _on_status(self, topic: str, payload: bytes, retained: bool) -> None:
        if payload.strip() == b"online":
            self.schedule()

    def _on_command(self, topic: str, payload: bytes, retained: bool) -> None:
        # A retained press would retrain at every start: only live ones count.
        sk = self._buttons.get(topic)
        if sk is not None and not retained and payload.strip() == b"PRESS":
            self._pressed.append(sk)

    async def _apply_presses(self) -> None:
        while self._pressed:
            stream, key = self._pressed.pop(0)
            try:
                command_id = await asyncio.to_thread(
                    send_command, self.cfg.db_path, "retrain", stream, key, {"via": "homeassistant"}
                )
            except (EdgemlError, OSError, sqlite3.Error) as exc:
                log.error("homeassistant_retrain_failed", stream=stream, key=key, error=str(exc))
                continue
            log.info("homeassistant_retrain", stream=stream, key=key, command=command_id)
