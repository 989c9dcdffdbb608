#!/usr/bin/env bash
# Build the local test images with `docker import` (no registry needed).
#
#   tests/images/build.sh [--force] [busybox|notar|noshell|debian|all ...]
#
# Images (see tests/conftest.py):
#   sshgw-test/busybox:1        busybox-static with a link for every applet, users root/app/nobody
#   sshgw-test/notar:1          the same without the tar applet
#   sshgw-test/noshell:1        no /bin/sh at all; busybox only as /bbx/busybox
#   sshgw-test/debian:bookworm  debootstrap minbase (bash, GNU tar, coreutils) + user app
#
# Idempotent: an image is rebuilt only when it is missing or was built by another version of this
# script (the version is stored in the image comment). The debootstrap result is cached as a
# tarball under $SSHGW_IMAGE_CACHE (default /var/cache/sshgw-test) so later runs take seconds.
set -euo pipefail

# Bump when the content of an image changes; stale images are then rebuilt.
BUSYBOX_VERSION="sshgw-test busybox v1"
DEBIAN_VERSION="sshgw-test debian v1"

CACHE_DIR="${SSHGW_IMAGE_CACHE:-/var/cache/sshgw-test}"
DEBIAN_MIRROR="${SSHGW_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BUSYBOX_BIN="${SSHGW_BUSYBOX:-/bin/busybox}"

BUSYBOX_IMAGE="sshgw-test/busybox:1"
NOTAR_IMAGE="sshgw-test/notar:1"
NOSHELL_IMAGE="sshgw-test/noshell:1"
DEBIAN_IMAGE="sshgw-test/debian:bookworm"

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
        busybox | notar | noshell | debian) WANT+=("$arg") ;;
        all) WANT+=(busybox notar noshell debian) ;;
        -h | --help)
            sed -n '2,14p' "$0"
            exit 0
            ;;
        *) die "unknown argument: $arg" ;;
    esac
done
[ ${#WANT[@]} -gt 0 ] || WANT=(busybox notar noshell debian)

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

build_debian() {
    if up_to_date "$DEBIAN_IMAGE" "$DEBIAN_VERSION"; then
        say "$DEBIAN_IMAGE is up to date"
        return
    fi
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
    docker import \
        -m "$DEBIAN_VERSION" \
        -c "ENV $PATH_ENV" \
        -c 'CMD ["/bin/sleep", "infinity"]' \
        -c "WORKDIR /" \
        "$tarball" "$DEBIAN_IMAGE" >/dev/null
    say "built $DEBIAN_IMAGE"
}

for what in "${WANT[@]}"; do
    case "$what" in
        busybox) build_busybox full "$BUSYBOX_IMAGE" ;;
        notar) build_busybox notar "$NOTAR_IMAGE" ;;
        noshell) build_busybox noshell "$NOSHELL_IMAGE" ;;
        debian) build_debian ;;
    esac
done
