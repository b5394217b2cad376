#!/usr/bin/env bash
# Builds the stand-in images the integration tests run, from Debian's own binaries,
# because no image can be pulled here (see real-software.md, "Images without a pull").
# Paths inside match the official registry:2 and nginx images, so the same configs serve both.
#
# Usage: scripts/build-standin-images.sh [--force] [--verify]
#   --force   rebuild even if the images exist and are up to date
#   --verify  run the smoke checks even when nothing was rebuilt
# An image is rebuilt when missing, when --force is given, or when its inputs (this script,
# the Debian binaries and libraries it copies) changed since it was built: each image carries
# a fingerprint label of those inputs.
set -euo pipefail

REGISTRY_IMAGE=private-registry-standin/registry:2.8.2
# Distribution 3, built from its Go module by scripts/install-go-tools.sh (static: no libraries).
REGISTRY3_IMAGE=private-registry-standin/registry:3.1.2
NGINX_IMAGE=private-registry-standin/nginx:1.22.1
BUSYBOX_IMAGE=private-registry-standin/busybox:test
# Stands in for docker.io/library/python:3.12-slim (the token service's base): Debian's Python
# 3.11 with its standard library and pip, python3 and pip at the official image's paths.
PYTHON_IMAGE=private-registry-standin/python:3.12-slim
FINGERPRINT_LABEL=org.private-registry.standin.fingerprint

REGISTRY_BIN=/usr/bin/docker-registry
NGINX_BIN=/usr/sbin/nginx
BUSYBOX_BIN=/bin/busybox
PYTHON_BIN=/usr/bin/python3.11
PYTHON_LIB=/usr/lib/python3.11
PIP_WHEEL_GLOB=/usr/share/python-wheels/pip-*.whl

SELF=$(readlink -f "${BASH_SOURCE[0]}")

die() { echo "build-standin-images: $*" >&2; exit 1; }
log() { echo "build-standin-images: $*" >&2; }

force=0 verify=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        --verify) verify=1 ;;
        -h|--help) sed -n '2,11p' "$SELF" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

for bin in "$REGISTRY_BIN" "$NGINX_BIN" "$BUSYBOX_BIN" "$PYTHON_BIN"; do
    [ -x "$bin" ] || die "$bin is missing: apt-get install docker-registry nginx busybox-static python3 python3-pip-whl"
done
# shellcheck disable=SC2086
ls $PIP_WHEEL_GLOB >/dev/null 2>&1 || die "pip wheel missing: apt-get install python3-pip-whl"
command -v docker >/dev/null || die "docker client missing: apt-get install docker.io"
docker info >/dev/null 2>&1 || die "Docker engine not reachable: run scripts/start-dockerd.sh"

# Concurrent test runs would otherwise race on `docker import` of the same tags.
exec 9>/tmp/private-registry-standin.lock
flock 9

# Shared libraries a binary needs, plus its ELF loader, as absolute paths.
shared_libs() {
    ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
}

# NSS modules resolve names (`registry`, `proxy`) through Docker's embedded DNS; glibc
# dlopens them, so ldd never lists them.
nss_libs() {
    local libdir
    libdir=$(dirname "$(shared_libs "$1" | grep '/libc\.so' | head -n1)")
    ls "$libdir"/libnss_files.so.2 "$libdir"/libnss_dns.so.2
}

fingerprint() {  # of contents only: clones at other paths must reuse the images
    sha256sum "$SELF" "$@" | cut -d' ' -f1 | sha256sum | cut -c1-64
}

image_fingerprint() {
    docker image inspect -f "{{ index .Config.Labels \"$FINGERPRINT_LABEL\" }}" "$1" 2>/dev/null || true
}

copy_into() {  # copy_into ROOT FILE... : same absolute path inside ROOT, symlinks resolved
    local root=$1 f
    shift
    for f in "$@"; do
        mkdir -p "$root$(dirname "$f")"
        cp -L "$f" "$root$f"
    done
}

