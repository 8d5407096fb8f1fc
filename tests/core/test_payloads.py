"""What real devices send: plain values named by the topic, text states and missing values,
array indices, regex keys, time zones, retained messages and repeats (issue 13).

Like test_decode.py: plain pytest and hypothesis, no broker; any bytes give a Sample or a
Reject, never an exception, and nothing non-finite comes out.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeml.config import StreamConfig, load
from edgeml.core import decode
from edgeml.core.decode import Decoder, Partial, decode_all, output_key
from edgeml.core.messages import prediction_topic
from edgeml.core.repeats import Repeats
from edgeml.errors import ConfigError
from edgeml.records import Reject, RejectReason, Sample

ARRIVAL = 1_700_000_000.0


def stream(**kw: Any) -> StreamConfig:
    base: dict[str, Any] = {"name": "s", "topic": "#", "target": "y"}
    base.update(kw)
    return StreamConfig(**base)


def run(body: bytes | str | Any, topic: str = "t", /, **kw: Any) -> Sample | Reject:
    """Decode with a stream made of `kw` (which may set the stream's own `topic` filter)."""
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return Decoder(stream(**kw)).decode(topic, body, ARRIVAL)


def ok(body: bytes | str | Any, topic: str = "t", /, **kw: Any) -> Sample:
    out = run(body, topic, **kw)
    assert isinstance(out, Sample), out
    return out


def why(body: bytes | str | Any, topic: str = "t", /, **kw: Any) -> RejectReason:
    out = run(body, topic, **kw)
    assert isinstance(out, Reject), out
    return out.reason


# --- payload = "value" ---------------------------------------------------------------------

ESPHOME = {"topic": "esphome/+/sensor/+/state", "key": "topic:1", "payload": "value",
           "field": "topic:3", "target": "temperature"}  # fmt: skip


def test_esphome_plain_value_feeds_the_field_its_topic_names() -> None:
    s = ok(b"21.5", "esphome/kitchen/sensor/temperature/state", **ESPHOME)
    assert s == Sample("s", "kitchen", ARRIVAL, {}, 21.5)
    # Another field of the device is not this stream's target.
    r = run(b"40", "esphome/kitchen/sensor/humidity/state", **ESPHOME)
    assert isinstance(r, Reject) and r.reason is RejectReason.MISSING_TARGET


def test_a_plain_value_without_field_is_the_target() -> None:
    assert ok(b" 21.5\n", payload="value").y == 21.5
    assert ok(b"-3", payload="value").y == -3.0
    assert ok(b"1e3", payload="value").y == 1000.0


def test_field_by_regex() -> None:
    kw = {"payload": "value", "field": r"regex:^homeassistant/sensor/(?P<field>\w+)/state$",
          "target": "outside_temp"}  # fmt: skip
    assert ok(b"3.5", "homeassistant/sensor/outside_temp/state", **kw).y == 3.5
    r = run(b"3.5", "homeassistant/light/x/state", **kw)
    assert isinstance(r, Reject) and r.reason is RejectReason.MISSING_TARGET
    assert "names no field" in r.detail


def test_field_level_beyond_the_topic_names_no_field() -> None:
    assert why(b"1", "a", payload="value", field="topic:3") is RejectReason.MISSING_TARGET


@pytest.mark.parametrize(
    "body", [b"nan", b"NaN", b"unavailable", b"Unknown", b"None", b"null", b"", b"  \n"]
)
def test_missing_values(body: bytes) -> None:
    assert why(body, payload="value") is RejectReason.MISSING_VALUE


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"inf", RejectReason.NON_FINITE),
        (b"-Infinity", RejectReason.NON_FINITE),
        (b"1e999", RejectReason.NON_FINITE),
        (b"1e16", RejectReason.OUT_OF_RANGE),
        (b"12345678901234567", RejectReason.OUT_OF_RANGE),
        (b"hello", RejectReason.NON_NUMERIC),
        (b"1_000", RejectReason.NON_NUMERIC),
        (b'"21.5"', RejectReason.NON_NUMERIC),
        (b"x" * 100, RejectReason.NON_NUMERIC),
        (b"\xff", RejectReason.NOT_UTF8),
    ],
)
def test_bad_plain_values(body: bytes, reason: RejectReason) -> None:
    assert why(body, payload="value") is reason


def test_plain_value_too_large() -> None:
    d = Decoder(stream(payload="value"), max_payload_bytes=16)
    out = d.decode("t", b"1" * 17, ARRIVAL)
    assert isinstance(out, Reject) and out.reason is RejectReason.TOO_LARGE


