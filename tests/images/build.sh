#!/usr/bin/env bash
# Build the local test images with `docker import` (no registry needed).
#
#   tests/images/build.sh [--force] [busybox|notar|noshell|debian|python|postgres|prometheus|rsync|all ...]
#
# Images (see tests/conftest.py and tests/deploy/conftest.py):
#   sshgw-test/busybox:1         busybox-static with a link for every applet, users root/app/nobody
#   sshgw-test/notar:1           the same without the tar applet
#   sshgw-test/noshell:1         no /bin/sh at all; busybox only as /bbx/busybox
#   sshgw-test/debian:bookworm   debootstrap minbase (bash, GNU tar, coreutils) + user app
#   sshgw-test/python:bookworm   the debian root + Debian's python3 and python3-venv: the BASE the
#                                deploy tests build deploy/docker/Dockerfile on (for python:3.12-slim)
#   sshgw-test/postgres:15       the debian root + Debian's postgresql-15, started like the official
#                                postgres image (POSTGRES_USER/PASSWORD/DB, PGDATA, port 5432)
#   sshgw-test/prometheus:2      the debian root + Debian's prometheus, started like prom/prometheus
#                                (ENTRYPOINT prometheus, config /etc/prometheus/prometheus.yml,
#                                data /prometheus, user nobody)
#   sshgw-test/rsync:bookworm    the debian root + Debian's rsync (rsync -e ssh through ProxyJump)
#
# Idempotent: an image is rebuilt only when it is missing or was built by another version of this
# script (the version is stored in the image comment). Every root file system is cached as a
# tarball under $SSHGW_IMAGE_CACHE (default /var/cache/sshgw-test) so later runs take seconds; the
# python, postgres and prometheus roots are the debian root plus Debian packages installed with apt
# in a chroot (deb.debian.org must answer the first time).
set -euo pipefail

# Bump when the content of an image changes; stale images are then rebuilt.
BUSYBOX_VERSION="sshgw-test busybox v1"
DEBIAN_VERSION="sshgw-test debian v1"
PYTHON_VERSION="sshgw-test python v1"
POSTGRES_VERSION="sshgw-test postgres v1"
PROMETHEUS_VERSION="sshgw-test prometheus v1"
RSYNC_VERSION="sshgw-test rsync v1"

CACHE_DIR="${SSHGW_IMAGE_CACHE:-/var/cache/sshgw-test}"
DEBIAN_MIRROR="${SSHGW_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BUSYBOX_BIN="${SSHGW_BUSYBOX:-/bin/busybox}"

BUSYBOX_IMAGE="sshgw-test/busybox:1"
NOTAR_IMAGE="sshgw-test/notar:1"
NOSHELL_IMAGE="sshgw-test/noshell:1"
DEBIAN_IMAGE="sshgw-test/debian:bookworm"
PYTHON_IMAGE="sshgw-test/python:bookworm"
POSTGRES_IMAGE="sshgw-test/postgres:15"
PROMETHEUS_IMAGE="sshgw-test/prometheus:2"
RSYNC_IMAGE="sshgw-test/rsync:bookworm"

PATH_ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

die() {
    echo "tests/images/build.sh: $*" >&2
    exit 1
}
say() { echo "[images] $*" >&2; }

FORCE=0
WANT=()
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        busybox | notar | noshell | debian | python | postgres | prometheus | rsync) WANT+=("$arg") ;;
        all) WANT+=(busybox notar noshell debian python postgres prometheus rsync) ;;
        -h | --help)
            sed -n '2,26p' "$0"
            exit 0
            ;;
        *) die "unknown argument: $arg" ;;
    esac
