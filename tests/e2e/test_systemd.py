"""The service: the unit under systemd-analyze, install.sh in a temporary root, group access.

PID 1 here need not be systemd: these are offline checks of the files, and a daemon run under
the user, group and umask the unit gives it.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import edgeml
from edgeml.config import load
from tests.conftest import TELEMETRY, Broker, unavailable, wait_for, write_config

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "edgeml.service"
INSTALL = REPO / "systemd" / "install.sh"
ANALYZE = shutil.which("systemd-analyze")
# .ci/run sets this: there a missing systemd-analyze is a failure, not a skip.


@pytest.fixture
def analyze() -> str:
    if ANALYZE is None:
        unavailable(
            "systemd-analyze is not installed (apt-get install systemd)",
            "EDGEML_REQUIRE_SYSTEMD_ANALYZE",
        )
    return ANALYZE


def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def verify(analyze: str, unit_text: str, edgeml_exe: Path, tmp_path: Path) -> None:
    """`systemd-analyze verify`, with the unit's /opt/edgeml/venv/bin/edgeml at `edgeml_exe`
    (verify insists that the programs exist)."""
    copy = tmp_path / "verify" / "edgeml.service"
    copy.parent.mkdir(exist_ok=True)
    copy.write_text(unit_text.replace("/opt/edgeml/venv/bin/edgeml", str(edgeml_exe)))
    r = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, check=False)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


# -- the unit ------------------------------------------------------------------------------


def test_unit_passes_systemd_analyze_verify(analyze: str, tmp_path: Path) -> None:
    verify(analyze, UNIT.read_text(), Path(sys.executable).with_name("edgeml"), tmp_path)


def test_unit_exposure_is_at_most_2(analyze: str) -> None:
    r = subprocess.run(
        [analyze, "security", "--offline=true", "--threshold=20", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    m = re.search(r"Overall exposure level for edgeml\.service: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout
    assert r.returncode == 0  # --threshold=20 is the same limit, as systemd-analyze checks it


def test_unit_is_the_one_the_daemon_and_the_readme_describe() -> None:
    s = unit_settings(UNIT.read_text())
    assert s["Type"] == ["notify"]
    assert s["ExecStartPre"] == ["/opt/edgeml/venv/bin/edgeml check -c /etc/edgeml/config.toml"]
    assert s["ExecStart"] == ["/opt/edgeml/venv/bin/edgeml run -c /etc/edgeml/config.toml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["on-failure"]
    assert "StartLimitBurst" in s and "StartLimitIntervalSec" in s
    assert s["WatchdogSec"] == ["30s"]
    # The drain on SIGTERM takes about a second; systemd waits a minute before SIGKILL.
    assert s["TimeoutStopSec"] == ["60s"]
    assert s["User"] == s["Group"] == ["edgeml"]
    assert s["UMask"] == ["0027"] and s["StateDirectoryMode"] == ["0750"]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert s["CapabilityBoundingSet"] == [""]
    assert "MemoryMax" in s
    cfg = load(REPO / "systemd" / "config.toml")  # the template the service starts with
    assert cfg.node.state_dir == Path("/var/lib/edgeml") and cfg.log.format == "json"


# -- install.sh ----------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run_install(root: Path, *args: str) -> str:
    # Offline and without dependencies: this checks the installation, not PyPI.
    env = {**os.environ, "PIP_NO_DEPS": "1", "PIP_NO_INDEX": "1"}
    r = subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh sets root:edgeml ownership: needs root")
def test_install_sh_in_a_temporary_root_then_again_then_uninstall(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
    )
    [wheel] = wheels.glob("edgeml-*.whl")
    root = tmp_path / "root"
    root.mkdir()
    out = run_install(root, "--from", str(wheel))
    assert "sudo systemctl enable --now edgeml" in out and "usermod -aG edgeml" in out

    # The system user: no home, no shell; its group owns the config.
    [user] = [x for x in (root / "etc/passwd").read_text().splitlines() if x.startswith("edgeml:")]
    _, _, _, gid, _, home, shell = user.split(":")
    assert (home, shell) == ("/", "/usr/sbin/nologin")
    assert f"edgeml:x:{gid}:" in (root / "etc/group").read_text()

    unit = root / "etc/systemd/system/edgeml.service"
    assert unit.read_text() == UNIT.read_text() and mode(unit) == 0o644
    assert "Documentation=file:///opt/edgeml/README.md" in unit.read_text()
    assert (root / "opt/edgeml/README.md").read_text() == (REPO / "README.md").read_text()
    assert mode(root / "etc/sysusers.d/edgeml.conf") == 0o644
    confdir, config = root / "etc/edgeml", root / "etc/edgeml/config.toml"
    assert (mode(confdir), confdir.stat().st_uid, confdir.stat().st_gid) == (0o750, 0, int(gid))
    # It may hold the broker's password: root:edgeml 0640, nothing for others.
    assert (mode(config), config.stat().st_uid, config.stat().st_gid) == (0o640, 0, int(gid))
    assert load(config).node.state_dir == Path("/var/lib/edgeml")
    command = root / "usr/local/bin/edgeml"
    assert mode(command) == 0o755
    assert "exec /opt/edgeml/venv/bin/edgeml" in command.read_text()
    exe = root / "opt/edgeml/venv/bin/edgeml"
    assert exe.read_text().startswith("#!/opt/edgeml/venv/bin/python\n")  # as it will run
    version = subprocess.run(
        [str(root / "opt/edgeml/venv/bin/python"), "-c",
         "from importlib.metadata import version; print(version('edgeml'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert version == edgeml.__version__
    if ANALYZE:
        verify(ANALYZE, unit.read_text(), exe, tmp_path)

    # Again: the edited config stays as it is, the venv is reused, the user is not doubled.
    config.write_text(config.read_text() + "# edited\n")
    out = run_install(root, "--from", str(wheel))
    assert f"kept {config} (not overwritten)" in out and "reusing the venv" in out
    assert config.read_text().endswith("# edited\n") and mode(config) == 0o640
    assert (root / "etc/passwd").read_text().count("edgeml:") == 1

    state = root / "var/lib/edgeml"
    state.mkdir(parents=True)
    (state / "edgeml.db").write_bytes(b"data")
    out = run_install(root, "--uninstall")
    assert not unit.exists() and not command.exists() and not (root / "opt/edgeml").exists()
    assert config.exists() and (state / "edgeml.db").exists()  # config and data stay
    run_install(root, "--uninstall", "--purge")
    assert not confdir.exists() and not state.exists()


# -- group access to the state (what UMask=0027 and StateDirectoryMode=0750 give) ----------

# Users and a group that do not exist on this machine: setpriv takes numbers.
DAEMON_UID, OPERATOR_UID, STRANGER_UID, GROUP = 64101, 64102, 64103, 64100


def python_for_everyone() -> tuple[str, dict[str, str]] | None:
    """A Python 3.11 with edgeml that an unprivileged uid may run (this venv may live in
    /root): this interpreter, or the system's with this venv's packages on PYTHONPATH."""
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{sysconfig.get_paths()['purelib']}:{Path(edgeml.__file__).parents[1]}",
    }
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for exe in (sys.executable, f"/usr/bin/{version}"):
        r = subprocess.run(
            ["setpriv", f"--reuid={STRANGER_UID}", f"--regid={STRANGER_UID}", "--clear-groups",
             exe, "-c", "import edgeml.daemon.service"],
            env=env, capture_output=True, check=False,
        )  # fmt: skip
        if r.returncode == 0:
            return exe, env
    return None


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory other users can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="edgeml-perm-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_user(uid: int, groups: list[int], *args: str) -> list[str]:
    supplementary = ["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", *supplementary, *args]


def start_as_the_service(
    python: str, env: dict[str, str], config: Path, log: Path
) -> subprocess.Popen[bytes]:
    """`edgeml run` as the unit runs it: its own user and group, UMask=0027,
    NoNewPrivileges=yes and an empty capability bounding set."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                "setpriv", f"--reuid={DAEMON_UID}", f"--regid={GROUP}", "--clear-groups",
                "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all",
                python, "-m", "edgeml", "run", "-c", str(config),
            ],
            env=env, umask=0o027, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is missing")