def test_plain_value_as_a_class_label() -> None:
    kw = {"payload": "value", "task": "classification", "model": "tree"}
    assert ok(b"heating", **kw).label == "heating"
    assert ok(b"3", **kw).label == 3
    assert why(b"x" * 65, **kw) is RejectReason.BAD_LABEL
    assert ok(b"ON", **kw).label == 1  # a text state is its number; an integral one an int
    assert ok(b"2.0", **kw).label == 2
    assert why(b"2.5", **kw) is RejectReason.BAD_LABEL


def test_plain_value_as_an_anomaly_flag_joined_to_a_feature() -> None:
    s = stream(task="anomaly", target=None, label="alarm", payload="value", field="topic:1",
               features=("vibration",), join_window="5s", join_on="any")  # fmt: skip
    d = Decoder(s)
    assert d.decode("pump/alarm", b"ON", 0.0) == Partial("s", "default", 0.0, {"alarm": True})
    assert d.decode("pump/alarm", b"off", 0.0) == Partial("s", "default", 0.0, {"alarm": False})
    out = d.decode("pump/alarm", b"3", 0.0)
    assert isinstance(out, Reject) and out.reason is RejectReason.BAD_LABEL


def test_plain_value_anomaly_stream_names_its_field() -> None:
    s = ok(b"0.7", "plant/pump1/vibration", task="anomaly", target=None, payload="value",
           field="topic:2", key="topic:1")  # fmt: skip
    assert (s.key, s.x, s.y) == ("pump1", {"vibration": 0.7}, None)


# --- text states ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("ON", 1.0), ("off", 0.0), ("True", 1.0), ("false", 0.0), ("online", 1.0),
     ("OFFLINE", 0.0), ("open", 1.0), ("Closed", 0.0)],
)  # fmt: skip
def test_default_value_map_on_plain_and_json_values(text: str, value: float) -> None:
    assert ok(text.encode(), payload="value").y == value
    assert ok({"y": 1, "state": text}, features=("state",)).x == {"state": value}
    assert ok({"y": text}).y == value


def test_a_stream_extends_the_value_map() -> None:
    kw = {"payload": "value", "value_map": {"HEAT": 2, "cool": -1.5}}
    assert ok(b"heat", **kw).y == 2.0
    assert ok(b"COOL", **kw).y == -1.5
    assert ok(b"ON", **kw).y == 1.0
    # and overrides a default
    assert ok(b"on", payload="value", value_map={"On": 7}).y == 7.0


def test_a_stream_replaces_the_value_map() -> None:
    kw = {"payload": "value", "value_map": {"heat": 2}, "value_map_defaults": False}
    assert ok(b"heat", **kw).y == 2.0
    assert why(b"ON", **kw) is RejectReason.NON_NUMERIC


def test_json_missing_values_and_text() -> None:
    assert why({"y": "unavailable"}) is RejectReason.MISSING_VALUE
    assert why({"y": 1, "a": "nan"}, features=("a",)) is RejectReason.MISSING_VALUE
    assert why({"y": "warm"}) is RejectReason.NON_NUMERIC
    # auto features still take numbers only: a text state is a feature when it is listed
    assert ok({"y": 1, "state": "ON", "h": 2}).x == {"h": 2.0}


# --- array indices -------------------------------------------------------------------------

TASMOTA_ENERGY = {"Time": "2026-01-15T10:00:00", "ENERGY": {"Total": 12.5, "Power": [52, 5]}}


@pytest.mark.parametrize("path", ["ENERGY.Power[1]", "ENERGY.Power.1"])
def test_tasmota_array_index(path: str) -> None:
    assert ok(TASMOTA_ENERGY, target=path).y == 5.0
    assert ok(TASMOTA_ENERGY, target="ENERGY.Total", features=(path,)).x == {path: 5.0}


def test_array_indices() -> None:
    body = {"y": 1, "a": [[1, 2], [3, {"b": [4, 5]}]], "d": {"0": 9}}
    assert ok(body, features=("a[1][0]",)).x == {"a[1][0]": 3.0}
    assert ok(body, features=("a[1][1].b[1]",)).x == {"a[1][1].b[1]": 5.0}
    assert ok(body, features=("a.0.1",)).x == {"a.0.1": 2.0}
    assert ok(body, features=("d.0",)).x == {"d.0": 9.0}  # a key "0" of an object
    for path in ("a[2]", "a[0][5]", "d[0]", "y[0]", "a.x", "a[1][1].b[9]"):
        assert why(body, features=(path,)) is RejectReason.MISSING_FEATURE, path
    assert why(body, features=("a[0]",)) is RejectReason.NON_NUMERIC  # an array, not a number


