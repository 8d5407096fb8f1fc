"""Home Assistant over a real mosquitto: discovery configs, re-announce on HA's `online`,
clean-up of a removed stream, rate-limited states, the anomaly binary_sensor's state topic
and the retrain button. HA itself is played by MQTT clients that do what it does: read the
retained configs and states, say `online`/`offline`, press a button.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from typer.testing import CliRunner

from edgeml.cli import app
from edgeml.config import Config
from tests.conftest import (
    Broker,
    load_config,
    publish_all,
    running,
    settle,
    wait_for,
    write_config,
)
from tests.helpers import check_ha_configs

TEMP = """
[[stream]]
name = "temp"
topic = "sensors/+/telemetry"
key = "field:dev"
target = "t"
features = ["h"]
"""
VIBRATION = """
[[stream]]
name = "vibration"
topic = "vib/+/reading"
key = "topic:1"
task = "anomaly"
features = ["rms"]
timestamp = "ts"
anomaly = { warmup = 200 }
alert = { clear_after = "60s" }
"""
T0 = int(time.time()) - 3600
ALIKE = ["a b", "a.b", "a_b"]


def ha(**keys: object) -> str:
    lines = [f"{k} = {json.dumps(v)}" for k, v in {"enabled": True, **keys}.items()]
    return "[homeassistant]\n" + "\n".join(lines).replace("True", "true") + "\n"


def temp(key: str, i: int) -> tuple[str, bytes]:
    return "sensors/x/telemetry", json.dumps({"dev": key, "h": i % 7, "t": 2 * (i % 7)}).encode()


def vib(start: int, n: int, rms: float | None = None) -> list[tuple[str, bytes]]:
    """Readings of pump `pump`, one every 10 s of sample time; `rms` None: normal noise."""
    rng = random.Random(start)
    out = []
    for i in range(start, start + n):
        body = {"rms": round(rng.gauss(1.0, 0.1) if rms is None else rms, 3), "ts": T0 + 10 * i}
        out.append(("vib/pump/reading", json.dumps(body).encode()))
    return out


@dataclass
class Seen:
    topic: str
    payload: bytes
    retain: bool
    at: float  # monotonic, on receipt


@contextlib.asynccontextmanager
async def watching(broker: Broker, *filters: str) -> AsyncIterator[list[Seen]]:
    """Every message on `filters` while the block runs (retained ones first, flagged)."""
    seen: list[Seen] = []
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe([(f, 1) for f in filters])

        async def read() -> None:
            async for m in client.messages:
                payload = bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else b""
                seen.append(Seen(str(m.topic), payload, bool(m.retain), time.monotonic()))

        task = asyncio.create_task(read())
        try:
            yield seen
        finally:
            task.cancel()


async def retained(broker: Broker, topic_filter: str, wait: float = 0.5) -> dict[str, bytes]:
    """What the broker holds retained under a filter now (as HA sees it when it starts)."""
    async with watching(broker, topic_filter) as seen:
        await asyncio.sleep(wait)
    return {s.topic: s.payload for s in seen if s.retain and s.payload}


async def configs_of(broker: Broker, n: int) -> dict[str, bytes]:
    """The retained device configs, once there are `n`."""
    found: dict[str, bytes] = {}

    async def poll() -> None:
        nonlocal found
        while len(found) != n:
            found = await retained(broker, "homeassistant/device/+/config", 0.3)

    await asyncio.wait_for(poll(), 20)
    return found


def device(configs: dict[str, bytes], name: str) -> dict[str, object]:
    docs = [json.loads(p) for p in configs.values()]
    return next(d for d in docs if d["device"].get("name") == name)


async def test_every_config_validates_and_ids_are_unique_for_keys_that_slug_alike(
    tmp_path: Path, broker: Broker
) -> None:
    cfg = load_config(
        write_config(tmp_path, broker, TEMP + VIBRATION, ha(announce_delay_max="0s", commands=True))
    )
    async with running(cfg):
        await publish_all(broker, [temp(k, 1) for k in ALIKE] + vib(0, 1))
        configs = await configs_of(broker, 1 + len(ALIKE) + 1)
        unique_ids = check_ha_configs(configs)
        assert len(unique_ids) == 6 * 3 + 8 + 1  # 6 per temp key, 8 for the anomaly key
        states = await retained(broker, f"edgeml/{cfg.node.id}/+/+/state")
        assert {t.split("/")[3] for t in states} == {*ALIKE, "pump"}
        assert all("value" in json.loads(p) for p in states.values())


async def test_an_anomaly_episode_turns_the_binary_sensor_on_then_off_and_fires_its_events(
    tmp_path: Path, broker: Broker
) -> None:
    cfg = load_config(write_config(tmp_path, broker, VIBRATION, ha(announce_delay_max="0s")))
    async with running(cfg):
        await publish_all(broker, vib(0, 1))
        cmps = device(await configs_of(broker, 2), "vibration pump")["cmps"]
        sensor, episodes = cmps["anomaly"], cmps["episodes"]  # type: ignore[index]
        async with watching(broker, sensor["state_topic"], episodes["state_topic"]) as seen:
            await publish_all(broker, vib(1, 299))
            await publish_all(broker, vib(300, 3, rms=9.0))  # 30 s of a bad bearing
            await publish_all(broker, vib(303, 12))  # two quiet minutes
            await wait_for(lambda: sum(s.topic == sensor["state_topic"] for s in seen) == 2)
            await wait_for(lambda: sum(s.topic == episodes["state_topic"] for s in seen) == 2)
        assert [s.payload.decode() for s in seen if s.topic == sensor["state_topic"]] == [
            sensor["payload_on"],
            sensor["payload_off"],
        ]
        # What HA's template makes of each episode message: an event of a declared type.
        fired = [
            {**json.loads(s.payload), "event_type": json.loads(s.payload)["type"]}
            for s in seen
            if s.topic == episodes["state_topic"]
        ]
        assert [e["event_type"] for e in fired] == ["new", "end"]
        assert all(e["event_type"] in episodes["event_types"] for e in fired)
        assert "dict(value_json, event_type=value_json.type)" in episodes["value_template"]
        # After an HA restart: the retained state, OFF.
        assert await retained(broker, sensor["state_topic"], 0.2) == {
            sensor["state_topic"]: sensor["payload_off"].encode()
        }


async def test_online_on_the_status_topic_brings_every_config_and_state_and_offline_nothing(
    tmp_path: Path, broker: Broker
) -> None:
    delay = 1.0
    cfg = load_config(write_config(tmp_path, broker, TEMP, ha(announce_delay_max=f"{delay}s")))
    async with running(cfg) as daemon:
        assert daemon.homeassistant is not None
        # commands = false: HA's status is the one topic listened to, no button topics.
        assert list(daemon.transport._listeners) == ["homeassistant/status"]  # type: ignore[attr-defined]
        await publish_all(broker, [temp("k1", 1), temp("k2", 1)])
        expected = set(await configs_of(broker, 3))
        state_filter = f"edgeml/{cfg.node.id}/+/+/state"
        await wait_for(lambda: len(daemon.homeassistant.announced) == 2)
        await wait_for(lambda: daemon.homeassistant.announces >= 1)
        expected |= set(await retained(broker, state_filter))
        assert len(expected) == 3 + 2
        async with (
            aiomqtt.Client(broker.host, broker.port) as hass,
            watching(broker, "homeassistant/device/+/config", state_filter) as seen,
        ):
            await asyncio.sleep(0.3)  # the retained copies arrive first, flagged

            def live() -> list[Seen]:
                return [s for s in seen if not s.retain]

            await hass.publish("homeassistant/status", "offline")
            await asyncio.sleep(delay + 2)
            assert live() == []
            await hass.publish("homeassistant/status", "online")
            await wait_for(lambda: {s.topic for s in live()} >= expected, timeout=delay + 2)
            topics = [s.topic for s in live()]
            assert max(i for i, t in enumerate(topics) if "/device/" in t) < min(
                i for i, t in enumerate(topics) if t.endswith("/state")
            ), "every config before every state"


async def test_a_removed_stream_has_its_configs_cleared_after_a_restart(
    tmp_path: Path, broker: Broker
) -> None:
    both = load_config(
        write_config(tmp_path, broker, TEMP + VIBRATION, ha(announce_delay_max="0s"))
    )
    async with running(both):
        await publish_all(broker, [temp("k1", 1), *vib(0, 1)])
        before = await configs_of(broker, 3)
    vibration = next(t for t in before if "-vibration-" in t)
    # A neighbour's config under the same prefix is never touched.
    async with aiomqtt.Client(broker.host, broker.port) as other:
        await other.publish("homeassistant/device/zigbee2mqtt_0x1/config", b"{}", 1, retain=True)
    only_temp = load_config(write_config(tmp_path, broker, TEMP, ha(announce_delay_max="0s")))
    async with running(only_temp) as daemon:
        assert daemon.homeassistant is not None
        await wait_for(lambda: daemon.homeassistant.cleared == [vibration])  # type: ignore[union-attr]
        after = await retained(broker, "homeassistant/device/+/config")
        states = await retained(broker, f"edgeml/{both.node.id}/+/+/state")
        assert [t.split("/")[2] for t in states] == ["temp"]
    neighbour = "homeassistant/device/zigbee2mqtt_0x1/config"
    assert set(after) == set(before) - {vibration} | {neighbour}
    # `edgeml ha show` prints what is published; `edgeml ha purge` clears it, and only it.
    config = str(only_temp.source)
    shown = await asyncio.to_thread(CliRunner().invoke, app, ["ha", "show", "--json", "-c", config])
    assert shown.exit_code == 0, shown.output
    assert {t: json.loads(p) for t, p in after.items() if t != neighbour} == json.loads(
        shown.output
    )
    purged = await asyncio.to_thread(CliRunner().invoke, app, ["ha", "purge", "-c", config])
    assert purged.exit_code == 0 and "2 configs" in purged.output, purged.output
    assert set(await retained(broker, "homeassistant/device/+/config")) == {neighbour}


async def test_ten_readings_a_second_publish_at_most_one_state_per_interval_and_the_last_value(
    tmp_path: Path, broker: Broker
) -> None:
    """The issue's 10 readings/s for 65 s with a 30 s interval (at most 3 states per key),
    shortened by the same ratio: 2 s interval, 4.4 s of readings.
    """
    interval, seconds, rate = 2.0, 4.4, 10
    cfg = load_config(
        write_config(tmp_path, broker, TEMP, ha(announce_delay_max="0s", state_interval="2s"))
    )
    n = int(seconds * rate)
    async with (
        running(cfg) as daemon,
        watching(broker, f"edgeml/{cfg.node.id}/+/+/state") as seen,
        aiomqtt.Client(broker.host, broker.port) as pub,
    ):
        # After the announcement at the start (which sends the states again, as on `online`).
        await wait_for(lambda: daemon.homeassistant is not None and daemon.homeassistant.announces)
        for i in range(n):
            for key in ("k1", "k2"):
                await pub.publish(*temp(key, i), qos=1)
            await asyncio.sleep(1 / rate)
        await settle(cfg, 2 * n)
        # The one held back arrives once its interval has passed: the newest reading's.
        await wait_for(
            lambda: sum(json.loads(s.payload)["samples"] == n for s in seen) == 2,
            timeout=interval + 3,
        )
    for key in ("k1", "k2"):
        states = [s for s in seen if f"/{key}/state" in s.topic]
        first = states[0].at
        # Sends are at least `interval` apart, so before 3 intervals at most 3 of them (a
        # second of slack for the receiving side's own delays).
        assert len([s for s in states if s.at < first + 3 * interval - 1.0]) <= 3
        assert len(states) <= 4 and all(s.retain is False for s in states)


async def test_the_retrain_button_leads_to_a_retrain_event_within_5_s(
    tmp_path: Path, broker: Broker
) -> None:
    cfg: Config = load_config(
        write_config(tmp_path, broker, TEMP, ha(announce_delay_max="0s", commands=True))
    )
    async with running(cfg):
        await publish_all(broker, [temp("k1", i) for i in range(60)])
        await settle(cfg, 60)
        button = device(await configs_of(broker, 2), "temp k1")["cmps"]["retrain"]  # type: ignore[index]
        events = f"edgeml/{cfg.node.id}/events"
        per_key = f"edgeml/{cfg.node.id}/temp/k1/event"
        async with (
            watching(broker, events, per_key) as seen,
            aiomqtt.Client(broker.host, broker.port) as hass,
        ):
            await asyncio.sleep(0.2)
            await hass.publish(button["command_topic"], button["payload_press"])
            pressed = time.monotonic()

            def retrains(topic: str) -> list[Seen]:
                return [s for s in seen if s.topic == topic and b'"retrain"' in s.payload]

            await wait_for(lambda: retrains(events) and retrains(per_key), timeout=5)
            assert retrains(events)[0].at - pressed < 5
            doc = json.loads(retrains(per_key)[0].payload)
            assert doc["event"] == doc["event_type"] == "retrain" and doc["key"] == "k1"


async def test_every_new_connection_announces_again(tmp_path: Path, broker: Broker) -> None:
    cfg = load_config(write_config(tmp_path, broker, TEMP, ha(announce_delay_max="0s")))
    async with running(cfg) as daemon:
        assert daemon.homeassistant is not None
        await publish_all(broker, [temp("k1", 1)])
        await configs_of(broker, 2)
        await wait_for(lambda: daemon.homeassistant.announces == 1)  # type: ignore[union-attr]
        # A broker that lost its retained messages (restarted without its persistence file).
        broker.stop()
        for f in broker.workdir.glob("*.db"):
            f.unlink()
        broker.start()
        await wait_for(lambda: daemon.homeassistant.announces == 2, timeout=30)  # type: ignore[union-attr]
        assert len(await configs_of(broker, 2)) == 2
        assert list(await retained(broker, f"edgeml/{cfg.node.id}/+/+/state")) == [
            f"edgeml/{cfg.node.id}/temp/k1/state"
        ]


async def test_a_silent_key_becomes_unavailable_and_available_again_when_it_is_back(
    tmp_path: Path, broker: Broker
) -> None:
    stream = TEMP + 'silent_after = "1s"\n'
    extra = ha(announce_delay_max="0s") + '[store]\nsummary_interval = "500ms"\n'
    cfg = load_config(write_config(tmp_path, broker, stream, extra))
    available = f"edgeml/{cfg.node.id}/temp/k1/availability"
    event = f"edgeml/{cfg.node.id}/temp/k1/event"
    async with running(cfg), watching(broker, available, event) as seen:
        await publish_all(broker, [temp("k1", 1)])
        configs = await configs_of(broker, 2)
        # Every entity of the key: unavailable when edgeml is offline or the key is silent.
        doc = device(configs, "temp k1")
        assert doc["availability_mode"] == "all"
        assert [a["topic"] for a in doc["availability"]] == [cfg.status_topic, available]  # type: ignore[union-attr]

        def said(topic: str) -> list[bytes]:
            """What was said, a repeat (the announcement's) counted once."""
            out: list[bytes] = []
            for s in seen:
                if s.topic == topic and (not out or out[-1] != s.payload):
                    out.append(s.payload)
            return out

        await wait_for(lambda: said(available) == [b"online", b"offline"], timeout=10)
        await publish_all(broker, [temp("k1", 2)])
        await wait_for(lambda: said(available) == [b"online", b"offline", b"online"])
        await wait_for(lambda: len(said(event)) == 2)
        assert [json.loads(p)["event_type"] for p in said(event)] == ["silent", "back"]
