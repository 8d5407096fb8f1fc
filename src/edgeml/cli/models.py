"""`edgeml models ...`: list, export, import, roll back and retrain model versions."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgeml.cli.common import ConfigOpt, err, exit_on_error, fail, load_or_exit, split_target
from edgeml.config import Config
from edgeml.errors import EdgemlError

app = typer.Typer(
    help="Model versions: list, export, import, roll back, retrain.",
    no_args_is_help=True,
    add_completion=False,
    # Help is plain text: with rich markup, `pip install 'edgeml[report]'` lost `[report]`.
    rich_markup_mode=None,
)


def _to_owner(
    cfg: Config, kind: str, stream: str, key: str, args: dict[str, Any], blob: bytes | None = None
) -> None:
    """backend nats: the command goes to the node that owns the key's partition, which
    applies it, snapshots the key and answers.
    """
    from edgeml.cli.cluster import need_nats
    from edgeml.partitions import partition_of

    need_nats(cfg)
    from edgeml.transport.nats_link import send_command

    command = {"kind": kind, "stream": stream, "key": key, "args": args}
    p = partition_of(key, cfg.nats.partitions)
    with exit_on_error():
        answer = asyncio.run(send_command(cfg.nats, p, command, blob))
    if answer.get("status") != "done":
        raise fail(f"{kind} of {stream}/{key} failed: {answer.get('result')}")
    typer.echo(answer.get("result"))


def _report(cfg: Config, command_id: int, what: str) -> None:
    """Wait for the daemon's answer to a command; `what` names it ("import of temp/attic")."""
    from edgeml.store.registry import wait_for_result

    result = wait_for_result(cfg.db_path, command_id)
    if result is None:
        typer.echo(
            f"{what} queued: no daemon is running (or it did not answer), "
            "so it is applied when `edgeml run` next starts"
        )
        return
    status, text = result
    if status != "done":
        raise fail(f"{what} failed: {text}")
    typer.echo(text)


def _a(word: object) -> str:
    return f"{'an' if str(word)[:1] in 'aeiou' else 'a'} {word}"


@app.command("list")
def list_(
    config: ConfigOpt = Path("config.toml"),
    stream: Annotated[str | None, typer.Option(help="Only this stream.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON, for scripts.")] = False,
) -> None:
    """Every version per stream/key, with its lineage, metrics and which one is the champion."""
    cfg = load_or_exit(config)
    from edgeml.store.registry import list_versions

    with exit_on_error():
        rows = list_versions(cfg.db_path, stream)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(show_edge=False, pad_edge=False)
    for col in ("stream/key", "ver", "", "created", "reason", "parent", "mae", "size", "sha256"):
        table.add_column(col)
    for r in rows:
        mae = r["metrics"].get("mae")
        table.add_row(
            f"{r['stream']}/{r['key']}",
            str(r["version"]),
            "[green]champion[/]" if r["champion"] else "",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"])),
            r["reason"],
            "-" if r["parent"] is None else str(r["parent"]),
            "-" if mae is None else f"{mae:.4g}",
            f"{r['size']} B",
            r["sha256"][:12],
        )
    Console().print(table if rows else "no models yet")


@app.command()
def export(
    target: Annotated[str | None, typer.Argument(help="STREAM/KEY (or use --all).")] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Bundle file (a directory with --all).")
    ] = Path("model.edgeml"),
    version: Annotated[
        int | None, typer.Option(help="A version number (default: the champion).")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Every champion into the directory -o.")
    ] = False,
    config: ConfigOpt = Path("config.toml"),
) -> None:
    """Write a model as a single-file bundle: the pickled pipeline and a JSON manifest."""
    cfg = load_or_exit(config)
    from edgeml.store.registry import export_bundle, snapshot_now

    if target is None and not all_:
        raise fail("give STREAM/KEY, or --all", 2)
    with exit_on_error():
        if version is None and not snapshot_now(cfg.db_path):
            err.print("no daemon is running: champions are exported as of their last snapshot")
        if all_:
            _export_all(cfg, out)
            return
        assert target is not None
        stream, key = split_target(target)
        manifest: dict[str, Any] = export_bundle(cfg, stream, key, version, out)
    typer.echo(
        f"{stream}/{key} v{manifest['version']} -> {out} "
        f"({manifest['size']} B, sha256 {manifest['sha256'][:12]})"
    )


