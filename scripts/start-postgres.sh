#!/usr/bin/env bash
# Make sure the test PostgreSQL answers on 127.0.0.1:$SSHGW_TEST_PG_PORT (default 5432) and has the
# role sshgw (password sshgw, CREATEDB). Starts (or creates) Debian's cluster when needed.
#
#   scripts/start-postgres.sh        (idempotent; needs root and the Debian postgresql package)
set -euo pipefail

PORT="${SSHGW_TEST_PG_PORT:-5432}"
die() {
    echo "scripts/start-postgres.sh: $*" >&2
    exit 1
}

role_ok() {
    PGPASSWORD=sshgw PGCONNECT_TIMEOUT=3 psql -X -q -h 127.0.0.1 -p "$PORT" -U sshgw -d postgres \
        -tAc 'SELECT 1' >/dev/null 2>&1
}
if role_ok; then
    exit 0
fi

command -v pg_lsclusters >/dev/null || die "PostgreSQL not installed (apt-get install postgresql)"
[ "$(id -u)" = 0 ] || die "PostgreSQL is not reachable and only root can start it"

if ! pg_isready -q -h 127.0.0.1 -p "$PORT"; then
    # The cluster that owns $PORT, else the newest installed version's "main".
    read -r ver name _ < <(pg_lsclusters -h | awk -v p="$PORT" '$3 == p {print $1, $2; exit}') || true
    if [ -z "${ver:-}" ]; then
        # No cluster on this port: make one ("main", or "sshgw" when "main" uses another port).
        ver="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
        [ -n "$ver" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql"
        name=main
        [ -d "/etc/postgresql/$ver/main" ] && name=sshgw
        if [ ! -d "/etc/postgresql/$ver/$name" ]; then
            echo "[postgres] creating cluster $ver/$name on port $PORT" >&2
            pg_createcluster "$ver" "$name" -p "$PORT" >/dev/null
        fi
    fi
    echo "[postgres] starting cluster $ver/$name" >&2
    pg_ctlcluster "$ver" "$name" start || true
    for _ in $(seq 1 60); do
        pg_isready -q -h 127.0.0.1 -p "$PORT" && break
        sleep 0.5
    done
    pg_isready -q -h 127.0.0.1 -p "$PORT" ||
        die "PostgreSQL did not start (see /var/log/postgresql/postgresql-$ver-$name.log)"
fi

# The role, via the local socket as the postgres superuser.
runuser -u postgres -- psql -X -q -p "$PORT" -d postgres -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sshgw') THEN
        CREATE ROLE sshgw LOGIN PASSWORD 'sshgw' CREATEDB;
    ELSE
        ALTER ROLE sshgw LOGIN PASSWORD 'sshgw' CREATEDB;
    END IF;
END
$$;
SQL
if [ -z "$(runuser -u postgres -- psql -X -p "$PORT" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'sshgw'")" ]; then
    runuser -u postgres -- psql -X -q -p "$PORT" -d postgres -c 'CREATE DATABASE sshgw OWNER sshgw' >/dev/null
fi
role_ok || die "role sshgw cannot log in on 127.0.0.1:$PORT (check pg_hba.conf)"
echo "[postgres] ready: postgresql://sshgw:sshgw@127.0.0.1:$PORT" >&2
