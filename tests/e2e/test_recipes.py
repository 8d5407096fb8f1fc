"""The recipes of docs/recipes.md, as written there, through a real broker: payloads shaped
like each device's make the samples the page promises, and `edgeml decode` prints them.
"""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
from typer.testing import CliRunner

from edgeml.cli import app
from edgeml.store.queries import read_status
from tests.conftest import Broker, db_rows, load_config, running, settle, write_config

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "recipes.md"


def recipe_streams() -> str:
    """Every ```toml block of the recipes page, as they are written there."""
    blocks = re.findall(r"```toml\n(.*?)```", RECIPES.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 5
    for block in blocks:
        tomllib.loads(block)
    return "\n".join(blocks)


ESPHOME_T = "esphome/living-room/sensor/temperature/state"
ESPHOME_H = "esphome/living-room/sensor/humidity/state"
HEATER = "homestate/switch/heater/state"
ROOM = "homestate/sensor/living_room_temperature/state"
Z2M = "zigbee2mqtt/kitchen/floor_light"
Z2M_BODY = {"temperature": 22.4, "humidity": 48.2, "pressure": 1013, "battery": 97,
            "linkquality": 120}  # fmt: skip
TASMOTA = {"Time": "2026-01-15T10:00:00",
           "ENERGY": {"Total": 12.5, "Power": [52, 5], "Voltage": 230}}  # fmt: skip
SHELLY = "shellyplus1pm-a8032ab12345/events/rpc"


def shelly(ts: float, **switch: float) -> bytes:
    params = {"ts": ts, "switch:0": {"id": 0, **switch}}
    return json.dumps({"src": "shellyplus1pm-a8032ab12345", "method": "NotifyStatus",
                       "params": params}).encode()  # fmt: skip


# (topic, payload, retained): in this order, as the devices would send them.
MESSAGES: list[tuple[str, bytes, bool]] = [
    (ESPHOME_H, b"45.5", True),
    (ESPHOME_T, b"21.5", True),
    (ESPHOME_T, b"nan", True),  # missing_value
    (HEATER, b"on", True),
    (ROOM, b"21.0", True),
    (ROOM, b"unavailable", True),  # missing_value
    (HEATER, b"off", True),
    (ROOM, b"20.5", True),
    (Z2M, json.dumps(Z2M_BODY).encode(), False),
    (Z2M, json.dumps({**Z2M_BODY, "battery": 96}).encode(), False),  # a cached repeat
    ("zigbee2mqtt/bridge/state", b'{"state": "online"}', True),  # bad_key: not a device
    ("tele/plug/SENSOR", json.dumps(TASMOTA).encode(), False),
    (SHELLY, shelly(1768467600.5, voltage=230.1), False),  # waits in the join
    (SHELLY, shelly(1768467601.5, apower=52.1), False),
]


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


EXPECTED = {
    ("esphome_climate", "living-room"): [({"humidity": 45.5}, 21.5)],
    ("statestream_heating", "default"): [({"heater": 1.0}, 21.0), ({"heater": 0.0}, 20.5)],
    ("zigbee_climate", "kitchen/floor_light"): [({"humidity": 48.2, "pressure": 1013.0}, 22.4)],
    ("tasmota_power", "plug"): [({"ENERGY.Power[0]": 52.0, "ENERGY.Voltage": 230.0}, 5.0)],
    ("shelly_power", "shellyplus1pm-a8032ab12345"): [({"params.switch:0.voltage": 230.1}, 52.1)],
}


async def test_each_recipe_makes_the_samples_its_page_promises(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = load_config(write_config(tmp_path, broker, recipe_streams()))
    prediction = f"edgeml/{cfg.node.id}/zigbee_climate/kitchen__floor_light/prediction"
    async with running(cfg), aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(prediction, qos=1)
        for topic, payload, retain in MESSAGES:
            await client.publish(topic, payload, qos=1, retain=retain)
            await asyncio.sleep(0.05)  # the order matters for the joins
        assert await settle(cfg, 6) == 6
        async with asyncio.timeout(10):
            message = await anext(aiter(client.messages))
        assert str(message.topic) == prediction
    rows = db_rows(cfg, "SELECT r.stream, r.key, s.ts, s.x, s.y FROM samples s"
                        " JOIN series r ON r.id = s.series ORDER BY s.seq")  # fmt: skip
    got: dict[tuple[str, str], list[tuple[dict[str, float], float]]] = {}
    times: dict[str, float] = {}
    for stream, key, ts, x, y in rows:
        got.setdefault((stream, key), []).append((json.loads(x), y))
        times[stream] = ts
    assert got == EXPECTED
    assert times["tasmota_power"] == utc(2026, 1, 15, 9)  # 10:00 in Berlin, in winter
    assert times["shelly_power"] == 1768467601.5
    doc = read_status(cfg.db_path)["daemon"]
    assert doc["rejected_by_reason"] == {"missing_value": 2, "duplicate": 1, "bad_key": 1}
    # A key with `/` is one file name too.
    out = tmp_path / "bundles"
    args = ["models", "export", "--all", "-o", str(out), "-c", str(cfg.source)]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert (out / "zigbee_climate__kitchen__floor_light__v1.edgeml").is_file()


def decode(config: Path, topic: str, payload: bytes, *extra: str) -> tuple[int, Any]:
    result = CliRunner().invoke(
        app, ["decode", "-c", str(config), "--topic", topic, "--payload", payload.decode(),
              "--json", *extra],
    )  # fmt: skip
    return result.exit_code, json.loads(result.stdout)


def without_arrival(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("ts", "time")} for r in rows]


def test_edgeml_decode_prints_what_each_recipe_makes(broker: Broker, tmp_path: Path) -> None:
    config = write_config(tmp_path, broker, recipe_streams())
    assert decode(config, "tele/plug/SENSOR", json.dumps(TASMOTA).encode()) == (0, [
        {"stream": "tasmota_power", "result": "sample", "key": "plug",
         "ts": utc(2026, 1, 15, 9), "time": "2026-01-15T09:00:00.000Z",
         "x": {"ENERGY.Power[0]": 52.0, "ENERGY.Voltage": 230.0}, "y": 5.0, "label": None,
         "note": "Time '2026-01-15T10:00:00' has no UTC offset: read as Europe/Berlin time"
                 " (stream.timestamp_tz)"},
    ])  # fmt: skip
    shelly_row = decode(config, SHELLY, shelly(1768467601.5, apower=52.1))[1][0]
    assert "note" not in shelly_row and shelly_row["ts"] == 1768467601.5  # epoch: no zone
    code, rows = decode(config, ESPHOME_H, b"45.5")
    assert (code, without_arrival(rows)) == (0, [
        {"stream": "esphome_climate", "result": "join", "key": "living-room",
         "fields": {"humidity": 45.5}},
    ])  # fmt: skip
    assert decode(config, ESPHOME_T, b"nan") == (1, [
        {"stream": "esphome_climate", "result": "reject", "reason": "missing_value",
         "detail": "'nan'"},
    ])  # fmt: skip
    assert decode(config, ROOM, b"21.0", "--retained")[1][0]["reason"] == "retained"
    code, rows = decode(config, Z2M, json.dumps(Z2M_BODY).encode())
    assert (code, without_arrival(rows)) == (0, [
        {"stream": "zigbee_climate", "result": "sample", "key": "kitchen/floor_light",
         "x": {"humidity": 48.2, "pressure": 1013.0}, "y": 22.4, "label": None},
    ])  # fmt: skip
    assert decode(config, "zigbee2mqtt/bridge/state", b'{"state": "online"}')[0] == 1
    result = CliRunner().invoke(app, ["decode", "-c", str(config), "--topic", "nobody/listens",
                                      "--payload", "1"])  # fmt: skip
    assert result.exit_code == 1 and "no stream's topic filter matches" in result.stdout
    result = CliRunner().invoke(app, ["decode", "-c", str(config), "--topic", HEATER,
                                      "--payload", "ON"])  # fmt: skip
    assert result.exit_code == 0
    assert "statestream_heating: key 'default', time " in result.stdout
    assert 'waits in the join with {"heater": 1.0}' in result.stdout
