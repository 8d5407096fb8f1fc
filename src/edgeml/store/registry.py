"""Model versions for the CLI: list, export and import bundles, and commands to the daemon."""

from __future__ import annotations

import hashlib
import json
import pickle
import platform
import sqlite3
import time
import zipfile
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from edgeml import __version__
from edgeml.config import Config, StreamConfig
from edgeml.errors import EdgemlError
from edgeml.store.queries import connect_readonly, read_status
from edgeml.store.schema import create

__all__ = [
    "BUNDLE_FORMAT",
    "RegistryError",
    "export_bundle",
    "list_versions",
    "read_bundle",
    "send_command",
    "wait_for_result",
]

BUNDLE_FORMAT = "edgeml-model/1"


class RegistryError(EdgemlError):
    """A registry request that cannot be done; the message says why."""


def list_versions(db: Path, stream: str | None = None) -> list[dict[str, Any]]:
    """Every version of every stream/key (newest last), and which one is the champion."""
    conn = connect_readonly(db)
    try:
        rows = conn.execute(
            "SELECT r.stream, r.key, m.version, m.created, m.reason, m.parent, m.metrics,"
            " m.size, m.sha256, m.river, s.model_version AS champion FROM models m"
            " JOIN series r ON r.id = m.series LEFT JOIN summary s ON s.series = m.series"
            " WHERE ? IS NULL OR r.stream = ? ORDER BY r.stream, r.key, m.version",
            (stream, stream),
        ).fetchall()
    finally:
        conn.close()
    return [
        {
            "stream": r["stream"],
            "key": r["key"],
            "version": r["version"],
            "created": r["created"],
            "reason": r["reason"],
            "parent": r["parent"],
            "metrics": json.loads(r["metrics"]),
            "size": r["size"],
            "sha256": r["sha256"],
            "river": r["river"],
            "champion": r["version"] == (r["champion"] or 1),
        }
        for r in rows
    ]


def _model_blob(conn: sqlite3.Connection, row: dict[str, Any]) -> bytes:
    """The pickled pipeline of a version: the champion's live state, or a retired one's last."""
    if not row["champion"]:
        [(blob,)] = conn.execute(
            "SELECT CAST(m.blob AS BLOB) FROM models m JOIN series r ON r.id = m.series"
            " WHERE r.stream = ? AND r.key = ? AND m.version = ?",
            (row["stream"], row["key"], row["version"]),
        ).fetchall()
        return bytes(blob)
    snap = conn.execute(
        "SELECT CAST(n.blob AS BLOB), n.model_version FROM snapshots n"
        " JOIN series r ON r.id = n.series WHERE r.stream = ? AND r.key = ?"
        " ORDER BY n.seq DESC, n.id DESC LIMIT 1",
        (row["stream"], row["key"]),
    ).fetchone()
    if snap is None or snap[1] != row["version"]:
        raise RegistryError(
            f"{row['stream']}/{row['key']}: the champion has no snapshot yet; it is written "
            "every [models] snapshot_interval and when the daemon stops"
        )
    # The snapshot is our own file, written by the daemon: unpickling it is safe.
    state = pickle.loads(bytes(snap[0]))
    return pickle.dumps(state["model"], protocol=pickle.HIGHEST_PROTOCOL)


