"""edgeml.config: real TOML files in tmp_path -> Config, or a ConfigError naming file and key."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edgeml.config import Config, load, parse_duration, warnings_for
from edgeml.config import loader as config
from edgeml.errors import ConfigError, EdgemlError

MINIMAL = """
[[stream]]
name = "temp"
topic = "sensors/+/temp"
target = "temperature"
"""

# Not a loopback host, so warnings_for does not read this machine's /etc/mosquitto.
REMOTE_MQTT = '[mqtt]\nhost = "broker.example"\n'


def write(tmp_path: Path, text: str, name: str = "edgeml.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_lines(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path)
    lines = str(info.value).splitlines()
    assert lines, "a ConfigError must say something"
    for line in lines:
        assert line.startswith(f"{path}: "), line
    return lines


def one_error(path: Path) -> str:
    lines = error_lines(path)
    assert len(lines) == 1, lines
    return lines[0]


# --- valid files ---------------------------------------------------------------------------


def test_minimal_config_has_documented_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    cfg = load(path)

    assert isinstance(cfg, Config)
    assert cfg.source == path
    assert cfg.node.id == socket.gethostname()
    assert cfg.node.state_dir == tmp_path / "state"
    assert cfg.db_path == tmp_path / "state" / "edgeml.db"
    assert cfg.mqtt.host == "localhost"
    assert cfg.mqtt.port == 1883
    assert cfg.mqtt.protocol == "5"
    assert cfg.mqtt.receive_maximum == 1000
    assert cfg.mqtt.topic_prefix == "edgeml"
    assert cfg.mqtt.session_expiry_s == 7 * 86400
    assert cfg.mqtt.max_payload_bytes == 65536
    assert cfg.mqtt.password is None
    assert cfg.mqtt.tls is None
    assert cfg.client_id == f"edgeml-{socket.gethostname()}"
    assert cfg.store.flush_interval_ms == 200
    assert cfg.store.batch_size == 500

    (stream,) = cfg.stream
    assert stream.name == "temp"
    assert stream.topic == "sensors/+/temp"
    assert stream.target == "temperature"
    assert stream.features is None
    assert stream.key is None
    assert stream.timestamp is None
    assert stream.model == "auto" and stream.model_default
    assert stream.task == "regression"
    assert stream.publish == "all"
    assert stream.rolling_window == 500
    assert stream.drift.delta == 0.002


def test_node_id_names_client_id_and_topics(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[node]\nid = "pi-kitchen"\n[mqtt]\ntopic_prefix = "home/ml"\n' + MINIMAL
    )
    cfg = load(path)
    assert cfg.client_id == "edgeml-pi-kitchen"
    assert cfg.status_topic == "home/ml/pi-kitchen/status"
    assert cfg.events_topic == "home/ml/pi-kitchen/events"


def test_explicit_client_id_wins(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, '[mqtt]\nclient_id = "mine"\n' + MINIMAL))
    assert cfg.client_id == "mine"


def test_relative_state_dir_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    write(sub, '[node]\nstate_dir = "data/ml"\n' + MINIMAL)
    monkeypatch.chdir(tmp_path)
    cfg = load("etc/edgeml.toml")
    assert cfg.node.state_dir == Path("etc/data/ml")


def test_absolute_state_dir_is_kept(tmp_path: Path) -> None:
    state = tmp_path / "elsewhere"
    cfg = load(write(tmp_path, f"[node]\nstate_dir = {json.dumps(str(state))}\n" + MINIMAL))
    assert cfg.node.state_dir == state


@pytest.mark.parametrize(("literal", "expected"), [("5", "5"), ('"5"', "5"), ('"3.1.1"', "3.1.1")])
def test_protocol_accepts_number_and_strings(tmp_path: Path, literal: str, expected: str) -> None:
    cfg = load(write(tmp_path, f"[mqtt]\nprotocol = {literal}\n" + MINIMAL))
    assert cfg.mqtt.protocol == expected


@pytest.mark.parametrize("literal", ["3", "4", "true", '"3"', "5.0"])
def test_protocol_rejects_other_values(tmp_path: Path, literal: str) -> None:
    path = write(tmp_path, f"[mqtt]\nprotocol = {literal}\n" + MINIMAL)
    assert one_error(path).startswith(f"{path}: mqtt.protocol: ")


def test_full_stream_config(tmp_path: Path) -> None:
    text = """
