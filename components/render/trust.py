"""Shell scripts that install and remove the registry's CA in a client's trust stores.

POSIX ``sh`` only (they run on whatever the client host is). The install script records every
file and folder it creates in a manifest; the remove script undoes exactly that list and
restores any file that was there before. Installing again first undoes the previous install,
so a new CA replaces the old one and a kind taken out of the settings leaves nothing behind.
No daemon is restarted: Docker, containerd and podman read ``certs.d`` on every connection.

``TRUST_ROOT`` (environment) prefixes every path, so the scripts can run in a scratch folder.

Data never becomes code: the address, the CA and ``hosts.toml`` enter each script once, as
single-quoted shell words assigned to variables (``shlex.quote``), and are used only as
``"$VARIABLE"``; ``hosts.toml`` is written by a TOML library. The address must also be a
host[:port] of the grammar, so no path it names leaves the certs.d folders.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

import tomli_w

from components import grammar

KINDS = ("docker", "containerd", "podman", "system")
STATE_DIR = "/var/lib/private-registry-trust"


def trust_id(address: str) -> str:
    """A file-name-safe id for a registry address (``localhost:5443`` -> ``localhost_5443``)."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", address)


def containerd_hosts_toml(address: str, ca_path: str) -> str:
    """containerd's ``hosts.toml`` for a registry whose CA is at ``ca_path`` (written by tomli-w).

    The CA and capabilities are the server's own, at the top level, and the ``host`` table is
    empty: containerd 1.6's TOML reader (go-toml 1) refuses a table key holding ``]``, which an
    IPv6 address's URL does (``[host."https://[::1]:5443"]``: "table key cannot contain ']'"),
    and then ignores the whole file; it also ignores a file without a ``host`` table ("invalid
    `host` tree"), and does not apply an inline or dotted ``host."https://[::1]:5443".ca``."""
    return tomli_w.dumps({"server": f"https://{address}", "capabilities": ["pull", "resolve", "push"], "ca": ca_path,
                          "host": {}})


def _check_address(address: str) -> None:
    if not grammar.is_registry_address(address):
        raise ValueError(f"{address!r} is not a registry address (host[:port], [IPv6]:port)")


_COMMON = r"""set -eu
R="${TRUST_ROOT:-}"
ADDRESS=%(address)s
TID=%(id)s
STATE="$R"%(state_dir)s
MANIFEST="$STATE/$TID.manifest"

undo_previous() {
    [ -f "$MANIFEST" ] || return 0
    refresh=$(grep -c '^refresh ' "$MANIFEST" || true)
    # Undo in reverse order: files before the folders that hold them.
    sed '1!G;h;$!d' "$MANIFEST" | while IFS=' ' read -r what path; do
        case "$what" in
            file) rm -f "$path" ;;
            backup) mv -f "$path.private-registry-backup" "$path" ;;
            dir) rmdir "$path" 2>/dev/null || echo "$path" >> "$STATE/.pending-dirs" ;;
        esac
    done
    rm -f "$MANIFEST"
    retry_pending_dirs
    # The store is refreshed once its file is gone, not before.
    if [ "$refresh" -gt 0 ]; then refresh_system_store; fi
    rmdir "$STATE" 2>/dev/null || true
}

retry_pending_dirs() {
    # A folder this host lacked may hold another registry's files when its creator is removed
    # (e.g. certs.d/ with two registries): it is kept in a shared list and every removal
    # retries it, deepest first, so the last one out takes it.
    [ -f "$STATE/.pending-dirs" ] || return 0
    awk '{ print length($0) " " $0 }' "$STATE/.pending-dirs" | sort -rn | cut -d' ' -f2- | uniq > "$STATE/.pending-dirs.old"
    : > "$STATE/.pending-dirs"
    while IFS= read -r path; do
        [ -d "$path" ] || continue
        rmdir "$path" 2>/dev/null || echo "$path" >> "$STATE/.pending-dirs"
    done < "$STATE/.pending-dirs.old"
    rm -f "$STATE/.pending-dirs.old"
    [ -s "$STATE/.pending-dirs" ] || rm -f "$STATE/.pending-dirs"
}

refresh_system_store() {
    if [ -n "$R" ]; then
        echo "scratch root: not refreshing the system trust store"
    elif command -v update-ca-certificates >/dev/null 2>&1; then
        update-ca-certificates >/dev/null
    elif command -v update-ca-trust >/dev/null 2>&1; then
        update-ca-trust extract
    fi
}
"""

