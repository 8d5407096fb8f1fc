"""The one place edgeml reaches under aiomqtt into the paho client it wraps.

aiomqtt 2.5 has no switch for manual acknowledgement and delivers messages through a
per-message Task; paho, underneath, has what edgeml needs, and its socket callbacks let
edgeml read and write in batches:

* manual ack, so a QoS 1 message is acknowledged only after it is committed to SQLite;
* `Reader`: one `recv` of up to 256 KiB hands every complete packet in it on, in the same
  loop turn (paho alone makes three `recv` calls per packet, and aiomqtt handles one packet
  per turn); a PUBLISH without properties is decoded by `_wire`, anything else by paho;
* `Outbox`: what is queued during one loop turn (the PUBACKs of a commit, the predictions
  of a chunk) goes out as one packet on paho's own write path, behind what paho queued
  before it, through the writer callback aiomqtt registered.

`tests/transport/test_paho_hooks.py` fails loudly if a new aiomqtt or paho moves any of these.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

from edgeml.transport._wire import PUBLISH, Publish, decode_publish, split

__all__ = ["Outbox", "Reader", "Receiver", "ack", "drop", "publish_nowait"]

log = structlog.get_logger("edgeml.ingest")

# One read takes this much at most: ~2,000 readings of ~120 bytes.
READ_SIZE = 256 * 1024

# Called for each received PUBLISH, with its MQTT 5 properties when paho decoded it.
Receiver = Callable[[Publish, Any], None]


def _paho(client: aiomqtt.Client) -> Any:
    return client._client


def ack(client: aiomqtt.Client, mid: int, qos: int) -> None:
    """Queue the PUBACK of one QoS 1 delivery (a no-op for QoS 0) through paho."""
    _paho(client).ack(mid, qos)


def publish_nowait(
    client: aiomqtt.Client,
    topic: str,
    payload: bytes,
    qos: int = 0,
    retain: bool = False,
    properties: Any = None,
) -> bool:
    """Queue a publish without waiting for it; False if the client is not connected.

    `properties`: MQTT 5 properties of the PUBLISH (a reply's Correlation Data).
    """
    info = _paho(client).publish(topic, payload, qos, retain, properties)
    return bool(info.rc == paho.MQTT_ERR_SUCCESS)


def drop(client: aiomqtt.Client) -> None:
    """Close the socket without a DISCONNECT, as a device that loses power does: the broker
    then publishes the client's will. (Used by the simulator.)
    """
    _paho(client)._sock_close()


class Outbox:
    """Bytes queued during one loop turn, written as one packet on paho's write path.

    The packet goes into paho's outgoing queue (so it leaves after what paho queued before
    it, and a partial write is resumed by paho) and paho asks aiomqtt for a writer callback,
    as for any packet of its own. Its command byte is 0: paho then treats it as neither a
    PUBLISH (no `on_publish`) nor a DISCONNECT. A reconnect discards it, as paho does with
    its own queue.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self._inner = _paho(client)
        self._parts: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def add(self, packet: bytes) -> None:
        if not self._parts:
            self._loop.call_soon(self.flush)
        self._parts.append(packet)

    def flush(self) -> None:
        """Hand what was added to paho now (before a publish that paho encodes itself)."""
        if not self._parts:
            return
        data = b"".join(self._parts)
        self._parts.clear()
        inner = self._inner
        inner._out_packet.append(
            {"command": 0, "mid": 0, "qos": 0, "pos": 0, "to_process": len(data),
             "packet": data, "info": None}
        )  # fmt: skip
        inner._call_socket_register_write()

    def clear(self) -> None:
        """Forget what was added for a connection that is gone."""
        self._parts.clear()


class Reader:
    """Reads the client's socket in large chunks in place of aiomqtt's reader callback."""

    def __init__(self, client: aiomqtt.Client, receive: Receiver) -> None:
        inner = self._inner = _paho(client)
        self._receive = receive
        self._v5 = inner._protocol == paho.MQTTv5
        self._buf = bytearray()
        self._loop = asyncio.get_running_loop()
        inner.manual_ack_set(True)
        opened = inner.on_socket_open  # aiomqtt's: adds its reader, starts its misc task

        def on_socket_open(c: Any, userdata: Any, sock: Any) -> None:
            opened(c, userdata, sock)
            # Runs after aiomqtt's add_reader (same thread-safe queue) and replaces it.
            self._loop.call_soon_threadsafe(self._attach, sock)

        def on_message(_client: Any, _userdata: Any, m: paho.MQTTMessage) -> None:
            message = Publish(m.topic, bytes(m.payload), m.qos, m.mid, bool(m.dup), bool(m.retain))
            receive(message, getattr(m, "properties", None))

        inner.on_socket_open = on_socket_open
        inner.on_message = on_message

    def _attach(self, sock: Any) -> None:
        if self._inner._sock is not sock or sock.fileno() < 0:
            return  # closed already
        self._buf.clear()
        self._loop.add_reader(sock.fileno(), self.on_readable)

    def on_readable(self) -> None:
        inner = self._inner
        sock = inner._sock
        if sock is None:
            return
        try:
            try:
                data = sock.recv(READ_SIZE)
                while isinstance(sock, ssl.SSLSocket) and sock.pending():
                    data += sock.recv(READ_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError):
                return
            except ssl.SSLWantWriteError:
                inner._call_socket_register_write()
                return
            except OSError:
                data = b""
            if not data:  # closed or failed: paho reads again, finds out and reports it
                inner.loop_read()
                return
            rc = self.feed(data)
        except Exception:
            log.exception("mqtt_read_failed")
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        if rc:
            inner._loop_rc_handle(rc)

    def feed(self, data: bytes) -> MQTTErrorCode:
        """Handle every complete packet in what was read so far; keep the rest."""
        buf = self._buf
        buf += data
        try:
            packets, end = split(buf)
        except ValueError:
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        receive, v5 = self._receive, self._v5
        for header, start, stop in packets:
            body = bytes(buf[start:stop])
            message = decode_publish(header, body, v5) if header & 0xF0 == PUBLISH else None
            if message is not None:
                receive(message, None)
                continue
            rc = self._paho_handle(header, body)
            if rc or self._inner._sock is None:  # an error, or paho closed the connection
                return rc
        del buf[:end]
        self._inner._last_bytes_received = time.monotonic()  # paho's keepalive clock
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _paho_handle(self, header: int, body: bytes) -> MQTTErrorCode:
        """Let paho handle one complete packet as if it had read it itself."""
        inner = self._inner
        inner._in_packet = {
            "command": header,
            "have_remaining": 1,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": len(body),
            "packet": bytearray(body),
            "to_process": 0,
            "pos": 0,
        }
        try:
            rc: MQTTErrorCode = inner._packet_handle()
        except MalformedPacket as exc:
            log.warning("mqtt_malformed_packet", error=str(exc))
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        inner._in_packet = {
            "command": 0,
            "have_remaining": 0,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": 0,
            "packet": bytearray(),
            "to_process": 0,
            "pos": 0,
        }
        return rc
