"""The exception tree: one root, a few kinds the CLI maps to exit codes."""


class EdgemlError(Exception):
    """Root of every error edgeml raises on purpose (exit code 1)."""


class ConfigError(EdgemlError):
    """The configuration is invalid; the message names the file and the dotted key (exit 2)."""


class StoreError(EdgemlError):
    """The SQLite store cannot be opened, migrated or written."""


class DiskFull(StoreError):
    """A write failed for want of space (SQLITE_FULL, ENOSPC): a state to wait out, not a crash.

    Nothing of the failed transaction was committed; the same write can be tried again.
    """

    def __init__(self, message: str, path: str, free_bytes: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.free_bytes = free_bytes


class TransportError(EdgemlError):
    """The message source (a NATS cluster) cannot be reached or set up."""
