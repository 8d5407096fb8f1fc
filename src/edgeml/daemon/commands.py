"""The CLI's command channel: rows in the `commands` table, applied by the running daemon
(within 2 s) or at its next start, each with a result row the CLI shows.
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Awaitable, Callable

import structlog

from edgeml.core.batch import CommandResult
from edgeml.core.engine import Engine
from edgeml.core.messages import Outgoing
from edgeml.daemon.recovery import Recovery
from edgeml.learn import Learner
from edgeml.records import Request
from edgeml.store.writer import Command, Store

__all__ = ["CommandError", "apply_commands"]

log = structlog.get_logger("edgeml.daemon")


class CommandError(Exception):
    """A command that cannot be applied; its message is the result the CLI shows."""


async def apply_commands(
    store: Store,
    engine: Engine,
    recovery: Recovery,
    out: list[Outgoing],
    flush: Callable[[Engine], Awaitable[None]],
) -> None:
    """Apply what the CLI asked for (retrain, rollback, import); each gets a result row."""
    for cmd in await store.pending_commands():
        try:
            result = await _apply(store, engine, recovery, cmd, out, flush)
            status = "done"
        except CommandError as exc:
            result, status = str(exc), "failed"
        log.info("command_applied", id=cmd.id, kind=cmd.kind, stream=cmd.stream,
                 key=cmd.key, status=status, result=result)  # fmt: skip
        engine.batch.command_results.append(
            CommandResult(status, json.dumps(result), time.time(), cmd.id)
        )


async def _apply(
    store: Store,
    engine: Engine,
    recovery: Recovery,
    cmd: Command,
    out: list[Outgoing],
    flush: Callable[[Engine], Awaitable[None]],
) -> str:
    if cmd.kind == "snapshot":
        # `models export` asks first, so a bundle holds each model as it is now.
        taken = engine.add_snapshots("export")
        await flush(engine)
        return f"{taken} models snapshotted"
    sk = (cmd.stream, cmd.key)
    if cmd.stream not in engine.streams:
        raise CommandError(f"no stream {cmd.stream!r} in the running config")
    if sk not in engine.series and cmd.kind == "import":
        # Seeding a new device with a trained model: the key starts with it.
        engine.create(cmd.stream, cmd.key)
    sid = engine.series.get(sk)
    if sid is None:
        raise CommandError(f"{cmd.stream}/{cmd.key} has no model yet")
    if sk not in engine.learners:
        await recovery.bring_back(engine, [sk])
    learner = engine.learners[sk]
    if cmd.kind == "retrain":
        await flush(engine)
        return await _retrain(store, engine, cmd, sid, learner, out)
    version = max(await store.max_version(sid), learner.latest_version) + 1
    if cmd.kind == "rollback":
        to = int(cmd.args["to"])
        if to == learner.model_version:
            raise CommandError(f"version {to} is already the champion")
        blob_or_none = await store.version_blob(sid, to)
        if blob_or_none is None:
            raise CommandError(f"{cmd.stream}/{cmd.key} has no version {to}")
        blob, reason = blob_or_none, "rollback"
    elif cmd.kind == "import" and cmd.blob is not None:
        blob, reason = bytes(cmd.blob), "import"
    else:
        raise CommandError(f"unknown command {cmd.kind!r}")
    try:
        model = pickle.loads(blob)
    except Exception as exc:  # a model that does not unpickle is refused, whatever the cause
        raise CommandError(f"the model does not load: {type(exc).__name__}: {exc}") from exc
    engine.promote(cmd.stream, cmd.key, model, version, reason, out)
    if reason == "rollback":
        return f"version {version} is the champion: the model of version {to}"
    return f"version {version} is the champion: the imported model"


async def _retrain(
    store: Store, engine: Engine, cmd: Command, sid: int, learner: Learner, out: list[Outgoing]
) -> str:
    """The same path as a drift: a challenger warm-started on the newest samples."""
    n = int(cmd.args.get("samples", learner.stream.retrain.max_warm_start))
    request = Request("challenger", "manual", learner.last_seq, n)
    rows = await store.recent_samples(sid, n)
    if not rows:
        raise CommandError(f"{cmd.stream}/{cmd.key} has no stored samples to train on")
    events = engine.start_challenger((cmd.stream, cmd.key), request, rows, out)
    if any(e.kind == "promotion" for e in events):
        return (
            f"version {learner.model_version} is the champion: a fresh model trained "
            f"on the newest {len(rows)} samples (policy reset)"
        )
    return (
        f"a challenger trained on the newest {len(rows)} samples is in its grace "
        f"period: it becomes the champion only if its error is reliably lower within "
        f"{learner.stream.retrain.grace} samples (see `edgeml events --kind promotion`)"
    )
