"""A full disk is a state, not a crash: the writer waits it out, and this is where it is kept.

`DiskGuard.write` commits a batch; when the file system is full it keeps the batch, tells
the world once (one error log line, the systemd status line, `edgeml status`), and tries the
same batch again with back-off until it commits, or until the daemon is told to stop. The
learner runs ahead of the writer by at most the batch queue, so what is learned and not yet
stored is bounded, and it is stored in learning order once space returns: the log and the
models never part, and nothing is acknowledged before it is stored.

`DiskGuard.state` is the one place the disk's state lives (for `Daemon.status()` and a
future HTTP health check). `edgeml status` runs in another process and cannot read it from
the SQLite file, which the full disk stops the daemon from writing: the daemon mirrors it
into `disk.json` beside the file, 4 KiB allocated at start and overwritten in place, which
needs no new block on a full file system. It is kept across restarts for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from edgeml.core.batch import Batch
from edgeml.errors import DiskFull
from edgeml.store.queries import DISK_FILE, free_bytes
from edgeml.store.writer import Store

__all__ = ["DiskGuard", "DiskState"]

log = structlog.get_logger("edgeml.daemon")

T = TypeVar("T")

_FILE_SIZE = 4096
FIRST_RETRY_S = 0.5
MAX_RETRY_S = 15.0


def _size(n: int | None) -> str:
    if n is None:
        return "? free"
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit} free"
    return f"{n} B free"


@dataclass(slots=True)
class DiskState:
    """Whether the state file can be written; `full` from the first failed write until the
    next one that commits.
    """

    path: str
    full: bool = False
    since: float | None = None  # epoch s, when the current episode began
    error: str | None = None
    free_bytes: int | None = None  # when the last write failed
    retries: int = 0  # failed attempts in the current episode
    next_retry: float | None = None  # epoch s
    episodes: int = 0  # how many times the disk was full since the daemon started
    pid: int = 0
    updated: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["state"] = "full" if self.full else "ok"
        return doc

    def line(self) -> str:
        """The status line's part, or "" while the disk is fine."""
        if not self.full:
            return ""
        wait = max(0.0, (self.next_retry or time.time()) - time.time())
        return (
            f"disk full: {self.path} ({_size(self.free_bytes)}); not acknowledging, the broker "
            f"keeps the readings; retry {self.retries + 1} in {wait:.0f} s"
        )


class _StateFile:
    """disk.json: the state for other processes, rewritten in place (never grown)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return
        try:
            os.pwrite(fd, b" " * _FILE_SIZE, 0)  # allocate it now, while there is space
        except OSError:
            os.close(fd)
            return
        self._fd = fd

    def write(self, doc: dict[str, Any]) -> None:
        if self._fd is None:
            return
        data = json.dumps(doc, sort_keys=True).encode()[: _FILE_SIZE - 1]
        with contextlib.suppress(OSError):
            os.pwrite(self._fd, data.ljust(_FILE_SIZE), 0)

    def close(self) -> None:
        """At the stop. The file stays: the next daemon rewrites it in place, which needs no
        space (it could not create it on a full disk); readers ignore a dead pid's file.
        """
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class DiskGuard:
    """Commits batches through a full disk (see the module's docstring)."""

    def __init__(self, db_path: Path) -> None:
        self.state = DiskState(str(db_path), pid=os.getpid())
        with contextlib.suppress(OSError):
            db_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = _StateFile(db_path.with_name(DISK_FILE))
        self._publish()

    def close(self) -> None:
        self._file.close()

    def _publish(self) -> None:
        self.state.updated = time.time()
        self._file.write(self.state.as_dict())

    async def write(self, store: Store, batch: Batch, stop: asyncio.Event) -> bool:
        """Commit `batch`, waiting out a full disk. False: the daemon is stopping and the
        batch could not be stored (nothing of it is; its readings are not acknowledged).
        """

        async def attempt() -> bool:
            try:
                await store.write(batch)
            except DiskFull:
                # Retention comes back every summary interval; its deletes need WAL space
                # too, so the batch is tried again without them.
                batch.prune_before = None
                raise
            return True

        return await self.retry(attempt, stop) is not None

    async def retry(self, attempt: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T | None:
        """`attempt()` until it does not raise DiskFull, with back-off; None if `stop` is set
        and one more attempt (right after it was set) failed too.
        """
        delay = FIRST_RETRY_S
        while True:
            try:
                result = await attempt()
            except DiskFull as exc:
                self._failed(exc, delay)
                if stop.is_set():
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, MAX_RETRY_S)
                continue
            if self.state.full:
                self._recovered()
            return result

    def _failed(self, exc: DiskFull, delay: float) -> None:
        s = self.state
        now = time.time()
        if not s.full:
            s.full, s.since, s.retries = True, now, 0
            s.episodes += 1
            log.error(
                "disk_full",
                db=exc.path,
                free_bytes=exc.free_bytes,
                error=str(exc.__cause__ or exc),
                detail="not acknowledging: the broker keeps the readings; retrying with "
                "back-off, and resuming by itself when space returns",
            )
        else:
            s.retries += 1
        s.error, s.free_bytes = str(exc.__cause__ or exc), exc.free_bytes
        s.next_retry = now + delay
        self._publish()

    def _recovered(self) -> None:
        s = self.state
        log.info(
            "disk_space_returned",
            db=s.path,
            free_bytes=free_bytes(Path(s.path).parent),
            full_for_s=round(time.time() - (s.since or time.time()), 1),
            retries=s.retries,
        )
        s.full, s.next_retry, s.error = False, None, None
        s.free_bytes = free_bytes(Path(s.path).parent)
        self._publish()
