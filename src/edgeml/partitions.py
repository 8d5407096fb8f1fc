"""Keys to partitions, partitions to nodes, topics to subjects: the arithmetic a cluster of
edgeml nodes on NATS JetStream shares (docs/scale.md). Pure: no I/O, no client library.

The server maps each reading to `<stream>.<partition>.<subject>` with
`{{partition(P, n)}}`, FNV-1a (32 bit) of the key's subject token modulo P; `partition_of`
computes the same number, so a node knows which partition holds a key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = [
    "assign",
    "fnv1a32",
    "mapping",
    "matches",
    "partition_of",
    "subject_of",
    "topic_of",
]

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a32(token: str) -> int:
    h = _FNV_OFFSET
    for byte in token.encode():
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def partition_of(key: str, partitions: int) -> int:
    """The partition the server files a reading of this key under."""
    return fnv1a32(key) % partitions


def _weight(node: str, partition: int) -> bytes:
    return hashlib.blake2b(f"{node}/{partition}".encode(), digest_size=8).digest()


def assign(partitions: int, nodes: Iterable[str]) -> dict[int, str]:
    """Partition -> the node that should own it (highest random weight): a node that joins
    or leaves moves only the partitions it wins or held, about P/N of them.
    """
    live = sorted(set(nodes))
    if not live:
        return {}
    return {p: max(live, key=lambda n: _weight(n, p)) for p in range(partitions)}


def matches(topic_filter: str, topic: str) -> bool:
    """An MQTT filter of `+` levels (a cluster's filters have no `#`) against a topic."""
    levels, want = topic.split("/"), topic_filter.split("/")
    return len(levels) == len(want) and all(
        w in ("+", t) for w, t in zip(want, levels, strict=True)
    )


def subject_of(topic: str) -> str:
    """An MQTT topic as NATS sees it (nats-server's MQTT listener maps '/' to '.')."""
    return topic.replace("/", ".")


def topic_of(subject: str) -> str:
    return subject.replace(".", "/")


def mapping(topic_filter: str, key_level: int, stream: str, partitions: int) -> tuple[str, str]:
    """The server-config mapping (source, destination) that files the readings of an MQTT
    filter under `<stream>.<partition>.<subject>`, partitioned by the key at `key_level`.

    ValueError when the filter cannot be partitioned that way (the key level is not a `+`,
    or the filter has a `#`).
    """
    levels = topic_filter.split("/")
    if "#" in levels:
        raise ValueError(f"{topic_filter!r}: a '#' filter cannot be partitioned; name each level")
    if key_level >= len(levels) or levels[key_level] != "+":
        raise ValueError(f"{topic_filter!r}: the key (topic level {key_level}) must be a '+' level")
    wildcards: Sequence[int] = [i for i, level in enumerate(levels) if level == "+"]
    out = []
    for i, level in enumerate(levels):
        out.append(f"{{{{wildcard({wildcards.index(i) + 1})}}}}" if level == "+" else level)
    n = wildcards.index(key_level) + 1
    source = ".".join("*" if level == "+" else level for level in levels)
    return source, f"{stream}.{{{{partition({partitions},{n})}}}}.{'.'.join(out)}"