async def test_a_member_of_the_group_reads_status_while_running_and_after_stop(
    broker: Broker, world_dir: Path
) -> None:
    for uid in (DAEMON_UID, OPERATOR_UID, STRANGER_UID):
        with pytest.raises(KeyError):
            pwd.getpwuid(uid)
    found = python_for_everyone()
    if found is None:
        pytest.skip("no Python 3.11 with edgeml that an unprivileged user can run")
    python, env = found
    # As systemd and install.sh lay it out: /etc/edgeml root:edgeml 0750 with the config
    # 0640, /var/lib/edgeml edgeml:edgeml 0750.
    confdir, state = world_dir / "etc", world_dir / "state"
    confdir.mkdir(mode=0o750)
    os.chown(confdir, 0, GROUP)
    config = write_config(confdir, broker, TELEMETRY).rename(confdir / "config.toml")
    config.write_text(config.read_text().replace('state_dir = "state"', f'state_dir = "{state}"'))
    os.chown(config, 0, GROUP)
    config.chmod(0o640)
    state.mkdir(mode=0o750)
    os.chown(state, DAEMON_UID, GROUP)

    log = world_dir / "daemon.log"
    daemon = start_as_the_service(python, env, config, log)
    try:
        await wait_for(lambda: '"event": "ready"' in log.read_text() or daemon.poll() is not None)
        assert daemon.poll() is None, log.read_text()
        files = {p.name: (mode(p), p.stat().st_uid, p.stat().st_gid) for p in state.iterdir()}
        assert files["edgeml.db"] == (0o640, DAEMON_UID, GROUP)
        assert files["edgeml.db-shm"] == files["edgeml.db-wal"] == (0o640, DAEMON_UID, GROUP)

        def status(
            uid: int, groups: list[int], cfg: Path = config
        ) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                as_user(uid, groups, python, "-m", "edgeml", "status", "--json", "-c", str(cfg)),
                env=env, capture_output=True, text=True, check=False, timeout=30,
            )  # fmt: skip

        # An operator in the group reads the live database (its -shm file read-only).
        r = status(OPERATOR_UID, [GROUP])
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["daemon"]["running"] is True
        # Anyone else reads neither the config nor the state.
        r = status(STRANGER_UID, [])
        assert r.returncode == 2 and "Permission denied" in r.stderr
        public = world_dir / "public.toml"
        public.write_text(config.read_text())
        r = status(STRANGER_UID, [], public)
        assert r.returncode == 1 and f"{state}: permission denied. Members of" in r.stderr

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
        # SQLite removed -wal and -shm on close; the operator cannot create -shm in the
        # state directory, and still reads the status. (disk.json stays: see storage.md.)
        assert sorted(p.name for p in state.iterdir()) == ["disk.json", "edgeml.db"]
        t0 = time.monotonic()
        r = status(OPERATOR_UID, [GROUP])
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["daemon"]["running"] is False and doc["daemon"]["stopped"] is not None
        assert time.monotonic() - t0 < 20
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)


