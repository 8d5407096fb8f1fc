"""What every `edgeml` command shares: the --config option, stderr, loading the config."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgeml.config import Config, load
from edgeml.errors import ConfigError, EdgemlError

__all__ = ["ConfigOpt", "err", "exit_on_error", "fail", "load_or_exit", "split_target"]

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


@contextlib.contextmanager
def exit_on_error(*also: type[Exception]) -> Iterator[None]:
    """An EdgemlError (or one of `also`) in the block: its message on stderr, exit 1."""
    caught: tuple[type[Exception], ...] = (EdgemlError, *also)
    try:
        yield
    except caught as exc:
        raise fail(str(exc)) from None


def load_or_exit(path: Path) -> Config:
    """The config, with every `[stream.params]` checked against its estimator; exit 2 if bad."""
    try:
        cfg = load(path)
        if any(s.params for s in cfg.stream):
            # Only then is River imported (seconds on a Pi): the estimators say what they take.
            from edgeml.learn.check import check_params

            check_params(cfg)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    return cfg


def split_target(target: str) -> tuple[str, str]:
    """STREAM/KEY -> (stream, key); exit 2 naming the expected form."""
    stream, sep, key = target.partition("/")
    if not sep or not stream or not key:
        raise fail(f"{target!r}: give STREAM/KEY, e.g. temperature/kitchen", 2)
    return stream, key
