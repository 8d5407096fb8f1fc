"""Regenerate the terminal captures in the docs from a real run of the demo.

    .venv/bin/python scripts/captures.py

Runs `edgeml demo` as `make demo` does, then `edgeml status` and `edgeml plot vibration/dev2` on its
state, and writes each output into the fenced block that follows its marker
(`<!-- capture: demo -->`, `<!-- capture: status -->`, `<!-- capture: plot -->`) in
README.md and docs/*.md. tests/test_captures.py checks that the captures keep the shape of
the real output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# As `make demo` runs it: the demo's hints name the command it was started as.
EDGEML = [os.path.relpath(Path(sys.executable).with_name("edgeml"), ROOT)]
MARKER = re.compile(r"(<!-- capture: (\w+) -->\n```[a-z]*\n)(.*?)(\n```)", re.S)


def run(*args: str) -> str:
    out = subprocess.run([*EDGEML, *args], capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.rstrip("\n")


def captures(state: Path) -> dict[str, str]:
    demo = run("demo", "--state-dir", str(state))
    # The demo names its temporary directory; the docs show a stable one.
    demo = demo.replace(str(state), "/tmp/edgeml-demo")
    config = str(state / "config.toml")
    return {
        "demo": demo,
        "status": run("status", "-c", config),
        "plot": run("plot", "vibration/dev2", "-c", config, "--width", "80", "--height", "12"),
    }


def write(found: dict[str, str]) -> list[str]:
    changed = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        new = MARKER.sub(
            lambda m: m.group(1) + found.get(m.group(2), m.group(3)) + m.group(4), text
        )
        if new != text:
            page.write_text(new)
            changed.append(str(page.relative_to(ROOT)))
    return changed


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="edgeml-captures-") as tmp:
        found = captures(Path(tmp))
    changed = write(found)
    print("updated: " + (", ".join(changed) if changed else "nothing (already current)"))


if __name__ == "__main__":
    main()
