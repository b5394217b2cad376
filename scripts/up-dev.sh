#!/usr/bin/env bash
# Stand up (or update) the dev stack: a registry at https://localhost:5443 on the local Docker
# engine, state in a local file backend (.pulumi-state/), no Pulumi account needed.
# Extra arguments go to `pulumi up` (e.g. --diff, --refresh).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v pulumi >/dev/null || { echo "error: the Pulumi CLI is needed: https://www.pulumi.com/docs/iac/download-install/" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "error: no Docker engine answers (is dockerd running, may this user use it?)" >&2; exit 1; }

export PULUMI_BACKEND_URL="${PULUMI_BACKEND_URL:-file://$PWD/.pulumi-state}"
mkdir -p .pulumi-state
# The file backend encrypts secrets with a passphrase; keep a generated one beside the state
# unless the caller brings their own.
if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
    if [ ! -s .pulumi-state/passphrase ]; then
        (umask 077; head -c 32 /dev/urandom | base64 > .pulumi-state/passphrase)
    fi
    export PULUMI_CONFIG_PASSPHRASE_FILE="$PWD/.pulumi-state/passphrase"
fi

pulumi login "$PULUMI_BACKEND_URL"
pulumi stack select dev --create --non-interactive
# The .venv with requirements.txt, and the token service's wheels (as the CI workflow does).
scripts/prepare.sh
pulumi up --stack dev --yes --non-interactive "$@"

echo
echo "Registry: https://$(pulumi stack output registryAddress --stack dev)"
echo "Log in:   $(pulumi stack output loginCommand --stack dev)"