_INSTALL = r"""
NEW="$STATE/$TID.manifest.new"
CA_PEM=%(ca_pem)s

make_dir() {
    # Record each folder this script creates, outermost first, so removal can take them away.
    missing=""
    d="$1"
    while [ ! -d "$d" ]; do missing="$d $missing"; d=$(dirname "$d"); done
    for d in $missing; do mkdir "$d"; echo "dir $d" >> "$NEW"; done
}

put_file() {
    # $1 path; content on stdin. A file that was there before is kept aside and restored on removal.
    make_dir "$(dirname "$1")"
    if [ -e "$1" ]; then
        mv -f "$1" "$1.private-registry-backup"
        echo "backup $1" >> "$NEW"
    fi
    cat > "$1.tmp.$$"
    chmod 0644 "$1.tmp.$$"
    mv -f "$1.tmp.$$" "$1"
    echo "file $1" >> "$NEW"
}

write_ca() {
    printf '%%s\n' "$CA_PEM" | put_file "$1"
}

undo_previous
if [ ! -d "$STATE" ]; then
    # Remember which folders of the state path this host lacked, for the last removal.
    created=""
    d="$STATE"
    while [ ! -d "$d" ]; do created="$d $created"; d=$(dirname "$d"); done
    mkdir -p "$STATE"
    for d in $created; do echo "$d"; done > "$STATE/.created"
fi
: > "$NEW"
%(body)s
mv -f "$NEW" "$MANIFEST"
printf 'trusted %%s for: %%s\n' "$ADDRESS" %(kinds)s
"""

_REMOVE = r"""
undo_previous
# The last registry removed from this host takes the state folder (and parents it made) along.
if [ -d "$STATE" ] && [ -z "$(ls "$STATE")" ]; then
    created=$(sed '1!G;h;$!d' "$STATE/.created" 2>/dev/null || true)
    rm -f "$STATE/.created"
    rmdir "$STATE" 2>/dev/null || true
    for d in $created; do rmdir "$d" 2>/dev/null || true; done
fi
printf 'removed trust for %%s\n' "$ADDRESS"
"""


def _kind_body(kind: str, address: str) -> str:
    # certs.d folders are named host:port ($ADDRESS); Docker names them without :443.
    if kind == "docker":
        return 'write_ca "$R/etc/docker/certs.d/$ADDRESS/ca.crt"'
    if kind == "podman":
        return 'write_ca "$R/etc/containers/certs.d/$ADDRESS/ca.crt"'
    if kind == "containerd":
        toml = containerd_hosts_toml(address, f"/etc/containerd/certs.d/{address}/ca.crt")
        return (
            f"HOSTS_TOML={shlex.quote(toml)}\n"
            'write_ca "$R/etc/containerd/certs.d/$ADDRESS/ca.crt"\n'
            'printf \'%s\' "$HOSTS_TOML" | put_file "$R/etc/containerd/certs.d/$ADDRESS/hosts.toml"'
        )
    if kind == "system":
        return (
            "if [ -d \"$R/usr/local/share/ca-certificates\" ] || command -v update-ca-certificates >/dev/null 2>&1; then\n"
            '    write_ca "$R/usr/local/share/ca-certificates/private-registry-$TID.crt"\n'
            "elif [ -d \"$R/etc/pki/ca-trust/source/anchors\" ] || command -v update-ca-trust >/dev/null 2>&1; then\n"
            '    write_ca "$R/etc/pki/ca-trust/source/anchors/private-registry-$TID.crt"\n'
            "else\n"
            '    echo "no system trust store found (neither update-ca-certificates nor update-ca-trust)" >&2\n'
            "    exit 1\n"
            "fi\n"
            'echo "refresh system" >> "$NEW"\n'
            "refresh_system_store"
        )
    raise ValueError(f"unknown trust kind {kind!r}; known: {', '.join(KINDS)}")


def _values(address: str) -> dict[str, str]:
    _check_address(address)
    return {"state_dir": shlex.quote(STATE_DIR), "id": shlex.quote(trust_id(address)), "address": shlex.quote(address)}


def render_install_script(address: str, ca_pem: str, kinds: Sequence[str]) -> str:
    """Script that makes a host trust ``ca_pem`` for ``address`` (host:port) for each kind."""
    if not kinds:
        raise ValueError("at least one trust kind is needed")
    if len(set(kinds)) != len(kinds):
        raise ValueError("each trust kind at most once (the manifest would list its files twice)")
    if "\x00" in ca_pem:
        raise ValueError("the CA certificate text holds a NUL character")
    values = _values(address)
    body = "\n".join(_kind_body(kind, address) for kind in kinds)
    return "#!/bin/sh\n" + (_COMMON % values) + (
        _INSTALL % dict(values, body=body, ca_pem=shlex.quote(ca_pem.strip()), kinds=shlex.quote(", ".join(kinds)))
    )


def render_remove_script(address: str) -> str:
    """Script that removes exactly what the install script for ``address`` added."""
    values = _values(address)
    return "#!/bin/sh\n" + (_COMMON % values) + (_REMOVE % values)


def with_sudo(script: str, sudo: bool) -> str:
    """The command line that runs ``script`` with sh; with ``sudo``, through ``sudo -n`` unless
    already root (containers and CI often have no sudo at all)."""
    quoted = shlex.quote(script)
    if not sudo:
        return f"sh -c {quoted}"
    return f'if [ "$(id -u)" = 0 ]; then sh -c {quoted}; else sudo -n sh -c {quoted}; fi'

