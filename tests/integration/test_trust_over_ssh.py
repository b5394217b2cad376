"""Client trust on a remote target over SSH, with a real sshd.

The program declares a ``command:remote:Command`` per remote target. Its connection (host,
port, user, private key) and its create/delete command lines are taken from the registration
and run exactly as pulumi-command would: one SSH session per command, key authentication, the
command line executed by the remote user's shell. The target is a real OpenSSH server on the
loopback, logged into as an unprivileged user whose only way to root is ``sudo``, so the
``sudo: true`` path runs for real; afterwards every file is gone again.
"""

from __future__ import annotations

import io
import json
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.support.deploy import free_port
from tests.support.engine import redact
from tests.support.program import run_program
from tests.support.waiting import listening, wait_for

USER = "prtrust"


def _ed25519_pair() -> tuple[str, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


@pytest.fixture(scope="module")
def ssh_target():
    """An sshd on 127.0.0.1 accepting one key for an unprivileged user with passwordless sudo;
    yields (port, private key PEM); removes the user, its sudo rule and the server afterwards."""
    for tool in ("sshd", "sudo", "useradd"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.fail(f"{tool} missing: .ci/run installs openssh-server and sudo")
    # sshd reads authorized_keys as the logging-in user: pytest's tmp folders (0700) are closed to it.
    tmp = Path(tempfile.mkdtemp(prefix="private-registry-sshd-"))
    tmp.chmod(0o755)
    private, public = _ed25519_pair()
    host_key = tmp / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    keys = tmp / "authorized_keys"
    keys.write_text(public + "\n")
    keys.chmod(0o644)
    port = free_port()
    config = tmp / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {keys}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        f"UsePAM no\nStrictModes no\nAllowUsers {USER}\nPidFile {tmp}/sshd.pid\n"
    )
    created_user = False
    sudoers = Path(f"/etc/sudoers.d/private-registry-test-{USER}")
    server = None
    try:
        try:
            pwd.getpwnam(USER)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True)
            created_user = True
        # A locked password ('!') makes OpenSSH refuse even key logins without PAM.
        subprocess.run(["usermod", "-p", "*", USER], check=True)
        sudoers.write_text(f"{USER} ALL=(root) NOPASSWD: ALL\n")
        sudoers.chmod(0o440)
        Path("/run/sshd").mkdir(exist_ok=True)
        server = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_for(lambda: listening(port), timeout=15, interval=0.1, what="sshd listening", process=server,
                 log=lambda: server.stdout.read().decode(errors="replace") if server.poll() is not None else "")
        yield port, private
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        sudoers.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if created_user:
            subprocess.run(["userdel", "--remove", USER], capture_output=True)


def _run_remote(connection: dict, command: str) -> tuple[int, str, str]:
    """One SSH session running ``command`` as pulumi-command's remote.Command does."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(connection["privateKey"]))
    client.connect(connection["host"], port=int(connection["port"]), username=connection["user"], pkey=key,
                   allow_agent=False, look_for_keys=False, timeout=10)
    try:
        _, stdout, stderr = client.exec_command(command, timeout=60)
        code = stdout.channel.recv_exit_status()
        return code, stdout.read().decode(), stderr.read().decode()
    finally:
        client.close()


def test_remote_target_installs_and_removes_the_ca_over_ssh_with_sudo(ssh_target, tmp_path):
    """The declared remote command, run over real SSH as an unprivileged user with sudo, puts the
    CA where Docker and containerd read it (as root), installs again idempotently, and its delete
    command removes exactly what it added."""
    port, private_key = ssh_target
    host = f"trust-ssh-{uuid.uuid4().hex[:6]}"
    config = {
        "hosts": [host],
        "httpsPort": 5443,
        "trust": [{"name": "remote", "host": "127.0.0.1", "port": port, "user": USER, "privateKey": private_key,
                   "kinds": ["docker", "containerd"], "sudo": True}],
    }
    run = run_program(config, secret_keys=["trust"])
    remote = run.monitor.one("command:remote:Command")
    inputs = remote.plain_inputs
    connection = inputs["connection"]
    # The key travels as a secret: stored encrypted, never in the plain state.
    key_line = private_key.splitlines()[1]
    assert key_line in json.dumps(remote.wire_inputs)
    assert key_line not in json.dumps(redact(remote.wire_inputs))
    docker_ca = Path(f"/etc/docker/certs.d/{host}:5443/ca.crt")
    containerd_dir = Path(f"/etc/containerd/certs.d/{host}:5443")
    try:
        for _ in range(2):  # a second install (an update) replaces, it does not pile up
            code, out, err = _run_remote(connection, inputs["create"])
            assert code == 0, err
            assert f"trusted {host}:5443" in out
        assert docker_ca.read_text().strip() == run.exports["caCertificatePem"].strip()
        assert docker_ca.stat().st_uid == 0  # written by root through sudo, not by the SSH user
        assert (containerd_dir / "hosts.toml").read_text().startswith(f'server = "https://{host}:5443"')
        code, out, err = _run_remote(connection, inputs["delete"])
        assert code == 0, err
        assert not docker_ca.parent.exists() and not containerd_dir.exists()
    finally:
        subprocess.run(["rm", "-rf", str(docker_ca.parent), str(containerd_dir)])
