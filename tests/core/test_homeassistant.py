"""Home Assistant's discovery configs and state topics as pure builders: no broker."""

from __future__ import annotations

import json
from pathlib import Path

from edgeml.config import Config, load
from edgeml.core.engine import Engine
from edgeml.core.homeassistant import Discovery, ident
from edgeml.core.homeassistant_state import StateTopics
from edgeml.core.messages import Outgoing
from edgeml.learn import Learner
from edgeml.records import Delivery, Outcome, Sample
from tests.helpers import check_ha_configs

STREAMS = """
[[stream]]
name = "temp"
topic = "sensors/+/telemetry"
key = "field:dev"
target = "t"
features = ["h"]

[stream.homeassistant]
unit = "°C"
device_class = "temperature"
display_precision = 1

[[stream]]
name = "vibration"
topic = "vib/+/reading"
key = "topic:1"
task = "anomaly"
features = ["rms"]

[[stream]]
name = "ahead"
topic = "meter/+/power"
key = "topic:1"
task = "forecast"
target = "p"
"""
ALIKE = ["a b", "a.b", "a_b", "A_B", "a-b"]


def config(tmp_path: Path, ha: str = "") -> Config:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[node]\nid = "n-1"\nstate_dir = "{tmp_path}"\n'
        f"[homeassistant]\nenabled = true\n{ha}\n{STREAMS}"
    )
    return load(path)


def keys() -> list[tuple[str, str]]:
    return [("temp", k) for k in ALIKE] + [("vibration", "pump"), ("ahead", "house")]


def test_ids_of_keys_that_slug_alike_are_distinct_and_stable() -> None:
    ids = [ident(k) for k in ALIKE]
    assert len(set(ids)) == len(ALIKE)
    assert ids == [ident(k) for k in ALIKE]  # the same on every run: a hash, not a counter
    assert ident("a_b") == "a_b" and ident("kitchen") == "kitchen"
    assert all(i.replace("_", "").isalnum() and "__" not in i for i in ids)


def test_every_config_validates_and_unique_ids_are_unique(tmp_path: Path) -> None:
    cfg = config(tmp_path, "commands = true")
    messages = Discovery(cfg, "0.1.0").messages(keys())
    assert all(m.retain and m.qos == 1 for m in messages)
    configs = {m.topic: m.payload for m in messages}
    assert len(configs) == 1 + len(keys())  # the daemon's device and one per stream/key
    unique_ids = check_ha_configs(configs)
    # Built again (another run of the daemon): the very same topics and ids.
    again = {m.topic: m.payload for m in Discovery(cfg, "0.1.0").messages(reversed(keys()))}
    assert again == configs and check_ha_configs(again) == unique_ids
    docs = {t: json.loads(p) for t, p in configs.items()}
    node_device = Discovery(cfg, "0.1.0").node_device
    pump = next(d for d in docs.values() if d["device"].get("name") == "vibration pump")
    anomaly = pump["cmps"]["anomaly"]
    assert anomaly["platform"] == "binary_sensor" and anomaly["device_class"] == "problem"
    assert anomaly["state_topic"] == "edgeml/n-1/vibration/pump/anomaly/state"
    episodes = pump["cmps"]["episodes"]
    assert episodes["platform"] == "event" and episodes["event_types"] == ["new", "update", "end"]
    assert episodes["state_topic"] == "edgeml/n-1/vibration/pump/anomaly"
    assert pump["cmps"]["retrain"]["command_topic"] == "edgeml/n-1/vibration/pump/retrain/set"
    assert pump["device"]["via_device"] == node_device == f"edgeml-{ident('n-1')}"
    house = next(d for d in docs.values() if d["device"].get("name") == "ahead house")
    assert "state_class" not in house["cmps"]["value"]  # a forecast is not a measurement
    value = next(d for d in docs.values() if d["device"].get("name") == "temp a_b")["cmps"]
    assert value["value"]["unit_of_measurement"] == value["error"]["unit_of_measurement"] == "°C"
    assert value["value"]["state_class"] == "measurement"
    assert value["model_version"]["enabled_by_default"] is False
    assert value["events"]["state_topic"] == "edgeml/n-1/temp/a_b/event"


