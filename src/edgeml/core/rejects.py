"""Rejected payloads, tallied per stream into at most one `reject` event a minute."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

from edgeml.logs import RateLimitedLog
from edgeml.records import QUIET_REASONS, Reject

__all__ = ["REJECT_EVENT_EVERY_S", "RejectTally"]

# Rejected payloads become at most one `reject` event per stream in this many seconds.
REJECT_EVENT_EVERY_S = 60.0


@dataclass(slots=True)
class _Burst:
    """The payloads one stream rejected since its last `reject` event."""

    since: float
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    topic: str = ""
    detail: str = ""


class RejectTally:
    def __init__(self) -> None:
        # By (stream, reason), since start: /metrics reads it as it is, status by reason.
        self.by_stream: collections.Counter[tuple[str, str]] = collections.Counter()
        self._bursts: dict[str, _Burst] = {}

    @property
    def total(self) -> collections.Counter[str]:
        """By reason, since start."""
        out: collections.Counter[str] = collections.Counter()
        for (_, reason), n in self.by_stream.items():
            out[reason] += n
        return out

    def note(self, r: Reject, topic: str, warn: RateLimitedLog) -> None:
        """Count a reject; log it (rate-limited) unless it is expected on a healthy broker."""
        self.by_stream[(r.stream, r.reason.value)] += 1
        burst = self._bursts.get(r.stream)
        if burst is None:
            burst = self._bursts[r.stream] = _Burst(time.time())
        burst.reasons[r.reason.value] += 1
        burst.topic, burst.detail = topic, r.detail
        if r.reason not in QUIET_REASONS:
            warn.warning("payload_rejected", f"{r.stream}:{r.reason}", stream=r.stream,
                         topic=topic, reason=r.reason.value, detail=r.detail)  # fmt: skip

    def due(self, final: bool = False) -> list[dict[str, Any]]:
        """The fields of a `reject` event per stream whose first unreported reject is a
        minute old (or any, when `final`): how many, by reason, and the last one's topic
        and detail.
        """
        now = time.time()
        events = []
        for stream, burst in list(self._bursts.items()):
            if not final and now - burst.since < REJECT_EVENT_EVERY_S:
                continue
            del self._bursts[stream]
            events.append({"stream": stream, "key": None, "seq": None, "ts": now,
                           "since": burst.since, "count": burst.reasons.total(),
                           "reasons": dict(burst.reasons), "topic": burst.topic,
                           "detail": burst.detail})  # fmt: skip
        return events
