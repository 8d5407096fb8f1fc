"""A device key's models as one value in the cluster's snapshot bucket, and back.

One value per key (all the streams that learn it), so one stream sequence says what every
one of them has learned: `covered`, the last reading of the key they hold. Pure: bytes in,
learners out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from edgeml.config import StreamConfig
from edgeml.learn import Learner, snapshot

__all__ = ["KeySnapshot", "decode", "encode", "learners"]


@dataclass
class KeySnapshot:
    """What a snapshot value says besides the models."""

    covered: int  # stream sequence of the last reading learned
    node: str  # the node that wrote it
    lease: int  # the revision of that node's lease on the partition
    samples: dict[str, int] = field(default_factory=dict)  # stream -> readings learned
    blobs: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)  # river, sha, blob


def encode(covered: int, node: str, lease: int, learners: Mapping[str, Learner]) -> bytes:
    """A JSON line (sequence, writer, per stream its River version, sha256 and size), then
    the pickled learners one after the other.
    """
    head: dict[str, object] = {"covered": covered, "node": node, "lease": lease}
    streams = {}
    blobs = []
    for name, learner in learners.items():
        blob = snapshot.dump(learner)
        streams[name] = {
            "river": snapshot.RIVER_VERSION,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "size": len(blob),
            "samples": learner.samples,
        }
        blobs.append(blob)
    head["streams"] = streams
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + b"".join(blobs)


def decode(value: bytes) -> KeySnapshot:
    """ValueError when the value is not a snapshot."""
    line, sep, rest = value.partition(b"\n")
    if not sep:
        raise ValueError("not a key snapshot (no header line)")
    head = json.loads(line)
    snap = KeySnapshot(int(head["covered"]), str(head["node"]), int(head["lease"]))
    at = 0
    for name, meta in head["streams"].items():
        size = int(meta["size"])
        snap.blobs[name] = (meta["river"], meta["sha256"], rest[at : at + size])
        snap.samples[name] = int(meta["samples"])
        at += size
    return snap


def learners(
    snap: KeySnapshot, streams: Mapping[str, StreamConfig], key: str
) -> dict[str, Learner]:
    """The learners of the streams still configured; SnapshotError if one is unusable."""
    out = {}
    for name, (river, sha, blob) in snap.blobs.items():
        if name in streams:
            out[name] = snapshot.load(streams[name], key, blob, sha, river)
    return out
