"""`edgeml decode`: what each stream would make of one message, without a broker or a model.

The first thing to run when a stream stays empty: it uses the daemon's own decoder.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeml.cli.common import ConfigOpt, load_or_exit
from edgeml.config import Config
from edgeml.core.decode import Decoder, Partial, decode_all
from edgeml.core.values import compile_path, get
from edgeml.records import Reject, Sample

__all__ = ["decode", "describe"]


def decode(
    topic: Annotated[str, typer.Option(help="The topic the message came on.")],
    payload: Annotated[str, typer.Option(help="The payload as text ('' for an empty one).")],
    retained: Annotated[
        bool, typer.Option("--retained", help="As a retained message (the broker's copy).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON, for scripts.")] = False,
    config: ConfigOpt = Path("config.toml"),
) -> None:
    """For every stream whose topic filter matches: the sample the message would make (key,
    time, features, target or label), the fields it brings to a join, or why it is rejected.
    Exit 0 if some stream accepts it, 1 if none does.
    """
    cfg = load_or_exit(config)
    decoders = [Decoder(s, cfg.mqtt.max_payload_bytes) for s in cfg.stream]
    _, results = decode_all(decoders, topic, payload.encode(), time.time(), retained)
    rows = [describe(r) for r in results]
    for row in rows:
        note = _naive_time(cfg, row, payload)
        if note:
            row["note"] = note
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif not rows:
        typer.echo(f"no stream's topic filter matches {topic!r}")
    for row in [] if as_json else rows:
        typer.echo(_line(row))
        if "note" in row:
            typer.echo(f"  note: {row['note']}")
    if not any(row["result"] != "reject" for row in rows):
        raise typer.Exit(1)


def describe(r: Sample | Partial | Reject) -> dict[str, Any]:
    """One stream's result as the JSON `edgeml decode --json` prints."""
    if isinstance(r, Reject):
        return {"stream": r.stream, "result": "reject", "reason": r.reason.value,
                "detail": r.detail}  # fmt: skip
    row: dict[str, Any] = {"stream": r.stream, "result": "sample", "key": r.key, "ts": r.ts,
                           "time": _iso(r.ts)}  # fmt: skip
    if isinstance(r, Partial):
        return {**row, "result": "join", "fields": r.fields}
    return {**row, "x": r.x, "y": r.y, "label": r.label}


def _naive_time(cfg: Config, row: dict[str, Any], payload: str) -> str | None:
    """A timestamp without a UTC offset is read in `timestamp_tz`: say so, it is easy to miss
    (Tasmota's `Time` is local time).
    """
    stream = next(s for s in cfg.stream if s.name == row["stream"])
    if row["result"] == "reject" or stream.timestamp is None:
        return None
    try:
        raw = get(json.loads(payload), compile_path(stream.timestamp))
        naive = isinstance(raw, str) and datetime.fromisoformat(raw).tzinfo is None
    except (ValueError, TypeError, RecursionError):
        return None
    if not naive:
        return None
    return (
        f"{stream.timestamp} {raw!r} has no UTC offset: read as {stream.timestamp_tz} time"
        " (stream.timestamp_tz)"
    )


def _line(row: dict[str, Any]) -> str:
    if row["result"] == "reject":
        return f"{row['stream']}: rejected, {row['reason']}: {row['detail']}"
    head = f"{row['stream']}: key {row['key']!r}, time {row['time']}"
    if row["result"] == "join":
        return f"{head}, waits in the join with {_compact(row['fields'])}"
    target = f"label {row['label']!r}" if row["y"] is None else f"y {row['y']!r}"
    return f"{head}, {target}, x {_compact(row['x'])}"


def _compact(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(", ", ": "))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
