"""partitions.py: the server's partition of a key, and which node owns which partition."""

from __future__ import annotations

import pytest

from edgeml.partitions import (
    assign,
    fnv1a32,
    mapping,
    matches,
    partition_of,
    subject_of,
    topic_of,
)


def test_fnv1a_is_the_published_function() -> None:
    # FNV-1a 32-bit test vectors (the offset basis for "", then "a" and "foobar").
    assert fnv1a32("") == 0x811C9DC5
    assert fnv1a32("a") == 0xE40C292C
    assert fnv1a32("foobar") == 0xBF9CF968


def test_partition_matches_what_nats_server_files_the_key_under() -> None:
    # Seen on nats-server 2.9.10 with {{partition(64,1)}} on sensors/<key>/telemetry.
    assert [partition_of(k, 64) for k in ("dev1", "dev2", "dev3")] == [55, 10, 29]


def test_a_joining_node_takes_only_partitions_and_a_fair_share() -> None:
    three = assign(64, ["a", "b", "c"])
    four = assign(64, ["a", "b", "c", "d"])
    moved = {p for p in range(64) if three[p] != four[p]}
    assert moved == {p for p, n in four.items() if n == "d"}
    assert all(10 <= list(four.values()).count(n) <= 22 for n in "abcd")
    assert assign(64, []) == {}


def test_mapping_partitions_by_the_key_level() -> None:
    assert mapping("site/+/+/data", 2, "IN", 16) == (
        "site.*.*.data",
        "IN.{{partition(16,2)}}.site.{{wildcard(1)}}.{{wildcard(2)}}.data",
    )
    with pytest.raises(ValueError, match="must be a '\\+' level"):
        mapping("site/+/data", 0, "IN", 16)
    with pytest.raises(ValueError, match="'#'"):
        mapping("site/+/#", 1, "IN", 16)


def test_topics_and_subjects() -> None:
    assert subject_of("sensors/dev1/telemetry") == "sensors.dev1.telemetry"
    assert topic_of("sensors.dev1.telemetry") == "sensors/dev1/telemetry"


def test_a_topic_matches_the_filter_of_its_stream() -> None:
    assert matches("sensors/+/telemetry", "sensors/dev1/telemetry")
    assert not matches("sensors/+/telemetry", "sensors/dev1/status")
    assert not matches("sensors/+/telemetry", "sensors/dev1/telemetry/x")
