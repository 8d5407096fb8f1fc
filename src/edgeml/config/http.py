"""`[http]`: the daemon's HTTP surface (metrics, health, the read API, predictions, a page)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from edgeml.config.base import Frozen, PositiveDuration, parse_duration
from edgeml.errors import ConfigError

__all__ = ["DEFAULT_HTTP_PORT", "HttpConfig", "split_listen"]

# Prometheus's wiki of default port allocations hands out 9100-9999 to exporters; edgeml
# listens on 9883 unless told otherwise (see docs/http.md).
DEFAULT_HTTP_PORT = 9883


def split_listen(listen: str) -> tuple[str, int]:
    """`"127.0.0.1:9883"`, `"[::1]:9883"`, `"0.0.0.0:9883"` -> (host, port); ValueError."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{listen!r} must be HOST:PORT, e.g. '127.0.0.1:{DEFAULT_HTTP_PORT}'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class HttpConfig(Frozen):
    enabled: StrictBool = False
    listen: str = f"127.0.0.1:{DEFAULT_HTTP_PORT}"
    # A file holding a bearer token: every request must then carry `Authorization: Bearer ...`.
    token_file: Path | None = None
    # /metrics: series per stream/key (a few per key), for at most max_key_series keys.
    per_key: StrictBool = False
    max_key_series: Annotated[StrictInt, Field(ge=0, le=100_000)] = 100
    # /healthz answers 503 when the oldest received reading waits longer than this for its commit.
    max_commit_lag: PositiveDuration = "30s"

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        split_listen(v)
        return v

    @model_validator(mode="after")
    def _token(self) -> HttpConfig:
        host, _ = split_listen(self.listen)
        if self.enabled and self.token_file is None and not is_loopback(host):
            raise ValueError(
                f"token_file: required when listen ({self.listen!r}) is not a loopback address: "
                "the API reads the models and the readings, and anyone who can reach the port "
                "could; set token_file, or listen on 127.0.0.1"
            )
        return self

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    @property
    def max_commit_lag_s(self) -> float:
        return parse_duration(self.max_commit_lag)

    def resolve_token(self, base: Path) -> str | None:
        """The token, read from token_file (a relative path is relative to `base`, the
        config file's directory).
        """
        if self.token_file is None:
            return None
        path = self.token_file if self.token_file.is_absolute() else base / self.token_file
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"http.token_file: cannot read {path}: {exc}") from exc
        if not token:
            raise ConfigError(f"http.token_file: {path} is empty")
        return token
