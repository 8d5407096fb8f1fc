"""The configuration as frozen, validated pydantic models; cross-field rules name their key."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

from edgeml.config.alert import AlertConfig, AnomalyConfig
from edgeml.config.base import Frozen as _Frozen
from edgeml.config.base import PositiveDuration, parse_duration
from edgeml.config.homeassistant import HomeAssistantConfig, StreamHomeAssistant
from edgeml.config.http import HttpConfig
from edgeml.config.nats import IngestConfig, NatsConfig, check_cluster
from edgeml.config.payloads import (
    check_field,
    check_filters,
    check_key,
    check_payload_rules,
    check_timezone,
    check_value_map,
)
from edgeml.errors import ConfigError

__all__ = [
    "DEFAULT_PRESET",
    "EARLIER_DEFAULT",
    "PRESET_TASKS",
    "AlertConfig",
    "AnomalyConfig",
    "Config",
    "DriftConfig",
    "ForecastConfig",
    "HomeAssistantConfig",
    "HttpConfig",
    "LogConfig",
    "ModelsConfig",
    "MqttConfig",
    "NodeConfig",
    "RetrainConfig",
    "StoreConfig",
    "StreamConfig",
    "StreamHomeAssistant",
    "TlsConfig",
    "parse_duration",
]

# A name that can be one MQTT topic level and one file-name-safe identifier.
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class NodeConfig(_Frozen):
    id: str = Field(default_factory=socket.gethostname)
    state_dir: Path = Path("./state")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} must be 1-64 letters, digits, '_', '.' or '-'")
        return v


class TlsConfig(_Frozen):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: StrictBool = False


class MqttConfig(_Frozen):
    host: str = "localhost"
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 1883
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    client_id: str | None = None
    keepalive: Annotated[StrictInt, Field(ge=5, le=65535)] = 60
    protocol: Literal["5", "3.1.1"] = "5"
    receive_maximum: Annotated[StrictInt, Field(ge=1, le=65535)] = 1000
    session_expiry: str = "7d"
    topic_prefix: str = "edgeml"
    max_payload_bytes: Annotated[StrictInt, Field(ge=16)] = 65536
    tls: TlsConfig | None = None
    predict_requests: StrictBool = False  # MQTT 5: answer <prefix>/<node>/<stream>/<key>/predict

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, v: Any) -> Any:
        # `protocol = 5` (a number) is the natural way to write it in TOML.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("session_expiry")
    @classmethod
    def _expiry(cls, v: str) -> str:
        seconds = parse_duration(v)
        if not 0 < seconds <= 0xFFFFFFFE:
            raise ValueError("must be more than 0 and less than 136 years")
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or any(c in v for c in "+#\0") or v.startswith("/") or v.endswith("/"):
            raise ValueError(f"{v!r} must be a topic without wildcards or outer '/'")
        return v

    @model_validator(mode="after")
    def _password(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")
        return self

    @property
    def session_expiry_s(self) -> int:
        return int(parse_duration(self.session_expiry))

    def resolve_password(self) -> str | None:
        if self.password_file is None:
            return self.password
        try:
            return self.password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"mqtt.password_file: cannot read {self.password_file}: {exc}"
            ) from exc


class DriftConfig(_Frozen):
    delta: Annotated[StrictFloat, Field(gt=0, lt=1)] = 0.002
    # A fresh or just-promoted model's error moves while it learns (a growing tree's error
    # jumps when it restructures); ADWIN starts watching only after this many labelled
    # samples, so learning is not mistaken for drift. 500: no false alarm on the stationary
    # prefix of bench/quality.py's sensor stream for any preset.
    warmup: Annotated[StrictInt, Field(ge=0, le=1_000_000)] = 500


class RetrainConfig(_Frozen):
    policy: Literal["challenger", "reset", "none"] = "challenger"
    grace: Annotated[StrictInt, Field(ge=10, le=1_000_000)] = 200
    max_warm_start: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = 1000
    every: PositiveDuration | None = None

    @property
    def every_s(self) -> float | None:
        return None if self.every is None else parse_duration(self.every)


class ForecastConfig(_Frozen):
    lags: Annotated[StrictInt, Field(ge=1, le=1000)] = 3
    horizon: Annotated[StrictInt, Field(ge=1, le=1000)] = 1
    time_features: StrictBool = False
    # The seasonal preset also looks one season back (in samples: 24 for hourly readings).
    season: Annotated[StrictInt, Field(ge=2, le=10_000)] = 24


Task = Literal["regression", "classification", "anomaly", "forecast"]

# Which presets serve which task (the River pipelines themselves are in edgeml.learn.presets,
# which this module must not import: River takes seconds to import and most CLI commands
# never need it).
PRESET_TASKS: dict[str, tuple[Task, ...]] = {
    "auto": ("regression", "classification", "forecast"),
    "linear": ("regression", "forecast"),
    "logistic": ("classification",),
    "robust": ("anomaly",),
    "halfspace": ("anomaly",),
    "tree": ("regression", "classification", "forecast"),
    "forest": ("regression", "classification", "forecast"),
    "seasonal": ("forecast",),
}
DEFAULT_PRESET: dict[str, str] = {
    "regression": "auto",
    "classification": "auto",
    "anomaly": "robust",
    "forecast": "auto",
}
# The default before `auto` (edgeml 0.1): a snapshot of a stream that named no model holds
# one of these, and comes back as what it was (see StreamConfig.model_default).
EARLIER_DEFAULT: dict[str, str] = {
    "regression": "linear",
    "classification": "logistic",
    "anomaly": "robust",
    "forecast": "linear",
}
ParamValue = StrictBool | StrictInt | StrictFloat | str


class StreamConfig(_Frozen):
    name: str
    topic: str | tuple[str, ...]  # a filter, or a list of them (`topics`)
    key: str | None = None
    task: Task = "regression"
    target: str | None = None
    # anomaly: a payload field that flags known anomalies (ground truth for the metrics).
    label: str | None = None
    features: tuple[str, ...] | None = None
    timestamp: str | None = None
    model: str = ""  # "" = the task's default preset
    params: dict[str, ParamValue] = Field(default_factory=dict)
    rolling_window: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = 500
    publish: Literal["all", "anomalies", "none"] = "all"
    # A key that sends nothing this long raises a `silent` event: a duration, "auto" (10 of
    # its typical intervals, at least a minute) or "off".
    silent_after: str = "auto"
    drift: DriftConfig = DriftConfig()
    retrain: RetrainConfig = RetrainConfig()
    anomaly: AnomalyConfig = AnomalyConfig()
    alert: AlertConfig = AlertConfig()
    forecast: ForecastConfig = ForecastConfig()
    # What a message is (docs/configuration.md#what-a-message-is): JSON, or one value whose
    # field is named by the topic.
    payload: Literal["json", "value"] = "json"
    field: str | None = None
    value_map: dict[str, StrictInt | StrictFloat] = Field(default_factory=dict)
    value_map_defaults: StrictBool = True
    timestamp_tz: str = "UTC"
    retained: Literal["skip", "learn"] = "skip"
    dedupe: Literal["off", "identical"] | None = None  # None: by `payload`, set below
    join_window: str = "0s"
    join_on: Literal["target", "any"] = "target"
    homeassistant: StreamHomeAssistant = StreamHomeAssistant()

    @field_validator("silent_after")
    @classmethod
    def _silent_after(cls, v: str) -> str:
        if v not in ("auto", "off"):
            parse_duration(v)
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} must be 1-64 letters, digits, '_', '.' or '-'")
        return v

    _topic = field_validator("topic")(staticmethod(check_filters))
    _key = field_validator("key")(staticmethod(check_key))
    _field = field_validator("field")(staticmethod(check_field))
    _value_map = field_validator("value_map")(staticmethod(check_value_map))
    _timestamp_tz = field_validator("timestamp_tz")(staticmethod(check_timezone))

    @field_validator("join_window")
    @classmethod
    def _join_window(cls, v: str) -> str:
        if not 0 <= parse_duration(v) <= 3600:
            raise ValueError("must be from '0s' (no join) to '1h'")
        return v

    @model_validator(mode="after")
    def _cross(self) -> StreamConfig:
        if not self.model:
            object.__setattr__(self, "model", DEFAULT_PRESET[self.task])
        tasks = PRESET_TASKS.get(self.model)
        if tasks is None:
            raise ValueError(
                f"model: unknown preset {self.model!r}; presets: {', '.join(PRESET_TASKS)}"
            )
        if self.task not in tasks:
            fits = [name for name, t in PRESET_TASKS.items() if self.task in t]
            raise ValueError(
                f"model: preset {self.model!r} does not do {self.task}; "
                f"for {self.task} use {', '.join(fits)}"
            )
        if self.task == "anomaly":
            if self.target is not None:
                raise ValueError(
                    "target: an anomaly stream has no target (label names a ground-truth field)"
                )
        elif self.target is None:
            raise ValueError(f"target: required for a {self.task} stream")
        elif self.label is not None:
            raise ValueError("label: only an anomaly stream takes a ground-truth label field")
        if self.features is not None:
            if self.target in self.features:
                raise ValueError(f"target {self.target!r} is also listed in features")
            if len(set(self.features)) != len(self.features):
                raise ValueError("features lists a field twice")
        check_payload_rules(self)
        if self.dedupe is None:
            object.__setattr__(self, "dedupe", "identical" if self.payload == "value" else "off")
        return self

    @property
    def model_default(self) -> bool:
        """Whether `model` was left out (the task's default preset stands in for it)."""
        return "model" not in self.model_fields_set

    @property
    def excluded(self) -> tuple[str, ...]:
        """Fields that are never features: target, label, key and timestamp."""
        fields = (self.target, self.label, self.key_field, self.timestamp)
        return tuple(f for f in fields if f)

    @property
    def topics(self) -> tuple[str, ...]:
        return (self.topic,) if isinstance(self.topic, str) else self.topic

    @property
    def join_window_s(self) -> float:
        return parse_duration(self.join_window)

    @property
    def key_field(self) -> str | None:
        return self.key[6:] if self.key and self.key.startswith("field:") else None

    @property
    def key_level(self) -> int | None:
        return int(self.key[6:]) if self.key and self.key.startswith("topic:") else None


class StoreConfig(_Frozen):
    flush_interval_ms: Annotated[StrictInt, Field(ge=0, le=60_000)] = 200
    batch_size: Annotated[StrictInt, Field(ge=1, le=100_000)] = 500
    summary_interval: PositiveDuration = "2s"
    retention: PositiveDuration = "7d"
    # Opt-in, and named for its risk: acknowledge a reading once its commit is written, before
    # it is synced to storage. Faster on a slow card; a power cut can lose acknowledged readings.
    ack_before_sync: StrictBool = False


class ModelsConfig(_Frozen):
    snapshot_interval: PositiveDuration = "5m"
    keep_snapshots: Annotated[StrictInt, Field(ge=1, le=100)] = 3
    max_live: Annotated[StrictInt, Field(ge=1)] = 1000


class LogConfig(_Frozen):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Frozen):
    node: NodeConfig = NodeConfig()
    mqtt: MqttConfig = MqttConfig()
    store: StoreConfig = StoreConfig()
    models: ModelsConfig = ModelsConfig()
    log: LogConfig = LogConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    http: HttpConfig = HttpConfig()
    ingest: IngestConfig = IngestConfig()
    nats: NatsConfig = NatsConfig()
    stream: tuple[StreamConfig, ...]
    source: Path = Path("config.toml")

    # A field validator, not min_length or a model validator: it runs only when every stream
    # is valid (so no "0 items" line when they all fail) and its errors are located at `stream`.
    @field_validator("stream")
    @classmethod
    def _streams(cls, v: tuple[StreamConfig, ...]) -> tuple[StreamConfig, ...]:
        if not v:
            raise ValueError("at least one [[stream]] is required")
        names = [s.name for s in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stream names must be unique: {', '.join(dupes)} used twice")
        return v

    @model_validator(mode="after")
    def _cluster(self) -> Config:
        if self.ingest.backend == "nats":
            try:
                check_cluster(self.stream, self.nats)
            except ValueError as exc:
                raise ValueError(f"stream.{exc}") from None
        return self

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"edgeml-{self.node.id}"

    @property
    def db_path(self) -> Path:
        return self.node.state_dir / "edgeml.db"

    @property
    def status_topic(self) -> str:
        return f"{self.mqtt.topic_prefix}/{self.node.id}/status"

    @property
    def events_topic(self) -> str:
        return f"{self.mqtt.topic_prefix}/{self.node.id}/events"
