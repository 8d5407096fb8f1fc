"""SIGHUP: compare the config file with the running config; apply what can change live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeml.config import Config
from edgeml.core.engine import Engine

__all__ = ["LIVE_KEYS", "Reload", "apply", "plan"]

# What a running daemon can take without a restart. `*` is a stream name.
LIVE_KEYS = ("log.level", "log.format", "stream.*.drift.delta")


@dataclass(frozen=True)
class Reload:
    """The outcome of comparing the running config with the file as it is now."""

    config: Config  # the running config with the live changes made: what is now in effect
    applied: tuple[str, ...]  # dotted keys changed live
    restart_needed: tuple[str, ...]  # dotted keys (or `stream.NAME`) that take a restart


Key = tuple[str, ...]


def _flatten(value: Any, prefix: Key, out: dict[Key, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, (*prefix, str(k)), out)
    else:
        out[prefix] = value


def _settings(cfg: Config) -> dict[Key, Any]:
    """Every setting by its path; a stream's by name (`stream`, `temp`, `topic`), not position."""
    out: dict[Key, Any] = {}
    _flatten(cfg.model_dump(mode="json", exclude={"stream", "source"}), (), out)
    for s in cfg.stream:
        _flatten(s.model_dump(mode="json"), ("stream", s.name), out)
    return out


def _live(key: Key) -> bool:
    if key[0] == "stream":
        return key[2:] == ("drift", "delta")
    return ".".join(key) in LIVE_KEYS


def plan(running: Config, new: Config) -> Reload:
    """What a reload from `running` to `new` changes live, and what it leaves for a restart.

    Streams are matched by name; a stream that was added or removed takes a restart, and so
    does any change to one other than its drift threshold. Values are never reported, only
    keys: a changed mqtt.password shows up as `mqtt.password`.
    """
    added_or_removed = {s.name for s in running.stream} ^ {s.name for s in new.stream}
    restart: list[Key] = [("stream", name) for name in added_or_removed]
    applied: list[Key] = []
    before, after = _settings(running), _settings(new)
    for key in before.keys() | after.keys():
        if before.get(key) == after.get(key):
            continue
        if key[0] == "stream" and key[1] in added_or_removed:
            continue
        if _live(key) and key in before and key in after:
            applied.append(key)
        else:
            restart.append(key)
    by_name = {s.name: s for s in new.stream}
    streams = tuple(
        s.model_copy(update={"drift": by_name[s.name].drift}) if s.name in by_name else s
        for s in running.stream
    )
    effective = running.model_copy(update={"log": new.log, "stream": streams})
    return Reload(
        effective,
        tuple(".".join(k) for k in sorted(applied)),
        tuple(".".join(k) for k in sorted(restart)),
    )


def apply(engine: Engine, cfg: Config) -> None:
    """Give the engine's models the drift thresholds of `cfg` (a config `plan` returned).

    A model whose threshold changed gets a new ADWIN with an empty window: River's ADWIN
    fixes delta when it is built. Models created from now on use the new value.
    """
    for stream in cfg.stream:
        if engine.streams.get(stream.name) == stream:
            continue
        engine.streams[stream.name] = stream
        for (name, _), learner in engine.learners.items():
            if name == stream.name:
                learner.use_stream(stream)
    engine.cfg = cfg
