"""edgeml's own PUBLISH decoder against paho's: the same deliveries from every byte stream of
packets hypothesis builds (MQTT 3.1.1 and 5, QoS 0/1/2, DUP, retain, properties, topics that
are not UTF-8), however the stream is cut into reads. And the packets edgeml writes itself
are byte for byte the ones paho writes.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgeml.transport import _paho
from edgeml.transport._wire import decode_publish, encode_puback, encode_publish, split

PINGRESP = b"\xd0\x00"

# Properties a PUBLISH may carry: (paho's name, a strategy for its value).
PROPERTIES: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("PayloadFormatIndicator", st.integers(0, 1)),
    ("MessageExpiryInterval", st.integers(0, 2**32 - 1)),
    ("TopicAlias", st.integers(1, 2**16 - 1)),
    ("ResponseTopic", st.text(max_size=20)),
    ("CorrelationData", st.binary(max_size=20)),
    ("ContentType", st.text(max_size=20)),
    ("UserProperty", st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=3)),
]


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (128 if n else 0))
        if not n:
            return bytes(out)


@st.composite
def publish_packet(draw: st.DrawFn, v5: bool) -> bytes:
    qos = draw(st.integers(0, 2))
    header = 0x30 | draw(st.booleans()) << 3 | qos << 1 | draw(st.booleans())
    topic = draw(st.one_of(st.text(max_size=40).map(str.encode), st.binary(max_size=12)))
    var = len(topic).to_bytes(2, "big") + topic
    if qos:
        var += draw(st.integers(1, 2**16 - 1)).to_bytes(2, "big")
    if v5:
        props = Properties(PacketTypes.PUBLISH)
        for name, values in draw(st.lists(st.sampled_from(PROPERTIES), max_size=3, unique=True)):
            setattr(props, name, draw(values))
        var += props.pack()
    body = var + draw(st.binary(max_size=300))
    return bytes((header,)) + _length(len(body)) + body


@st.composite
def stream(draw: st.DrawFn) -> tuple[bool, list[bytes], list[int]]:
    """A protocol, the packets the broker sends (PUBLISH, now and then a PINGRESP), and the
    sizes of the reads that cut the byte stream."""
    v5 = draw(st.booleans())
    packets = draw(st.lists(st.one_of(publish_packet(v5), st.just(PINGRESP)), max_size=12))
    cuts = draw(st.lists(st.integers(1, 400), max_size=20))
    return v5, packets, cuts


def _seen(topic: str, payload: bytes, qos: int, mid: int, dup: bool, retain: bool, props: Any):
    as_dict = props.json() if props is not None else {}
    return (topic, bytes(payload), qos, mid, bool(dup), bool(retain), as_dict)


def ours(v5: bool, data: bytes, cuts: list[int]) -> list[Any]:
    """What `_paho.Reader` hands on, fed the stream in reads of the given sizes."""
    got: list[Any] = []
    protocol = aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311
    client = aiomqtt.Client("localhost", protocol=protocol)
    reader = _paho.Reader(client, lambda m, p: got.append(
        _seen(m.topic, m.payload, m.qos, m.mid, m.dup, m.retain, p)
    ))  # fmt: skip
    with on_a_socket(client._client):  # the reader stops once paho has no socket
        return _feed(reader, data, cuts, got)


def _feed(reader: _paho.Reader, data: bytes, cuts: list[int], got: list[Any]) -> list[Any]:
    pos = 0
    for size in [*cuts, len(data)]:
        try:
            rc = reader.feed(data[pos : pos + size])
        except Exception as exc:  # what paho raises from its on_message
            return [*got, type(exc).__name__]
        if rc:
            return [*got, "protocol error"]
        pos += size
    return got


@contextmanager
def on_a_socket(client: paho.Client) -> Iterator[socket.socket]:
    """Give a paho client one end of a socket pair; yield the other end."""
    ours_end, peer = socket.socketpair()
    ours_end.setblocking(False)
    client._sock = ours_end
    try:
        yield peer
    finally:
        ours_end.close()
        peer.close()


@contextmanager
def paho_on_a_socket(v5: bool) -> Iterator[tuple[paho.Client, socket.socket]]:
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5 if v5 else paho.MQTTv311
    )
    with on_a_socket(client) as peer:
        yield client, peer


def paho_alone(v5: bool, data: bytes) -> list[Any]:
    """What paho's own reader delivers from the same bytes on a socket."""
    got: list[Any] = []
    with paho_on_a_socket(v5) as (client, peer):
        client.manual_ack_set(True)
        client.on_message = lambda c, u, m: got.append(
            _seen(m.topic, m.payload, m.qos, m.mid, m.dup, m.retain, m.properties if v5 else None)
        )
        peer.sendall(data)
        while True:
            try:
                rc = client._packet_read()
            except Exception as exc:
                return [*got, type(exc).__name__]
            if rc == paho.MQTT_ERR_AGAIN:
                return got
            if rc:
                return [*got, "protocol error"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream())
async def test_reader_and_paho_deliver_the_same(case: tuple[bool, list[bytes], list[int]]) -> None:
    v5, packets, cuts = case
    data = b"".join(packets)
    assert ours(v5, data, cuts) == paho_alone(v5, data)


@given(st.booleans().flatmap(lambda v5: st.tuples(st.just(v5), publish_packet(v5))))
def test_decoder_takes_exactly_what_it_claims(case: tuple[bool, bytes]) -> None:
    """It decodes QoS 0 and 1 without properties, with a UTF-8 topic (non-empty in 3.1.1),
    and refuses the rest: so the fast path is really taken, and only where it may be."""
    v5, packet = case
    (header, start, end), *_ = split(packet)[0]
    body = packet[start:end]
    qos = (header >> 1) & 3
    topic = body[2 : 2 + int.from_bytes(body[:2], "big")]
    props_at = 2 + len(topic) + (2 if qos else 0)
    try:
        topic.decode()
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    plain = (body[props_at] == 0) if v5 else bool(topic)
    decodable = qos < 2 and utf8 and plain
    assert (decode_publish(header, body, v5) is not None) == decodable


def paho_writes(v5: bool, send: Any) -> bytes:
    with paho_on_a_socket(v5) as (client, peer):
        assert send(client) == paho.MQTT_ERR_SUCCESS
        return peer.recv(1 << 20)


@given(
    st.booleans(),
    st.text(min_size=1, max_size=300).filter(lambda t: "+" not in t and "#" not in t),
    st.binary(max_size=5_000),
    st.booleans(),
)
def test_publish_is_encoded_as_paho_encodes_it(
    v5: bool, topic: str, payload: bytes, retain: bool
) -> None:
    info = paho.MQTTMessageInfo(0)
    expected = paho_writes(
        v5, lambda c: c._send_publish(0, topic.encode(), payload, 0, retain, info=info)
    )
    assert encode_publish(topic, payload, retain, v5) == expected


@given(st.booleans(), st.integers(1, 2**16 - 1))
def test_puback_is_encoded_as_paho_encodes_it(v5: bool, mid: int) -> None:
    assert encode_puback(mid) == paho_writes(v5, lambda c: c._send_puback(mid))