def test_a_key_with_brackets_is_tried_whole_first() -> None:
    assert ok({"y": 1, "a[0]": 4, "a": [5]}, features=("a[0]",)).x == {"a[0]": 4.0}


# --- regex keys ----------------------------------------------------------------------------

Z2M = {"topic": "zigbee2mqtt/#", "key": "regex:^zigbee2mqtt/(?P<key>.+)$",
       "target": "temperature"}  # fmt: skip


def test_zigbee2mqtt_friendly_name_with_a_slash_is_the_key() -> None:
    s = ok({"temperature": 21.5, "humidity": 40}, "zigbee2mqtt/kitchen/floor_light", **Z2M)
    assert s.key == "kitchen/floor_light"
    assert prediction_topic("edgeml/n1", "s", s.key) == (
        "edgeml/n1/s/kitchen__floor_light/prediction"
    )
    assert output_key("kitchen") == "kitchen"


@pytest.mark.parametrize(
    "topic", ["zigbee2mqtt", "other/kitchen", "zigbee2mqtt/a+b", "zigbee2mqtt/" + "x" * 65]
)
def test_regex_key_that_gives_no_usable_key(topic: str) -> None:
    assert why({"temperature": 1}, topic, **Z2M) is RejectReason.BAD_KEY


def test_optional_key_group_that_did_not_take_part() -> None:
    kw = {"key": "regex:^a/(?:(?P<key>x)|y)$"}
    assert why({"y": 1}, "a/y", **kw) is RejectReason.BAD_KEY
    assert ok({"y": 1}, "a/x", **kw).key == "x"


def test_regex_key_on_a_plain_value() -> None:
    kw = {"payload": "value", "key": r"regex:^shellies/(?P<key>[^/]+)/"}
    assert ok(b"1", "shellies/plug-1/relay/0/power", **kw).key == "plug-1"


# --- time zones ----------------------------------------------------------------------------


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("UTC", utc(2026, 1, 15, 10)),
        ("Europe/Berlin", utc(2026, 1, 15, 9)),  # winter: CET, UTC+1
        ("America/New_York", utc(2026, 1, 15, 15)),
    ],
)
def test_naive_tasmota_time_in_a_zone(tz: str, expected: float) -> None:
    s = ok(TASMOTA_ENERGY, target="ENERGY.Total", timestamp="Time", timestamp_tz=tz)
    assert s.ts == expected


def test_summer_time_and_offsets() -> None:
    body = {"y": 1, "Time": "2026-07-15T10:00:00"}
    assert ok(body, timestamp="Time", timestamp_tz="Europe/Berlin").ts == utc(2026, 7, 15, 8)
    # A time with an offset is what it says, whatever the zone.
    body = {"y": 1, "Time": "2026-01-15T10:00:00+00:00"}
    assert ok(body, timestamp="Time", timestamp_tz="Europe/Berlin").ts == utc(2026, 1, 15, 10)


def test_local_zone_is_the_machine_s() -> None:
    naive = datetime(2026, 1, 15, 10)
    s = ok({"y": 1, "Time": naive.isoformat()}, timestamp="Time", timestamp_tz="local")
    assert s.ts == naive.astimezone().timestamp()


def test_far_dates_in_a_zone_are_bad_timestamps_not_errors() -> None:
    for text in ("0001-01-01T00:00:00", "9999-12-31T23:59:59"):
        for tz in ("Asia/Tokyo", "America/Los_Angeles", "local"):
            body = {"y": 1, "ts": text}
            assert why(body, timestamp="ts", timestamp_tz=tz) is RejectReason.BAD_TIMESTAMP


# --- retained messages (decode_all) --------------------------------------------------------


def test_retained_messages_are_skipped_by_default_and_learned_on_request() -> None:
    skip = Decoder(stream(name="skip"))
    learn = Decoder(stream(name="learn", retained="learn"))
    other = Decoder(stream(name="other", topic="elsewhere/#"))
    matched, results = decode_all([skip, learn, other], "t", b'{"y": 1}', ARRIVAL, True)
    assert matched
    assert results[0] == Reject("skip", RejectReason.RETAINED, "a retained state")
    assert isinstance(results[1], Sample) and results[1].stream == "learn"
    assert len(results) == 2
    matched, results = decode_all([skip], "t", b'{"y": 1}', ARRIVAL, False)
    assert isinstance(results[0], Sample)
    assert decode_all([other], "t", b"{}", ARRIVAL, False) == (False, [])


