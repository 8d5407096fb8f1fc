"""Real devices' payloads through a real broker (issue 13): an ESPHome pair on two retained
topics joined into one sample, through broker restarts and a kill -9 in the middle of a join.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import aiomqtt

from edgeml.config import Config
from edgeml.store.queries import read_events, read_status
from tests.conftest import Broker, db_rows, load_config, running, settle, wait_for, write_config

ESPHOME = """
[[stream]]
name = "climate"
topic = "esphome/+/sensor/+/state"
key = "topic:1"
payload = "value"
field = "topic:3"
target = "temperature"
features = ["humidity"]
join_window = "2s"
"""


def pair(i: int) -> tuple[float, float]:
    """The temperature and humidity of pair i: all different, so no pair repeats another."""
    return round(18 + i * 0.1, 2), round(35 + i * 0.7, 2)


async def publish_pair(broker: Broker, i: int, device: str = "kitchen") -> None:
    """Humidity, then 300 ms later the temperature, both retained, as ESPHome sends them."""
    temperature, humidity = pair(i)
    for field, value in (("humidity", humidity), ("temperature", temperature)):
        async with aiomqtt.Client(broker.host, broker.port) as pub:
            topic = f"esphome/{device}/sensor/{field}/state"
            await pub.publish(topic, str(value).encode(), qos=1, retain=True)
        if field == "humidity":
            await asyncio.sleep(0.3)


def samples(cfg: Config) -> list[tuple[str, float, dict[str, float]]]:
    rows = db_rows(
        cfg,
        "SELECT r.key, s.y, s.x FROM samples s JOIN series r ON r.id = s.series ORDER BY s.seq",
    )
    return [(key, y, json.loads(x)) for key, y, x in rows]


def expected(pairs: range, device: str = "kitchen") -> list[tuple[str, float, dict[str, float]]]:
    return [(device, pair(i)[0], {"humidity": pair(i)[1]}) for i in pairs]


async def test_esphome_pair_is_one_sample_and_three_reconnects_learn_nothing_again(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = load_config(write_config(tmp_path, broker, ESPHOME))
    async with running(cfg) as daemon:
        for i in range(12):
            await publish_pair(broker, i)
            if i % 3 == 2 and i < 11:  # after pairs 2, 5 and 8: the broker restarts
                await settle(cfg, i + 1)
                connects = daemon.transport.connects
                broker.restart()
                await wait_for(
                    lambda c=connects: (
                        daemon.transport.connects == c + 1 and daemon.transport.state == "connected"
                    )
                )
        assert await settle(cfg, 12) == 12
        await asyncio.sleep(1.0)  # anything learned again would be stored by now
    assert samples(cfg) == expected(range(12))
    doc = read_status(cfg.db_path)["daemon"]
    # Each reconnect sent the two retained states again; the stream skipped them.
    assert doc["rejected_by_reason"]["retained"] >= 3 * 2
    assert set(doc["rejected_by_reason"]) == {"retained"}
    (event,) = read_events(cfg.db_path, ["reject"])
    assert event["data"]["reasons"]["retained"] == doc["rejected_by_reason"]["retained"]


async def test_a_kill_in_the_middle_of_a_join_loses_nothing_and_learns_nothing_twice(
    broker: Broker, tmp_path: Path, daemon_process: Any
) -> None:
    config = write_config(tmp_path, broker, ESPHOME)
    cfg = load_config(config)
    d = daemon_process(config)
    d.start()
    await d.wait_ready()
    for i in range(3):
        await publish_pair(broker, i)
    assert await settle(cfg, 3) == 3
    d.terminate()
    assert d.wait(10) == 0
    # The last humidity was held for the join (not acknowledged): the broker delivers it
    # again, and EDGEML_FAILPOINT kills the daemon (SIGKILL) right after it holds a message.
    d = daemon_process(config)
    d.start(EDGEML_FAILPOINT="join_held")
    temperature, humidity = pair(3)
    async with aiomqtt.Client(broker.host, broker.port) as pub:
        await pub.publish("esphome/kitchen/sensor/humidity/state", str(humidity).encode(), qos=1)
        assert await asyncio.to_thread(d.wait, 30) == -signal.SIGKILL
        # The temperature comes while edgeml is down: the session keeps it.
        await asyncio.sleep(0.3)
        await pub.publish("esphome/kitchen/sensor/temperature/state", str(temperature).encode(),
                          qos=1)  # fmt: skip
    assert len(samples(cfg)) == 3
    d = daemon_process(config)
    d.start()
    await d.wait_ready()
    for i in range(4, 6):
        await publish_pair(broker, i)
    assert await settle(cfg, 6) == 6
    d.terminate()
    assert d.wait(10) == 0
    # Pair 3 was joined from the broker's copies: one sample per pair, none twice.
    assert samples(cfg) == expected(range(6))
    assert db_rows(cfg, "SELECT count(DISTINCT seq) FROM predictions")[0][0] == 6


RETAINED_LEARN = """
[[stream]]
name = "room"
topic = "home/+/climate"
key = "topic:1"
target = "t"
retained = "learn"
"""


async def test_retained_learn_takes_a_state_once_and_a_resumed_session_not_again(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = load_config(write_config(tmp_path, broker, RETAINED_LEARN))
    async with aiomqtt.Client(broker.host, broker.port) as pub:
        await pub.publish("home/attic/climate", b'{"t": 12.5}', qos=1, retain=True)
    async with running(cfg):  # a new subscription: the broker sends the retained state
        assert await settle(cfg, 1) == 1
    # MQTT 5 retain handling 1: the resumed session's subscription is not new, so the
    # broker does not send the state again (a restart of the broker resumes it too).
    broker.restart()
    async with running(cfg) as daemon:
        await asyncio.sleep(1.5)
        assert daemon.transport.received == 0
    assert samples(cfg) == [("attic", 12.5, {})]
