#!/usr/bin/env bash
# Builds the Go programs the tests drive beside Debian's packages, from their Go modules at the
# versions pinned below, with the ordinary `go` client (checked against the checksum database
# and each module's go.sum). Each lands in its own folder of a cache outside the work tree,
# keyed by name and version, and is reused from there: a warm run builds nothing.
# Usage: scripts/install-go-tools.sh [NAME...]   (default: all; env: GO_TOOLS_CACHE,
#        default /var/cache/private-registry/go-tools)
# Prints one line per tool, `NAME VERSION PATH`; the last line is the folder of links to put
# on PATH.
set -euo pipefail

cache=${GO_TOOLS_CACHE:-/var/cache/private-registry/go-tools}

# name | package@version. The registry is distribution's own command; the clients are the
# ones teams use beside Docker: crane (go-containerregistry), regctl (regclient), oras, cosign.
TOOLS=(
    "registry|github.com/distribution/distribution/v3/cmd/registry@v3.1.2"
    "crane|github.com/google/go-containerregistry/cmd/crane@v0.22.1"
    "regctl|github.com/regclient/regclient/cmd/regctl@v0.11.7"
    "oras|oras.land/oras/cmd/oras@v1.3.6"
    "cosign|github.com/sigstore/cosign/v3/cmd/cosign@v3.1.3"
)

die() { echo "install-go-tools: $*" >&2; exit 1; }
command -v go >/dev/null || die "no go on PATH (Go 1.26 or later)"

wanted=("$@")
bin=$cache/bin
mkdir -p "$bin"
for entry in "${TOOLS[@]}"; do
    name=${entry%%|*}
    package=${entry#*|}
    version=${package##*@}
    if [ ${#wanted[@]} -gt 0 ] && [[ ! " ${wanted[*]} " == *" $name "* ]]; then
        continue
    fi
    folder=$cache/$name-$version
    if [ ! -x "$folder/$name" ]; then
        started=$SECONDS
        rm -rf "$folder.partial"
        mkdir -p "$folder.partial"
        # CGO off: static binaries, so the registry runs in a stand-in image with no libc.
        GOBIN=$folder.partial CGO_ENABLED=0 GOFLAGS=-trimpath go install "$package" >&2 \
            || die "go install $package failed"
        [ -x "$folder.partial/$name" ] || die "go install $package made no $name"
        rm -rf "$folder"
        mv "$folder.partial" "$folder"
        echo "install-go-tools: built $name $version in $((SECONDS - started)) s" >&2
    fi
    ln -sfn "$folder/$name" "$bin/$name"
    echo "$name $version $folder/$name"
done
echo "$bin"
