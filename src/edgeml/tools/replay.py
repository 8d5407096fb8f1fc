"""`edgeml replay`: historical CSV rows, checked by the stream's own decoder, published to MQTT."""

from __future__ import annotations

import asyncio
import csv
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeml.config import Config, StreamConfig, parse_duration
from edgeml.core.decode import Decoder, Partial
from edgeml.errors import EdgemlError
from edgeml.records import Reject, Sample
from edgeml.transport.mqtt import client_for

__all__ = ["ReplayResult", "parse_speed", "replay", "rows", "time_column_ignored", "topic_for"]

# QoS 1 messages in flight at once (packet ids must not wrap; see API_NOTES).
_WINDOW = 500


@dataclass
class ReplayResult:
    published: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)
    # Published rows whose own time is older than store.retention: learned, then pruned.
    beyond_retention: int = 0


def parse_speed(text: str) -> float | None:
    """`max` -> None (as fast as the broker takes them); `100x` -> 100.0."""
    if text == "max":
        return None
    if text.endswith("x"):
        try:
            factor = float(text[:-1])
        except ValueError:
            factor = 0.0
        if factor > 0:
            return factor
    raise EdgemlError(f"--speed {text!r}: give 'max' or a factor such as '100x'")


def _cell(text: str) -> Any:
    """A CSV cell as JSON would carry it: a number when it reads as one, else the text."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, the row as a JSON object) or (line number, why it is broken)."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise EdgemlError(f"{path}: cannot read: {exc}") from exc
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise EdgemlError(f"{path}: empty file") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise EdgemlError(f"{path}: not a CSV file: {exc}") from exc
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                yield reader.line_num, f"unreadable: {exc}"
                continue
            if not cells:
                continue
            if len(cells) != len(header):
                yield reader.line_num, f"{len(cells)} cells, the header has {len(header)}"
                continue
            yield reader.line_num, {h: _cell(c) for h, c in zip(header, cells, strict=True)}


# Column names that hold a reading's time in most exports.
_TIME_NAMES = ("timestamp", "time", "ts", "date", "datetime", "Time")


def time_column_ignored(stream: StreamConfig, path: Path) -> str | None:
    """A CSV column that looks like the rows' time while the stream reads none (the daemon
    would stamp each row with its arrival time instead); None when there is no such problem.
    """
    if stream.timestamp is not None:
        return None
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle), [])
    return next((h for h in header if h in _TIME_NAMES), None)


def topic_for(stream: StreamConfig, key: str | None) -> str:
    """A concrete topic the stream's filter matches, with the device key at its level."""
    levels = stream.topics[0].split("/")
    out = []
    for i, level in enumerate(levels):
        if level in ("+", "#"):
            out.append(key if key is not None and i == stream.key_level else "replay")
        else:
            out.append(level)
    return "/".join(out)


async def replay(
    cfg: Config,
    stream: StreamConfig,
    path: Path,
    key: str | None,
    speed: float | None,
    progress: Callable[[int], None] = lambda n: None,
) -> ReplayResult:
    """Publish every row that the stream's decoder accepts; report the others by line."""
    if stream.key_level is not None and key is None:
        raise EdgemlError(f"stream {stream.name!r} takes its key from the topic: give --key")
    if speed is not None and stream.timestamp is None:
        raise EdgemlError(
            f"--speed {speed:g}x keeps the rows' own spacing, and stream {stream.name!r} has no "
            "`timestamp` field to read it from: set one in its config, or give --speed max"
        )
    decoder = Decoder(stream, cfg.mqtt.max_payload_bytes)
    topic = topic_for(stream, key)
    result = ReplayResult()
    first_ts: float | None = None
    started = time.monotonic()
    # Retention counts from each reading's own time (docs/storage.md).
    oldest_kept = time.time() - parse_duration(cfg.store.retention)
    async with client_for(cfg.mqtt, max_inflight_messages=_WINDOW) as client:
        client.pending_calls_threshold = _WINDOW + 1
        pending: set[asyncio.Task[None]] = set()
        for line, row in rows(path):
            progress(line)
            if isinstance(row, str):
                result.bad.append((line, row))
                continue
            if stream.key_field is not None and key is not None:
                row.setdefault(stream.key_field, key)
            payload = json.dumps(row).encode()
            decoded = decoder.decode(topic, payload, time.time())
            if isinstance(decoded, Reject):
                result.bad.append((line, f"{decoded.reason.value}: {decoded.detail}"))
                continue
            if decoded.ts < oldest_kept:
                result.beyond_retention += 1
            if speed is not None and stream.timestamp is not None:
                await _pace(decoded, speed, started, first_ts)
                first_ts = decoded.ts if first_ts is None else first_ts
            if len(pending) >= _WINDOW:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            pending.add(asyncio.create_task(client.publish(topic, payload, qos=1)))
            result.published += 1
        if pending:
            await asyncio.gather(*pending)
    return result


async def _pace(
    sample: Sample | Partial, speed: float, started: float, first_ts: float | None
) -> None:
    """Keep the rows' own spacing, `speed` times faster."""
    if first_ts is None:
        return
    due = started + (sample.ts - first_ts) / speed
    await asyncio.sleep(max(0.0, due - time.monotonic()))
