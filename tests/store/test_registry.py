"""`edgeml models`: list, export, import and rollback, through the commands table."""

from __future__ import annotations

import asyncio
import hashlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

from river import linear_model, preprocessing
from typer.testing import CliRunner

from edgeml.cli.app import app
from tests.conftest import (
    TELEMETRY,
    Broker,
    db_rows,
    load_config,
    publish_all,
    running,
    settle,
    write_config,
)
from tests.helpers import telemetry

runner = CliRunner()
PROBE = [{"i": float(i), "h": 40.0 + i % 9} for i in range(0, 300, 30)]


async def cli(*args: str) -> Any:
    # In a thread: the CLI waits (blocking) for the daemon, which runs on this event loop.
    return await asyncio.to_thread(runner.invoke, app, list(args), prog_name="edgeml")


def versions(config: Path) -> list[dict[str, Any]]:
    r = runner.invoke(app, ["models", "list", "-c", str(config), "--json"], prog_name="edgeml")
    assert r.exit_code == 0, r.output
    return list(json.loads(r.stdout))


def bundle_model(path: Path) -> tuple[dict[str, Any], Any]:
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("manifest.json")), pickle.loads(z.read("model.pkl"))


async def test_export_import_and_rollback(broker: Broker, tmp_path: Path) -> None:
    config = write_config(tmp_path, broker, TELEMETRY)
    cfg = load_config(config)
    async with running(cfg):
        await publish_all(broker, telemetry(300))
        assert await settle(cfg, 300) == 300
    rows = versions(config)
    assert [(r["key"], r["version"], r["reason"], r["champion"]) for r in rows] == [
        ("dev0", 1, "initial", True),
        ("dev1", 1, "initial", True),
        ("dev2", 1, "initial", True),
    ]

    # Export dev0's champion: its live model, as the daemon left it.
    bundle = tmp_path / "dev0.edgeml"
    r = runner.invoke(app, ["models", "export", "temp/dev0", "-o", str(bundle), "-c", str(config)])
    assert r.exit_code == 0, r.output
    manifest, dev0 = bundle_model(bundle)
    assert manifest["format"] == "edgeml-model/1"
    assert (manifest["stream"], manifest["key"], manifest["version"]) == ("temp", "dev0", 1)
    assert (manifest["task"], manifest["target"], manifest["features"]) == (
        "regression",
        "t",
        ["i", "h"],
    )
    for name in ("edgeml", "river", "python", "numpy", "sha256", "metrics", "lineage"):
        assert name in manifest
    assert dev0.predict_one(PROBE[3]) != 0.0  # trained, not the initial empty model

    async with running(cfg) as daemon:
        # Import it as dev1's model while the daemon runs: applied within 2 s.
        r = await cli(
            "models", "import", str(bundle), "--stream", "temp", "--key", "dev1", "-c", str(config)
        )
        assert r.exit_code == 0, r.output
        assert "version 2 is the champion: the imported model" in r.stdout
        assert "loading a pickle runs code" in r.stderr
        assert daemon.engine is not None
        live = daemon.engine.learners[("temp", "dev1")].model
        assert [live.predict_one(x) for x in PROBE] == [dev0.predict_one(x) for x in PROBE]
    rows = {(r["key"], r["version"]): r for r in versions(config)}
    assert rows[("dev1", 2)]["reason"] == "import" and rows[("dev1", 2)]["parent"] == 1
    assert rows[("dev1", 2)]["champion"] and not rows[("dev1", 1)]["champion"]

    # Roll dev1 back to version 1 with no daemon running: queued, applied at the next start.
    r = runner.invoke(app, ["models", "rollback", "temp/dev1", "--to", "1", "-c", str(config)])
    assert r.exit_code == 0, r.output
    assert "applied when `edgeml run` next starts" in r.stdout
    async with running(cfg) as daemon:
        assert daemon.engine is not None
        assert daemon.engine.learners[("temp", "dev1")].model_version == 3
    rows = {(r["key"], r["version"]): r for r in versions(config)}
    assert (rows[("dev1", 3)]["reason"], rows[("dev1", 3)]["parent"]) == ("rollback", 2)
    assert rows[("dev1", 3)]["champion"]
    # Version 1's stored model is its final trained state, so the rollback restored it.
    r = runner.invoke(
        app,
        [
            "models",
            "export",
            "temp/dev1",
            "--version",
            "1",
            "-o",
            str(tmp_path / "v1.edgeml"),
            "-c",
            str(config),
        ],
    )
    assert r.exit_code == 0, r.output
    _, v1 = bundle_model(tmp_path / "v1.edgeml")
    r = runner.invoke(
        app, ["models", "export", "temp/dev1", "-o", str(tmp_path / "v3.edgeml"), "-c", str(config)]
    )
    assert r.exit_code == 0, r.output
    _, v3 = bundle_model(tmp_path / "v3.edgeml")
    assert [v3.predict_one(x) for x in PROBE] == [v1.predict_one(x) for x in PROBE]
    assert v1.predict_one(PROBE[3]) != 0.0


