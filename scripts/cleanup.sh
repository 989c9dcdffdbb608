#!/usr/bin/env bash
# Remove containers left behind by test runs (label sshgw-test=1).
#
#   scripts/cleanup.sh          only containers whose test process on this host is gone
#   scripts/cleanup.sh --all    every test container (do not use while tests are running)
#   scripts/cleanup.sh --dbs    also drop leftover test databases (sshgw_t_*) in the local PostgreSQL
set -euo pipefail

ALL=0
DBS=0
for arg in "$@"; do
    case "$arg" in
        --all) ALL=1 ;;
        --dbs) DBS=1 ;;
        *)
            echo "usage: $0 [--all] [--dbs]" >&2
            exit 2
            ;;
    esac
done

host="$(uname -n)"
victims=()
while read -r id owner; do
    [ -n "$id" ] || continue
    if [ $ALL = 1 ]; then
        victims+=("$id")
        continue
    fi
    # owner is HOST:PID of the pytest process that made the container
    [ "${owner%%:*}" = "$host" ] || continue
    pid="${owner##*:}"
    [[ "$pid" =~ ^[0-9]+$ ]] || continue
    [ -d "/proc/$pid" ] || victims+=("$id")
done < <(docker ps -a --filter label=sshgw-test=1 --format '{{.ID}} {{.Label "sshgw-test.owner"}}')

if [ ${#victims[@]} -gt 0 ]; then
    docker rm -f -v "${victims[@]}" >/dev/null
fi
echo "removed ${#victims[@]} test container(s)"

if [ $DBS = 1 ]; then
    port="${SSHGW_TEST_PG_PORT:-5432}"
    export PGPASSWORD=sshgw
    n=0
    for db in $(psql -X -h 127.0.0.1 -p "$port" -U sshgw -d postgres -tAc \
        "SELECT datname FROM pg_database WHERE datname LIKE 'sshgw\_t\_%'"); do
        psql -X -q -h 127.0.0.1 -p "$port" -U sshgw -d postgres -c "DROP DATABASE \"$db\" WITH (FORCE)"
        n=$((n + 1))
    done
    echo "dropped $n test database(s)"
fi
