"""What every `edgeml` command shares: the --config option, stderr, loading the config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgeml.config import Config, load
from edgeml.errors import ConfigError

__all__ = ["ConfigOpt", "err", "fail", "load_or_exit"]

ConfigOpt = Annotated[
    Path,
    typer.Option(
        "--config", "-c", envvar="EDGEML_CONFIG", help="The TOML config file.", dir_okay=False
    ),
]

err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` on stderr and return the Exit to raise (config errors use code 2)."""
    err.print(message, markup=False, highlight=False)
    return typer.Exit(code)


def load_or_exit(path: Path) -> Config:
    try:
        return load(path)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
