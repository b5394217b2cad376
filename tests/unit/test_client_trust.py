"""Client trust: one Command per target, local or over SSH, whose create/update install the CA
and whose delete removes exactly that; SSH credentials secret."""

from __future__ import annotations

import pulumi
from pydantic import SecretStr

from components.client_trust import ClientTrust, ClientTrustArgs
from components.render.trust import render_install_script, render_remove_script, with_sudo
from components.settings import TrustTarget
from tests.support.engine import is_secret
from tests.support.program import use_mocks

CA = "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n"
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nssh-key-material-xyz\n-----END OPENSSH PRIVATE KEY-----\n"
SSH_PASSWORD = "ssh:pa55@word"


def build(target: TrustTarget, ca: str = CA, address: str = "localhost:5443"):
    monitor = use_mocks()

    @pulumi.runtime.test
    def run():
        trust = ClientTrust("t", ClientTrustArgs(target=target, address=address, ca_cert_pem=ca))
        return trust.installed

    run()
    component = monitor.one("registry:client_trust:ClientTrust")
    (command,) = [r for r in monitor.registered if r.parent == component.urn]
    return monitor, command


def test_local_target_runs_the_rendered_scripts_locally():
    """create and update install (for the kinds asked), delete removes; named f'{name}-install'."""
    _, command = build(TrustTarget(name="me", kinds=("docker", "podman")))
    assert (command.type, command.name) == ("command:local:Command", "t-install")
    install = with_sudo(render_install_script("localhost:5443", CA, ("docker", "podman")), False)
    assert command.plain_inputs["create"] == command.plain_inputs["update"] == install
    assert command.plain_inputs["delete"] == with_sudo(render_remove_script("localhost:5443"), False)


def test_sudo_wraps_every_script():
    """sudo: true wraps create, update and delete alike (see test_render_trust for what it runs)."""
    _, command = build(TrustTarget(name="me", sudo=True))
    assert command.plain_inputs["create"] == with_sudo(render_install_script("localhost:5443", CA, ("docker",)), True)
    assert command.plain_inputs["delete"] == with_sudo(render_remove_script("localhost:5443"), True)
    assert all("sudo -n sh -c " in command.plain_inputs[p] for p in ("create", "update", "delete"))


def test_remote_target_connects_over_ssh_with_secret_credentials():
    """Remote hosts get a remote Command with host, port and user; the key and password are secret
    and not in the state."""
    target = TrustTarget(name="build", host="build.example.com", port=2222, user="ops",
                         private_key=SecretStr(SSH_KEY), password=SecretStr(SSH_PASSWORD))
    monitor, command = build(target)
    assert command.type == "command:remote:Command"
    connection = command.inputs["connection"]
    plain = command.plain_inputs["connection"]
    assert (plain["host"], plain["port"], plain["user"]) == ("build.example.com", 2222, "ops")
    assert (plain["privateKey"], plain["password"]) == (SSH_KEY, SSH_PASSWORD)
    assert is_secret(connection) or (is_secret(connection["privateKey"]) and is_secret(connection["password"]))
    assert is_secret(command.outputs["connection"])
    state = monitor.state_text()
    assert "ssh-key-material-xyz" not in state and SSH_PASSWORD not in state


def test_a_new_ca_changes_install_but_not_delete():
    """A rotated CA re-runs the install (which replaces the old CA); removal does not depend on it."""
    _, old = build(TrustTarget(name="me"))
    _, new = build(TrustTarget(name="me"), ca=CA.replace("MIIBca", "MIIBnew"))
    assert old.plain_inputs["create"] != new.plain_inputs["create"]
    assert old.plain_inputs["delete"] == new.plain_inputs["delete"]


def test_unchanged_target_gives_identical_commands():
    """No diff for an unchanged stack: the scripts are deterministic."""
    assert build(TrustTarget(name="me"))[1].plain_inputs == build(TrustTarget(name="me"))[1].plain_inputs
