"""The HTTP surface of a real daemon (real mosquitto, real aiohttp server, real requests):
/metrics, /healthz, the read API, predictions without learning, the page, the token.
"""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client.parser import text_string_to_metric_families

from edgeml.config import load
from edgeml.errors import ConfigError
from edgeml.records import RejectReason
from tests.conftest import Broker, db_rows, publish_all, running, wait_for
from tests.helpers import http_config, telemetry


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def scrape(client: aiohttp.ClientSession, base: str) -> dict[tuple[str, Any], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    async with client.get(f"{base}/metrics") as r:
        assert r.status == 200, await r.text()
        text = await r.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def rejected(metrics: dict[tuple[str, Any], float], reason: str) -> float | None:
    return metrics.get(("edgeml_messages_rejected_total", (("reason", reason), ("stream", "temp"))))


async def test_metrics_count_what_the_daemon_did(
    tmp_path: Path, broker: Broker, client: aiohttp.ClientSession
) -> None:
    cfg, base = http_config(tmp_path, broker)
    async with running(cfg) as daemon:
        first = await scrape(client, base)
        # Every reason is there at 0 from the first scrape, so rate() sees the first reject.
        assert {r.value: rejected(first, r.value) for r in RejectReason} == {
            r.value: 0 for r in RejectReason
        }
        assert first[("edgeml_samples_learned_total", (("stream", "temp"),))] == 0
        assert first[("edgeml_mqtt_connected", ())] == 1
        info = [k for k in first if k[0] == "edgeml_build_info"]
        assert info and dict(info[0][1]).keys() == {"version", "river_version", "python_version"}
        assert ("process_resident_memory_bytes", ()) in first

        await publish_all(broker, [("sensors/dev0/telemetry", b"{not json"), *telemetry(60)])
        await wait_for(lambda: daemon.engine is not None and daemon.engine.learned == 60)
        after = await scrape(client, base)
        assert rejected(after, "not_json") == 1
        assert rejected(after, "missing_feature") == 0
        assert after[("edgeml_samples_learned_total", (("stream", "temp"),))] == 60
        assert after[("edgeml_messages_received_total", (("stream", "temp"),))] == 61
        assert after[("edgeml_predictions_published_total", (("stream", "temp"),))] > 0
        assert after[("edgeml_models", (("state", "live"),))] == 3
        assert after[("edgeml_learn_duration_seconds_count", ())] >= 60 // 16
        assert after[("edgeml_commit_duration_seconds_count", ())] >= 1
        assert after[("edgeml_database_bytes", (("file", "db"),))] > 0
        assert ("edgeml_stream_last_message_timestamp_seconds", (("stream", "temp"),)) in after
        # Per-key series only when asked for.
        assert not [k for k in after if k[0].startswith("edgeml_key_")]

        async with client.get(f"{base}/healthz") as r:
            assert r.status == 200
            health = await r.json()
        assert health["status"] == "ok" and health["reasons"] == [] and health["learned"] == 60


async def test_per_key_series_are_capped(
    tmp_path: Path, broker: Broker, client: aiohttp.ClientSession
) -> None:
    cfg, base = http_config(tmp_path, broker, "per_key = true\nmax_key_series = 100")
    async with running(cfg) as daemon:
        await publish_all(broker, telemetry(150, devices=150))
        await wait_for(lambda: daemon.engine is not None and daemon.engine.learned == 150)
        metrics = await scrape(client, base)
    keys = {dict(labels)["key"] for name, labels in metrics if name == "edgeml_key_samples"}
    assert len(keys) == 100
    assert metrics[("edgeml_key_series_dropped", ())] == 50


async def test_read_api_and_page(
    tmp_path: Path, broker: Broker, client: aiohttp.ClientSession
) -> None:
    cfg, base = http_config(tmp_path, broker)
    async with running(cfg) as daemon:
        await publish_all(broker, telemetry(90))
        await wait_for(lambda: daemon.engine is not None and daemon.engine.learned == 90)
        await wait_for(lambda: db_rows(cfg, "SELECT count(*) FROM summary")[0][0] == 3)
        async with client.get(f"{base}/api/v1/status") as r:
            status = await r.json()
        assert status["daemon"]["running"] is True
        assert {(s["stream"], s["key"]) for s in status["streams"]} == {
            ("temp", f"dev{i}") for i in range(3)
        }
        async with client.get(f"{base}/api/v1/models?stream=temp") as r:
            models = await r.json()
        assert {(m["key"], m["version"], m["champion"]) for m in models} == {
            (f"dev{i}", 1, True) for i in range(3)
        }
        async with client.get(f"{base}/api/v1/history/temp/dev1?points=10") as r:
            history = await r.json()
        assert history["stream"] == "temp" and 0 < len(history["buckets"]) <= 10
        async with client.get(f"{base}/api/v1/history/temp/nope") as r:
            assert r.status == 404
        async with client.get(f"{base}/api/v1/events?limit=5&kind=drift&until=1e12") as r:
            assert r.status == 200 and await r.json() == []
        for bad in ("limit=0", "kind=nonsense", "since=yesterday", "since=nan"):
            async with client.get(f"{base}/api/v1/events?{bad}") as r:
                assert r.status == 400, bad
        async with client.get(f"{base}/api/v1/openapi.json") as r:
            doc = await r.json()
        assert doc["openapi"].startswith("3.") and "/api/v1/predict/{stream}/{key}" in doc["paths"]
        async with client.get(f"{base}/") as r:
            page = await r.text()
        assert r.status == 200 and "temp/dev1" in page and "<svg" in page


async def test_predict_answers_from_the_champion_without_learning(
    tmp_path: Path, broker: Broker, client: aiohttp.ClientSession
) -> None:
    cfg, base = http_config(tmp_path, broker)
    async with running(cfg) as daemon:
        await publish_all(broker, telemetry(200, devices=1))
        await wait_for(lambda: daemon.engine is not None and daemon.engine.learned == 200)
        engine = daemon.engine
        assert engine is not None
        learner = engine.learners[("temp", "dev0")]
        twin = copy.deepcopy(learner)  # the model as it would be without the request
        before = pickle.dumps(learner.model)
        async with client.post(f"{base}/api/v1/predict/temp/dev0", json={"i": 7, "h": 45.5}) as r:
            assert r.status == 200, await r.text()
            got = await r.json()
        expected = learner.model.predict_one({"i": 7.0, "h": 45.5})
        assert got["prediction"] == expected
        assert got["model_version"] == 1 and got["features"] == {"i": 7.0, "h": 45.5}
        assert pickle.dumps(learner.model) == before
        assert learner.samples == twin.samples == 200

        # The next reading is predicted exactly as the untouched twin predicts it.
        nxt = {"i": 1000, "h": 50.0, "t": 28.0}
        await publish_all(broker, [("sensors/dev0/telemetry", json.dumps(nxt).encode())])
        await wait_for(lambda: db_rows(cfg, "SELECT count(*) FROM samples")[0][0] == 201)
        served = db_rows(
            cfg,
            "SELECT p.y_pred FROM predictions p JOIN samples s ON s.seq = p.seq"
            " ORDER BY s.seq DESC LIMIT 1",
        )[0][0]
        assert served == twin.task.predict(twin.model, {"i": 1000.0, "h": 50.0}).value

        cases = [
            ("temp/dev0", b'{"i": 1}', 422, "missing_feature"),
            ("temp/dev0", b'{"i": NaN, "h": 1}', 422, "non_finite"),
            ("temp/dev0", b'{"i": 1e400, "h": 1}', 422, "non_finite"),
            ("temp/dev0", b'{"i": "x", "h": 1}', 422, "non_numeric"),
            ("temp/dev0", b"[1, 2]", 422, "not_object"),
            ("temp/dev0", b"{nope", 400, "not_json"),
            ("temp/dev9", b'{"i": 1, "h": 1}', 404, "unknown_key"),
            ("nope/dev0", b'{"i": 1, "h": 1}', 404, "unknown_stream"),
        ]
        for path, body, code, error in cases:
            async with client.post(f"{base}/api/v1/predict/{path}", data=body) as r:
                assert (r.status, (await r.json())["error"]) == (code, error), body
        assert pickle.dumps(learner.model) != before  # it did learn the reading after all
        assert engine.learned == 201


async def test_token_is_required_when_set(
    tmp_path: Path, broker: Broker, client: aiohttp.ClientSession
) -> None:
    (tmp_path / "token").write_text("s3cret-token\n")
    cfg, base = http_config(tmp_path, broker, 'token_file = "token"')
    async with running(cfg):
        async with client.get(f"{base}/metrics") as r:
            assert r.status == 401 and "Bearer" in r.headers["WWW-Authenticate"]
        wrong = {"Authorization": "Bearer nope"}
        async with client.get(f"{base}/api/v1/status", headers=wrong) as r:
            assert r.status == 401
        right = {"Authorization": "Bearer s3cret-token"}
        async with client.get(f"{base}/metrics", headers=right) as r:
            assert r.status == 200


def test_http_is_off_by_default_and_a_public_listen_needs_a_token(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    stream = '[[stream]]\nname = "s"\ntopic = "a/+"\ntarget = "t"\n'
    path.write_text(stream)
    cfg = load(path)
    assert cfg.http.enabled is False and cfg.http.listen == "127.0.0.1:9883"
    path.write_text(f'[http]\nenabled = true\nlisten = "0.0.0.0:9883"\n{stream}')
    with pytest.raises(ConfigError, match=r"http\.token_file: required .* not a loopback"):
        load(path)
    path.write_text(f'[http]\nenabled = true\nlisten = "[::1]:9883"\n{stream}')
    assert load(path).http.host == "::1"
    path.write_text(f'[http]\nlisten = "9883"\n{stream}')
    with pytest.raises(ConfigError, match=r"http\.listen: .* must be HOST:PORT"):
        load(path)


async def test_healthz_says_why_it_is_unhealthy(
    tmp_path: Path, broker: Broker, client: aiohttp.ClientSession
) -> None:
    cfg, base = http_config(tmp_path, broker)
    async with running(cfg):
        broker.stop()
        reasons: list[str] = []

        async def unhealthy() -> None:
            async with client.get(f"{base}/healthz") as r:
                body = await r.json()
                if r.status == 503:
                    reasons.extend(body["reasons"])

        async with asyncio.timeout(20):
            while not reasons:
                await unhealthy()
                await asyncio.sleep(0.1)
        assert any(r.startswith(f"broker {broker.host}:{broker.port} ") for r in reasons)
        async with client.get(f"{base}/metrics") as r:
            assert "edgeml_mqtt_connected 0.0" in await r.text()
        broker.start()  # the daemon stops cleanly: it says offline to a broker


async def test_mqtt5_request_response_answers_without_learning(
    tmp_path: Path, broker: Broker
) -> None:
    cfg, _ = http_config(tmp_path, broker)
    path = tmp_path / "config.toml"
    path.write_text(path.read_text().replace("[mqtt]\n", "[mqtt]\npredict_requests = true\n"))
    cfg = load(path)
    async with running(cfg) as daemon:
        await publish_all(broker, telemetry(100, devices=1))
        await wait_for(lambda: daemon.engine is not None and daemon.engine.learned == 100)
        assert daemon.engine is not None
        learner = daemon.engine.learners[("temp", "dev0")]
        before = pickle.dumps(learner.model)
        asked = f"edgeml/{cfg.node.id}/temp/dev0/predict"
        async with aiomqtt.Client(
            broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as client:
            await client.subscribe("replies/me", qos=1)
            answers = []
            for i, body in enumerate([{"i": 3, "h": 41.0}, {"i": 3}]):
                props = Properties(PacketTypes.PUBLISH)
                props.ResponseTopic = "replies/me"
                props.CorrelationData = f"req-{i}".encode()
                await client.publish(asked, json.dumps(body), qos=1, properties=props)
                async with asyncio.timeout(10):
                    message = await anext(aiter(client.messages))
                answers.append((message.properties.CorrelationData, json.loads(message.payload)))
        (c0, ok), (c1, bad) = answers
        assert c0 == b"req-0" and ok["prediction"] == learner.model.predict_one(
            {"i": 3.0, "h": 41.0}
        )
        assert c1 == b"req-1" and bad["error"] == "missing_feature" and bad["status"] == 422
        assert pickle.dumps(learner.model) == before
        assert daemon.engine.learned == 100 and daemon.transport.received == 100
