#!/usr/bin/env bash
# Fills token_service/wheels with the wheels token_service/requirements.lock pins, checked
# against its hashes, for the token service image's build (which has no network).
# Usage: scripts/token-wheels.sh [PYTHON_VERSION...]   (default: 3.12 3.11, this machine's arch)
# Safe to run repeatedly: pip skips wheels already present with the right hash.
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
arch=$(uname -m)
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.12 3.11)
mkdir -p "$root/token_service/wheels"
for version in "${versions[@]}"; do
    "$python" -m pip download --quiet --disable-pip-version-check --require-hashes --no-deps \
        --only-binary=:all: --implementation cp --python-version "$version" \
        --platform "manylinux_2_34_$arch" --platform "manylinux_2_28_$arch" \
        --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
        -r "$root/token_service/requirements.lock" -d "$root/token_service/wheels" 2>&1 \
        | { grep -v "^WARNING: Location" || true; }
done
echo "token-wheels: $(ls "$root/token_service/wheels" | wc -l) wheels in token_service/wheels" >&2