def test_decode_all_parses_json_once_and_plain_values_apart() -> None:
    js = Decoder(stream(name="js"))
    plain = Decoder(stream(name="plain", payload="value"))
    _, results = decode_all([js, plain], "t", b"21.5", ARRIVAL, False)
    assert [type(r) for r in results] == [Sample, Sample]
    _, results = decode_all([js, plain], "t", b"ON", ARRIVAL, False)
    assert isinstance(results[0], Reject) and results[0].reason is RejectReason.NOT_JSON
    assert isinstance(results[1], Sample) and results[1].y == 1.0


# --- repeats -------------------------------------------------------------------------------


def test_identical_repeats_are_duplicates() -> None:
    plain = stream(name="p", payload="value")
    assert plain.dedupe == "identical" and stream().dedupe == "off"
    r = Repeats([plain], 10)
    first = Sample("p", "k", 1.0, {}, 21.5)
    assert r.mark([first]) == [first]
    r.note(first)
    again = Sample("p", "k", 2.0, {}, 21.5)
    (out,) = r.mark([again])
    assert isinstance(out, Reject) and out.reason is RejectReason.DUPLICATE
    changed = Sample("p", "k", 3.0, {}, 21.6)
    other_key = Sample("p", "k2", 3.0, {}, 21.5)
    assert r.mark([changed, other_key]) == [changed, other_key]


def test_a_repeat_whose_timestamp_advances_is_a_new_reading() -> None:
    z2m = stream(name="z", timestamp="last_seen", dedupe="identical")
    r = Repeats([z2m], 10)
    r.note(Sample("z", "k", 100.0, {"h": 40.0}, 21.5))
    cached = Sample("z", "k", 100.0, {"h": 40.0}, 21.5)
    newer = Sample("z", "k", 160.0, {"h": 40.0}, 21.5)
    assert isinstance(r.mark([cached])[0], Reject)
    assert r.mark([newer]) == [newer]


