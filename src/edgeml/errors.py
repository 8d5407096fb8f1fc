"""The exception tree: one root, a few kinds the CLI maps to exit codes."""


class EdgemlError(Exception):
    """Root of every error edgeml raises on purpose (exit code 1)."""


class ConfigError(EdgemlError):
    """The configuration is invalid; the message names the file and the dotted key (exit 2)."""


class StoreError(EdgemlError):
    """The SQLite store cannot be opened, migrated or written."""
