#!/usr/bin/env bash
# Install edgeml as a systemd service, or remove it. Safe to run again: it upgrades the
# package and leaves an existing /etc/edgeml/config.toml alone.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
MARKER="installed by edgeml's systemd/install.sh"

usage() {
    cat <<EOF
Usage: sudo $0 [--from SPEC] [--python PYTHON] [--root DIR]
       sudo $0 --uninstall [--purge] [--root DIR]

Installs edgeml in a venv under /opt/edgeml, the command /usr/local/bin/edgeml, the
system user edgeml, the unit edgeml.service and a config template in /etc/edgeml.

  --from SPEC    what pip installs (default: this checkout, $REPO;
                 or e.g. 'edgeml==0.1.0', a wheel file, a git URL)
  --python PY    the Python (3.11 or later) the venv is made from (default: python3)
  --root DIR     install under DIR instead of / (a staging tree or an image); systemctl
                 is not run. Scripts in the venv then point at /opt/edgeml/venv, so DIR
                 must provide the same Python at the same path when it becomes /.
  --uninstall    stop and disable the service; remove the unit, the venv and the command.
                 The config, the data and the user stay.
  --purge        with --uninstall: also delete /etc/edgeml and /var/lib/edgeml (the data)
EOF
}

ROOT=/
SPEC=$REPO
PYTHON=python3
ACTION=install
PURGE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --from) SPEC=${2:?--from needs a value}; shift ;;
        --python) PYTHON=${2:?--python needs a value}; shift ;;
        --root) ROOT=${2:?--root needs a value}; shift ;;
        --uninstall) ACTION=uninstall ;;
        --purge) PURGE=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$ROOT"
ROOT=$(cd "$ROOT" && pwd)
R=${ROOT%/}  # prefix for every path: "" when installing into /

if [ "$(id -u)" -ne 0 ] && [ "$ROOT" = / ]; then
    echo "install.sh: run it as root (sudo), or give --root DIR" >&2
    exit 1
fi

OPT=$R/opt/edgeml
VENV=$OPT/venv
UNIT=$R/etc/systemd/system/edgeml.service
SYSUSERS=$R/etc/sysusers.d/edgeml.conf
COMMAND=$R/usr/local/bin/edgeml
CONFDIR=$R/etc/edgeml
CONFIG=$CONFDIR/config.toml
STATEDIR=$R/var/lib/edgeml

say() { printf '%s\n' "$*"; }

# systemctl only for the running system: not in a staging tree, not without systemd as PID 1.
live_systemd() { [ "$ROOT" = / ] && [ -d /run/systemd/system ]; }

ours() { [ -f "$1" ] && grep -q "$MARKER" "$1"; }

uninstall() {
    if live_systemd; then
        systemctl disable --now edgeml.service 2>/dev/null || true
    fi
    rm -f "$UNIT"
    say "removed $UNIT"
    if ours "$COMMAND"; then
        rm -f "$COMMAND"
        say "removed $COMMAND"
    fi
    rm -rf "$OPT"
    say "removed $OPT"
    if [ "$PURGE" = 1 ]; then
        rm -rf "$CONFDIR" "$STATEDIR"
        say "removed $CONFDIR and $STATEDIR"
    else
        say "kept $CONFDIR (config) and $STATEDIR (data): --uninstall --purge deletes them"
    fi
    # The user stays: files it owned could otherwise pass to a future user with its uid.
    say "kept the user edgeml and $SYSUSERS"
    if live_systemd; then
        systemctl daemon-reload
    fi
}