[[stream]]
name = "z2m"
topic = "zigbee2mqtt/#"
key = "topic:1"
target = "temperature"
features = ["humidity", "battery"]
timestamp = "last_seen"
rolling_window = 50
publish = "anomalies"
drift = { delta = 0.01 }

[[stream]]
name = "tasmota"
topic = "tele/+/SENSOR"
key = "field:Device"
target = "AM2301.Temperature"
"""
    cfg = load(write(tmp_path, text))
    z2m, tas = cfg.stream
    assert z2m.features == ("humidity", "battery")
    assert z2m.key_level == 1
    assert z2m.key_field is None
    assert z2m.rolling_window == 50
    assert z2m.drift.delta == 0.01
    assert z2m.publish == "anomalies"
    assert tas.key_field == "Device"
    assert tas.key_level is None


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, MINIMAL))
    with pytest.raises(ValidationError):
        cfg.mqtt.port = 1884  # type: ignore[misc]


def test_password_file_is_read(tmp_path: Path) -> None:
    secret = write(tmp_path, "s3cret\n", name="mqtt.pass")
    text = f"[mqtt]\nusername = 'u'\npassword_file = {json.dumps(str(secret))}\n" + MINIMAL
    cfg = load(write(tmp_path, text))
    assert cfg.mqtt.resolve_password() == "s3cret"


def test_unreadable_password_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pass"
    cfg = load(write(tmp_path, f"[mqtt]\npassword_file = {json.dumps(str(missing))}\n" + MINIMAL))
    with pytest.raises(ConfigError, match=r"mqtt\.password_file"):
        cfg.mqtt.resolve_password()


# --- errors --------------------------------------------------------------------------------


def test_config_error_is_an_edgeml_error() -> None:
    assert issubclass(ConfigError, EdgemlError)


def test_missing_target(tmp_path: Path) -> None:
    path = write(tmp_path, '[[stream]]\nname = "a"\ntopic = "t"\n')
    line = one_error(path)
    assert line.startswith(f"{path}: stream.0.target: ")
    assert "required" in line.lower()


@pytest.mark.parametrize("literal", ['"1883"', "true", "1883.0"])
def test_port_must_be_a_real_integer(tmp_path: Path, literal: str) -> None:
    path = write(tmp_path, f"[mqtt]\nport = {literal}\n" + MINIMAL)
    line = one_error(path)
    assert line.startswith(f"{path}: mqtt.port: ")
    assert "integer" in line.lower()


@pytest.mark.parametrize("port", [0, 65536])
def test_port_range(tmp_path: Path, port: int) -> None:
    path = write(tmp_path, f"[mqtt]\nport = {port}\n" + MINIMAL)
    assert one_error(path).startswith(f"{path}: mqtt.port: ")


def test_unknown_mqtt_key_suggests_the_known_one(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nhots = "broker"\n' + MINIMAL)
    assert one_error(path) == f"{path}: mqtt.hots: unknown key (did you mean 'host'?)"


def test_unknown_stream_key_suggests_the_known_one(tmp_path: Path) -> None:
    path = write(tmp_path, '[[stream]]\nname = "a"\ntopc = "t"\ntarget = "y"\n')
    lines = error_lines(path)
    assert f"{path}: stream.0.topc: unknown key (did you mean 'topic'?)" in lines
    # and the key it meant is reported missing
    assert any(line.startswith(f"{path}: stream.0.topic: ") for line in lines)
    assert len(lines) == 2


def test_unknown_drift_key_suggests_delta(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "drift = { deltaa = 0.01 }\n")
    assert one_error(path) == f"{path}: stream.0.drift.deltaa: unknown key (did you mean 'delta'?)"


def test_unknown_tls_key_suggests_the_known_one(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt.tls]\nca_fle = "/etc/ca.pem"\n' + MINIMAL)
    assert one_error(path) == f"{path}: mqtt.tls.ca_fle: unknown key (did you mean 'ca_file'?)"


def test_unknown_key_without_a_close_match(tmp_path: Path) -> None:
    path = write(tmp_path, "[mqtt]\nzzzzzz = 1\n" + MINIMAL)
    assert one_error(path) == f"{path}: mqtt.zzzzzz: unknown key"


def test_unknown_table_suggests_the_known_one(tmp_path: Path) -> None:
    path = write(tmp_path, "[stor]\nbatch_size = 5\n" + MINIMAL)
    assert one_error(path) == f"{path}: stor: unknown key (did you mean 'store'?)"


def test_source_is_not_a_config_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'source = "other.toml"\n' + MINIMAL)
    assert one_error(path) == f"{path}: source: unknown key"


@pytest.mark.parametrize("topic", ["a/#/b", "a+/b", "#/a", "a/b#", ""])
def test_bad_topic_filter(tmp_path: Path, topic: str) -> None:
    path = write(tmp_path, f'[[stream]]\nname = "a"\ntopic = "{topic}"\ntarget = "y"\n')
    line = one_error(path)
    assert line.startswith(f"{path}: stream.0.topic: ")
    assert repr(topic) in line


@pytest.mark.parametrize("topic", ["a/+/b", "a/#", "#", "+", "a/b/c", "+/+/#"])
def test_good_topic_filters(tmp_path: Path, topic: str) -> None:
    cfg = load(write(tmp_path, f'[[stream]]\nname = "a"\ntopic = "{topic}"\ntarget = "y"\n'))
    assert cfg.stream[0].topic == topic


@pytest.mark.parametrize("key", ["topic:x", "topic:", "field:", "dev", "topic:-1"])
def test_bad_key_spec(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, MINIMAL + f'key = "{key}"\n')
    line = one_error(path)
    assert line.startswith(f"{path}: stream.0.key: ")
    assert repr(key) in line


def test_key_level_beyond_the_topic(tmp_path: Path) -> None:
    path = write(tmp_path, '[[stream]]\nname = "a"\ntopic = "t/+"\ntarget = "y"\nkey = "topic:2"\n')
    line = one_error(path)
    assert line.startswith(f"{path}: stream.0: ")
    assert "topic:2" in line


def test_key_level_beyond_a_hash_filter_is_allowed(tmp_path: Path) -> None:
    cfg = load(
        write(tmp_path, '[[stream]]\nname = "a"\ntopic = "t/#"\ntarget = "y"\nkey = "topic:3"\n')
    )
    assert cfg.stream[0].key_level == 3


def test_target_also_in_features(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + 'features = ["humidity", "temperature"]\n')
    line = one_error(path)
    assert line.startswith(f"{path}: stream.0: ")
    assert "'temperature' is also listed in features" in line


def test_feature_listed_twice(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + 'features = ["humidity", "humidity"]\n')
    assert "twice" in one_error(path)


def test_duplicate_stream_names(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[stream]]\nname = "temp"\ntopic = "other"\ntarget = "y"\n'
    path = write(tmp_path, text)
    assert one_error(path) == f"{path}: stream: stream names must be unique: temp used twice"


@pytest.mark.parametrize("name", ["has space", "a/b", "", "x" * 65, "a+b"])
def test_bad_stream_name(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f'[[stream]]\nname = "{name}"\ntopic = "t"\ntarget = "y"\n')
    assert one_error(path).startswith(f"{path}: stream.0.name: ")


def test_password_and_password_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\npassword = "p"\npassword_file = "/etc/p"\n' + MINIMAL)
    assert one_error(path) == f"{path}: mqtt: set password or password_file, not both"


def test_missing_stream(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nhost = "broker"\n')
    assert one_error(path) == f"{path}: stream: at least one [[stream]] is required"


def test_empty_stream_list(tmp_path: Path) -> None:
    path = write(tmp_path, "stream = []\n")
    assert one_error(path) == f"{path}: stream: at least one [[stream]] is required"


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt\nhost = "x"\n')
    assert one_error(path).startswith(f"{path}: not valid TOML")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "edgeml.toml"
    path.write_bytes(b'[mqtt]\nhost = "\xff"\n')
    assert one_error(path).startswith(f"{path}: cannot read")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert one_error(path) == f"{path}: no such config file"


def test_bad_duration_values(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[mqtt]\nsession_expiry = "soon"\n[store]\nsummary_interval = "2"\n' + MINIMAL
    )
    lines = error_lines(path)
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}: mqtt.session_expiry: ")
    assert lines[1].startswith(f"{path}: store.summary_interval: ")


def test_every_error_is_reported_one_per_line(tmp_path: Path) -> None:
    text = """
