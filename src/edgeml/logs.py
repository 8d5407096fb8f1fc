"""structlog setup (JSON lines for journald, readable on a TTY) and rate-limited warnings."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import structlog

__all__ = ["RateLimitedLog", "configure"]


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Route structlog and stdlib logging (aiomqtt, paho, aiosqlite) through one renderer."""
    json_logs = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.dict_tracebacks] if json_logs else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_SyslogPrefix(formatter) if _stdout_is_journal() else formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiomqtt sets its "mqtt" logger to WARNING on import; paho's chatter stays at INFO+.
    logging.getLogger("edgeml.mqtt").setLevel(max(logging.INFO, root.level))


def _stdout_is_journal() -> bool:
    """True when stdout is systemd's journal stream (JOURNAL_STREAM names its device:inode)."""
    try:
        dev, ino = (int(x) for x in os.environ.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(sys.stdout.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class _SyslogPrefix(logging.Formatter):
    """`<4>` before a line: journald files it with that priority and strips the prefix, so
    `journalctl -p warning` works and `journalctl -o cat` still shows bare JSON."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_priority(record.levelno)}>{self._inner.format(record)}"


def _priority(level: int) -> int:
    """A logging level as a syslog priority (debug 7, info 6, warning 4, error 3, critical 2)."""
    for threshold, priority in ((20, 7), (30, 6), (40, 4), (50, 3)):
        if level < threshold:
            return priority
    return 2


class RateLimitedLog:
    """At most `burst` lines per bucket per `window_s`; the next says how many were held back."""

    def __init__(
        self,
        logger: Any,
        burst: int = 5,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._burst = burst
        self._window = window_s
        self._clock = clock
        self._state: dict[str, list[float]] = {}  # bucket -> [window start, count, suppressed]

    def warning(self, event: str, bucket: str, /, **fields: Any) -> None:
        self._emit(self._log.warning, event, bucket, fields)

    def error(self, event: str, bucket: str, /, **fields: Any) -> None:
        self._emit(self._log.error, event, bucket, fields)

    def _emit(
        self, emit: Callable[..., Any], event: str, bucket: str, fields: dict[str, Any]
    ) -> None:
        now = self._clock()
        state = self._state.get(bucket)
        if state is None or now - state[0] >= self._window:
            suppressed = int(state[2]) if state else 0
            state = self._state[bucket] = [now, 0.0, 0.0]
            if suppressed:
                fields["suppressed"] = suppressed
        if state[1] < self._burst:
            state[1] += 1
            emit(event, **fields)
        else:
            state[2] += 1
