"""`edgeml models ...`: list, export, import, roll back and retrain model versions."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgeml.cli.common import ConfigOpt, err, exit_on_error, fail, load_or_exit, split_target
from edgeml.config import Config

app = typer.Typer(
    help="Model versions: list, export, import, roll back, retrain.",
    no_args_is_help=True,
    add_completion=False,
)


def _report(cfg: Config, command_id: int) -> None:
    from edgeml.store.registry import wait_for_result

    result = wait_for_result(cfg.db_path, command_id)
    if result is None:
        typer.echo(
            f"command {command_id} queued: no daemon is running (or it did not answer), "
            "so it is applied when `edgeml run` next starts"
        )
        return
    status, text = result
    if status != "done":
        raise fail(f"command {command_id} failed: {text}")
    typer.echo(text)


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
    from edgeml.store.registry import export_bundle, list_versions

    with exit_on_error():
        if all_:
            champions = [r for r in list_versions(cfg.db_path) if r["champion"]]
            for r in champions:
                key = r["key"].replace("/", "__")  # a regex key may hold `/`
                path = out / f"{r['stream']}__{key}__v{r['version']}.edgeml"
                export_bundle(cfg, r["stream"], r["key"], None, path)
                typer.echo(f"{r['stream']}/{r['key']} v{r['version']} -> {path}")
            typer.echo(f"{len(champions)} models exported to {out}")
            return
        if target is None:
            raise fail("give STREAM/KEY, or --all", 2)
        stream, key = split_target(target)
        manifest: dict[str, Any] = export_bundle(cfg, stream, key, version, out)
    typer.echo(
        f"{stream}/{key} v{manifest['version']} -> {out} "
        f"({manifest['size']} B, sha256 {manifest['sha256'][:12]})"
    )


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
    if problems and not force:
        raise fail(
            f"{bundle} does not fit {stream}: "
            + "; ".join(problems)
            + " (--force to import anyway)"
        )
    err.print(
        "note: a bundle is a pickle, and loading a pickle runs code: import only bundles you trust"
    )
    with exit_on_error():
        command_id = send_command(cfg.db_path, "import", stream, key, {"bundle": str(bundle)}, blob)
    _report(cfg, command_id)


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
    with exit_on_error():
        versions = [v["version"] for v in list_versions(cfg.db_path, stream) if v["key"] == key]
        if to not in versions:
            raise fail(
                f"{target} has no version {to} (it has {', '.join(map(str, versions)) or 'none'})"
            )
        command_id = send_command(cfg.db_path, "rollback", stream, key, {"to": to})
    _report(cfg, command_id)


@app.command()
def retrain(
    target: Annotated[str, typer.Argument(help="STREAM/KEY.")],
    samples: Annotated[
        int, typer.Option(help="Train on this many of the newest stored samples.", min=1)
    ] = 500,
    config: ConfigOpt = Path("config.toml"),
) -> None:
    """Train a fresh model on the newest samples and make it the champion (reason `manual`)."""
    cfg = load_or_exit(config)
    from edgeml.store.registry import list_versions, send_command

    stream, key = split_target(target)
    with exit_on_error():
        if not any(v["key"] == key for v in list_versions(cfg.db_path, stream)):
            raise fail(f"{target}: no such model (see `edgeml models list`)")
        command_id = send_command(cfg.db_path, "retrain", stream, key, {"samples": samples})
    _report(cfg, command_id)