[mqtt]
hots = "broker"
port = "1883"

[store]
flush_interval_ms = -1

[[stream]]
name = "a"
topic = "t"

[[stream]]
name = "b"
topic = "a/#/b"
target = "y"
"""
    path = write(tmp_path, text)
    lines = error_lines(path)
    keys = sorted(line.removeprefix(f"{path}: ").split(": ")[0] for line in lines)
    assert keys == [
        "mqtt.hots",
        "mqtt.port",
        "store.flush_interval_ms",
        "stream.0.target",
        "stream.1.topic",
    ]


def test_an_error_in_every_stream_does_not_claim_there_are_none(tmp_path: Path) -> None:
    text = '[[stream]]\nname = "a"\ntopic = "t"\n\n[[stream]]\nname = "b"\ntopic = "u"\n'
    path = write(tmp_path, text)
    lines = error_lines(path)
    assert [line.removeprefix(f"{path}: ").split(": ")[0] for line in lines] == [
        "stream.0.target",
        "stream.1.target",
    ]


_FIELDS = [
    ("node", "id"),
    ("node", "state_dir"),
    ("mqtt", "host"),
    ("mqtt", "port"),
    ("mqtt", "protocol"),
    ("mqtt", "session_expiry"),
    ("mqtt", "topic_prefix"),
    ("mqtt", "receive_maximum"),
    ("store", "flush_interval_ms"),
    ("store", "summary_interval"),
    ("log", "level"),
    ("stream", "topic"),
    ("stream", "key"),
    ("stream", "target"),
    ("stream", "rolling_window"),
    ("stream", "publish"),
    ("stream", "zzz"),
]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.sampled_from(_FIELDS),
    value=st.one_of(
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.text(max_size=20),
        st.sampled_from(["5", "3.1.1", "30s", "7d", "topic:1", "field:x", "a/+/b", "a/#/b"]),
    ),
)
def test_any_value_loads_or_raises_config_error(field: tuple[str, str], value: object) -> None:
    table, key = field
    line = f"{key} = {_toml_value(value)}\n"
    if table == "stream":
        text = '[[stream]]\nname = "s"\ntopic = "t/+"\ntarget = "y"\n'
        text = "\n".join(row for row in text.splitlines() if not row.startswith(f"{key} ")) + "\n"
        text += line
    else:
        text = f"[{table}]\n{line}" + MINIMAL
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edgeml.toml"
        path.write_text(text, encoding="utf-8")
        try:
            cfg = load(path)
        except ConfigError as exc:
            for msg in str(exc).splitlines():
                assert msg.startswith(f"{path}: ")
        else:
            assert isinstance(cfg, Config)
            assert cfg.stream


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("200ms", 0.2),
        ("30s", 30.0),
        ("5m", 300.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("1.5s", 1.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5 weeks", "-5s", "s", "5w", "1.2.3s", "5 m s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


# --- warnings ------------------------------------------------------------------------------


def test_no_warnings_for_a_plain_remote_config(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, REMOTE_MQTT + MINIMAL))
    assert warnings_for(cfg) == []


def test_protocol_311_warns(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, REMOTE_MQTT + 'protocol = "3.1.1"\n' + MINIMAL))
    (warning,) = warnings_for(cfg)
    assert "3.1.1" in warning
    assert "20" in warning


def test_world_readable_password_warns(tmp_path: Path) -> None:
    path = write(tmp_path, REMOTE_MQTT + 'password = "hunter2"\n' + MINIMAL)
    os.chmod(path, 0o644)
    (warning,) = warnings_for(load(path))
    assert str(path) in warning
    assert "world-readable" in warning
    assert "hunter2" not in warning


def test_private_password_file_does_not_warn(tmp_path: Path) -> None:
    path = write(tmp_path, REMOTE_MQTT + 'password = "hunter2"\n' + MINIMAL)
    os.chmod(path, 0o600)
    assert warnings_for(load(path)) == []


def test_world_readable_config_without_password_does_not_warn(tmp_path: Path) -> None:
    path = write(tmp_path, REMOTE_MQTT + MINIMAL)
    os.chmod(path, 0o644)
    assert warnings_for(load(path)) == []


def test_anomaly_keys_of_an_earlier_edgeml_are_named_as_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[stream]]\nname = "v"\ntopic = "v/+"\ntask = "anomaly"\n'
        'anomaly = { quantile = 0.99, cooldown = "60s", warmup = 100 }\n',
    )
    warnings = [w for w in warnings_for(load(path)) if "stream.0.anomaly" in w]
    assert len(warnings) == 2
    assert "stream.0.anomaly.quantile is ignored" in warnings[0]
    assert "stream.0.anomaly.cooldown is ignored" in warnings[1]
    assert "[stream.alert] cooldown" in warnings[1]


def test_local_broker_with_risky_settings_warns(tmp_path: Path) -> None:
    conf = write(tmp_path, "listener 1883\npersistence false\nmax_queued_messages 1000\n", "m.conf")
    warnings = config._local_broker_warnings(conf)
    assert len(warnings) == 2
    assert "persistence is off" in warnings[0]
    assert "max_queued_messages is 1000" in warnings[1]
    assert all(w.startswith(f"{conf}: ") for w in warnings)


def test_local_broker_defaults_warn(tmp_path: Path) -> None:
    # mosquitto's defaults: no persistence, 1000 queued messages
    conf = write(tmp_path, "listener 1883\n# persistence true\n", "m.conf")
    assert len(config._local_broker_warnings(conf)) == 2


def test_local_broker_with_safe_settings_is_quiet(tmp_path: Path) -> None:
    conf = write(tmp_path, "persistence true\nmax_queued_messages 0\n", "m.conf")
    assert config._local_broker_warnings(conf) == []


def test_local_broker_large_queue_is_quiet(tmp_path: Path) -> None:
    conf = write(tmp_path, "persistence true\nmax_queued_messages 100000\n", "m.conf")
    assert config._local_broker_warnings(conf) == []


def test_local_broker_settings_from_include_dir(tmp_path: Path) -> None:
    confd = tmp_path / "conf.d"
    confd.mkdir()
    write(confd, "persistence true\nmax_queued_messages 0\n", "edgeml.conf")
    conf = write(tmp_path, f"include_dir {confd}\n", "m.conf")
    assert config._local_broker_warnings(conf) == []


def test_local_broker_config_of_another_port_is_quiet(tmp_path: Path) -> None:
    """The system mosquitto listens on 1883; a config for a broker on 18831 is not its."""
    conf = write(tmp_path, "listener 1883\npersistence false\n", "m.conf")
    assert config._local_broker_warnings(conf, 18831) == []
    assert len(config._local_broker_warnings(conf, 1883)) == 2
    assert config._local_broker_warnings(write(tmp_path, "", "empty.conf"), 18831) == []


def test_missing_local_broker_config_is_quiet(tmp_path: Path) -> None:
    assert config._local_broker_warnings(tmp_path / "absent.conf") == []


# --- tasks, presets and retraining -----------------------------------------------------------


def test_task_model_and_retraining_keys(tmp_path: Path) -> None:
    text = """
