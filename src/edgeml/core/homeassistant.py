"""Home Assistant MQTT discovery: pure builders of the retained config messages.

One HA device per stream/key (its entities under `cmps`, HA 2024.11 and later) plus one for
the daemon, which the others name as `via_device`; or, with `schema = "component"`, one
config per entity for older HA. Ids are built from slugs of the node, stream and key, with
a short hash of the raw text when the slug differs from it, so `a b`, `a.b` and `a_b` get
distinct and stable ids. Nothing here does I/O: the daemon sends what these return.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

from edgeml.config import Config, StreamConfig
from edgeml.core.messages import EVENT_TYPES, Outgoing

__all__ = [
    "EPISODE_TYPES",
    "Discovery",
    "ident",
    "key_topic",
]

_SLUG = re.compile(r"[^a-z0-9]+")
# The `type` of an anomaly episode message on `<key topic>/anomaly` (the anomaly episodes).
EPISODE_TYPES = ("new", "update", "end")


def ident(text: str) -> str:
    """A slug of `text` (`[a-z0-9_]`, never empty, no `__`), with 8 hex digits of its hash
    when the slug is not `text` itself: distinct for texts that slug alike, and stable.
    """
    slug = _SLUG.sub("_", text.lower()).strip("_") or "x"
    if slug == text:
        return slug
    return f"{slug}_{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def key_topic(cfg: Config, stream: str, key: str, leaf: str) -> str:
    """`<prefix>/<node>/<stream>/<key>/<leaf>`, beside the key's prediction topic."""
    return f"{cfg.mqtt.topic_prefix}/{cfg.node.id}/{stream}/{key}/{leaf}"


# What each task's value is, for its default entity name.
_VALUE_NAME = {
    "regression": "Predicted {target}",
    "forecast": "Forecast {target}",
    "classification": "Probability of {target}",
    "anomaly": "Anomaly score",
}
# The diagnostic "error" sensor's name per task (what `error` in the state holds).
_ERROR_NAME = {
    "regression": "Rolling error",
    "forecast": "Rolling error",
    "classification": "Rolling error rate",
    "anomaly": "Flag rate",
}


