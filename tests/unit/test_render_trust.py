"""Client-trust scripts as text: paths per kind, the CA embedded once, sudo wrapping, refusals.

Running the scripts (scratch root and for real) is tests/integration/test_trust_scripts.py.
"""

from __future__ import annotations

import shlex
import subprocess
import tomllib

import pytest

from components.render.trust import (
    KINDS,
    containerd_hosts_toml,
    render_install_script,
    render_remove_script,
    trust_id,
    with_sudo,
)

CA = "-----BEGIN CERTIFICATE-----\nMIIBfake/+base64==\n-----END CERTIFICATE-----\n"
ADDRESS = "registry.example.com:5443"


def test_trust_id_is_file_name_safe():
    """host:port (and IPv6 brackets) become a single safe file-name component."""
    assert trust_id("localhost:5443") == "localhost_5443"
    assert trust_id("[::1]:5443") == "___1__5443"
    assert "/" not in trust_id("a/b:1")


@pytest.mark.parametrize(
    "kind, path",
    [
        ("docker", "/etc/docker/certs.d/$ADDRESS/ca.crt"),
        ("podman", "/etc/containers/certs.d/$ADDRESS/ca.crt"),
        ("containerd", "/etc/containerd/certs.d/$ADDRESS/ca.crt"),
        ("system", "/usr/local/share/ca-certificates/private-registry-$TID.crt"),
    ],
)
def test_each_kind_writes_its_own_path_under_trust_root(kind, path):
    """Each kind writes the CA to the path that client reads, prefixed by $R (TRUST_ROOT); the
    address and its file-name id enter as quoted shell words, once."""
    script = render_install_script(ADDRESS, CA, [kind])
    assert f"\nADDRESS={ADDRESS}\nTID=registry.example.com_5443\n" in script
    assert f'"$R{path}"' in script
    others = {"docker": "/etc/docker/", "podman": "/etc/containers/", "containerd": "/etc/containerd/"}
    for other, prefix in others.items():
        if other != kind:
            assert prefix not in script


def test_system_kind_supports_both_distribution_families():
    """Debian (update-ca-certificates) and Red Hat (update-ca-trust) stores, refreshed after writing."""
    script = render_install_script(ADDRESS, CA, ["system"])
    assert "/etc/pki/ca-trust/source/anchors/private-registry-" in script
    assert "update-ca-certificates" in script and "update-ca-trust extract" in script
    assert 'echo "refresh system" >> "$NEW"' in script


def test_containerd_gets_hosts_toml_pointing_at_the_ca():
    """hosts.toml names the https server, its capabilities and the CA file next to it, at the top
    level, and an empty host table (no [host."..."] key, which containerd 1.6 cannot read for an
    IPv6 URL; it needs the table itself)."""
    script = render_install_script(ADDRESS, CA, ["containerd"])
    toml = containerd_hosts_toml(ADDRESS, f"/etc/containerd/certs.d/{ADDRESS}/ca.crt")
    assert f"HOSTS_TOML={shlex.quote(toml)}" in script
    assert tomllib.loads(toml) == {
        "server": f"https://{ADDRESS}", "capabilities": ["pull", "resolve", "push"],
        "ca": f"/etc/containerd/certs.d/{ADDRESS}/ca.crt", "host": {},
    }
    assert toml.count("[") == 2 and "[host]" in toml  # the capabilities' list and the empty host table


def test_ca_is_embedded_once_per_kind_and_remove_script_has_no_ca():
    """The install embeds the PEM once, as a single-quoted shell word (no shell expansion); removal needs no CA."""
    script = render_install_script(ADDRESS, CA, list(KINDS))
    assert script.count(CA.strip()) == 1  # in write_ca, called once per kind
    # One call per kind, the system kind with one per store family (Debian, Red Hat).
    assert script.count("write_ca \"") == len(KINDS) + 1
    assert f"CA_PEM={shlex.quote(CA.strip())}\n" in script
    remove = render_remove_script(ADDRESS)
    assert "BEGIN CERTIFICATE" not in remove
    assert "undo_previous" in remove


def test_scripts_are_valid_posix_sh():
    """`sh -n` parses both scripts (syntax only)."""
    for script in (render_install_script(ADDRESS, CA, list(KINDS)), render_remove_script(ADDRESS)):
        result = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
        assert result.returncode == 0, result.stderr


def test_scripts_are_deterministic():
    """Same inputs, same text: the Command resource sees no diff on an unchanged stack."""
    assert render_install_script(ADDRESS, CA, ["docker"]) == render_install_script(ADDRESS, CA, ["docker"])
    assert render_install_script(ADDRESS, CA, ["docker"]) != render_install_script(ADDRESS, CA + "x", ["docker"])


def test_refusals():
    """Unknown kind, no kind, a kind twice, a NUL in the CA text and an address outside the grammar are refused."""
    with pytest.raises(ValueError, match="unknown trust kind 'snap'"):
        render_install_script(ADDRESS, CA, ["snap"])
    with pytest.raises(ValueError, match="at least one"):
        render_install_script(ADDRESS, CA, [])
    with pytest.raises(ValueError, match="at most once"):
        render_install_script(ADDRESS, CA, ["docker", "docker"])
    with pytest.raises(ValueError, match="NUL"):
        render_install_script(ADDRESS, CA + "\x00", ["docker"])
    for address in ("a/../../etc:1", "a$(id)", "fe80::1%eth0", "x\n", "[::1%lo]:5443"):
        with pytest.raises(ValueError, match="not a registry address"):
            render_install_script(address, CA, ["docker"])
        with pytest.raises(ValueError, match="not a registry address"):
            render_remove_script(address)


def test_without_sudo_the_whole_script_is_one_argument():
    """The command line splits back into `sh -c` and exactly the script, quotes and all."""
    script = render_install_script(ADDRESS, CA, ["docker"]) + "\necho \"it's $HOME\"\n"
    assert shlex.split(with_sudo(script, False)) == ["sh", "-c", script]


@pytest.mark.parametrize("uid, expected", [("0", "direct"), ("1000", "sudo -n")])
def test_with_sudo_uses_sudo_only_when_not_root(tmp_path, uid, expected):
    """With sudo, root runs the script directly (CI and containers often lack sudo); anyone else
    goes through `sudo -n` (never prompts). Fake `id` and `sudo` on PATH show which branch ran
    and that the script arrives intact."""
    (tmp_path / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (tmp_path / "sudo").write_text('#!/bin/sh\necho "sudo $1"\nshift\nexec "$@"\n')
    for tool in ("id", "sudo"):
        (tmp_path / tool).chmod(0o755)
    script = "echo \"ran: it's $((1 + 1))\""
    result = subprocess.run(["sh", "-c", with_sudo(script, True)], capture_output=True, text=True,
                            env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert lines[-1] == "ran: it's 2"
    assert (lines[0] == "sudo -n") == (expected == "sudo -n") and len(lines) == (2 if expected == "sudo -n" else 1)
