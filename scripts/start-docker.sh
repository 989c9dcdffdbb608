#!/usr/bin/env bash
# Make sure a Docker engine answers; start a local dockerd when none does.
#
#   scripts/start-docker.sh          (idempotent; log: $SSHGW_DOCKERD_LOG, default /var/log/sshgw-dockerd.log)
set -euo pipefail

die() {
    echo "scripts/start-docker.sh: $*" >&2
    exit 1
}

command -v docker >/dev/null || die "docker CLI not found (apt-get install docker.io)"
if docker info >/dev/null 2>&1; then
    exit 0
fi

case "${DOCKER_HOST:-unix:///var/run/docker.sock}" in
    unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
    *) die "DOCKER_HOST=$DOCKER_HOST does not answer (not starting a local engine for it)" ;;
esac
command -v dockerd >/dev/null || die "dockerd not found (apt-get install docker.io)"
[ "$(id -u)" = 0 ] || die "dockerd is not running and only root can start it"

LOG="${SSHGW_DOCKERD_LOG:-/var/log/sshgw-dockerd.log}"
mkdir -p "$(dirname "$LOG")"
# Another start may be on its way (systemd, a parallel run): give it a moment first.
if ! pgrep -x dockerd >/dev/null; then
    echo "[docker] starting dockerd (log: $LOG)" >&2
    # A stale pid file from an engine that died keeps a new one from starting.
    [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null && rm -f /var/run/docker.pid
    setsid nohup dockerd >>"$LOG" 2>&1 </dev/null &
    STARTED=$!
fi
for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then
        echo "[docker] engine is up" >&2
        exit 0
    fi
    if [ -n "${STARTED:-}" ] && ! kill -0 "$STARTED" 2>/dev/null; then
        tail -n 30 "$LOG" >&2 2>/dev/null || true
        die "dockerd exited during start-up (log above: $LOG)"
    fi
    sleep 0.5
done
tail -n 30 "$LOG" >&2 2>/dev/null || true
die "dockerd did not answer within 60 s (log above: $LOG)"
