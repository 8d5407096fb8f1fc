"""The Home Assistant task's own rules, without a broker: which presses count, when it
announces.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeml.config import load
from edgeml.core.engine import Engine
from edgeml.core.messages import Outgoing, event_message
from edgeml.daemon.homeassistant import HomeAssistant
from edgeml.transport.mqtt import Session

STREAM = '[[stream]]\nname = "temp"\ntopic = "s/+/t"\nkey = "topic:1"\ntarget = "t"\n'


def task(tmp_path: Path, ha: str) -> HomeAssistant:
    path = tmp_path / "config.toml"
    path.write_text(f'[node]\nid = "n1"\n[homeassistant]\nenabled = true\n{ha}\n{STREAM}')
    cfg = load(path)
    return HomeAssistant(cfg, Session(cfg))


def test_only_a_live_press_of_a_known_button_counts(tmp_path: Path) -> None:
    ha = task(tmp_path, "commands = true")
    assert ha.command_filter == "edgeml/n1/+/+/retrain/set"
    ha._remember_buttons([("temp", "k1")])
    ha._on_command("edgeml/n1/temp/k1/retrain/set", b"PRESS", True)  # retained: stale
    ha._on_command("edgeml/n1/temp/k2/retrain/set", b"PRESS", False)  # no such button
    ha._on_command("edgeml/n1/temp/k1/retrain/set", b"press me", False)
    assert ha._pressed == []
    ha._on_command("edgeml/n1/temp/k1/retrain/set", b"PRESS", False)
    assert ha._pressed == [("temp", "k1")]


def test_online_schedules_one_announcement_within_the_delay_and_offline_none(
    tmp_path: Path,
) -> None:
    ha = task(tmp_path, 'announce_delay_max = "5s"')
    ha._on_status("homeassistant/status", b"offline", False)
    assert ha._announce_at is None
    ha._on_status("homeassistant/status", b"online", False)
    first = ha._announce_at
    assert first is not None
    for _ in range(20):  # more onlines never push the announcement later
        ha._on_status("homeassistant/status", b"online", False)
        assert ha._announce_at is not None and ha._announce_at <= first


def test_a_keys_events_go_to_its_own_topic_and_silent_and_back_to_its_availability(
    tmp_path: Path,
) -> None:
    ha = task(tmp_path, "")
    engine = Engine(ha.cfg, 1, {}, {})
    fields = {"stream": "temp", "key": "k1", "seq": None, "ts": 1.0}
    out = [
        Outgoing("edgeml/n1/temp/k1/prediction", b"{}"),
        Outgoing("edgeml/n1/events", event_message("silent", fields), 1),
        Outgoing("edgeml/n1/events", event_message("reject", {**fields, "key": None}), 1),
        Outgoing("edgeml/n1/events", event_message("back", fields), 1),
    ]
    ha.mirror(engine, out)
    extra = [(o.topic, o.payload, o.retain) for o in out[4:]]
    assert [(t, json.loads(p)["event_type"]) for t, p, _ in extra if t.endswith("/event")] == [
        ("edgeml/n1/temp/k1/event", "silent"),
        ("edgeml/n1/temp/k1/event", "back"),
    ]
    assert [(p, r) for t, p, r in extra if t.endswith("/availability")] == [
        (b"offline", True),
        (b"online", True),
    ]
