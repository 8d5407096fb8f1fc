"""TOML file -> Config; every error names the file and the dotted key. Also the warnings
`edgeml check` and the daemon print about a config that is valid but risky.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from edgeml.config.model import Config, StreamConfig
from edgeml.errors import ConfigError

__all__ = ["load", "warnings_for"]


def _known_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """Field names that are valid at the location of an unknown key."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = _model_of(field.annotation)
        if current is None:
            return []
    # A key written under another name than its field's (`schema`) is known by that name.
    return [
        f.validation_alias if isinstance(f.validation_alias, str) else name
        for name, f in current.model_fields.items()
    ]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _format(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            hint = difflib.get_close_matches(str(loc[-1]), _known_keys(Config, loc), n=1)
            msg = "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            # A check across a table's keys says which key it is about: "target: ...".
            key, sep, rest = msg.partition(": ")
            if sep and key in _known_keys(Config, (*loc, key)):
                dotted, msg = f"{dotted}.{key}", rest
            elif sep and not loc and key.split(".")[0] in Config.model_fields:
                dotted, msg = key, rest  # a check across tables names its own key
        lines.append(f"{path}: {dotted}: {msg}")
    return "\n".join(lines)


def load(path: Path | str) -> Config:
    """Read and validate a config file; raise ConfigError naming the file and every bad key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if "source" in raw:
        raise ConfigError(f"{path}: source: unknown key")
    if "stream" not in raw:
        raise ConfigError(f"{path}: stream: at least one [[stream]] is required")
    try:
        cfg = Config.model_validate({**raw, "source": path})
    except ValidationError as exc:
        raise ConfigError(_format(path, exc)) from None
    if not cfg.node.state_dir.is_absolute():
        # A relative state_dir is relative to the config file, so systemd and a shell agree.
        node = cfg.node.model_copy(update={"state_dir": path.parent / cfg.node.state_dir})
        cfg = cfg.model_copy(update={"node": node})
    return cfg


def warnings_for(cfg: Config) -> list[str]:
    """Things that are valid but risk the no-loss guarantee or a secret."""
    out: list[str] = []
    if cfg.mqtt.protocol == "3.1.1":
        out.append(
            "mqtt.protocol = '3.1.1': the broker sends at most 20 unacknowledged messages "
            "(mosquitto's max_inflight_messages), so every batch commits after at most 20; "
            "use protocol 5 for throughput"
        )
    if cfg.store.ack_before_sync:
        out.append(
            "store.ack_before_sync = true: readings are acknowledged before their commit is "
            "synced to storage, so a power cut or a kernel crash can lose acknowledged readings "
            "for good (the broker has forgotten them)"
        )
    if cfg.mqtt.password is not None:
        mode = cfg.source.stat().st_mode if cfg.source.exists() else 0
        if mode & 0o004:
            out.append(
                f"{cfg.source} holds mqtt.password and is world-readable: "
                f"chmod o-r {cfg.source} (or use mqtt.password_file)"
            )
    for i, stream in enumerate(cfg.stream):
        out.extend(_anomaly_warnings(cfg.source, i, stream))
    if cfg.ingest.backend == "mqtt" and cfg.mqtt.host in ("localhost", "127.0.0.1", "::1"):
        out.extend(_local_broker_warnings(Path("/etc/mosquitto/mosquitto.conf"), cfg.mqtt.port))
    return out


def _anomaly_warnings(source: Path, i: int, stream: StreamConfig) -> list[str]:
    """Keys that an earlier edgeml used and this one ignores."""
    where, given = f"{source}: stream.{i}.anomaly", stream.anomaly.model_fields_set
    out = []
    if "quantile" in given:
        out.append(f"{where}.quantile is ignored: the detectors calibrate their own threshold")
    if "cooldown" in given:
        out.append(
            f"{where}.cooldown is ignored: alerts are episodes now; [stream.alert] cooldown "
            "holds back the next episode of a key after one ends"
        )
    return out


def _local_broker_warnings(conf: Path, port: int = 1883) -> list[str]:
    """Read a local mosquitto.conf (and its conf.d) for the settings the no-loss guarantee
    needs; nothing when that broker does not listen on `port` (another broker is ours).
    """
    try:
        text = conf.read_text()
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "include_dir":
                for extra in sorted(Path(parts[1]).glob("*.conf")):
                    text += "\n" + extra.read_text()
    except OSError:
        return []
    settings: dict[str, str] = {}
    ports: set[str] = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#"):
            settings[parts[0]] = parts[1]
            if parts[0] in ("listener", "port"):
                ports.add(parts[1])
    if str(port) not in (ports or {"1883"}):  # without a listener, mosquitto takes 1883
        return []
    out = []
    if settings.get("persistence", "false") != "true":
        out.append(
            f"{conf}: persistence is off, so a broker restart forgets edgeml's session and the "
            "messages queued for it (set 'persistence true')"
        )
    queued = settings.get("max_queued_messages", "1000")
    if queued.isdigit() and 0 < int(queued) < 100_000:
        out.append(
            f"{conf}: max_queued_messages is {queued}: while edgeml is down the broker keeps only "
            "that many readings for it and drops the rest (0 = no limit)"
        )
    return out