[[stream]]
name = "vib"
topic = "t/+/vib"
task = "anomaly"
label = "fault"
anomaly = { quantile = 0.95, warmup = 100, cooldown = "5m" }

[[stream]]
name = "load"
topic = "t/+/load"
task = "forecast"
target = "kw"
model = "seasonal"
params = { l2 = 0.01 }
forecast = { lags = 4, horizon = 3, time_features = true, season = 48 }
retrain = { policy = "reset", grace = 50, max_warm_start = 300, every = "6h" }

[[stream]]
name = "door"
topic = "t/+/door"
task = "classification"
target = "open"
"""
    vib, load_, door = load(write(tmp_path, text)).stream
    assert (vib.task, vib.model, vib.label, vib.target) == ("anomaly", "robust", "fault", None)
    assert (vib.anomaly.quantile, vib.anomaly.warmup, vib.anomaly.cooldown_s) == (0.95, 100, 300)
    assert vib.excluded == ("fault",)
    assert (load_.model, load_.params) == ("seasonal", {"l2": 0.01})
    f = load_.forecast
    assert (f.lags, f.horizon, f.time_features, f.season) == (4, 3, True, 48)
    r = load_.retrain
    assert (r.policy, r.grace, r.max_warm_start, r.every_s) == ("reset", 50, 300, 6 * 3600)
    # defaults: the `auto` preset, challenger retraining on drift only
    assert door.model == "auto"
    retrain = door.retrain
    assert (retrain.policy, retrain.grace, retrain.every_s) == ("challenger", 200, None)
    assert door.drift.warmup == 500


BAD_TASK_KEYS = [
    (
        'task = "regression"\ntarget = "y"\nmodel = "halfspace"',
        "stream.0.model: preset 'halfspace' does not do regression; "
        "for regression use auto, linear, tree, forest",
    ),
    (
        'target = "y"\nmodel = "neural"',
        "stream.0.model: unknown preset 'neural'; presets: auto, linear",
    ),
    ('task = "anomaly"\ntarget = "y"', "stream.0.target: an anomaly stream has no target"),
    (
        'task = "classification"\ntarget = "y"\nlabel = "z"',
        "stream.0.label: only an anomaly stream takes a ground-truth label field",
    ),
    ('task = "forecast"', "stream.0.target: required for a forecast stream"),
    (
        'target = "y"\nretrain = { polcy = "none" }',
        "stream.0.retrain.polcy: unknown key (did you mean 'policy'?)",
    ),
    ('target = "y"\nretrain = { every = "soon" }', "stream.0.retrain.every: 'soon' is not a"),
    ('target = "y"\nretrain = { grace = 5 }', "stream.0.retrain.grace: "),
    ('task = "anomaly"\nanomaly = { quantile = 0.4 }', "stream.0.anomaly.quantile: "),
    ('task = "forecast"\ntarget = "y"\nforecast = { lags = 0 }', "stream.0.forecast.lags: "),
]


@pytest.mark.parametrize(("stream", "expected"), BAD_TASK_KEYS)
def test_bad_task_model_and_retraining_keys(tmp_path: Path, stream: str, expected: str) -> None:
    path = write(tmp_path, f'[[stream]]\nname = "s"\ntopic = "t/+"\n{stream}\n')
    assert one_error(path).startswith(f"{path}: {expected}")


# --- [homeassistant] -------------------------------------------------------------------------


def test_homeassistant_is_off_by_default_with_the_documented_defaults(tmp_path: Path) -> None:
    ha = load(write(tmp_path, MINIMAL)).homeassistant
    assert not ha.enabled and not ha.commands
    assert (ha.discovery_prefix, ha.status_topic, ha.schema_) == (
        "homeassistant",
        "homeassistant/status",
        "device",
    )
    assert (ha.announce_delay_max_s, ha.state_interval_s, ha.max_devices) == (10.0, 30.0, 200)
    assert ha.expire_after == "auto" and ha.expire_after_s == 3600


def test_homeassistant_keys_are_checked_and_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[homeassistant]\nschem = "device"\nstate_interval = "soon"\n'
        'status_topic = "homeassistant/#"\n'
        + MINIMAL
        + '[stream.homeassistant]\nattach_to = "z_{device}"\nstate_class = "sometimes"\n',
    )
    lines = error_lines(path)
    assert f"{path}: homeassistant.schem: unknown key (did you mean 'schema'?)" in lines
    assert any(x.startswith(f"{path}: homeassistant.state_interval: ") for x in lines)
    assert any(x.startswith(f"{path}: homeassistant.status_topic: ") for x in lines)
    assert any(x.startswith(f"{path}: stream.0.homeassistant.attach_to: ") for x in lines)
    assert any(x.startswith(f"{path}: stream.0.homeassistant.state_class: ") for x in lines)
    assert len(lines) == 5


def test_homeassistant_schema_and_expire_after(tmp_path: Path) -> None:
    ha = load(
        write(tmp_path, '[homeassistant]\nschema = "component"\nexpire_after = "0s"\n' + MINIMAL)
    ).homeassistant
    assert ha.schema_ == "component" and ha.expire_after_s == 0
    path = write(tmp_path, '[homeassistant]\nschema = "entity"\n' + MINIMAL, "bad.toml")
    assert one_error(path).startswith(f"{path}: homeassistant.schema: ")