def _export_all(cfg: Config, out: Path) -> None:
    """Every champion that can be exported is; the others are named, and the exit code is 1."""
    from edgeml.store.registry import export_bundle, list_versions

    champions = [r for r in list_versions(cfg.db_path) if r["champion"]]
    missed = []
    for r in champions:
        key = r["key"].replace("/", "__")  # a regex key may hold `/`
        path = out / f"{r['stream']}__{key}__v{r['version']}.edgeml"
        try:
            export_bundle(cfg, r["stream"], r["key"], None, path)
        except EdgemlError as exc:
            missed.append(str(exc))
            continue
        typer.echo(f"{r['stream']}/{r['key']} v{r['version']} -> {path}")
    typer.echo(f"{len(champions) - len(missed)} of {len(champions)} models exported to {out}")
    if missed:
        raise fail("not exported:\n" + "\n".join(missed))


@app.command("import")
def import_(
    bundle: Annotated[Path, typer.Argument(help="A bundle made by `edgeml models export`.")],
    stream: Annotated[str, typer.Option(help="The stream it is for.")],
    key: Annotated[str, typer.Option(help="The key (device) it is for.")],
    force: Annotated[
        bool, typer.Option(help="Import even if River's version or the stream differ.")
    ] = False,
    config: ConfigOpt = Path("config.toml"),
) -> None:
    """Make a bundle the champion of STREAM/KEY, as a new version (reason `import`).

    A bundle holds a pickle, and loading a pickle runs code: import only bundles you trust.
    """
    cfg = load_or_exit(config)
    from edgeml.store.registry import import_problems, read_bundle, send_command

    sc = next((s for s in cfg.stream if s.name == stream), None)
    if sc is None:
        raise fail(f"no stream {stream!r} in {config}", 2)
    with exit_on_error():
        manifest, blob = read_bundle(bundle)
    problems = import_problems(manifest, sc)
    if manifest.get("task") != sc.task:
        # Never forced: a model of another task fails on every reading.
        raise fail(
            f"{bundle} is {_a(manifest.get('task'))} model and {stream} is {_a(sc.task)} stream: "
            "it cannot serve it (--force skips only the version and field checks)"
        )
    if problems and not force:
        raise fail(
            f"{bundle} does not fit {stream}: "
            + "; ".join(problems)
            + " (--force to import anyway)"
        )
    err.print(
        "note: a bundle is a pickle, and loading a pickle runs code: import only bundles you trust"
    )
    if cfg.ingest.backend == "nats":
        return _to_owner(cfg, "import", stream, key, {"bundle": str(bundle)}, blob)
    with exit_on_error():
        command_id = send_command(cfg.db_path, "import", stream, key, {"bundle": str(bundle)}, blob)
    _report(cfg, command_id, f"import of {stream}/{key}")


@app.command()
def rollback(
    target: Annotated[str, typer.Argument(help="STREAM/KEY.")],
    to: Annotated[int, typer.Option("--to", help="The version to bring back.", min=1)],
    config: ConfigOpt = Path("config.toml"),
) -> None:
    """Bring back an earlier version's model as a new version (reason `rollback`)."""
    cfg = load_or_exit(config)
    from edgeml.store.registry import list_versions, send_command

    stream, key = split_target(target)
    if cfg.ingest.backend == "nats":  # the owner has the versions
        return _to_owner(cfg, "rollback", stream, key, {"to": to})
    with exit_on_error():
        versions = [v["version"] for v in list_versions(cfg.db_path, stream) if v["key"] == key]
        if to not in versions:
            raise fail(
                f"{target} has no version {to} (it has {', '.join(map(str, versions)) or 'none'})"
            )
        command_id = send_command(cfg.db_path, "rollback", stream, key, {"to": to})
    _report(cfg, command_id, f"rollback of {target}")


@app.command()
def retrain(
    target: Annotated[str, typer.Argument(help="STREAM/KEY.")],
    samples: Annotated[
        int, typer.Option(help="Train on this many of the newest stored samples.", min=1)
    ] = 500,
    config: ConfigOpt = Path("config.toml"),
) -> None:
    """Start a challenger trained on the newest samples: it shadows the champion for the
    stream's grace period and replaces it only if its error is reliably lower (reason
    `manual`; with retrain.policy = "reset" it replaces it at once).
    """
    cfg = load_or_exit(config)
    from edgeml.store.registry import list_versions, send_command

    stream, key = split_target(target)
    if cfg.ingest.backend == "nats":
        return _to_owner(cfg, "retrain", stream, key, {"samples": samples})
    with exit_on_error():
        if not any(v["key"] == key for v in list_versions(cfg.db_path, stream)):
            raise fail(f"{target}: no such model (see `edgeml models list`)")
        command_id = send_command(cfg.db_path, "retrain", stream, key, {"samples": samples})
    _report(cfg, command_id, f"retrain of {target}")
