"""The client-trust scripts exactly as the program hands them to pulumi-command, run by a real
shell: first in scratch roots (TRUST_ROOT) for every kind, then for real on this machine.

The scripts come from the `command:local:Command` inputs of `run_program` runs; each run makes a
new CA (the mocks generate real keys), which is what a CA rotation looks like to a client.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.program import run_program
from tests.support.ports import free_port

PORT = 5443
ADDRESS = f"registry.example.com:{PORT}"
TID = f"registry.example.com_{PORT}"
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Without /usr/sbin, update-ca-certificates is not found: the Red Hat branch can be exercised.
NO_SBIN_PATH = "/usr/bin:/bin"
KIND_FILES = {
    "docker": [f"etc/docker/certs.d/{ADDRESS}/ca.crt"],
    "podman": [f"etc/containers/certs.d/{ADDRESS}/ca.crt"],
    "containerd": [f"etc/containerd/certs.d/{ADDRESS}/ca.crt", f"etc/containerd/certs.d/{ADDRESS}/hosts.toml"],
    "system": [f"usr/local/share/ca-certificates/private-registry-{TID}.crt"],
}


class Scripts:
    """Install and remove commands (and the CA) from one program run."""

    def __init__(self, kinds, hosts=("registry.example.com",), port=PORT):
        run = run_program({"hosts": list(hosts), "httpsPort": port, "trust": [{"name": "here", "kinds": list(kinds)}]})
        (command,) = run.monitor.by_type("command:local:Command")
        inputs = command.plain_inputs
        assert inputs["update"] == inputs["create"]
        self.install, self.remove = inputs["create"], inputs["delete"]
        self.ca = run.exports["caCertificatePem"]


def sh(command: str, root: Path | None, path: str = DEBIAN_PATH) -> subprocess.CompletedProcess:
    """Run a command line as pulumi-command's local provider does (/bin/sh -c)."""
    env = {"PATH": path}
    if root is not None:
        env["TRUST_ROOT"] = str(root)
    result = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def tree(root: Path) -> dict[str, tuple]:
    """Every folder and file under root with its mode (and a file's content)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            mode = path.stat().st_mode & 0o7777
            found[rel] = ("dir", mode) if path.is_dir() else ("file", mode, path.read_bytes())
    return found


def debian_like(root: Path) -> Path:
    """A scratch root shaped like a client host: some of the folders exist, with foreign files."""
    (root / "etc/docker").mkdir(parents=True)
    (root / "etc/docker/daemon.json").write_text('{"log-driver": "local"}\n')
    (root / "etc/containers/certs.d/other.example:443").mkdir(parents=True)
    (root / "etc/containers/certs.d/other.example:443/ca.crt").write_text("someone else's CA\n")
    (root / "usr/local/share/ca-certificates").mkdir(parents=True)
    (root / "var/lib").mkdir(parents=True)
    return root


@pytest.fixture(scope="module")
def scripts_all_kinds():
    return Scripts(["docker", "containerd", "podman", "system"])


@pytest.mark.parametrize("kind", ["docker", "containerd", "podman", "system"])
def test_each_kind_installs_its_files_and_removal_restores_the_tree(tmp_path, kind):
    """Install puts the CA (and containerd's hosts.toml) where that client looks, mode 0644;
    removal leaves the tree exactly as before, including folders the install had to create."""
    root = debian_like(tmp_path)
    before = tree(root)
    scripts = Scripts([kind])
    out = sh(scripts.install, root)
    assert f"trusted {ADDRESS} for: {kind}" in out.stdout
    for rel in KIND_FILES[kind]:
        path = root / rel
        assert path.stat().st_mode & 0o777 == 0o644
        if rel.endswith(".crt"):
            assert path.read_text().strip() == scripts.ca.strip()
    if kind == "containerd":
        toml = (root / KIND_FILES["containerd"][1]).read_text()
        assert f'server = "https://{ADDRESS}"' in toml and f'ca = "/etc/containerd/certs.d/{ADDRESS}/ca.crt"' in toml
    others = [rel for other, rels in KIND_FILES.items() if other != kind for rel in rels]
    assert not any((root / rel).exists() for rel in others)
    sh(scripts.remove, root)
    assert tree(root) == before


def test_all_kinds_at_once_and_an_empty_root(tmp_path, scripts_all_kinds):
    """All four kinds in a root with nothing in it: everything is created, and removal takes every
    file and folder away again, leaving the root empty."""
    sh(scripts_all_kinds.install, tmp_path)
    for rels in KIND_FILES.values():
        assert all((tmp_path / rel).is_file() for rel in rels)
    sh(scripts_all_kinds.remove, tmp_path)
    assert tree(tmp_path) == {}


def test_a_foreign_file_is_kept_aside_and_restored(tmp_path):
    """A ca.crt someone else put at the same path is restored, byte for byte and mode, on removal."""
    root = debian_like(tmp_path)
    foreign = root / KIND_FILES["docker"][0]
    foreign.parent.mkdir(parents=True)
    foreign.write_text("hand-installed CA from the tutorial\n")
    foreign.chmod(0o600)
    before = tree(root)
    scripts = Scripts(["docker"])
    sh(scripts.install, root)
    assert foreign.read_text().strip() == scripts.ca.strip()
    sh(scripts.remove, root)
    assert tree(root) == before


def test_reinstall_with_a_new_ca_replaces_the_old_and_still_removes_cleanly(tmp_path):
    """A rotated CA (another run's install) replaces the old one: only the new CA is trusted, no
    backup of our own old CA is kept, a repeated install changes nothing, and removal restores
    the original tree, foreign file included."""
    root = debian_like(tmp_path)
    foreign = root / KIND_FILES["docker"][0]
    foreign.parent.mkdir(parents=True)
    foreign.write_text("foreign\n")
    before = tree(root)
    old, new = Scripts(["docker", "system"]), Scripts(["docker", "system"])
    assert old.ca != new.ca
    sh(old.install, root)
    sh(new.install, root)
    once = tree(root)
    sh(new.install, root)
    assert tree(root) == once
    for rel in KIND_FILES["docker"] + KIND_FILES["system"]:
        assert (root / rel).read_text().strip() == new.ca.strip()
    contents = b"".join(entry[2] for entry in once.values() if entry[0] == "file")
    assert old.ca.encode().strip() not in contents
    assert [rel for rel in once if rel.endswith(".private-registry-backup")] == [KIND_FILES["docker"][0] + ".private-registry-backup"]
    sh(new.remove, root)
    assert tree(root) == before


def test_dropping_a_kind_removes_its_files(tmp_path):
    """Install for docker and containerd, then for docker only: containerd's files and folders go."""
    root = debian_like(tmp_path)
    before = tree(root)
    both, docker_only = Scripts(["docker", "containerd"]), Scripts(["docker"])
    sh(both.install, root)
    assert (root / KIND_FILES["containerd"][1]).exists()
    sh(docker_only.install, root)
    assert not (root / "etc/containerd").exists()
    assert (root / KIND_FILES["docker"][0]).read_text().strip() == docker_only.ca.strip()
    sh(docker_only.remove, root)
    assert tree(root) == before


def test_system_store_on_a_red_hat_layout(tmp_path):
    """Without update-ca-certificates but with /etc/pki/ca-trust/source/anchors, the CA goes there;
    removal restores the tree."""
    anchors = tmp_path / "etc/pki/ca-trust/source/anchors"
    anchors.mkdir(parents=True)
    before = tree(tmp_path)
    scripts = Scripts(["system"])
    sh(scripts.install, tmp_path, path=NO_SBIN_PATH)
    assert (anchors / f"private-registry-{TID}.crt").read_text().strip() == scripts.ca.strip()
    assert not (tmp_path / "usr").exists()
    sh(scripts.remove, tmp_path, path=NO_SBIN_PATH)
    assert tree(tmp_path) == before


def test_system_store_missing_fails_the_install(tmp_path):
    """No known system store (no tool, no folder): the install fails with a clear message."""
    scripts = Scripts(["system"])
    result = subprocess.run(["/bin/sh", "-c", scripts.install], env={"PATH": NO_SBIN_PATH, "TRUST_ROOT": str(tmp_path)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "no system trust store found" in result.stderr




def test_two_registries_on_one_host_are_independent(tmp_path):
    """Removing one registry's trust leaves another registry's trust (and the state folder) alone."""
    root = debian_like(tmp_path)
    first, second = Scripts(["docker"]), Scripts(["docker"], port=6443)
    sh(first.install, root)
    sh(second.install, root)
    sh(first.remove, root)
    assert (root / "etc/docker/certs.d/registry.example.com:6443/ca.crt").read_text().strip() == second.ca.strip()
    assert (root / "var/lib/private-registry-trust/registry.example.com_6443.manifest").is_file()
    assert not (root / KIND_FILES["docker"][0]).exists()


def test_two_registries_removed_last_installed_first_restore_the_tree(tmp_path):
    """Install two registries' trust, remove them in reverse order: the tree is as before."""
    root = debian_like(tmp_path)
    before = tree(root)
    first, second = Scripts(["docker", "containerd"]), Scripts(["docker"], port=6443)
    sh(first.install, root)
    sh(second.install, root)
    sh(second.remove, root)
    assert (root / KIND_FILES["docker"][0]).read_text().strip() == first.ca.strip()
    sh(first.remove, root)
    assert tree(root) == before


# --- for real ------------------------------------------------------------------------------------


def test_docker_trust_for_real_on_this_machine():
    """Without TRUST_ROOT, as root: /etc/docker/certs.d/localhost:PORT/ca.crt (a throwaway
    address) appears with the CA, and removal takes it and anything the install created away."""
    port = free_port()
    scripts = Scripts(["docker"], hosts=("localhost",), port=port)
    certs_d = Path("/etc/docker/certs.d")
    folder = certs_d / f"localhost:{port}"
    state = Path("/var/lib/private-registry-trust")
    manifest = state / f"localhost_{port}.manifest"
    assert not folder.exists()
    existed = {p: p.exists() for p in (Path("/etc/docker"), certs_d, state)}
    try:
        sh(scripts.install, None)
        assert (folder / "ca.crt").read_text().strip() == scripts.ca.strip()
        assert manifest.is_file()
        sh(scripts.remove, None)
        assert not folder.exists() and not manifest.exists()
        assert {p: p.exists() for p in existed} == existed
    finally:
        if folder.exists() or manifest.exists():
            subprocess.run(["/bin/sh", "-c", scripts.remove], capture_output=True, timeout=60)
            shutil.rmtree(folder, ignore_errors=True)
            manifest.unlink(missing_ok=True)


def test_two_registries_on_one_host_are_independent(tmp_path):
    """Removing one registry's trust leaves another registry's trust (and the state folder) alone."""
    root = debian_like(tmp_path)
    before = tree(root)
    first, second = Scripts(["docker"]), Scripts(["docker"], port=6443)
    sh(first.install, root)
    sh(second.install, root)
    sh(first.remove, root)
    assert (root / "etc/docker/certs.d/registry.example.com:6443/ca.crt").read_text().strip() == second.ca.strip()
    assert not (root / KIND_FILES["docker"][0]).exists()
    sh(second.remove, root)
    assert tree(root) == before