done
[ ${#WANT[@]} -gt 0 ] || WANT=(busybox notar noshell debian python postgres prometheus rsync)

command -v docker >/dev/null || die "docker CLI not found (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (start dockerd first)"

mkdir -p "$CACHE_DIR"
# One build at a time (fixtures and the setup script may race).
exec 9>"$CACHE_DIR/build.lock"
flock 9

# unmount_under DIR: lazily unmount everything mounted below DIR (debootstrap leaves /proc etc.).
unmount_under() {
    local m
    for m in $(awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" || true
    done
}

WORK="$(mktemp -d /tmp/sshgw-images.XXXXXX)"
cleanup() {
    # debootstrap may leave mounts behind when it fails.
    if [ -d "$WORK" ]; then
        unmount_under "$WORK"
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# up_to_date IMAGE VERSION: the image exists and was built by this version of the script.
up_to_date() {
    [ "$FORCE" = 0 ] || return 1
    local comment
    comment="$(docker image inspect -f '{{.Comment}}' "$1" 2>/dev/null)" || return 1
    [ "$comment" = "$2" ]
}

# import_rootfs DIR IMAGE VERSION CMD_JSON
import_rootfs() {
    local dir="$1" image="$2" version="$3" cmd="$4"
    tar --numeric-owner -C "$dir" -c . |
        docker import \
            -m "$version" \
            -c "ENV $PATH_ENV" \
            -c "CMD $cmd" \
            -c "WORKDIR /" \
            - "$image" >/dev/null
    say "built $image"
}

write_users() {
    local root="$1" shell="$2"
    mkdir -p "$root/etc" "$root/root" "$root/home/app" "$root/tmp"
    cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/root:$shell
app:x:1000:1000:app:/home/app:$shell
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$root/etc/group" <<EOF
root:x:0:
app:x:1000:
nogroup:x:65534:
EOF
    cat >"$root/etc/shadow" <<EOF
root:*:19000:0:99999:7:::
app:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
EOF
    chmod 0644 "$root/etc/passwd" "$root/etc/group"
    chmod 0640 "$root/etc/shadow"
    chmod 0700 "$root/root"
    chmod 1777 "$root/tmp"
    chown 1000:1000 "$root/home/app"
    chmod 0755 "$root/home/app"
}

# busybox_rootfs DIR MODE   (MODE: full | notar | noshell)
busybox_rootfs() {
    local root="$1" mode="$2"
    [ -x "$BUSYBOX_BIN" ] || die "$BUSYBOX_BIN missing (apt-get install busybox-static)"
    "$BUSYBOX_BIN" --list >/dev/null 2>&1 || die "$BUSYBOX_BIN has no applet list (need busybox-static)"
    if ldd "$BUSYBOX_BIN" >/dev/null 2>&1; then
        die "$BUSYBOX_BIN is dynamically linked: it cannot run in the image (apt-get install busybox-static)"
    fi
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,dev,proc,sys,var/tmp,run}
    chmod 1777 "$root/var/tmp"
    if [ "$mode" = noshell ]; then
        mkdir -p "$root/bbx"
        install -m 0755 "$BUSYBOX_BIN" "$root/bbx/busybox"
        write_users "$root" /bin/sh
        return
    fi
    install -m 0755 "$BUSYBOX_BIN" "$root/bin/busybox"
    local applet path
    # Every applet in /bin, and also at its usual place (/usr/bin/env, /sbin/ifconfig, ...).
    while read -r applet; do
        [ -n "$applet" ] && [ "$applet" != busybox ] || continue
        [ "$mode" = notar ] && [ "$applet" = tar ] && continue
        ln -sf /bin/busybox "$root/bin/$applet"
    done < <("$BUSYBOX_BIN" --list)
    while read -r path; do
        applet="${path##*/}"
        [ -n "$applet" ] && [ "$applet" != busybox ] || continue
        [ "$mode" = notar ] && [ "$applet" = tar ] && continue
        [ -e "$root/$path" ] || [ -L "$root/$path" ] || ln -s /bin/busybox "$root/$path"
    done < <("$BUSYBOX_BIN" --list-full 2>/dev/null || true)
    write_users "$root" /bin/sh
}

build_busybox() {
    local mode="$1" image="$2" cmd
    if up_to_date "$image" "$BUSYBOX_VERSION"; then
        say "$image is up to date"
        return
    fi
    local root="$WORK/$mode"
    busybox_rootfs "$root" "$mode"
    if [ "$mode" = noshell ]; then
        cmd='["/bbx/busybox", "sleep", "1000000"]'
    else
        cmd='["/bin/sleep", "1000000"]'
    fi
    import_rootfs "$root" "$image" "$BUSYBOX_VERSION" "$cmd"
}

# debian_tarball: the cached debootstrap root (made once); prints its path.
debian_tarball() {
    local tarball="$CACHE_DIR/debian-bookworm-${DEBIAN_VERSION##* }.tar"
    if [ ! -s "$tarball" ]; then
        command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
        local root="$WORK/debian"
        say "debootstrap bookworm (minbase) from $DEBIAN_MIRROR; this takes a few minutes once"
        if ! debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1; then
            tail -n 30 "$WORK/debootstrap.log" >&2 || true
            die "debootstrap failed (log above)"
        fi
        chroot "$root" /usr/sbin/useradd --create-home --uid 1000 --user-group --shell /bin/bash app
        chmod 1777 "$root/tmp"
        # Keep the image small and free of host traces.
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
            "$root"/var/log/*.log "$root"/debootstrap
        : >"$root/etc/hostname"
        rm -f "$root/etc/resolv.conf" "$root/etc/hosts"
        # Nothing may stay mounted inside the root before it is packed.
        unmount_under "$root"
        tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        say "cached $tarball"
    fi
    echo "$tarball"
}

build_debian() {
    if up_to_date "$DEBIAN_IMAGE" "$DEBIAN_VERSION"; then
        say "$DEBIAN_IMAGE is up to date"
        return
    fi
    local tarball
    tarball="$(debian_tarball)"
    docker import \
        -m "$DEBIAN_VERSION" \
        -c "ENV $PATH_ENV" \
        -c 'CMD ["/bin/sleep", "infinity"]' \
        -c "WORKDIR /" \
        "$tarball" "$DEBIAN_IMAGE" >/dev/null
    say "built $DEBIAN_IMAGE"
}

# derived_tarball NAME VERSION CUSTOMIZE PACKAGE...: the debian root plus Debian packages (apt in
# a chroot, services never started), then CUSTOMIZE ROOT; cached; prints the tarball's path.
derived_tarball() {
    local name="$1" version="$2" customize="$3"
    shift 3
    local tarball="$CACHE_DIR/$name-bookworm-${version##* }.tar"
    if [ ! -s "$tarball" ]; then
        local base root="$WORK/$name"
        base="$(debian_tarball)"
        say "$name: apt-get install $* on the debian root (from the mirror the debian root names)"
        mkdir -p "$root"
        tar --numeric-owner -C "$root" -xf "$base"
        cp /etc/resolv.conf "$root/etc/resolv.conf"
        # No package may start a service in the chroot.
        printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
        chmod 0755 "$root/usr/sbin/policy-rc.d"
        mount -t proc proc "$root/proc"
        if ! chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c \
            'apt-get update -q && apt-get install -y -q --no-install-recommends "$@"' \
            apt "$@" >"$WORK/$name-apt.log" 2>&1; then
            tail -n 30 "$WORK/$name-apt.log" >&2 || true
            die "apt-get install $* failed (log above)"
        fi
        "$customize" "$root"
        # Nothing may stay mounted inside the root before it is packed.
        unmount_under "$root"
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
            "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/var/log/apt/*
        rm -f "$root/usr/sbin/policy-rc.d" "$root/etc/resolv.conf" "$root/etc/hosts"
        tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$root"
        say "cached $tarball"
    fi
    echo "$tarball"
}

customize_python() { :; }
customize_rsync() { :; }

# The official postgres image's interface: POSTGRES_USER (default postgres), POSTGRES_PASSWORD,
# POSTGRES_DB (default the user), PGDATA; a cluster is made on the first start.
customize_postgres() {
    local root="$1"
    # The cluster Debian's postinst made is not used: the entrypoint makes one in PGDATA.
    rm -rf "$root/var/lib/postgresql/15/main" "$root/etc/postgresql/15/main"
    mkdir -p "$root/var/lib/postgresql/data" "$root/run/postgresql"
    chroot "$root" chown postgres:postgres /var/lib/postgresql/data /run/postgresql
    chmod 0700 "$root/var/lib/postgresql/data"
    chmod 2775 "$root/run/postgresql"
    cat >"$root/usr/local/bin/postgres-entrypoint" <<'SCRIPT'
#!/bin/sh
# Like the official postgres image: make the cluster on the first start, then run postgres.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres-entrypoint: POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
        psql -v ON_ERROR_STOP=1 -X -q -U "$user" -d postgres -c "CREATE DATABASE \"$db\""
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    fi
    echo "postgres-entrypoint: cluster made in $PGDATA (user $user, database $db)"
fi
exec "$@"
SCRIPT
    chmod 0755 "$root/usr/local/bin/postgres-entrypoint"
}

# prom/prometheus keeps its data in /prometheus and runs as nobody.
customize_prometheus() {
    local root="$1"
    mkdir -p "$root/prometheus"
    chown 65534:65534 "$root/prometheus"
}

# build_derived IMAGE VERSION NAME CUSTOMIZE "PACKAGES" CHANGE...: import a derived root with
# the given Dockerfile changes (ENV, USER, ENTRYPOINT, ...).
build_derived() {
    local image="$1" version="$2" name="$3" customize="$4" packages="$5"
    shift 5
    if up_to_date "$image" "$version"; then
        say "$image is up to date"
        return
    fi
    local tarball change
    # shellcheck disable=SC2086  # the package list is split on purpose
    tarball="$(derived_tarball "$name" "$version" "$customize" $packages)"
    local args=(-m "$version")
    for change in "$@"; do
        args+=(-c "$change")
    done
    docker import "${args[@]}" "$tarball" "$image" >/dev/null
    say "built $image"
}

build_python() {
    build_derived "$PYTHON_IMAGE" "$PYTHON_VERSION" python customize_python "python3 python3-venv" \
        "ENV $PATH_ENV" \
        "WORKDIR /" \
        'CMD ["python3"]'
}

build_postgres() {
    build_derived "$POSTGRES_IMAGE" "$POSTGRES_VERSION" postgres customize_postgres postgresql-15 \
        "ENV PATH=/usr/lib/postgresql/15/bin:${PATH_ENV#PATH=}" \
        "ENV PGDATA=/var/lib/postgresql/data" \
        "USER postgres" \
        "WORKDIR /var/lib/postgresql" \
        "VOLUME /var/lib/postgresql/data" \
        "EXPOSE 5432" \
        'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]' \
        'CMD ["postgres"]'
}

build_prometheus() {
    build_derived "$PROMETHEUS_IMAGE" "$PROMETHEUS_VERSION" prometheus customize_prometheus prometheus \
        "ENV $PATH_ENV" \
        "USER nobody" \
        "WORKDIR /prometheus" \
        "VOLUME /prometheus" \
        "EXPOSE 9090" \
        'ENTRYPOINT ["/usr/bin/prometheus"]' \
        'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
}

build_rsync() {
    build_derived "$RSYNC_IMAGE" "$RSYNC_VERSION" rsync customize_rsync rsync \
        "ENV $PATH_ENV" \
        "WORKDIR /" \
        'CMD ["/bin/sleep", "infinity"]'
}

for what in "${WANT[@]}"; do
    case "$what" in
        busybox) build_busybox full "$BUSYBOX_IMAGE" ;;
        notar) build_busybox notar "$NOTAR_IMAGE" ;;
        noshell) build_busybox noshell "$NOSHELL_IMAGE" ;;
        debian) build_debian ;;
        python) build_python ;;
        postgres) build_postgres ;;
        prometheus) build_prometheus ;;
        rsync) build_rsync ;;
    esac
done
