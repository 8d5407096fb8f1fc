"""The typer CLI and its renderers (status view, report, plot, demo)."""

from edgeml.cli.app import app, main

__all__ = ["app", "main"]
