"""The MQTT transport: connect, subscribe, reconnect with backoff; deliveries in, acks out.

It is the one place an MQTT client is built (`client_for`): the daemon's session, `replay`,
`simulate` and the demo all connect through it, so TLS and auth are handled once. Packet
ids, the DUP flag and the receive window stay here; the rest of edgeml sees a Delivery.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import random
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import aiomqtt
import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edgeml.config import Config, MqttConfig
from edgeml.records import Delivery
from edgeml.transport import _paho
from edgeml.transport._wire import Publish, encode_puback, encode_publish
from edgeml.transport.base import Doorbell, Listener

__all__ = ["BACKOFF_CAP_S", "Session", "client_for"]

log = structlog.get_logger("edgeml.ingest")
T = TypeVar("T")

BACKOFF_FIRST_S = 0.5
BACKOFF_CAP_S = 30.0


# An MQTT 3.1.1 broker sends at most this many QoS 1 messages before it waits for acks.
MQTT311_IN_FLIGHT = 20


def client_for(
    m: MqttConfig, host: str | None = None, port: int | None = None, **options: Any
) -> aiomqtt.Client:
    """An aiomqtt client for the broker of `m` (or `host`/`port`), with its auth and TLS.

    `options` go to aiomqtt as they are (identifier, will, protocol, ...).
    """
    if m.tls is not None:
        options["tls_params"] = aiomqtt.TLSParameters(
            ca_certs=str(m.tls.ca_file) if m.tls.ca_file else None,
            certfile=str(m.tls.cert_file) if m.tls.cert_file else None,
            keyfile=str(m.tls.key_file) if m.tls.key_file else None,
            cert_reqs=ssl.CERT_NONE if m.tls.insecure else ssl.CERT_REQUIRED,
        )
        options["tls_insecure"] = m.tls.insecure
    return aiomqtt.Client(
        m.host if host is None else host,
        m.port if port is None else port,
        username=m.username,
        password=m.resolve_password(),
        **options,
    )


class Session:
    """Owns the aiomqtt client for the daemon's lifetime.

    Incoming messages land in `inbox`, a deque the learner drains. It needs no bound of its
    own: messages are acknowledged only after they are committed, so the broker never has
    more than `receive_maximum` (MQTT 5) or 20 (3.1.1) unacknowledged messages out to us.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.topics = sorted({t for s in cfg.stream for t in s.topics})
        self.inbox: collections.deque[Delivery] = collections.deque()
        self._bell = Doorbell()
        self.subscribed = asyncio.Event()
        self.state = "connecting"
        self.generation = 0
        self.received = 0
        self.connects = 0
        self._client: aiomqtt.Client | None = None
        self._outbox: _paho.Outbox | None = None  # PUBACKs and predictions of this loop turn
        self._listeners: dict[str, Listener] = {}  # filter -> handler, outside the inbox
        # MQTT 5 requests (mqtt.predict_requests): topics <prefix>/<node>/<stream>/<key>/predict
        # go to `on_request` (topic, payload, response topic, correlation data), not the inbox.
        self.on_request: Callable[[str, bytes, str | None, bytes | None], None] | None = None
        m = cfg.mqtt
        self.requests_under = f"{m.topic_prefix}/{cfg.node.id}/" if m.predict_requests else None

    # -- called from the learner and the store writer ---------------------------------

    @property
    def max_unacked(self) -> int:
        m = self.cfg.mqtt
        return m.receive_maximum if m.protocol == "5" else MQTT311_IN_FLIGHT

    def ack(self, token: tuple[int, int, int]) -> None:
        """Acknowledge a committed delivery (packet id, QoS, connection generation) if it
        came on the current connection.

        A delivery from an earlier connection is not acknowledged here: the broker sends it
        again (DUP set, same packet id) and the learner acknowledges that copy.
        """
        mid, qos, generation = token
        if generation != self.generation or self._outbox is None or self._client is None:
            return
        if qos == 1:
            self._outbox.add(encode_puback(mid))
        else:
            _paho.ack(self._client, mid, qos)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Queue a message without awaiting it; dropped (False) while disconnected.

        QoS 0 goes out with the rest of this loop turn's packets, in one write; QoS 1 through
        paho (which keeps it until its PUBACK), after them.
        """
        if self._client is None or self._outbox is None or self.state != "connected":
            return False
        if qos == 0:
            self._outbox.add(encode_publish(topic, payload, retain, self.cfg.mqtt.protocol == "5"))
            return True
        self._outbox.flush()
        return _paho.publish_nowait(self._client, topic, payload, qos, retain)

    # -- the connection loop -------------------------------------------------------------

    async def wait_for_messages(self, seconds: float) -> None:
        """Return when a message arrives, `wake()` is called, or `seconds` pass."""
        if not self.inbox:
            await self._bell.wait(seconds)

    def wake(self) -> None:
        self._bell.ring()

    async def listen(self, filters: Sequence[str], handler: Listener) -> None:
        """Receive `filters` (QoS 0) through `handler`; see transport.base."""
        for f in filters:
            self._listeners[f] = handler
        if self._client is not None and self.state == "connected":
            with contextlib.suppress(aiomqtt.MqttError):  # the next connect subscribes
                await self._client.subscribe([(f, 0) for f in filters], timeout=10)

    async def unlisten(self, filters: Sequence[str]) -> None:
        for f in filters:
            self._listeners.pop(f, None)
        if self._client is not None and self.state == "connected":
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.unsubscribe(list(filters), timeout=10)

    def _listener(self, message: Publish) -> bool:
        """Hand a message of a `listen` filter to its handler; False if it is none's."""
        for f, handler in self._listeners.items():
            if paho.topic_matches_sub(f, message.topic):
                if message.qos and self._client is not None:  # a stream's filter overlaps
                    _paho.ack(self._client, message.mid, message.qos)
                handler(message.topic, message.payload, message.retain)
                return True
        return False

    def respond(self, topic: str, payload: bytes, correlation: bytes | None) -> bool:
        """Publish a reply to an MQTT 5 request (QoS 0), with the request's Correlation Data."""
        if self._client is None or self._outbox is None or self.state != "connected":
            return False
        self._outbox.flush()  # the reply goes after what was queued before it
        props = Properties(PacketTypes.PUBLISH)
        if correlation is not None:
            props.CorrelationData = correlation
        return _paho.publish_nowait(self._client, topic, payload, 0, False, props)

    def _is_request(self, topic: str) -> bool:
        under = self.requests_under
        return under is not None and topic.startswith(under) and topic.endswith("/predict")

    def _receive(self, message: Publish, props: Any) -> None:
        """One PUBLISH from the broker; `props`: its MQTT 5 properties, if it had any."""
        if self.on_request is not None and self._is_request(message.topic):
            self.on_request(
                message.topic,
                message.payload,
                getattr(props, "ResponseTopic", None),
                getattr(props, "CorrelationData", None),
            )
            return
        if self._listeners and self._listener(message):
            return
        self.received += 1
        qos, mid = message.qos, message.mid
        # QoS 0 is never acknowledged nor redelivered: no token, no dedup id.
        self.inbox.append(
            Delivery(
                message.topic,
                message.payload,
                time.time(),
                (mid, qos, self.generation) if qos else None,
                mid if qos else None,
                message.dup,
                message.retain,
            )
        )
        self.wake()

    def _make_client(self) -> aiomqtt.Client:
        m = self.cfg.mqtt
        will = aiomqtt.Will(self.cfg.status_topic, b"offline", qos=1, retain=True)
        common: dict[str, Any] = {
            "identifier": self.cfg.client_id,
            "keepalive": m.keepalive,
            "will": will,
            "logger": logging.getLogger("edgeml.mqtt"),
            "max_queued_outgoing_messages": 10_000,
            # Small messages wait ~14 ms for Nagle's algorithm without this.
            "socket_options": ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        }
        if m.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.ReceiveMaximum = m.receive_maximum
            # Without an expiry an MQTT 5 session ends with the connection (clean_start=False
            # alone is not enough).
            props.SessionExpiryInterval = m.session_expiry_s
            client = client_for(
                m,
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=False,
                properties=props,
                **common,
            )
        else:
            client = client_for(
                m, protocol=aiomqtt.ProtocolVersion.V311, clean_session=False, **common
            )
        _paho.Reader(client, self._receive)  # also turns on manual acknowledgement
        self._outbox = _paho.Outbox(client)
        return client

    async def run(self, shutdown: asyncio.Event) -> None:
        """Stay connected until `shutdown` is set, then publish `offline` and disconnect."""
        client = self._client = self._make_client()
        attempt = 0
        while not shutdown.is_set():
            self.state = "connecting"
            # Before connecting: the broker's first messages can arrive in the same read as
            # its CONNACK, before `async with` returns.
            self.generation += 1
            if self._outbox is not None:
                self._outbox.clear()  # PUBACKs for the connection that is gone
            try:
                async with client:
                    self.connects += 1
                    self.state = "connected"
                    attempt = 0  # the broker took us: a later failure starts a new backoff
                    watcher = asyncio.create_task(self._watch(client), name="mqtt-watch")
                    try:
                        await self._serve(client, shutdown, watcher)
                    finally:
                        watcher.cancel()
                    self.state = "disconnected"
                    return
            except aiomqtt.MqttError as exc:
                self.state = "disconnected"
                delay = min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2**attempt)
                # Full jitter: a fleet that lost its broker together does not return together.
                delay = random.uniform(delay / 2, delay)
                attempt += 1
                log.warning("mqtt_disconnected", error=str(exc), retry_in_s=round(delay, 2))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(shutdown.wait(), timeout=delay)
        self.state = "disconnected"

    async def _serve(
        self, client: aiomqtt.Client, shutdown: asyncio.Event, watcher: asyncio.Task[None]
    ) -> None:
        """Subscribe, say online, wait for `shutdown`, say offline; MqttError if the
        connection drops on the way.
        """
        # Mosquitto may hold back the SUBACK, and the PUBACK of `online`, until it has
        # delivered the backlog queued for our session (seen: 10 s for 100,000 readings).
        # So no timeout: a lost connection ends these waits through the watcher instead.
        await _race(self._subscribe(client), watcher)
        await _race(
            client.publish(self.cfg.status_topic, b"online", qos=1, retain=True, timeout=math.inf),
            watcher,
        )
        log.info(
            "mqtt_connected",
            host=self.cfg.mqtt.host,
            port=self.cfg.mqtt.port,
            client_id=self.cfg.client_id,
            topics=self.topics,
            connects=self.connects,
        )
        self.subscribed.set()
        await _race(shutdown.wait(), watcher)
        # Sent before the DISCONNECT, so the broker publishes it even if its PUBACK is slow;
        # the stop does not wait long for that acknowledgement.
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(self.cfg.status_topic, b"offline", qos=1, retain=True, timeout=2)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        # Always subscribe again: a broker that restarted without persistence forgot us.
        granted = await client.subscribe(self._subscriptions(), timeout=math.inf)
        if self._listeners:
            await client.subscribe([(f, 0) for f in self._listeners], timeout=math.inf)
        for topic, code in zip(self.topics, granted, strict=False):
            value = code if isinstance(code, int) else int(getattr(code, "value", 0))
            if value >= 0x80:
                log.error("mqtt_subscribe_refused", topic=topic, reason=str(code))
        if self.requests_under is not None and self.on_request is not None:
            # QoS 0: a request is answered now or never; nothing to acknowledge after a commit.
            await client.subscribe(f"{self.requests_under}+/+/predict", qos=0, timeout=math.inf)

    def _subscriptions(self) -> list[tuple[str, Any]]:
        """QoS 1 for every filter. MQTT 5: a filter a `retained = "learn"` stream reads gets
        its retained messages only when the subscription is new, not again on a resumed
        session (retain handling 1); the others get them every time, to be rejected as
        `retained` by a stream that skips them.
        """
        if self.cfg.mqtt.protocol != "5":
            return [(t, 1) for t in self.topics]
        learn = {t for s in self.cfg.stream if s.retained == "learn" for t in s.topics}
        return [
            (t, SubscribeOptions(qos=1, retainHandling=1 if t in learn else 0)) for t in self.topics
        ]

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        """Raise MqttError when the connection drops (our receiver keeps aiomqtt's queue
        empty, so its iterator only ends by raising).
        """
        async for _ in client.messages:
            pass


async def _race(work: Coroutine[Any, Any, T], watcher: asyncio.Task[None]) -> T:
    """Await `work`, unless the connection drops first (then raise the watcher's error)."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    watcher.result()  # raises the MqttError that ended the connection
    raise aiomqtt.MqttError("connection watcher ended")
