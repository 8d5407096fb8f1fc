"""What the daemon needs of a transport: deliveries in, acks and publishes out.

A transport owns its client library and its connection; the daemon drives it through this
Protocol and never sees a packet id, a DUP flag or a receive window. MQTT is one
implementation (`transport.mqtt`); another one (NATS) implements the same methods.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from edgeml.records import Delivery

__all__ = ["Doorbell", "Listener", "Transport"]

# Called with (topic, payload, retained) for a message of a `listen` filter.
Listener = Callable[[str, bytes, bool], None]


class Transport(Protocol):
    """A connection that hands over deliveries and takes back acks after each commit."""

    # Deliveries in arrival order; the learner drains it. No bound of its own: the
    # transport stops delivering once `max_unacked` messages wait for their ack.
    inbox: collections.deque[Delivery]
    # Set once the transport is connected and subscribed: the daemon is ready.
    subscribed: asyncio.Event
    state: str  # connecting, connected, disconnected: for status lines and the heartbeat
    received: int  # deliveries since start
    connects: int  # successful connections since start

    @property
    def max_unacked(self) -> int:
        """How many deliveries may wait for their ack before the source stops sending."""
        ...

    async def run(self, shutdown: asyncio.Event) -> None:
        """Stay connected (reconnecting with back-off) until `shutdown` is set; then say
        offline and disconnect.
        """
        ...

    async def wait_for_messages(self, seconds: float) -> None:
        """Return when a delivery arrives, `wake()` is called, or `seconds` pass."""
        ...

    def wake(self) -> None:
        """End a `wait_for_messages` at once (the daemon is stopping)."""
        ...

    def ack(self, token: Any) -> None:
        """Acknowledge a committed delivery by its `Delivery.ack` token."""
        ...

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Queue a message without awaiting it; False when it was dropped (disconnected)."""
        ...

    async def listen(self, filters: Sequence[str], handler: Listener) -> None:
        """Also receive these topic filters, now and after every reconnect, outside the
        deliveries: each message goes to `handler`, never to the inbox, and is neither
        counted as received nor committed (control messages such as Home Assistant's
        status, and retained configs). Returns once the source has accepted them.
        """
        ...

    async def unlisten(self, filters: Sequence[str]) -> None:
        """Stop receiving filters given to `listen`."""
        ...


class Doorbell:
    """How a transport's learner waits for deliveries: a bare future and a timer. At low
    rates the learner waits once per reading, and an Event plus asyncio.wait cost several
    times the learning itself.
    """

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    async def wait(self, seconds: float) -> None:
        """Return when `ring()` is called or `seconds` pass."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(max(0.0, seconds), self._resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def ring(self) -> None:
        self._resolve(self._waiter)

    @staticmethod
    def _resolve(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