def export_bundle(
    cfg: Config, stream: str, key: str, version: int | None, out: Path
) -> dict[str, Any]:
    """Write one version (default: the champion) as a bundle; returns its manifest."""
    versions = [v for v in list_versions(cfg.db_path, stream) if v["key"] == key]
    if not versions:
        raise RegistryError(f"{stream}/{key}: no such model (see `edgeml models list`)")
    if version is None:
        row = next(v for v in versions if v["champion"])
    else:
        found = [v for v in versions if v["version"] == version]
        if not found:
            have = ", ".join(str(v["version"]) for v in versions)
            raise RegistryError(f"{stream}/{key} has no version {version} (it has {have})")
        row = found[0]
    conn = connect_readonly(cfg.db_path)
    try:
        blob = _model_blob(conn, row)
    finally:
        conn.close()
    sc = next((s for s in cfg.stream if s.name == stream), None)
    lineage, parent = [], row["version"]
    by_version = {v["version"]: v for v in versions}
    while parent is not None and parent in by_version:
        v = by_version[parent]
        lineage.append({k: v[k] for k in ("version", "reason", "parent", "created")})
        parent = v["parent"]
    manifest = {
        "format": BUNDLE_FORMAT,
        "exported": time.time(),
        "edgeml": __version__,
        "river": package_version("river"),
        "python": platform.python_version(),
        "numpy": package_version("numpy"),
        "stream": stream,
        "key": key,
        "task": sc.task if sc else None,
        "target": sc.target if sc else None,
        "features": list(sc.features) if sc and sc.features is not None else None,
        "preset": sc.model if sc else None,
        "params": {},
        "version": row["version"],
        "reason": row["reason"],
        "created": row["created"],
        "metrics": row["metrics"],
        "lineage": lineage,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(manifest, indent=2))
        z.writestr("model.pkl", blob)
    return manifest


def read_bundle(path: Path) -> tuple[dict[str, Any], bytes]:
    """A bundle's manifest and model bytes, checked against the manifest's sha256."""
    try:
        with zipfile.ZipFile(path) as z:
            manifest = json.loads(z.read("manifest.json"))
            blob = z.read("model.pkl")
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as exc:
        raise RegistryError(f"{path}: not an edgeml model bundle: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise RegistryError(f"{path}: unknown bundle format {manifest.get('format')!r}")
    if hashlib.sha256(blob).hexdigest() != manifest.get("sha256"):
        raise RegistryError(f"{path}: model.pkl does not match the manifest's sha256")
    return manifest, blob


def import_problems(manifest: dict[str, Any], stream: StreamConfig) -> list[str]:
    """Why a bundle does not fit a stream (empty: it fits)."""
    problems = []
    wanted = {
        "task": stream.task,
        "target": stream.target,
        "features": list(stream.features) if stream.features is not None else None,
    }
    for field, value in wanted.items():
        if manifest.get(field) != value:
            problems.append(f"{field} is {manifest.get(field)!r}, the stream's is {value!r}")
    river = package_version("river")
    if manifest.get("river") != river:
        problems.append(f"made with River {manifest.get('river')}, this is River {river}")
    return problems


def send_command(
    db: Path, kind: str, stream: str, key: str, args: dict[str, Any], blob: bytes | None = None
) -> int:
    if not db.exists():
        if kind != "import":
            raise RegistryError(
                f"{db}: no database yet (has `edgeml run` started with this config?)"
            )
        # A node provisioned before it ever ran: the import waits for its first start.
        try:
            create(db)
        except (OSError, sqlite3.Error) as exc:
            raise RegistryError(f"{db}: cannot create the state file: {exc}") from exc
    with sqlite3.connect(db, timeout=10) as conn:
        cur = conn.execute(
            "INSERT INTO commands(created, kind, stream, key, args, blob) VALUES (?,?,?,?,?,?)",
            (time.time(), kind, stream, key, json.dumps(args), blob),
        )
        command_id = int(cur.lastrowid or 0)
    conn.close()
    return command_id


def snapshot_now(db: Path) -> bool:
    """Ask a running daemon to snapshot every model that learned since its last snapshot, and
    wait until it has; False when no daemon is running (the stored snapshots are the newest:
    a daemon snapshots every model when it stops).
    """
    if not read_status(db)["daemon"]["running"]:
        return False
    result = wait_for_result(db, send_command(db, "snapshot", "*", "*", {}))
    return result is not None and result[0] == "done"


def wait_for_result(db: Path, command_id: int, timeout: float = 5.0) -> tuple[str, str] | None:
    """The command's (status, result) once the running daemon has applied it; None if no
    daemon is running (it will be applied at the next start) or it did not answer in time.
    """
    if not read_status(db)["daemon"]["running"]:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = connect_readonly(db)
        try:
            row = conn.execute(
                "SELECT status, result FROM commands WHERE id = ?", (command_id,)
            ).fetchone()
        finally:
            conn.close()
        if row is not None and row["status"] != "pending":
            return row["status"], json.loads(row["result"])
        time.sleep(0.1)
    return None
