#!/usr/bin/env bash
# Run the gateway from a checkout, starting from nothing: makes the virtualenv .venv (with
# $PYTHON, default python3), installs sshgw into it, checks that a Docker engine answers, then
# runs `sshgw serve`. The first start makes the data directory, the host keys and the SQLite
# database with its schema; Ctrl-C stops the gateway.
#
#   ./scripts/serve.sh                        # SQLite in ~/.local/share/sshgw, local Docker, :2222
#   ./scripts/serve.sh --listen 0.0.0.0:22    # extra arguments go to `sshgw serve`
#   SSHGW_DATA_DIR=/srv/sshgw ./scripts/serve.sh
#
# The install is editable (`pip install -e .`): the gateway runs the checkout's code, also after a
# `git pull`; it is made again only when pyproject.toml changes. scripts/test.sh uses the same
# .venv. To install sshgw elsewhere, `pip install .` (or the wheel) into any virtualenv.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO="$(pwd)"
VENV="$REPO/.venv"
PYTHON="${PYTHON:-python3}"

fail() {
    echo "scripts/serve.sh: $*" >&2
    exit 1
}

if [ ! -x "$VENV/bin/python" ]; then
    command -v "$PYTHON" >/dev/null || fail "$PYTHON not found (Python >= 3.11 is needed)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        fail "Python >= 3.11 is needed, $("$PYTHON" --version 2>&1) found (set PYTHON=...)"
    echo "making the virtualenv .venv with $PYTHON"
    "$PYTHON" -m venv "$VENV" >/dev/null ||
        fail "cannot make the virtualenv .venv (on Debian: apt-get install python3-venv)"
fi

# Installed once, and again when pyproject.toml (dependencies, entry points) changes.
STAMP="$VENV/.sshgw-install"
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1) $REPO"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || [ ! -x "$VENV/bin/sshgw" ]; then
    echo "installing sshgw into .venv (pip install -e .)"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q -e . ||
        fail "pip install -e . into .venv failed (see above)"
    echo "$WANT" >"$STAMP"
fi

# No engine, no sessions: say what to do instead of serving logins that cannot go anywhere.
if ! why="$("$VENV/bin/sshgw" containers 2>&1 >/dev/null)"; then
    why="${why##*error: }"
    fail "no Docker engine answers (${why:-unknown error}): start it (as root: 'dockerd &', or 'systemctl start docker'; Debian: apt-get install docker.io) or set SSHGW_DOCKER_HOST, then run ./scripts/serve.sh again"
fi

exec "$VENV/bin/sshgw" serve "$@"
