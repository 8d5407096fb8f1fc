"""The tree keeps its shape: modules under 400 lines, functions under 60, a pure core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import edgeml

SRC = Path(edgeml.__file__).parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, long


def test_no_function_is_over_60_lines() -> None:
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(SRC)}:{node.lineno} {node.name}"] = lines
    assert not long, long


def test_the_core_loads_no_mqtt_and_no_sqlite() -> None:
    """Importing the engine (and so decode, learn and records) pulls in no I/O library.

    (asyncio is loaded, by structlog; that no module of the core imports it is the
    import-linter contract's job in `make lint`.)
    """
    code = (
        "import sys, edgeml.core.engine\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiomqtt', 'paho', 'aiosqlite'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
