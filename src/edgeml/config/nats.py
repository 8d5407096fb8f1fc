"""`[ingest]` (which source feeds the daemon) and `[nats]` (a JetStream cluster of nodes)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import Field, StrictInt, field_validator, model_validator

from edgeml.config.base import Frozen, PositiveDuration, parse_duration
from edgeml.partitions import mapping

__all__ = ["IngestConfig", "NatsConfig", "NatsTlsConfig", "check_cluster"]

# JetStream stream and KV bucket names: one subject token, no wildcards or dots.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class IngestConfig(Frozen):
    # "mqtt": one node reads the broker (the default); "nats": nodes share the devices
    # through a JetStream stream partitioned by key (docs/scale.md).
    backend: Literal["mqtt", "nats"] = "mqtt"


class NatsTlsConfig(Frozen):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class NatsConfig(Frozen):
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    credentials_file: Path | None = None
    tls: NatsTlsConfig | None = None
    stream: str = "EDGEML_IN"
    output_stream: str = "EDGEML_OUT"
    # Fixed for the life of the stream: the server maps each key to partition
    # fnv1a(key) % partitions, and the snapshots are filed under it.
    partitions: Annotated[StrictInt, Field(ge=1, le=1024)] = 64
    lease_ttl: PositiveDuration = "3s"
    lease_bucket: str = "edgeml_leases"
    snapshot_bucket: str = "edgeml_snapshots"
    # How long JetStream remembers an output's Nats-Msg-Id: longer than any failover.
    dedup_window: PositiveDuration = "10m"
    # How many readings wait in the node before it stops taking more from the stream.
    max_pending: Annotated[StrictInt, Field(ge=16)] = 2000
    replicas: Annotated[StrictInt, Field(ge=1, le=5)] = 1

    @field_validator("stream", "output_stream", "lease_bucket", "snapshot_bucket")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} must be 1-64 letters, digits, '_' or '-'")
        return v

    @field_validator("servers")
    @classmethod
    def _servers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one server, e.g. 'nats://127.0.0.1:4222'")
        return v

    @field_validator("lease_ttl")
    @classmethod
    def _ttl(cls, v: str) -> str:
        if parse_duration(v) < 1:
            raise ValueError("must be at least '1s' (renewals go out every quarter of it)")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> NatsConfig:
        if self.stream == self.output_stream:
            raise ValueError("output_stream: must differ from stream")
        if self.lease_bucket == self.snapshot_bucket:
            raise ValueError("snapshot_bucket: must differ from lease_bucket")
        return self

    @property
    def lease_ttl_s(self) -> float:
        return parse_duration(self.lease_ttl)

    @property
    def dedup_window_s(self) -> float:
        return parse_duration(self.dedup_window)


class _Stream(Protocol):
    """What check_cluster reads of a StreamConfig."""

    @property
    def key_level(self) -> int | None: ...
    @property
    def join_window_s(self) -> float: ...
    @property
    def topics(self) -> tuple[str, ...]: ...


def check_cluster(streams: Sequence[_Stream], nats: NatsConfig) -> None:
    """What `backend = "nats"` needs of the streams: each key a `+` level of its topics (the
    server partitions by it), one key level per topic, no joins across messages.
    """
    levels: dict[str, int] = {}
    for i, s in enumerate(streams):
        level = s.key_level
        if level is None:
            raise ValueError(f"{i}.key: with backend 'nats' the key must be 'topic:N'")
        if s.join_window_s > 0:
            raise ValueError(f"{i}.join_window: joins are not available with backend 'nats'")
        for topic in s.topics:
            try:
                mapping(topic, level, nats.stream, nats.partitions)
            except ValueError as exc:
                raise ValueError(f"{i}.topic: {exc}") from None
            if levels.setdefault(topic, level) != level:
                raise ValueError(f"{i}.key: {topic!r} is read with two key levels")
