"""Every example in README.md and docs/*.md runs: TOML blocks load, `edgeml` commands exist.

- Each ```toml block is written to a file and loaded with the config loader, then checked with
  `edgeml check`. A block marked by a `<!-- fragment -->` line just before it is merged into a
  minimal config first (its `[[stream]]` tables get a name, a topic and a target if they lack
  them); an unmarked block must be a whole config.
- Each `edgeml ...` command line in a ```sh, ```console, ```bash or ```shell block (and each
  `edgeml ...` in inline code) names a real subcommand and only options it has; a command
  line in a block also has as many positional arguments as the command takes.
- Each ```json block parses.
- The README is a front page: at most 250 lines, the two set-up commands first, and every
  link to a file (docs pages and their anchors included) points at something that exists;
  mkdocs.yml's nav lists every page under docs/.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

# The project's public entry points: the only names this test imports from edgeml.
from edgeml.cli import app
from edgeml.config import load

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
FRAGMENT = "<!-- fragment -->"
SHELL = {"sh", "console", "bash", "shell"}
MAX_README_LINES = 250

# What a fragment is merged into: one stream, every other key at its default.
MINIMAL_STREAM = {"name": "doc", "topic": "doc/+/reading", "target": "value"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, from 1
    lang: str
    text: str
    fragment: bool

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with their language and fragment mark."""
    out: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*```\s*([\w+-]*)", lines[i])
        if not fence:
            i += 1
            continue
        start, lang = i, fence.group(1).lower()
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i])
            i += 1
        before = [x for x in lines[:start] if x.strip()]
        marked = bool(before) and before[-1].strip() == FRAGMENT
        out.append(Block(page, start + 1, lang, "\n".join(body) + "\n", marked))
        i += 1
    return out


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
TOML_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "toml"]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang in SHELL]
JSON_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "json"]


# --- (a) TOML blocks load ------------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string for everything a config holds
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML for {v!r}")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def to_toml(doc: dict[str, Any]) -> str:
    """A dict as read by tomllib back to TOML: tables, then [[stream]] tables."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items() if not _is_table(v)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"\n[{_toml_key(name)}]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
        elif _is_table(table):
            for item in table:
                lines.append(f"\n[[{_toml_key(name)}]]")
                lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def _is_table(v: Any) -> bool:
    return isinstance(v, dict) or (
        isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)
    )


def merged(fragment: dict[str, Any]) -> dict[str, Any]:
    """A fragment completed into a config: its tables over the defaults, and a stream."""
    doc: dict[str, Any] = {k: v for k, v in fragment.items() if k != "stream"}
    streams = []
    for stream in fragment.get("stream", [dict(MINIMAL_STREAM)]):
        full = {"name": MINIMAL_STREAM["name"], "topic": MINIMAL_STREAM["topic"], **stream}
        if full.get("task", "regression") != "anomaly":
            full.setdefault("target", MINIMAL_STREAM["target"])
        streams.append(full)
    doc["stream"] = streams
    return doc


def test_merged_fragment_round_trips() -> None:
    fragment = {"mqtt": {"host": "b", "tls": {"ca_file": "/ca"}}, "stream": [{"task": "anomaly"}]}
    doc = merged(fragment)
    assert tomllib.loads(to_toml(doc)) == doc
    assert "target" not in doc["stream"][0] and doc["mqtt"]["tls"] == {"ca_file": "/ca"}


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=lambda b: b.id)
def test_toml_example_is_a_valid_config(block: Block, tmp_path: Path) -> None:
    text = block.text
    if block.fragment:
        text = to_toml(merged(tomllib.loads(text)))
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")

    cfg = load(path)  # raises ConfigError naming the key
    assert cfg.stream, block.id

    # What the daemon and the service's ExecStartPre run: also builds models with params.
    result = CliRunner().invoke(app, ["check", "-c", str(path)])
    assert result.exit_code == 0, f"{block.id}: {result.output}"


def test_the_docs_have_whole_configs_and_fragments() -> None:
    assert sum(not b.fragment for b in TOML_BLOCKS) >= 5
    assert any(b.fragment for b in TOML_BLOCKS)
    # A fragment mark that is not followed by a TOML block is a mistake.
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if line.strip() == FRAGMENT:
                nxt = next(x for x in lines[n + 1 :] if x.strip())
                assert nxt.strip() == "```toml", f"{page.name}:{n + 1}: {FRAGMENT} before {nxt}"


# --- (b) edgeml commands exist with the options used -----------------------------------------

ROOT = typer.main.get_command(app)
PUNCTUATION = {"|", "||", "&", "&&", ";", "(", ")", "<", ">", ">>"}


def command_lines(block: Block) -> list[str]:
    """A shell block's commands: continuation lines joined; in a console block, `$ ` lines."""
    raw = block.text.splitlines()
    if block.lang == "console":
        raw = [x[2:] for x in raw if x.startswith("$ ")]
    out: list[str] = []
    pending = ""
    for line in raw:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return [x for x in out if x.strip()]


