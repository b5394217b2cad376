#!/usr/bin/env bash
# The test command: unit and integration tests against real nginx, registry, Docker and skopeo.
# Usage: scripts/test.sh [pytest arguments...]   e.g. scripts/test.sh tests/unit -x
# With no arguments: every test on distribution 3, then the registry's integration tests on
# 2.8 (REGISTRY2_TESTS below). TEST_REGISTRY_VERSION=2 with arguments runs those on 2.8.
# Sets up .venv from requirements-dev.txt, starts the Docker engine if needed and builds the
# stand-in images (skipped when every path given is under tests/unit: unit tests need neither),
# then runs pytest from the repository root. Safe to run repeatedly.
# With CI=true or REQUIRE_NO_SKIPS=1, any skipped test fails the run.
set -euo pipefail

root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$root"

python=${PYTHON:-python3}
venv=$root/.venv

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "test.sh: $python is older than Python 3.11 (set PYTHON=...)" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
    echo "test.sh: creating $venv" >&2
    "$python" -m venv "$venv"
fi
# Reinstall only when the pinned requirements changed since the last install.
stamp=$venv/.requirements.sha256
wanted=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-64)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
    echo "$wanted" >"$stamp"
fi

# Unit tests need no Docker engine and no images; anything else (or no path at all) may.
paths=0
unit_only=1
for arg in "$@"; do
    arg=${arg#./}
    case "$arg" in
        -*) ;;
        tests/unit | tests/unit/ | tests/unit/*) paths=$((paths + 1)) ;;
        *) if [ -e "${arg%%::*}" ]; then paths=$((paths + 1)); unit_only=0; fi ;;
    esac
done
if [ "$paths" -eq 0 ] || [ "$unit_only" -eq 0 ]; then
    scripts/start-dockerd.sh
    scripts/build-standin-images.sh
fi
# The program's token mode builds the token service's image from these wheels (unit tests check them).
PYTHON=$venv/bin/python scripts/token-wheels.sh

if [ "$#" -gt 0 ]; then
    exec "$venv/bin/python" -m pytest -p tests.support.no_skips -rs "$@"
fi
# Every test, on distribution 3 (the default registry); then the integration tests of each
# part that reads the registry's config or storage (token auth, stand-by and GC, Swarm, S3,
# Redis, the registry API, deletion and retention) again on 2.8, which stays supported.
REGISTRY2_TESTS=(
    tests/integration/test_full_stack.py tests/integration/test_token_access.py
    tests/integration/test_token_stack.py tests/integration/test_maintenance.py
    tests/integration/test_registry_api.py tests/integration/test_scale_storage.py
    tests/integration/test_swarm_token.py tests/integration/test_swarm_gc.py
    tests/integration/test_retention_signatures.py tests/integration/test_notifications.py
)
"$venv/bin/python" -m pytest -p tests.support.no_skips -rs
echo "test.sh: the registry's integration tests again on distribution 2.8 (TEST_REGISTRY_VERSION=2)" >&2
TEST_REGISTRY_VERSION=2 exec "$venv/bin/python" -m pytest -p tests.support.no_skips -rs "${REGISTRY2_TESTS[@]}"
