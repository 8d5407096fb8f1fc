"""Redelivery detection: a message the store already holds is acknowledged, not learned again.

A transport that redelivers (MQTT: DUP set, the same packet id) after a crash or a reconnect
between commit and ack gives the same `dedup` id; with the same topic and payload, it is the
same message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from edgeml.records import Delivery

__all__ = ["Redeliveries", "delivery_hash"]


def delivery_hash(topic: str, payload: bytes) -> int:
    """A signed 64-bit fingerprint of one message, as SQLite stores integers."""
    digest = hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Redeliveries:
    """dedup id -> fingerprint of the latest acknowledged-to-be delivery with that id."""

    def __init__(self, recent: Mapping[int, int]) -> None:
        self._recent = dict(recent)

    def fingerprint(self, d: Delivery) -> int | None:
        """The message's fingerprint, None for a delivery that is never redelivered."""
        return None if d.ack is None else delivery_hash(d.topic, d.payload)

    def is_repeat(self, d: Delivery, fingerprint: int | None) -> bool:
        if not d.redelivered or fingerprint is None or d.dedup is None:
            return False
        return self._recent.get(d.dedup) == fingerprint

    def remember(self, d: Delivery, fingerprint: int | None) -> None:
        self.remember_id(d.dedup, fingerprint)

    def remember_id(self, dedup: int | None, fingerprint: int | None) -> None:
        if fingerprint is not None and dedup is not None:
            self._recent[dedup] = fingerprint