def test_streams_without_dedupe_are_untouched_and_memory_is_bounded() -> None:
    r = Repeats([stream(name="off"), stream(name="p", payload="value")], 3)
    s = Sample("off", "k", 1.0, {}, 1.0)
    r.note(s)
    assert r.mark([s]) == [s] and len(r) == 0
    for i in range(10):
        r.note(Sample("p", f"k{i}", 1.0, {}, 1.0))
    assert len(r) == 3
    # the forgotten key's repeat is learned once more; a remembered one is a duplicate
    assert isinstance(r.mark([Sample("p", "k0", 2.0, {}, 1.0)])[0], Sample)
    assert isinstance(r.mark([Sample("p", "k9", 2.0, {}, 1.0)])[0], Reject)


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('payload = "value"\nfeatures = ["h"]', "stream.0.features: a payload"),
        ('payload = "value"\ntimestamp = "ts"', "stream.0.timestamp: a payload"),
        ('payload = "value"\nkey = "field:dev"', "stream.0.key: a payload"),
        ('field = "topic:1"', "stream.0.field: only a payload"),
        ('payload = "value"\nfield = "topic:9"', "field 'topic:9'"),
        ('payload = "value"\nfield = "regex:(x)"', "stream.0.field: '(x)' has no named group"),
        ('key = "regex:(?P<key>"', "stream.0.key: '(?P<key>' is not a regular"),
        ('key = "regex:a/(.+)"', "no named group (?P<key>...)"),
        ('value_map = { ON = "yes" }', "stream.0.value_map.ON"),
        ("value_map = { warm = nan }", "must be finite"),
        ("value_map = { unknown = 0 }", "is a missing value"),
        ("value_map = { on = 1, ON = 2 }", "mapped twice"),
        ('timestamp_tz = "Mars/Olympus"', "stream.0.timestamp_tz"),
        ('retained = "maybe"', "stream.0.retained"),
        ('dedupe = "yes"', "stream.0.dedupe"),
        ('payload = "xml"', "stream.0.payload"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[[stream]]\nname = "s"\ntopic = "a/+"\ntarget = "y"\n{toml}\n')
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert message in str(exc.value) and str(path) in str(exc.value)


# --- hostile input -------------------------------------------------------------------------

DECODERS = [
    Decoder(stream(name="plain", payload="value"), max_payload_bytes=4096),
    Decoder(stream(name="esphome", **{**ESPHOME, "topic": "#"})),
    Decoder(
        stream(
            name="regex",
            payload="value",
            key="regex:^(?P<key>[^/]*/[^/]*)",
            field="regex:(?P<field>[a-z]+)$",
            target="temperature",
            value_map={"hot": 1e15, "cold": -1e15},
        )
    ),
    Decoder(stream(name="cls", payload="value", task="classification", model="tree")),
    Decoder(
        stream(
            name="z2m",
            **{**Z2M, "topic": "#"},
            features=("a[0]", "b.1[2]"),
            timestamp="ts",
            timestamp_tz="Europe/Berlin",
        )
    ),
]
TOPICS = st.one_of(
    st.sampled_from(["t", "a/b/c/temperature/state", "zigbee2mqtt/kitchen/floor_light",
                     "zigbee2mqtt/", "esphome/x/sensor/temperature/state", "a//b"]),
    st.text(max_size=200),
    st.builds(lambda n, s: s * n, st.integers(1, 20000), st.sampled_from(["a/", "/", "zz"])),
)  # fmt: skip
TEXTS = st.sampled_from(
    [
        "ON",
        "off",
        "nan",
        "NaN",
        "unavailable",
        "",
        "inf",
        "-0",
        "1e999",
        "21.5",
        " 7 ",
        "hot",
        "COLD",
        "None",
        "null",
        "true",
        "1_0",
        "0x10",
    ]
)


def _check(out: Sample | Reject, d: Decoder) -> None:
    assert out.stream == d.name
    if isinstance(out, Reject):
        assert isinstance(out.reason, RejectReason) and len(out.detail) <= 200
        return
    assert 1 <= len(out.key) <= 64 and math.isfinite(out.ts)
    for v in [*([] if out.y is None else [out.y]), *out.x.values()]:
        assert type(v) is float and math.isfinite(v) and abs(v) <= decode.MAX_ABS_VALUE


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300) | TEXTS.map(str.encode), topic=TOPICS, retained=st.booleans())
def test_any_bytes_on_any_topic_give_sample_or_reject(
    body: bytes, topic: str, retained: bool
) -> None:
    for d in DECODERS:
        _check(d.decode(topic, body, ARRIVAL), d)
    _, results = decode_all(DECODERS, topic, body, ARRIVAL, retained)
    for d, out in zip([d for d in DECODERS if d.matches(topic)], results, strict=True):
        _check(out, d)


LEAF = st.one_of(
    st.floats(), st.integers(min_value=-(10**20), max_value=10**20), st.booleans(), st.none(),
    TEXTS, st.text(max_size=5),
)  # fmt: skip
NESTED = st.recursive(
    LEAF,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "b", "1", "0", "ts", "temperature"]), kids, max_size=4
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(obj=st.dictionaries(st.sampled_from(["a", "b", "ts", "temperature", "y"]), NESTED,
                           max_size=5), topic=TOPICS)  # fmt: skip
def test_arrays_of_arrays_and_text_states_give_finite_samples_or_rejects(
    obj: dict[str, Any], topic: str
) -> None:
    body = json.dumps(obj).encode()
    for d in DECODERS:
        _check(d.decode(topic, body, ARRIVAL), d)


@settings(max_examples=100, deadline=None)
@given(states=st.dictionaries(st.text(min_size=1, max_size=8), st.floats(), max_size=8),
       text=st.text(max_size=10))  # fmt: skip
def test_a_value_map_gives_numbers_or_is_refused(states: dict[str, float], text: str) -> None:
    try:
        d = Decoder(stream(payload="value", value_map=states))
    except ValueError:  # pydantic's ValidationError: non-finite, duplicate, missing-value text
        return
    _check(d.decode("t", text.encode(), ARRIVAL), d)


def test_the_commented_example_config_shows_the_defaults_of_the_new_keys() -> None:
    example = load(Path(__file__).resolve().parents[2] / "config.toml").stream[0]
    default = StreamConfig(name="x", topic="a/+", target="y")
    keys = ("timestamp_tz", "payload", "field", "value_map", "value_map_defaults", "retained",
            "dedupe", "join_window", "join_on")  # fmt: skip
    assert {k: getattr(example, k) for k in keys} == {k: getattr(default, k) for k in keys}