async def test_export_all_and_refusals(broker: Broker, tmp_path: Path) -> None:
    config = write_config(tmp_path, broker, TELEMETRY)
    cfg = load_config(config)
    async with running(cfg):
        await publish_all(broker, telemetry(60))
        assert await settle(cfg, 60) == 60
    out = tmp_path / "all"
    r = runner.invoke(app, ["models", "export", "--all", "-o", str(out), "-c", str(config)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == [
        "temp__dev0__v1.edgeml", "temp__dev1__v1.edgeml", "temp__dev2__v1.edgeml",
    ]  # fmt: skip
    bundle = out / "temp__dev0__v1.edgeml"

    # A stream whose features differ refuses it, unless forced.
    other = tmp_path / "other.toml"
    other.write_text(config.read_text().replace('features = ["i", "h"]', 'features = ["h"]'))
    r = runner.invoke(
        app,
        ["models", "import", str(bundle), "--stream", "temp", "--key", "dev1", "-c", str(other)],
    )
    assert r.exit_code == 1
    assert "features is ['i', 'h'], the stream's is ['h']" in r.stderr

    # A bundle whose model was altered fails its sha256.
    tampered = tmp_path / "tampered.edgeml"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(tampered, "w") as dst:
        dst.writestr("manifest.json", src.read("manifest.json"))
        dst.writestr("model.pkl", src.read("model.pkl") + b"\x00")
    r = runner.invoke(
        app,
        ["models", "import", str(tampered), "--stream", "temp", "--key", "dev1", "-c", str(config)],
    )
    assert r.exit_code == 1 and "sha256" in r.stderr

    # Unknown versions and keys are named.
    r = runner.invoke(app, ["models", "rollback", "temp/dev1", "--to", "7", "-c", str(config)])
    assert r.exit_code == 1 and "has no version 7 (it has 1)" in r.stderr
    r = runner.invoke(app, ["models", "export", "temp/nope", "-c", str(config)])
    assert r.exit_code == 1 and "no such model" in r.stderr


async def test_retrain_starts_a_challenger_warm_started_on_the_newest_samples(
    broker: Broker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, broker, TELEMETRY)
    cfg = load_config(config)
    async with running(cfg) as daemon:
        await publish_all(broker, telemetry(300))
        assert await settle(cfg, 300) == 300
        r = await cli("models", "retrain", "temp/dev2", "--samples", "40", "-c", str(config))
        assert r.exit_code == 0, r.output
        assert "a challenger trained on the newest 40 samples is in its grace period" in r.stdout
        assert daemon.engine is not None
        challenger = daemon.engine.learners[("temp", "dev2")].challenger
        assert challenger is not None and challenger.reason == "manual"
        live = challenger.model
    # The same preset trained on dev2's newest 40 samples, oldest first, is that model.
    rows = db_rows(
        cfg,
        "SELECT s.x, s.y FROM samples s JOIN series r ON r.id = s.series WHERE r.key = 'dev2'"
        " ORDER BY s.seq DESC LIMIT 40",
    )
    expected = preprocessing.StandardScaler() | linear_model.LinearRegression()
    for x, y in reversed(rows):
        expected.learn_one(json.loads(x), y)
    assert [live.predict_one(x) for x in PROBE] == [expected.predict_one(x) for x in PROBE]
    # No new version until the challenger has proved itself on new readings.
    assert [(r["key"], r["version"]) for r in versions(config) if r["key"] == "dev2"] == [
        ("dev2", 1)
    ]


async def test_import_seeds_a_key_that_has_no_model_yet(broker: Broker, tmp_path: Path) -> None:
    """Train on one device, deploy to another that has sent nothing yet."""
    config = write_config(tmp_path, broker, TELEMETRY)
    cfg = load_config(config)
    async with running(cfg):
        await publish_all(broker, telemetry(300))
        assert await settle(cfg, 300) == 300
    bundle = tmp_path / "dev0.edgeml"
    r = runner.invoke(app, ["models", "export", "temp/dev0", "-o", str(bundle), "-c", str(config)])
    assert r.exit_code == 0, r.output
    _, dev0 = bundle_model(bundle)
    async with running(cfg) as daemon:
        r = await cli(
            "models", "import", str(bundle), "--stream", "temp", "--key", "attic", "-c", str(config)
        )
        assert r.exit_code == 0, r.output + r.stderr
        assert "version 2 is the champion: the imported model" in r.stdout
        assert daemon.engine is not None
        live = daemon.engine.learners[("temp", "attic")].model
        assert [live.predict_one(x) for x in PROBE] == [dev0.predict_one(x) for x in PROBE]
        # Its first reading is predicted by the imported model, not a fresh one.
        await publish_all(broker, [("sensors/attic/telemetry", b'{"i": 3, "h": 43, "t": 24.5}')])
        assert await settle(cfg, 301) == 301
    [(y_pred,)] = db_rows(
        cfg,
        "SELECT p.y_pred FROM predictions p JOIN samples s USING (seq) ORDER BY seq DESC LIMIT 1",
    )
    assert y_pred == dev0.predict_one({"i": 3.0, "h": 43.0})
    rows = {(r["key"], r["version"]): r["reason"] for r in versions(config)}
    assert rows[("attic", 1)] == "initial" and rows[("attic", 2)] == "import"


def test_a_bundle_of_another_task_is_refused_even_with_force(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[node]\nstate_dir = "{tmp_path}"\n'
        '[[stream]]\nname = "vib"\ntopic = "v/+"\ntask = "anomaly"\nfeatures = ["rms"]\n'
    )
    bundle = tmp_path / "reg.edgeml"
    blob = pickle.dumps(linear_model.LinearRegression())
    manifest = {"format": "edgeml-model/1", "task": "regression", "target": "t",
                "features": None, "sha256": hashlib.sha256(blob).hexdigest()}  # fmt: skip
    with zipfile.ZipFile(bundle, "w") as z:
        z.writestr("manifest.json", json.dumps(manifest))
        z.writestr("model.pkl", blob)
    r = runner.invoke(
        app,
        [
            "models",
            "import",
            str(bundle),
            "--stream",
            "vib",
            "--key",
            "k",
            "--force",
            "-c",
            str(config),
        ],
        prog_name="edgeml",
    )
    assert r.exit_code == 1
    assert "is a regression model and vib is an anomaly stream" in r.stderr, r.stderr


async def test_export_all_while_the_daemon_runs_writes_every_model_as_it_is_now(
    broker: Broker, tmp_path: Path
) -> None:
    """No model has a snapshot yet (the first is due after 5 minutes): export asks the daemon
    for one, so the bundles hold the live models, not nothing or a stale state.
    """
    config = write_config(tmp_path, broker, TELEMETRY)
    cfg = load_config(config)
    async with running(cfg) as daemon:
        await publish_all(broker, telemetry(300))
        assert await settle(cfg, 300) == 300
        assert db_rows(cfg, "SELECT count(*) FROM snapshots") == [(0,)]
        r = await cli(
            "models", "export", "--all", "-o", str(tmp_path / "backup"), "-c", str(config)
        )
        assert r.exit_code == 0, r.output + r.stderr
        assert "3 of 3 models exported" in r.stdout
        assert daemon.engine is not None
        for key in ("dev0", "dev1", "dev2"):
            _, model = bundle_model(tmp_path / "backup" / f"temp__{key}__v1.edgeml")
            live = daemon.engine.learners[("temp", key)].model
            assert [model.predict_one(x) for x in PROBE] == [live.predict_one(x) for x in PROBE]


async def test_a_node_that_never_ran_accepts_an_import(broker: Broker, tmp_path: Path) -> None:
    """Provisioning: a model trained elsewhere is imported before the node's first start,
    and its first reading is predicted by it.
    """
    trained = tmp_path / "trained"
    trained.mkdir()
    source = load_config(write_config(trained, broker, TELEMETRY))
    async with running(source):
        await publish_all(broker, telemetry(300))
        assert await settle(source, 300) == 300
    bundle = tmp_path / "dev0.edgeml"
    r = runner.invoke(
        app, ["models", "export", "temp/dev0", "-o", str(bundle), "-c", str(source.source)]
    )
    assert r.exit_code == 0, r.output
    _, dev0 = bundle_model(bundle)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    config = write_config(fresh, broker, TELEMETRY)
    cfg = load_config(config)
    assert not cfg.db_path.exists()
    r = runner.invoke(
        app,
        ["models", "import", str(bundle), "--stream", "temp", "--key", "attic", "-c", str(config)],
    )
    assert r.exit_code == 0, r.output + r.stderr
    assert "applied when `edgeml run` next starts" in r.stdout
    async with running(cfg):
        await publish_all(broker, [("sensors/attic/telemetry", b'{"i": 3, "h": 43, "t": 24.5}')])
        assert await settle(cfg, 1) == 1
    [(y_pred,)] = db_rows(cfg, "SELECT y_pred FROM predictions")
    assert y_pred == dev0.predict_one({"i": 3.0, "h": 43.0})
    rows = {(r["key"], r["version"]): r["reason"] for r in versions(config)}
    assert rows[("attic", 2)] == "import"
