"""The few MQTT packets edgeml reads and writes itself: pure bytes in, values out.

paho builds an `MQTTMessage` (and, with MQTT 5, a `Properties`) for every PUBLISH it
receives, and an `MQTTMessageInfo` with a lock for every one it sends: per reading that cost
more than learning it. The hot path needs only a PUBLISH without properties (in and out) and
a PUBACK, so those are decoded and encoded here; everything else, and any PUBLISH this module
refuses (QoS 2, MQTT 5 properties such as a topic alias or a response topic, a topic that is
not UTF-8), is left to paho. `tests/transport/test_wire.py` checks against paho's own decoder
that the two agree on every packet hypothesis builds.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Publish", "decode_publish", "encode_puback", "encode_publish", "split"]

PUBLISH = 0x30
PUBACK = 0x40


class Publish(NamedTuple):
    """A received PUBLISH, as `Session` hands it on."""

    topic: str
    payload: bytes
    qos: int
    mid: int  # 0 for QoS 0
    dup: bool
    retain: bool


def split(buf: bytes | bytearray, start: int = 0) -> tuple[list[tuple[int, int, int]], int]:
    """The complete packets in `buf` from `start`: (first byte, body start, body end) each,
    and where the first incomplete one begins.

    Raises ValueError for a remaining length longer than MQTT's four bytes.
    """
    packets: list[tuple[int, int, int]] = []
    pos, n = start, len(buf)
    while n - pos >= 2:
        length, mult, i = 0, 1, pos + 1
        while True:
            if i >= n:
                return packets, pos
            byte = buf[i]
            length += (byte & 127) * mult
            i += 1
            if not byte & 128:
                break
            mult *= 128
            if i - pos > 4:
                raise ValueError("malformed MQTT remaining length (more than 4 bytes)")
        end = i + length
        if end > n:
            break
        packets.append((buf[pos], i, end))
        pos = end
    return packets, pos


def decode_publish(header: int, body: bytes, v5: bool) -> Publish | None:
    """The PUBLISH whose fixed header's first byte is `header` and whose variable header
    and payload are `body`; None for one that paho should decode instead.
    """
    qos = (header >> 1) & 3
    if qos > 1 or len(body) < 2:
        return None
    end = 2 + (body[0] << 8 | body[1])
    if qos:
        mid_end = end + 2
        if len(body) < mid_end:
            return None
        mid = body[end] << 8 | body[end + 1]
    else:
        mid_end, mid = end, 0
    if v5:
        # Only "no properties" (a length of zero) is decoded here.
        if len(body) <= mid_end or body[mid_end] != 0:
            return None
        mid_end += 1
    elif end == 2:  # MQTT 3.1.1 has no empty topic: paho reports it as malformed
        return None
    if len(body) < mid_end:
        return None
    try:
        topic = body[2:end].decode()
    except UnicodeDecodeError:
        return None
    return Publish(topic, body[mid_end:], qos, mid, bool(header & 8), bool(header & 1))


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 127, n >> 7
        out.append(byte | 128 if n else byte)
        if not n:
            return bytes(out)


def encode_publish(topic: str, payload: bytes, retain: bool, v5: bool) -> bytes:
    """A QoS 0 PUBLISH, as paho's `publish` would write it (MQTT 5: no properties)."""
    t = topic.encode()
    var = len(t).to_bytes(2, "big") + t + (b"\x00" if v5 else b"")
    return bytes((PUBLISH | retain,)) + _length(len(var) + len(payload)) + var + payload


def encode_puback(mid: int) -> bytes:
    """A PUBACK, as paho writes it for either protocol (success, no reason code)."""
    return bytes((PUBACK, 2, mid >> 8, mid & 255))
