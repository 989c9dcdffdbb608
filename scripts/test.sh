#!/usr/bin/env bash
# The test command: sets up what a fresh Debian bookworm machine lacks, then runs
# ruff, mypy and pytest.
#
#   ./scripts/test.sh                  # everything (2 pytest workers, then the serial tests)
#   ./scripts/test.sh tests/unit -x    # extra arguments go to one plain pytest
#
# Steps (each fails fast with a clear message):
#   1. Debian packages (only when something is missing; needs root)
#   2. the virtualenv .venv (made with $PYTHON), pip install -e '.[test]' into it
#   3. Docker engine (starts dockerd when it does not answer)   scripts/start-docker.sh
#   4. PostgreSQL (starts/creates the cluster, role sshgw)       scripts/start-postgres.sh
#   5. test images (docker import, cached)                       tests/images/build.sh
#   6. ruff check + ruff format --check, mypy (strict), pytest
#
# Everything runs from the virtualenv .venv in the repository: the script never installs into the
# interpreter on PATH. The tests start the gateway (`python -m gateway`, `sshgw`) from that venv too.
#
# Environment: PYTHON picks the interpreter the venv is made with (default python3; a venv made
# with another one is made again). SSHGW_TEST_WORKERS (default 2) sets how many pytest processes
# share the whole suite. SSHGW_SKIP_SETUP=1 skips steps 1 and 3-5 and the pip install
# (a missing or incomplete venv is still made and installed).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO="$(pwd)"