# A minimal userland: busybox with its applets, users, and the directories both official
# images have. nginx without a `user` directive runs workers as nobody:nogroup.
base_rootfs() {
    local root=$1 applet
    mkdir -p "$root"/{bin,etc,root,var/run,run,var/lock,dev,proc,sys}
    install -d -m 1777 "$root/tmp"
    cp "$BUSYBOX_BIN" "$root/bin/busybox"
    for applet in $("$BUSYBOX_BIN" --list); do
        [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
    done
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
nobody:x:65534:
EOF
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
}

import_rootfs() {  # import_rootfs ROOT IMAGE FINGERPRINT CHANGE...
    local root=$1 image=$2 fp=$3
    shift 3
    local changes=(--change "LABEL $FINGERPRINT_LABEL=$fp"
                   --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    local c
    for c in "$@"; do changes+=(--change "$c"); done
    tar --numeric-owner --owner=0 --group=0 -C "$root" -cf - . \
        | docker import "${changes[@]}" - "$image" >/dev/null
    log "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1/1e6}'))"
}

# registry_rootfs ROOT BIN CONFIG_DIR: busybox, the registry binary (with its libraries, if it
# has any) and the official image's default config in CONFIG_DIR, so `docker run` without a
# mounted config works.
registry_rootfs() {
    local root=$1 bin=$2 config_dir=$3
    base_rootfs "$root"
    mkdir -p "$root$config_dir" "$root/var/lib/registry"
    cp "$bin" "$root/bin/registry"
    if ldd "$bin" >/dev/null 2>&1; then
        # shellcheck disable=SC2046
        copy_into "$root" $(shared_libs "$bin") $(nss_libs "$bin")
    fi
    cat >"$root$config_dir/config.yml" <<'EOF'
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
EOF
}

build_registry() {
    local root=$1/registry fp=$2
    registry_rootfs "$root" "$REGISTRY_BIN" /etc/docker/registry
    import_rootfs "$root" "$REGISTRY_IMAGE" "$fp" \
        'ENTRYPOINT ["/bin/registry"]' \
        'CMD ["serve","/etc/docker/registry/config.yml"]' \
        'EXPOSE 5000' \
        'VOLUME ["/var/lib/registry"]'
}

# As the official registry:3 image: its config moved to /etc/distribution, and tracing is off
# (distribution 3 exports OpenTelemetry traces to localhost:4318 unless told not to).
build_registry3() {
    local root=$1/registry3 fp=$2
    registry_rootfs "$root" "$REGISTRY3_BIN" /etc/distribution
    import_rootfs "$root" "$REGISTRY3_IMAGE" "$fp" \
        'ENV OTEL_TRACES_EXPORTER=none' \
        'ENTRYPOINT ["/bin/registry"]' \
        'CMD ["serve","/etc/distribution/config.yml"]' \
        'EXPOSE 5000' \
        'VOLUME ["/var/lib/registry"]'
}

build_nginx() {
    local root=$1/nginx fp=$2
    base_rootfs "$root"
    mkdir -p "$root/etc/nginx" "$root/var/log/nginx" "$root/var/lib/nginx" "$root/usr/sbin"
    cp "$NGINX_BIN" "$root/usr/sbin/nginx"
    # shellcheck disable=SC2046
    copy_into "$root" $(shared_libs "$NGINX_BIN") $(nss_libs "$NGINX_BIN")
    # As in the official image: logs go to `docker logs`.
    ln -s /dev/stdout "$root/var/log/nginx/access.log"
    ln -s /dev/stderr "$root/var/log/nginx/error.log"
    cat >"$root/etc/nginx/nginx.conf" <<'EOF'
events {}
http {
    server {
        listen 80;
        location / { return 200 "stand-in nginx\n"; }
    }
}
EOF
    import_rootfs "$root" "$NGINX_IMAGE" "$fp" \
        'ENTRYPOINT ["/usr/sbin/nginx","-p","/etc/nginx/","-c","/etc/nginx/nginx.conf","-g","daemon off;"]' \
        'EXPOSE 80'
}

# Python's binary and standard library, the libraries its extension modules link (plus
# libgcc_s and glibc's stubs, which manylinux wheels such as cryptography and bcrypt link), and pip.
python_inputs() {
    local f
    printf '%s\n' "$PYTHON_BIN" $PIP_WHEEL_GLOB
    for f in "$PYTHON_BIN" "$PYTHON_LIB"/lib-dynload/*.so; do shared_libs "$f"; done | sort -u
    # manylinux wheels also link glibc's compatibility stubs.
    local libdir
    libdir=$(dirname "$(shared_libs "$PYTHON_BIN" | grep '/libc\.so' | head -n1)")
    printf "$libdir/%s\n" libgcc_s.so.1 libpthread.so.0 libdl.so.2 librt.so.1 libutil.so.1
}

build_python() {
    local root=$1/python fp=$2 version
    version=$(basename "$PYTHON_LIB")
    base_rootfs "$root"
    # shellcheck disable=SC2046
    copy_into "$root" $(python_inputs | grep -v '\.whl$') $(nss_libs "$PYTHON_BIN")
    tar -C / --exclude="$version/test" --exclude="$version/idlelib" --exclude="$version/tkinter" \
        --exclude="$version/ensurepip" --exclude='__pycache__' --exclude="$version/EXTERNALLY-MANAGED" \
        -cf - "${PYTHON_LIB#/}" | tar -C "$root" -xf -
    mkdir -p "$root/usr/lib/python3/dist-packages" "$root/usr/local/bin"
    # shellcheck disable=SC2086
    "$PYTHON_BIN" -m zipfile -e $PIP_WHEEL_GLOB "$root/usr/lib/python3/dist-packages"
    ln -s "$PYTHON_BIN" "$root/usr/bin/python3"
    ln -s "$PYTHON_BIN" "$root/usr/local/bin/python3"
    ln -s "$PYTHON_BIN" "$root/usr/local/bin/python"
    printf '#!/bin/sh\nexec python3 -m pip "$@"\n' >"$root/usr/local/bin/pip"
    chmod 755 "$root/usr/local/bin/pip"
    import_rootfs "$root" "$PYTHON_IMAGE" "$fp" 'ENV LANG=C.UTF-8' 'CMD ["python3"]'
}

build_busybox() {
    local root=$1/busybox fp=$2
    base_rootfs "$root"
    import_rootfs "$root" "$BUSYBOX_IMAGE" "$fp" 'CMD ["sh"]'
}

retry() {  # retry SECONDS CMD... : until CMD succeeds, every 0.2 s
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# Status line of a GET made with busybox wget from inside a container.
http_status() {  # http_status CONTAINER URL
    docker exec "$1" wget -S -O /dev/null "$2" 2>&1 | awk '/^  HTTP\// { s = $2 } END { print s }'
}

expect_200() {  # expect_200 WHAT CONTAINER URL
    local status
    status=$(http_status "$2" "$3")
    [ "$status" = 200 ] || die "verify: $1: GET $3 from $2 gave '${status:-no answer}', wanted 200"
}

# verify_registry_on_bridge NAME IMAGE CLIENT: IMAGE runs as NAME on the default bridge,
# answers 200 on /v2/ to CLIENT by address, and its healthcheck command works inside it.
verify_registry_on_bridge() {
    local name=$1 image=$2 client=$3 ip
    docker run -d --name "$name" "$image" >/dev/null
    ip=$(docker inspect -f '{{.NetworkSettings.IPAddress}}' "$name")
    retry 15 docker exec "$client" wget -q -O /dev/null "http://$ip:5000/v2/" \
        || die "verify: $image did not answer on $ip:5000; logs: $(docker logs "$name" 2>&1 | tail -n 5)"
    expect_200 "$image on the default bridge" "$client" "http://$ip:5000/v2/"
    docker exec "$name" wget -q -O /dev/null http://127.0.0.1:5000/ \
        || die "verify: the registry healthcheck command failed inside $image"
}

verify_images() {
    local id=standin-verify-$$
    local net=$id-net reg=$id-registry proxy=$id-nginx client=$id-client
    local conf
    conf=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "docker rm -f -v $reg $reg-3 $proxy $client >/dev/null 2>&1 || true;
          docker network rm $net >/dev/null 2>&1 || true; rm -rf '$workdir' '$conf'" EXIT

    # Default bridge: no DNS, reach the registry by address from another container. Both
    # registries start with their image's default config; 3 is removed after its check.
    docker run -d --name "$client" "$BUSYBOX_IMAGE" sleep 300 >/dev/null
    verify_registry_on_bridge "$reg" "$REGISTRY_IMAGE" "$client"
    verify_registry_on_bridge "$reg-3" "$REGISTRY3_IMAGE" "$client"
    docker rm -f -v "$reg-3" >/dev/null

    # User-defined network: names resolve both ways through Docker's DNS; nginx resolves its
    # upstream `registry` when it loads the config.
    docker network create "$net" >/dev/null
    docker network connect --alias registry "$net" "$reg"
    docker network connect "$net" "$client"
    cat >"$conf/nginx.conf" <<'EOF'
events {}
http {
    server {
        listen 80;
        location = /healthz { return 200 "ok\n"; }
        location / { proxy_pass http://registry:5000; }
    }
}
EOF
    docker run -d --name "$proxy" --network "$net" --network-alias proxy \
        -v "$conf/nginx.conf:/etc/nginx/nginx.conf:ro" "$NGINX_IMAGE" >/dev/null
    retry 15 docker exec "$client" wget -q -O /dev/null http://proxy/healthz \
        || die "verify: nginx did not answer; logs: $(docker logs "$proxy" 2>&1 | tail -n 5)"
    expect_200 "nginx" "$client" http://proxy/healthz
    expect_200 "registry through nginx" "$client" http://proxy/v2/
    expect_200 "registry by alias from nginx" "$proxy" http://registry:5000/v2/
    expect_200 "nginx by alias from the registry" "$reg" http://proxy/healthz
    docker top "$proxy" -o pid,user,args | grep -Eq "^ *[0-9]+ +nobody +nginx: worker process" \
        || die "verify: nginx workers do not run as nobody: $(docker top "$proxy" -o pid,user,args)"
    log "verified: registry /v2/ 200 on the default bridge and via nginx; names resolve both ways"
    docker run --rm "$PYTHON_IMAGE" python3 -c 'import ssl, ctypes, hashlib, json, sqlite3' \
        || die "verify: $PYTHON_IMAGE cannot import its standard library"
    docker run --rm "$PYTHON_IMAGE" pip --version >/dev/null || die "verify: pip does not run in $PYTHON_IMAGE"
    log "verified: $PYTHON_IMAGE runs python3 and pip"
}

REGISTRY3_BIN=$("$(dirname "$SELF")/install-go-tools.sh" registry | awk '$1 == "registry" { print $3 }')
[ -x "$REGISTRY3_BIN" ] || die "scripts/install-go-tools.sh registry gave no binary"
registry3_fp=$(fingerprint "$REGISTRY3_BIN" "$BUSYBOX_BIN")
registry_fp=$(fingerprint "$REGISTRY_BIN" "$BUSYBOX_BIN" $(shared_libs "$REGISTRY_BIN") $(nss_libs "$REGISTRY_BIN"))
nginx_fp=$(fingerprint "$NGINX_BIN" "$BUSYBOX_BIN" $(shared_libs "$NGINX_BIN") $(nss_libs "$NGINX_BIN"))
busybox_fp=$(fingerprint "$BUSYBOX_BIN")
# shellcheck disable=SC2046
python_fp=$(fingerprint "$BUSYBOX_BIN" $(python_inputs) "$PYTHON_LIB/os.py")

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
built=0
for spec in "registry $REGISTRY_IMAGE $registry_fp" "registry3 $REGISTRY3_IMAGE $registry3_fp" "nginx $NGINX_IMAGE $nginx_fp" \
            "busybox $BUSYBOX_IMAGE $busybox_fp" "python $PYTHON_IMAGE $python_fp"; do
    read -r kind image fp <<<"$spec"
    if [ "$force" = 1 ] || [ "$(image_fingerprint "$image")" != "$fp" ]; then
        "build_$kind" "$workdir" "$fp"
        built=1
    fi
done

if [ "$built" = 1 ] || [ "$verify" = 1 ]; then
    verify_images
else
    log "images up to date: $REGISTRY_IMAGE $REGISTRY3_IMAGE $NGINX_IMAGE $BUSYBOX_IMAGE $PYTHON_IMAGE"
fi