install_files() {
    # The user and group, from the sysusers.d file (as systemd-sysusers does at boot).
    install -D -m 0644 "$HERE/edgeml.sysusers" "$SYSUSERS"
    systemd-sysusers --root="$ROOT" edgeml.conf
    local gid group=()
    gid=$(awk -F: '$1 == "edgeml" { print $3 }' "$R/etc/group")
    if [ -z "$gid" ]; then
        echo "install.sh: group edgeml was not created in $R/etc/group" >&2
        exit 1
    fi
    if [ "$(id -u)" -eq 0 ]; then
        group=(-g "$gid")  # by number: the group of the tree being installed, not this host's
    else
        say "not root: $CONFDIR will not belong to group edgeml (gid $gid); chgrp it as root"
    fi

    # The package, in its own venv: the system's Python packages stay untouched.
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "install.sh: $PYTHON is not Python 3.11 or later (use --python)" >&2
        exit 1
    fi
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import pip' 2>/dev/null; then
        say "reusing the venv $VENV"
    else
        rm -rf "$VENV"
        if ! "$PYTHON" -m venv "$VENV"; then
            rm -rf "$VENV"
            echo "install.sh: cannot make a venv; on Debian and Raspberry Pi OS:" \
                "sudo apt install python3-venv" >&2
            exit 1
        fi
        say "created the venv $VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$SPEC"
    if [ -n "$R" ]; then
        # The venv's scripts name the interpreter by its path under DIR; make it /opt/edgeml.
        { grep -rlI --null -F "$VENV" "$VENV/bin" || true; } |
            xargs -0 -r sed -i "s|$VENV|/opt/edgeml/venv|g"
    fi
    say "installed $("$VENV/bin/python" -c 'from importlib.metadata import version as v; print("edgeml", v("edgeml"))') from $SPEC"
    if [ -f "$REPO/README.md" ]; then
        install -m 0644 "$REPO/README.md" "$OPT/README.md"  # the unit's Documentation=
    fi

    # `edgeml` on the PATH, reading the service's config unless told otherwise.
    if [ -e "$COMMAND" ] && ! ours "$COMMAND"; then
        say "left $COMMAND alone (not ours): run /opt/edgeml/venv/bin/edgeml instead"
    else
        install -d -m 0755 "$(dirname "$COMMAND")"
        cat >"$COMMAND.tmp" <<EOF
#!/bin/sh
# edgeml, $MARKER: the service's config unless -c or EDGEML_CONFIG says otherwise.
: "\${EDGEML_CONFIG:=/etc/edgeml/config.toml}"
export EDGEML_CONFIG
exec /opt/edgeml/venv/bin/edgeml "\$@"
EOF
        chmod 0755 "$COMMAND.tmp"
        mv -f "$COMMAND.tmp" "$COMMAND"
        say "installed $COMMAND"
    fi

    install -D -m 0644 "$HERE/edgeml.service" "$UNIT"
    say "installed $UNIT"

    # The config may hold the broker's password: root writes it, group edgeml reads it.
    install -d -m 0750 "${group[@]}" "$CONFDIR"
    if [ -e "$CONFIG" ]; then
        say "kept $CONFIG (not overwritten)"
        if [ $(( 0$(stat -c %a "$CONFIG") & 4 )) -ne 0 ]; then
            say "  warning: it is world-readable; if it holds a password: chmod o-r $CONFIG"
        fi
    else
        install -m 0640 "${group[@]}" "$HERE/config.toml" "$CONFIG"
        say "installed $CONFIG (a template: set the broker and the streams)"
    fi

    if live_systemd; then
        systemctl daemon-reload
        if systemctl is-active --quiet edgeml.service; then
            say "edgeml is running the previous version: sudo systemctl restart edgeml"
        fi
    fi
}

next_steps() {
    local who=${SUDO_USER:-<user>}
    cat <<EOF

Next steps:
  1. Set the broker and the streams, then check the file as the service will read it:
       sudoedit /etc/edgeml/config.toml
       sudo -u edgeml /opt/edgeml/venv/bin/edgeml check -c /etc/edgeml/config.toml
  2. Start edgeml now and at every boot:
       sudo systemctl enable --now edgeml
  3. Let $who run 'edgeml status' without sudo (takes effect at the next login):
       sudo usermod -aG edgeml $who
  4. Watch it:
       systemctl status edgeml
       journalctl -u edgeml -f -o cat
       edgeml status
EOF
}

if [ "$ACTION" = uninstall ]; then
    uninstall
else
    install_files
    next_steps
fi
