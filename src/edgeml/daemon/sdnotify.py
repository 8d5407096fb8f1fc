"""systemd's notify protocol (READY, STATUS, WATCHDOG, STOPPING) over NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

__all__ = ["Notifier"]

log = structlog.get_logger("edgeml.sdnotify")

# When WatchdogSec= is not set, STATUS= and the start-up extension still go out this often.
_DEFAULT_INTERVAL_US = 10_000_000


def _address(value: str | None) -> str | None:
    """NOTIFY_SOCKET as an AF_UNIX address: a path, or `@name` for the abstract namespace."""
    if not value:
        return None
    if value[0] == "@":
        return "\0" + value[1:]
    if value[0] == "/":
        return value
    return None  # vsock:CID:PORT (systemd 253+ in VMs) is not handled


def _watchdog_us(env: Mapping[str, str]) -> int | None:
    """WATCHDOG_USEC, if systemd meant it for this process."""
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    try:
        if not usec or int(usec) <= 0 or (pid and int(pid) != os.getpid()):
            return None
        return int(usec)
    except ValueError:
        return None


class Notifier:
    """Talks to systemd when it started us (Type=notify); does nothing otherwise."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _address(env.get("NOTIFY_SOCKET"))
        if env.get("NOTIFY_SOCKET") and self.address is None:
            log.warning("sd_notify_unsupported", notify_socket=env.get("NOTIFY_SOCKET"))
        self.watchdog_us = _watchdog_us(env) if self.address else None
        # Half the watchdog timeout, as sd_watchdog_enabled(3) advises.
        self.interval_us = self.watchdog_us // 2 if self.watchdog_us else _DEFAULT_INTERVAL_US
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def interval(self) -> float:
        """Seconds between pings."""
        return self.interval_us / 1_000_000

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` lines as one datagram; False if not under systemd or not sent.

        The socket is non-blocking: a manager that is not reading must not stall the event
        loop, which would then miss the watchdog it is trying to feed.
        """
        if self.address is None:
            return False
        message = "\n".join(f.replace("\n", " ") for f in fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.setblocking(False)
                s.sendto(message, self.address)
        except OSError as exc:
            if not self._warned:  # once: the same failure would repeat on every ping
                self._warned = True
                log.warning("sd_notify_failed", error=str(exc), message=message.decode()[:200])
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def reloading(self) -> bool:
        # MONOTONIC_USEC is required by Type=notify-reload (systemd 253+) and ignored before.
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={now_us}")

    async def keepalive(self, ready: asyncio.Event, status: Callable[[], str]) -> None:
        """Ping systemd from the event loop until cancelled; a blocked loop stops the pings.

        Before `ready`, each ping extends the start-up timeout (EXTEND_TIMEOUT_USEC), so a
        daemon that waits for its broker is not killed while its loop is alive. After, each
        ping is WATCHDOG=1 (when WatchdogSec= is set), with STATUS= when the status changed.
        """
        if self.address is None:
            return
        last_status = ""
        while True:
            await asyncio.sleep(self.interval)
            fields: list[str] = []
            if not ready.is_set():
                fields.append(f"EXTEND_TIMEOUT_USEC={3 * self.interval_us}")
            elif self.watchdog_us:
                fields.append("WATCHDOG=1")
            text = status()
            if text != last_status:
                fields.append(f"STATUS={text}")
                last_status = text
            if fields:
                self.send(*fields)