def test_without_commands_there_is_no_button(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    docs = [json.loads(m.payload) for m in Discovery(cfg, "0.1.0").messages(keys())]
    assert not any(c["platform"] == "button" for d in docs for c in d["cmps"].values())


def test_the_component_schema_gives_one_valid_config_per_entity(tmp_path: Path) -> None:
    cfg = config(tmp_path, 'schema = "component"\ncommands = true')
    d = Discovery(cfg, "0.1.0")
    messages = d.messages(keys())
    configs = {m.topic: m.payload for m in messages}
    assert len(configs) == len(messages) > 1 + len(keys())
    check_ha_configs(configs)
    assert all(d.is_ours(t) for t in configs)
    assert all(t.split("/")[2] == d.node_device for t in configs)


def test_ours_is_this_node_only(tmp_path: Path) -> None:
    d = Discovery(config(tmp_path), "0.1.0")
    n = d.node_device
    assert d.is_ours(f"homeassistant/device/{n}/config")
    assert d.is_ours(f"homeassistant/device/{n}-temp-kitchen/config")
    assert d.is_ours(f"homeassistant/sensor/{n}/x/config")
    assert not d.is_ours(f"homeassistant/device/{n}_2-temp-kitchen/config")
    assert not d.is_ours("homeassistant/device/zigbee2mqtt_0x1234/config")
    assert not d.is_ours(f"homeassistant/sensor/{n}x/x/config")


def test_attach_to_puts_the_entities_on_an_existing_device(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "[homeassistant]\nenabled = true\n"
        '[[stream]]\nname = "t"\ntopic = "zigbee2mqtt/+"\nkey = "topic:1"\ntarget = "temperature"\n'
        '[stream.homeassistant]\nattach_to = "zigbee2mqtt_{key}"\n'
    )
    _, doc = Discovery(load(path), "0.1.0").key_config("t", "0xabc")
    assert doc["device"] == {"identifiers": ["zigbee2mqtt_0xabc"]}
    check_ha_configs({"homeassistant/device/x/config": json.dumps(doc).encode()})


def _outcome(stream: str, key: str, ts: float, value: float) -> Outcome:
    return Outcome(Sample(stream, key, ts, {"h": 1.0}, value), 1, value, 0.5, 1)


def test_ten_readings_a_second_for_65_s_make_three_states_then_the_last_one_when_due(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)  # state_interval 30 s
    states = StateTopics(cfg)
    learners = {k: Learner(cfg.stream[0], k) for k in ("a", "b")}
    out: list[Outgoing] = []
    for i in range(650):  # 10 readings a second, by the clock handed in
        now = 1000.0 + i / 10
        for key, lr in learners.items():
            states.observe(("temp", key), _outcome("temp", key, now, i), lr, now, out)
    by_key = {k: [json.loads(o.payload) for o in out if f"/{k}/state" in o.topic] for k in "ab"}
    assert {k: len(v) for k, v in by_key.items()} == {"a": 3, "b": 3}
    assert [s["value"] for s in by_key["a"]] == [0, 300, 600]
    assert all(o.retain for o in out)
    # With its first state, each key says once that it is available.
    assert [(o.topic, o.payload) for o in out if o.topic.endswith("/availability")] == [
        ("edgeml/n-1/temp/a/availability", b"online"),
        ("edgeml/n-1/temp/b/availability", b"online"),
    ]
    # Nothing more until the interval has passed; then the newest value, once.
    out.clear()
    states.due(1000.0 + 64.9, out)
    assert out == []
    states.due(1000.0 + 90.0, out)
    assert sorted(json.loads(o.payload)["value"] for o in out) == [649, 649]
    states.due(1000.0 + 200.0, out)
    assert len(out) == 2
    # A re-announce: each key's availability, then its last state.
    again = states.states()
    assert [o.topic.rsplit("/", 1)[1] for o in again] == ["availability", "state"] * 2
    last = json.loads(again[1].payload)
    assert last["value"] == 649
    assert set(last) >= {"value", "error", "model_version", "samples", "last_seen"}
    states.availability(("temp", "a"), False, out)
    assert out[-1] == Outgoing("edgeml/n-1/temp/a/availability", b"offline", 1, True)
    assert states.states()[0].payload == b"offline"


def test_events_carry_event_type_and_a_reading_its_state(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    engine = Engine(cfg, 1, {}, {})
    out: list[Outgoing] = []
    body = json.dumps({"h": 1, "t": 3, "dev": "k1"}).encode()
    engine.handle(Delivery("sensors/x/telemetry", body, 0.0, None, None), out)
    engine.promote("temp", "k1", engine.learners[("temp", "k1")].model, 2, "rollback", out)
    [event] = [json.loads(o.payload) for o in out if o.topic == "edgeml/n-1/events"]
    assert event["event"] == "rollback" and event["event_type"] == "rollback"
    assert [o.topic for o in out if o.retain] == [
        "edgeml/n-1/temp/k1/availability",
        "edgeml/n-1/temp/k1/state",
    ]
