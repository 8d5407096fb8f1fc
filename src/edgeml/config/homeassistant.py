"""`[homeassistant]` and `[stream.homeassistant]`: how edgeml shows up in Home Assistant."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, StrictBool, StrictInt, field_validator

from edgeml.config.base import Duration, Frozen, parse_duration

__all__ = ["HomeAssistantConfig", "StreamHomeAssistant"]

_TOPIC = re.compile(r"^[^+#\0]+$")


def _topic(v: str) -> str:
    if not _TOPIC.match(v) or v.startswith("/") or v.endswith("/"):
        raise ValueError(f"{v!r} must be a topic without wildcards or outer '/'")
    return v


class HomeAssistantConfig(Frozen):
    enabled: StrictBool = False
    discovery_prefix: str = "homeassistant"
    status_topic: str = "homeassistant/status"
    # "device": one config per HA device (HA 2024.11 and later); "component": one per entity.
    schema_: Literal["device", "component"] = Field(default="device", validation_alias="schema")
    # Configs and states are announced after a uniform random delay up to this long.
    announce_delay_max: Duration = "10s"
    # The retained state topic of a stream/key is published at most this often.
    state_interval: Duration = "30s"
    # When a key's value sensors become unavailable without a state: "auto", "0s" (never)
    # or a duration.
    expire_after: str = "auto"
    # Subscribe to the retrain buttons' command topics.
    commands: StrictBool = False
    # Stream/key devices announced at most (beyond it: logged, not announced).
    max_devices: Annotated[StrictInt, Field(ge=1, le=100_000)] = 200

    @field_validator("discovery_prefix", "status_topic")
    @classmethod
    def _topics(cls, v: str) -> str:
        return _topic(v)

    @field_validator("expire_after")
    @classmethod
    def _expire(cls, v: str) -> str:
        if v != "auto":
            parse_duration(v)
        return v

    @property
    def announce_delay_max_s(self) -> float:
        return parse_duration(self.announce_delay_max)

    @property
    def state_interval_s(self) -> float:
        return parse_duration(self.state_interval)

    @property
    def expire_after_s(self) -> int:
        """Seconds for HA's `expire_after` (0: never). `auto`: an hour, or four state
        intervals when that is longer.
        """
        if self.expire_after == "auto":
            return int(max(3600.0, 4 * self.state_interval_s))
        return int(parse_duration(self.expire_after))


class StreamHomeAssistant(Frozen):
    """How a stream's predicted value looks in HA (every key is optional)."""

    name: str | None = None  # the value entity's name (default: the target's name)
    unit: str | None = None
    device_class: str | None = None
    state_class: Literal["measurement", "total", "total_increasing"] | None = None
    display_precision: Annotated[StrictInt, Field(ge=0, le=15)] | None = None
    # An identifiers template ({key}, {stream}) of an HA device that exists already, such as
    # "zigbee2mqtt_{key}": the key's entities are put on that device instead of a new one.
    attach_to: str | None = None

    @field_validator("attach_to")
    @classmethod
    def _attach(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                v.format(key="k", stream="s")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"{v!r}: only {{key}} and {{stream}} may be used") from exc
        return v