class Discovery:
    """The discovery configs of one node, from its config and the stream/keys it knows."""

    def __init__(self, cfg: Config, version: str) -> None:
        self.cfg = cfg
        self.ha = cfg.homeassistant
        self.version = version
        self.node = ident(cfg.node.id)
        self.node_device = f"edgeml-{self.node}"  # the daemon's HA device id
        self.streams = {s.name: s for s in cfg.stream}

    # -- ids and topics ---------------------------------------------------------------

    def device_id(self, stream: str, key: str) -> str:
        """Unique per node, stream and key: the parts hold no `-`, so the joins are too."""
        return f"{self.node_device}-{ident(stream)}-{ident(key)}"

    def config_topic(self, device_id: str) -> str:
        return f"{self.ha.discovery_prefix}/device/{device_id}/config"

    def component_topic(self, platform: str, object_id: str) -> str:
        return f"{self.ha.discovery_prefix}/{platform}/{self.node_device}/{object_id}/config"

    def owned_filters(self) -> list[str]:
        """Where this node's retained configs can be: never `#`."""
        return [
            f"{self.ha.discovery_prefix}/device/+/config",
            f"{self.ha.discovery_prefix}/+/{self.node_device}/+/config",
        ]

    def is_ours(self, topic: str) -> bool:
        """A config topic this node published (under either schema)."""
        parts = topic.split("/")
        prefix_len = len(self.ha.discovery_prefix.split("/"))
        rest = parts[prefix_len:]
        if len(rest) == 3 and rest[0] == "device":
            return rest[1] == self.node_device or rest[1].startswith(self.node_device + "-")
        return len(rest) == 4 and rest[1] == self.node_device

    # -- the configs ------------------------------------------------------------------

    def messages(self, keys: Iterable[tuple[str, str]]) -> list[Outgoing]:
        """Every retained config: the daemon's device first, then one per stream/key of a
        configured stream (at most `max_devices`).
        """
        docs = [self.node_config()]
        chosen = sorted(k for k in set(keys) if k[0] in self.streams)[: self.ha.max_devices]
        docs += [self.key_config(stream, key) for stream, key in chosen]
        out: list[Outgoing] = []
        for device_id, doc in docs:
            out += self.encode(device_id, doc)
        return out

    def encode(self, device_id: str, doc: dict[str, Any]) -> list[Outgoing]:
        """A device config as one message, or (schema "component") one per entity."""
        if self.ha.schema_ == "device":
            return [Outgoing(self.config_topic(device_id), _json(doc), 1, True)]
        shared = {k: v for k, v in doc.items() if k != "cmps"}
        out = []
        for object_id, cmp in doc["cmps"].items():
            entity = {**shared, **{k: v for k, v in cmp.items() if k != "platform"}}
            out.append(
                Outgoing(self.component_topic(cmp["platform"], f"{device_id}-{object_id}"),
                         _json(entity), 1, True)
            )  # fmt: skip
        return out

    def _common(self) -> dict[str, Any]:
        return {
            "origin": {"name": "edgeml", "sw_version": self.version},
            "availability": [{"topic": self.cfg.status_topic}],
        }

    def node_config(self) -> tuple[str, dict[str, Any]]:
        """The daemon's own device: its connection to the broker."""
        node = self.cfg.node.id
        doc = {
            "device": {
                "identifiers": [self.node_device],
                "name": f"edgeml {node}",
                "manufacturer": "edgeml",
                "model": "edgeml daemon",
                "sw_version": self.version,
            },
            **self._common(),
            "cmps": {
                "status": {
                    "platform": "binary_sensor",
                    "unique_id": f"{self.node_device}-status",
                    "default_entity_id": f"binary_sensor.edgeml_{self.node}_status",
                    "name": "Status",
                    "device_class": "connectivity",
                    "entity_category": "diagnostic",
                    "state_topic": self.cfg.status_topic,
                    "payload_on": "online",
                    "payload_off": "offline",
                }
            },
        }
        return self.node_device, doc

    def _device(self, stream: StreamConfig, key: str) -> dict[str, Any]:
        attach = stream.homeassistant.attach_to
        if attach is not None:  # the key's entities join a device HA knows already
            return {"identifiers": [attach.format(key=key, stream=stream.name)]}
        return {
            "identifiers": [self.device_id(stream.name, key)],
            "name": f"{stream.name} {key}",
            "manufacturer": "edgeml",
            "model": f"{stream.task} ({stream.model})",
            "sw_version": self.version,
            "via_device": self.node_device,
        }

    def key_config(self, stream_name: str, key: str) -> tuple[str, dict[str, Any]]:
        """The device of one stream/key and its entities."""
        stream = self.streams[stream_name]
        device_id = self.device_id(stream_name, key)
        entity = f"edgeml_{ident(stream_name)}_{ident(key)}"
        state = key_topic(self.cfg, stream_name, key, "state")
        cmps: dict[str, dict[str, Any]] = {
            "value": self._value(stream, state),
            **_diagnostics(stream, state),
            "events": {
                "platform": "event",
                "name": "Model events",
                "state_topic": key_topic(self.cfg, stream_name, key, "event"),
                "event_types": list(EVENT_TYPES),
            },
        }
        if stream.task == "anomaly":
            cmps["anomaly"] = {
                "platform": "binary_sensor",
                "name": "Anomaly",
                "device_class": "problem",
                "state_topic": key_topic(self.cfg, stream_name, key, "anomaly/state"),
                "payload_on": "ON",
                "payload_off": "OFF",
            }
            cmps["episodes"] = {
                "platform": "event",
                "name": "Anomaly episodes",
                "state_topic": key_topic(self.cfg, stream_name, key, "anomaly"),
                "event_types": list(EPISODE_TYPES),
                # An episode message says `type` (new, update, end): HA's event entity
                # wants it as `event_type`; the other fields become the event's attributes.
                "value_template": "{{ dict(value_json, event_type=value_json.type) | tojson }}",
            }
        if self.ha.commands:
            cmps["retrain"] = {
                "platform": "button",
                "name": "Retrain",
                "command_topic": key_topic(self.cfg, stream_name, key, "retrain/set"),
                "payload_press": "PRESS",
                "entity_category": "config",
            }
        expire = self.ha.expire_after_s
        for name, cmp in cmps.items():
            cmp["unique_id"] = f"{device_id}-{name}"
            cmp["default_entity_id"] = f"{cmp['platform']}.{entity}_{name}"
            if expire and cmp.get("state_topic") == state and name in ("value", "error"):
                cmp["expire_after"] = expire
        # Unavailable while edgeml is offline, or while the key is silent.
        own = {"topic": key_topic(self.cfg, stream_name, key, "availability")}
        availability = [*self._common()["availability"], own]
        doc = {"device": self._device(stream, key), **self._common(),
               "availability": availability, "availability_mode": "all", "cmps": cmps}  # fmt: skip
        return device_id, doc

    def _value(self, stream: StreamConfig, state: str) -> dict[str, Any]:
        ha = stream.homeassistant
        value: dict[str, Any] = {
            "platform": "sensor",
            "name": ha.name or _VALUE_NAME[stream.task].format(target=stream.target),
            "state_topic": state,
            "value_template": "{{ value_json.value }}",
        }
        # A forecast is a value ahead of time: HA's long-term statistics would mix it with
        # measurements, so it gets no state class unless one is asked for.
        state_class = ha.state_class or (None if stream.task == "forecast" else "measurement")
        extra = {
            "unit_of_measurement": ha.unit,
            "device_class": ha.device_class,
            "state_class": state_class,
            "suggested_display_precision": ha.display_precision,
        }
        value.update({k: v for k, v in extra.items() if v is not None})
        return value


def _diagnostics(stream: StreamConfig, state: str) -> dict[str, dict[str, Any]]:
    """The error (enabled), model version and last reading (disabled by default) sensors."""
    error = {
        "platform": "sensor",
        "name": _ERROR_NAME[stream.task],
        "state_topic": state,
        "value_template": "{{ value_json.error }}",
        "state_class": "measurement",
        "entity_category": "diagnostic",
    }
    if stream.task in ("regression", "forecast") and stream.homeassistant.unit is not None:
        error["unit_of_measurement"] = stream.homeassistant.unit  # an error in the value's unit
    return {
        "error": error,
        "model_version": {
            "platform": "sensor",
            "name": "Model version",
            "state_topic": state,
            "value_template": "{{ value_json.model_version }}",
            "entity_category": "diagnostic",
            "enabled_by_default": False,
        },
        "last_seen": {
            "platform": "sensor",
            "name": "Last seen",
            "state_topic": state,
            "value_template": "{{ value_json.last_seen }}",
            "device_class": "timestamp",
            "entity_category": "diagnostic",
            "enabled_by_default": False,
        },
    }


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=False).encode()
