"""The learner task's housekeeping timers, and what the process has written to storage."""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["Every", "bytes_written"]


def bytes_written() -> int | None:
    """Bytes this process caused to be written to storage (Linux), for the SD-card budget."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class Every:
    """A housekeeping job that is due every `seconds` (monotonic clock)."""

    def __init__(self, seconds: float, at_once: bool = False) -> None:
        self.seconds = seconds
        self.last = time.monotonic() - (seconds if at_once else 0.0)

    @property
    def next(self) -> float:
        return self.last + self.seconds

    def due(self, now: float) -> bool:
        """True (and the clock restarts) when the job is due."""
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True
