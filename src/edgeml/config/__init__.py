"""TOML file -> frozen, validated configuration; every error names the file and the dotted key."""

from edgeml.config.loader import load, warnings_for
from edgeml.config.model import (
    DEFAULT_PRESET,
    PRESET_TASKS,
    AlertConfig,
    AnomalyConfig,
    Config,
    DriftConfig,
    ForecastConfig,
    HttpConfig,
    LogConfig,
    ModelsConfig,
    MqttConfig,
    NodeConfig,
    RetrainConfig,
    StoreConfig,
    StreamConfig,
    TlsConfig,
    parse_duration,
)

__all__ = [
    "DEFAULT_PRESET",
    "PRESET_TASKS",
    "AlertConfig",
    "AnomalyConfig",
    "Config",
    "DriftConfig",
    "ForecastConfig",
    "HttpConfig",
    "LogConfig",
    "ModelsConfig",
    "MqttConfig",
    "NodeConfig",
    "RetrainConfig",
    "StoreConfig",
    "StreamConfig",
    "TlsConfig",
    "load",
    "parse_duration",
    "warnings_for",
]
