"""Points a test can have the process killed at (kill -9), where no timing from outside can
hit: `EDGEML_FAILPOINT=warm_start edgeml run ...` (the durability tests use it).
"""

from __future__ import annotations

import os
import signal

__all__ = ["failpoint"]

_FAILPOINT = os.environ.get("EDGEML_FAILPOINT")


def failpoint(name: str) -> None:
    """Kill this process at once if the environment names this point."""
    if name == _FAILPOINT:
        os.kill(os.getpid(), signal.SIGKILL)