STEP=""
SECONDS=0
step() {
    STEP="$*"
    echo
    echo "==> [$(date +%H:%M:%S)] $STEP"
}
DIED=0
die() {
    DIED=1
    echo >&2
    echo "scripts/test.sh: FAILED at step: ${STEP:-setup}" >&2
    [ $# -eq 0 ] || echo "  $*" >&2
    exit 1
}
trap 'rc=$?; [ $rc -eq 0 ] || [ $DIED = 1 ] || echo "scripts/test.sh: FAILED (exit $rc) at step: ${STEP:-setup}" >&2' EXIT

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_ROOT_USER_ACTION=ignore
export PYTHONUNBUFFERED=1

# Debian package and a command that shows it (or an equal) is there.
PACKAGES=(
    docker.io:dockerd busybox-static: openssh-client:ssh openssh-server:sshd
    postgresql:pg_ctlcluster postgresql-client:psql rsync:rsync debootstrap:debootstrap
    prometheus:promtool tmux:tmux sshpass:sshpass procps:pgrep iproute2:ss util-linux:flock
    ca-certificates: git:git python3-venv: python3-pip:
    docker-compose:docker-compose systemd:systemd-analyze rclone:rclone sshfs:sshfs lftp:lftp putty-tools:pscp curl:curl
    haproxy:haproxy chromium:chromium
)

missing_packages() {
    local entry p cmd status
    for entry in "$@"; do
        p="${entry%%:*}"
        cmd="${entry#*:}"
        status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
        [ "$status" = "install ok installed" ] && continue
        # Installed some other way (docker-ce, a newer PostgreSQL, ...): fine too.
        [ -n "$cmd" ] && PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null && continue
        echo "$p"
    done
}

if [ "${SSHGW_SKIP_SETUP:-0}" != 1 ]; then
    step "Debian packages"
    if ! command -v dpkg-query >/dev/null; then
        echo "not a Debian system: install the equivalents of ${PACKAGES[*]%%:*} yourself"
    else
        PY_PACKAGES=()
        command -v "${PYTHON:-python3}" >/dev/null || PY_PACKAGES=(python3:)
        mapfile -t MISSING < <(missing_packages "${PACKAGES[@]}" "${PY_PACKAGES[@]}")
        if [ ${#MISSING[@]} -eq 0 ]; then
            echo "all present"
        else
            [ "$(id -u)" = 0 ] || die "missing packages (${MISSING[*]}); run as root or install them"
            echo "installing: ${MISSING[*]}"
            ok=0
            for _ in 1 2 3; do
                if apt-get update -q && apt-get install -y -q "${MISSING[@]}"; then
                    ok=1
                    break
                fi
                echo "apt-get failed; retrying in 5 s" >&2
                sleep 5
            done
            [ $ok = 1 ] || die "apt-get install ${MISSING[*]} failed"
        fi
    fi
fi

step "Python environment (.venv)"
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "Python >= 3.11 needed, $("$PYTHON" --version 2>&1) found"
VENV="$REPO/.venv"
# The interpreter a venv runs on, as "base prefix / version": a venv of another one is made again.
WHICH='import sys; print(sys.base_prefix, sys.version)'
FRESH=0
if [ ! -x "$VENV/bin/python" ] || [ "$("$VENV/bin/python" -c "$WHICH" 2>/dev/null)" != "$("$PYTHON" -c "$WHICH")" ]; then
    echo "making $VENV with $PYTHON"
    "$PYTHON" -m venv --clear "$VENV" ||
        die "cannot make the virtualenv $VENV (on Debian: apt-get install python3-venv)"
    FRESH=1
fi
PY="$VENV/bin/python"
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
echo "python: $PY ($("$PY" --version 2>&1), made with $PYTHON)"

# Installed when setup runs, and always when the venv lacks the checkout or a test tool.
if [ "${SSHGW_SKIP_SETUP:-0}" != 1 ] || [ $FRESH = 1 ] || ! "$PY" -c '
import os, sys, gateway, pytest, xdist, mypy, ruff, build
here = os.path.dirname(os.path.dirname(os.path.realpath(gateway.__file__)))
sys.exit(here != os.path.realpath(sys.argv[1]))' "$REPO" 2>/dev/null; then
    step "pip install -e '.[test]' (into .venv)"
    "$PY" -m pip install -q -e '.[test]' || die "pip install -e '.[test]' into $VENV failed"
fi

if [ "${SSHGW_SKIP_SETUP:-0}" != 1 ]; then
    step "Docker engine"
    ./scripts/start-docker.sh || die "the Docker engine is not available"
    docker version --format 'client {{.Client.Version}}, server {{.Server.Version}} (API {{.Server.APIVersion}})' || true

    step "PostgreSQL"
    ./scripts/start-postgres.sh || die "PostgreSQL is not available"

    step "test images"
    ./tests/images/build.sh all || die "building the test images failed"
fi

step "ruff"
LINT_PATHS=(gateway tests)
[ -d bench ] && LINT_PATHS+=(bench)
"$PY" -m ruff check "${LINT_PATHS[@]}" || die "ruff check found problems"
"$PY" -m ruff format --check "${LINT_PATHS[@]}" || die "files need 'ruff format'"

step "mypy (strict)"
"$PY" -m mypy gateway || die "mypy found problems"

set +e
if [ $# -gt 0 ]; then
    step "pytest $*"
    "$PY" -m pytest -ra "$@"
    rc=$?
else
    # The whole suite: test files spread over SSHGW_TEST_WORKERS processes (pytest-xdist, one
    # file stays on one worker), then the tests marked serial alone (they restart the Docker
    # engine under everyone). Exit status 5 of the second run (nothing marked) is no failure.
    WORKERS="${SSHGW_TEST_WORKERS:-2}"
    step "pytest (${WORKERS} workers)"
    "$PY" -m pytest -ra -n "$WORKERS" --dist loadfile -m "not serial"
    rc=$?
    if [ $rc -eq 0 ]; then
        step "pytest (serial)"
        "$PY" -m pytest -ra -m serial
        rc=$?
        [ $rc -ne 5 ] || rc=0
    fi
fi
set -e
if [ $rc -ne 0 ]; then
    case $rc in
        1) die "some tests failed" ;;
        2) die "pytest was interrupted" ;;
        3) die "pytest internal error" ;;
        4) die "pytest usage error" ;;
        5) die "no tests were collected" ;;
        *) die "pytest exited with $rc" ;;
    esac
fi
STEP=""
echo
echo "==> all checks passed in ${SECONDS}s"