# -- logs under journald -------------------------------------------------------------------

LOG_LINES = (
    "import logging, structlog\n"
    "from edgeml.logs import configure\n"
    "configure('info', 'auto')\n"
    "log = structlog.get_logger('edgeml.x')\n"
    "log.info('drift_detected', stream='s', key='k')\n"
    "log.warning('mqtt_disconnected', error='refused')\n"
    "logging.getLogger('mqtt').error('Message queue is full')\n"
)


def test_under_journald_each_json_line_carries_its_priority(tmp_path: Path) -> None:
    out = tmp_path / "journal-stream"
    with out.open("wb") as f:
        st = os.fstat(f.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        subprocess.run([sys.executable, "-c", LOG_LINES], stdout=f, env=env, check=True)
    lines = out.read_text().splitlines()
    # journald takes the `<N>` prefix as the priority and strips it: `journalctl -o cat`
    # shows the JSON, `journalctl -p warning` finds the last two.
    assert [x[:3] for x in lines] == ["<6>", "<4>", "<3>"]
    docs = [json.loads(x[3:]) for x in lines]
    assert [(d["event"], d["level"]) for d in docs] == [
        ("drift_detected", "info"),
        ("mqtt_disconnected", "warning"),
        ("Message queue is full", "error"),
    ]
    assert docs[0]["stream"] == "s" and docs[0]["key"] == "k" and "timestamp" in docs[0]


def test_a_pipe_or_another_journal_stream_gets_bare_json(tmp_path: Path) -> None:
    for journal_stream in ("", "1:2"):  # unset, or inherited and no longer stdout
        env = {**os.environ, "JOURNAL_STREAM": journal_stream}
        out = subprocess.run(
            [sys.executable, "-c", LOG_LINES], capture_output=True, text=True, env=env, check=True
        ).stdout
        assert [json.loads(x)["level"] for x in out.splitlines()] == ["info", "warning", "error"]
