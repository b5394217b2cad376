"""The program's entry point: settings in, one PrivateRegistry, the exports clients need."""

from __future__ import annotations

import json
import shlex
import subprocess

from cryptography import x509

from components.private_registry import EXPORTS

ALICE = "p@ss:w0rd'with\"quotes-0123"
USERS = {"alice": ALICE, "ci@example.com": "another:secret@pw-4567"}


def test_exports_with_configured_users(program):
    """registryAddress (host:port, no :443), caCertificatePem (the CA that signed the served
    certificate), serverCertificateExpiry (that certificate's notAfter), userNames, passwords
    (secret), loginCommand, volumeName; only passwords is secret."""
    run = program({"users": USERS, "httpsPort": 5443, "hosts": ["registry.example.com"]}, secret_keys=["users"])
    e = run.exports
    assert set(e) == set(EXPORTS)
    assert run.secret_exports == {"passwords"}
    assert e["registryAddress"] == "registry.example.com:5443"
    assert e["userNames"] == ["alice", "ci@example.com"]
    assert e["passwords"] == USERS
    assert e["volumeName"] == "registry-dev-data"
    ca = x509.load_pem_x509_certificate(e["caCertificatePem"].encode())
    (cert_resource,) = [r for r in run.monitor.registered if r.name == "registry-server-cert"]
    server = x509.load_pem_x509_certificate(cert_resource.plain_outputs["certPem"].encode())
    server.verify_directly_issued_by(ca)
    assert e["serverCertificateExpiry"] == server.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_login_command_keeps_the_password_off_the_command_line(program):
    """The login command names the first user and the address, reads the password from the
    (secret) stack output on stdin, and holds no password itself."""
    run = program({"users": USERS, "httpsPort": 5443}, secret_keys=["users"])
    command = run.exports["loginCommand"]
    assert all(password not in command for password in USERS.values())
    assert "--password-stdin" in command and "docker login localhost:5443" in command
    assert "--username alice" in command
    assert "pulumi stack output passwords --show-secrets" in command


def test_login_command_extracts_the_right_password(program, tmp_path):
    """Run the login command's pipeline with stand-ins for pulumi and docker: docker receives the
    first user's password on stdin and the user name intact, even for names with '@'."""
    run = program({"users": {"ci@example.com": "a:b@c'd\"e-0123456789"}}, secret_keys=["users"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "outputs.json").write_text(json.dumps(run.exports["passwords"]))
    (bin_dir / "pulumi").write_text(f"#!/bin/sh\ncat {shlex.quote(str(tmp_path / 'outputs.json'))}\n")
    (bin_dir / "jq").write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        "assert sys.argv[1] == '-r'\nkey = json.loads(sys.argv[2][2:-1])\n"
        "print(json.load(sys.stdin)[key])\n")
    (bin_dir / "docker").write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {shlex.quote(str(tmp_path / 'args'))}\n"
        f"cat > {shlex.quote(str(tmp_path / 'stdin'))}\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    subprocess.run(["sh", "-c", run.exports["loginCommand"]], check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert (tmp_path / "stdin").read_text() == "a:b@c'd\"e-0123456789\n"
    assert (tmp_path / "args").read_text().splitlines() == [
        "login", "localhost", "--username", "ci@example.com", "--password-stdin"]


def test_no_users_exports_one_generated_admin_password_as_a_secret(program):
    """Without users: userNames is ['admin'], passwords holds a generated 32-character password,
    secret, and the login command names admin."""
    run = program({})
    assert run.exports["userNames"] == ["admin"]
    password = run.exports["passwords"]["admin"]
    assert len(password) == 32 and password.isalnum()
    assert "passwords" in run.secret_exports
    assert password not in run.exports["loginCommand"] and "--username admin" in run.exports["loginCommand"]
    assert run.exports["registryAddress"] == "localhost"


def test_generated_password_is_stable_across_runs(program):
    """The generated password lives in state: a second run exports the same one."""
    assert program({}).exports["passwords"] == program({}).exports["passwords"]


def test_stack_name_and_volume_setting_reach_the_exports(program):
    """volumeName follows the stack (and volume.name); the address follows hosts/ips and port."""
    run = program({"volume": {"name": "images-prod"}, "hosts": [], "ips": ["10.0.0.7"]}, stack="prod")
    assert run.exports["volumeName"] == "images-prod"
    assert run.exports["registryAddress"] == "10.0.0.7"
    assert program({}, stack="prod").exports["volumeName"] == "registry-prod-data"
