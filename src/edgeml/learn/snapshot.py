"""A learner <-> the bytes of a snapshot (pickle), checked by sha256 and River version."""

from __future__ import annotations

import hashlib
import pickle
from importlib.metadata import version

from edgeml.config import StreamConfig
from edgeml.learn.learner import Learner

__all__ = ["RIVER_VERSION", "SnapshotError", "dump", "load"]

RIVER_VERSION = version("river")


class SnapshotError(ValueError):
    """A snapshot that cannot be used; the message says why."""


def dump(learner: Learner) -> bytes:
    return pickle.dumps(learner.state(), protocol=pickle.HIGHEST_PROTOCOL)


def load(stream: StreamConfig, key: str, blob: bytes, sha256: str, river_version: str) -> Learner:
    """Check and unpickle a snapshot; SnapshotError if it is corrupt, foreign or does not fit."""
    if hashlib.sha256(blob).hexdigest() != sha256:
        raise SnapshotError("sha256 does not match: the snapshot is corrupt")
    if river_version != RIVER_VERSION:
        raise SnapshotError(f"made with River {river_version}, this is River {RIVER_VERSION}")
    try:
        state = pickle.loads(blob)
    except Exception as exc:  # unpickling can fail in many ways; all mean "unusable"
        raise SnapshotError(f"cannot unpickle: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise SnapshotError("not a learner's state")
    try:
        return Learner.from_state(stream, key, state)
    except ValueError as exc:
        raise SnapshotError(str(exc)) from exc
