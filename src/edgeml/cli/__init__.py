"""The typer CLI and its renderers (status view, report, plot, demo)."""

from edgeml.cli.app import main

__all__ = ["main"]
