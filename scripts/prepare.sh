#!/usr/bin/env bash
# Everything `pulumi preview` / `pulumi up` of this program needs before the CLI is called:
# the .venv that Pulumi.yaml names, with requirements.txt installed, and the token service's
# wheels (token mode, the default, builds its image offline from them).
# scripts/up-dev.sh and the CI workflow's preview and up jobs both run exactly this.
# Usage: scripts/prepare.sh   (env: PYTHON, the interpreter for a new .venv, default python3)
# Safe to run repeatedly: pip and scripts/token-wheels.sh skip what is already in place.
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$root"

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "prepare: $python is older than Python 3.11 (set PYTHON=...)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
PYTHON=.venv/bin/python scripts/token-wheels.sh