def edgeml_invocations(line: str) -> list[list[str]]:
    """The argument lists of every `edgeml` in a command line (pipes and `sudo` allowed)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    for token in lexer:
        if token in PUNCTUATION:
            segments.append([])
        else:
            segments[-1].append(token)
    found = []
    for segment in segments:
        words = list(segment)
        while words and (words[0] == "sudo" or re.fullmatch(r"\w+=.*", words[0])):
            words.pop(0)
        if words and Path(words[0]).name == "edgeml":
            found.append(words[1:])
    return found


# typer builds click-style objects (its own copy of click, in recent versions): they are read
# by their attributes, not their classes.
def _options(cmd: Any) -> dict[str, bool]:
    """Every option name of a command -> whether it takes a value."""
    names = {"--help": False}
    for param in cmd.params:
        if param.param_type_name == "option":
            takes_value = not (param.is_flag or param.count)
            for name in (*param.opts, *param.secondary_opts):
                names[name] = takes_value
    return names


def _is_group(cmd: Any) -> bool:
    return hasattr(cmd, "commands")


def check_invocation(args: list[str], *, whole: bool) -> list[str]:
    """Problems with `edgeml ARGS`: [] if it names a real command and only its options.

    `whole`: the line gives every argument (a command in a block), so positional arguments
    are counted too; inline mentions such as `edgeml models retrain` often leave them out.
    """
    cmd: Any = ROOT
    path: list[str] = []
    positional: list[str] = []
    words = list(args)
    while words:
        word = words.pop(0)
        if word == "--":
            positional += words
            break
        if word.startswith("-") and word != "-":
            name, eq, _ = word.partition("=")
            takes_value = _options(cmd).get(name)
            label = " ".join(["edgeml", *path])
            if takes_value is None:
                return [f"{label}: no option {name}"]
            if takes_value and not eq:
                if not words:
                    return [f"{label}: {name} needs a value"]
                words.pop(0)
            continue
        if _is_group(cmd):
            if word.isupper():  # a placeholder such as COMMAND
                return []
            sub = cmd.commands.get(word)
            if sub is None:
                return [f"edgeml {' '.join([*path, word])}: no such command"]
            cmd, path = sub, [*path, word]
            continue
        positional.append(word)
    label = " ".join(["edgeml", *path])
    if _is_group(cmd):
        return [f"{label}: a subcommand is missing"] if whole else []
    if whole:
        arguments = [p for p in cmd.params if p.param_type_name == "argument"]
        required = sum(1 for p in arguments if p.required)
        most = float("inf") if any(p.nargs == -1 for p in arguments) else len(arguments)
        if not required <= len(positional) <= most:
            return [f"{label}: {len(positional)} arguments ({positional}), takes {required}-{most}"]
    return []


def inline_invocations(page: Path) -> list[tuple[str, list[str]]]:
    """`edgeml ...` in inline code outside the fenced blocks."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [(m, shlex.split(m)[1:]) for m in re.findall(r"`(edgeml [a-z-][^`|]*)`", text)]


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda b: b.id)
def test_shell_example_runs_real_commands(block: Block) -> None:
    problems = []
    for line in command_lines(block):
        for args in edgeml_invocations(line):
            found = check_invocation(args, whole=True)
            problems += [f"{block.id}: {line.strip()}: {p}" for p in found]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_inline_edgeml_mentions_are_real(page: Path) -> None:
    problems = []
    for text, args in inline_invocations(page):
        problems += [f"{page.name}: `{text}`: {p}" for p in check_invocation(args, whole=False)]
    assert not problems, "\n".join(problems)


def test_every_documented_command_answers_help() -> None:
    paths: set[tuple[str, ...]] = set()
    for block in SHELL_BLOCKS:
        for line in command_lines(block):
            for args in edgeml_invocations(line):
                words = [w for w in args if not w.startswith("-")]
                paths.add(tuple(words[:2]) if words[:1] == ["models"] else tuple(words[:1]))
    # Enough of the CLI is shown for the scan to mean something.
    assert {("check",), ("run",), ("status",), ("events",), ("models", "list")} <= paths
    runner = CliRunner()
    for path in sorted(paths):
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, f"edgeml {' '.join(path)} --help: {result.output}"


def test_the_checker_catches_mistakes() -> None:
    assert check_invocation(["status", "--json"], whole=True) == []
    assert check_invocation(["models", "rollback", "a/b", "--to", "1"], whole=True) == []
    assert check_invocation(["statos"], whole=True)
    assert check_invocation(["events", "--knd", "drift"], whole=True)
    assert check_invocation(["models", "rollback", "--to", "1"], whole=True)  # no STREAM/KEY
    assert edgeml_invocations("sudo edgeml run -c x | jq '.a | .b' # edgeml no") == [
        ["run", "-c", "x"]
    ]


@pytest.mark.parametrize("block", JSON_BLOCKS, ids=lambda b: b.id)
def test_json_example_parses(block: Block) -> None:
    json.loads(block.text)


# --- (c) the README is a front page ------------------------------------------------------------


def test_readme_is_a_front_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"
    first_screen = "\n".join(lines[:20])
    assert "make demo     # installs edgeml in .venv" in first_screen
    assert "make test     # installs the dev tools in .venv" in first_screen


def _slug(heading: str) -> str:
    """The anchor mkdocs (Python-Markdown's toc) gives a heading."""
    text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+\s+(.+?)\s*$", text, flags=re.M)}


def test_readme_links_point_at_pages_that_exist() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text(encoding="utf-8"))
    local = [x for x in links if not re.match(r"[a-z]+:", x)]
    assert any(x.startswith("docs/") for x in local)
    for link in local:
        target, _, anchor = link.partition("#")
        path = REPO / target
        assert path.exists(), f"README.md links to {link}: no such file"
        if anchor:
            assert anchor in _anchors(path), f"README.md links to {link}: no such heading"
    # Every page of the site is one click from the README.
    linked = {Path(x.partition("#")[0]).name for x in local if x.startswith("docs/")}
    missing = {p.name for p in DOCS.glob("*.md")} - linked - {"index.md"}
    assert not missing, f"the README does not link to {sorted(missing)}"


def test_mkdocs_nav_lists_every_page() -> None:
    nav = set(re.findall(r"([\w-]+\.md)\s*$", (REPO / "mkdocs.yml").read_text(), flags=re.M))
    assert nav == {p.name for p in DOCS.glob("*.md")}
