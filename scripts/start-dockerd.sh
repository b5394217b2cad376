#!/usr/bin/env bash
# Makes sure a Docker engine answers: does nothing if `docker info` already works, otherwise
# starts Debian's dockerd in the background and waits for it. CI machines have no init
# system that would start it.
# Usage: scripts/start-dockerd.sh   (env: DOCKERD_LOG, default /tmp/dockerd.log;
#                                    DOCKERD_TIMEOUT seconds, default 60;
#                                    DOCKERD_ARGS, extra dockerd arguments)
set -euo pipefail

log_file=${DOCKERD_LOG:-/tmp/dockerd.log}
timeout=${DOCKERD_TIMEOUT:-60}

die() { echo "start-dockerd: $*" >&2; exit 1; }

command -v docker >/dev/null || die "no docker client on PATH: apt-get install docker.io"
if docker info >/dev/null 2>&1; then
    exit 0
fi
command -v dockerd >/dev/null || die "no dockerd on PATH: apt-get install docker.io"
[ "$(id -u)" = 0 ] || die "docker info fails and starting dockerd needs root"

echo "start-dockerd: starting dockerd (log: $log_file)" >&2
# setsid + nohup: the engine must outlive this script and the test run that started it.
# If a dockerd is already starting, this one exits on its pid file and we wait for the first.
# shellcheck disable=SC2086
setsid nohup dockerd ${DOCKERD_ARGS:-} </dev/null >>"$log_file" 2>&1 &

deadline=$((SECONDS + timeout))
until docker info >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "start-dockerd: docker info still fails after ${timeout}s; last lines of $log_file:" >&2
        tail -n 20 "$log_file" >&2 || true
        exit 1
    fi
    sleep 0.5
done
echo "start-dockerd: Docker engine ready ($(docker version -f '{{.Server.Version}}' 2>/dev/null))" >&2
