"""The whole stack on the real Docker engine, with exactly the specs the program declares.

The program runs under the engine-like mocks (real certificates, real htpasswd); the declared
network, volume and both containers are then created on the local engine (stand-in images for
the pinned ones), the program's own trust script is run for real, and real clients (docker,
skopeo, curl) log in, push, pull and run through the proxy.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import requests

from components.render.nginx import CERT_PATH
from tests.support.deploy import STANDIN_BUSYBOX, docker_cli, live_stack, upload_content
from tests.support.program import run_program

PASSWORD = "s3cret@with:colon-and-more"  # '@' and ':' are fine; the tutorial forbade '@'


def trust_commands(run) -> tuple[str, str]:
    cmd = run.monitor.one("command:local:Command").plain_inputs
    return cmd["create"], cmd["delete"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A deployed stack, shared by this module's tests (the replacement test runs last), trusted
    by this host's Docker and podman/skopeo through the program's own trust script;
    yields (deployment, address, ca_file, config); removes everything after."""
    tmp = tmp_path_factory.mktemp("stack")
    with live_stack(tmp, "it", {"alice": PASSWORD}, trust=[{"name": "local", "kinds": ["docker", "podman"]}]) as live:
        install, remove = trust_commands(live.run)
        try:
            subprocess.run(install, shell=True, check=True, capture_output=True, timeout=60)
            yield live.deployment, live.address, live.ca_file, live.config
        finally:
            subprocess.run(remove, shell=True, capture_output=True, timeout=60)
            docker_cli("logout", live.address, check=False)


def test_address_and_certificate_served(stack):
    """The proxy serves the certificate the program made: it verifies against the exported CA for
    the registry's name, and /healthz answers without credentials."""
    deployment, address, ca_file, _ = stack
    served = upload_content(deployment.container("proxy-container"), CERT_PATH)
    assert "BEGIN CERTIFICATE" in served
    response = requests.get(f"https://{address}/healthz", verify=str(ca_file), timeout=5)
    assert response.status_code == 200
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_auth_required_and_api_header_once(stack):
    """Token mode (the default): /v2/ is 401 with a Bearer challenge for the realm on the same
    name, without credentials or with a password sent to /v2/ itself; the realm refuses a wrong
    password and issues a token for the right one, with which /v2/ is 200. The
    Docker-Distribution-Api-Version header appears exactly once on each /v2/ answer."""
    _, address, ca_file, _ = stack
    url = f"https://{address}/v2/"
    realm = f"https://{address}/token"
    assert requests.get(realm, params={"service": address}, auth=("alice", "wrong-password-123456"),
                        verify=str(ca_file), timeout=5).status_code == 401
    token = requests.get(realm, params={"service": address}, auth=("alice", PASSWORD), verify=str(ca_file),
                         timeout=5).json()["token"]
    for headers, expected in (({}, 401), ({"Authorization": requests.auth._basic_auth_str("alice", PASSWORD)}, 401),
                              ({"Authorization": f"Bearer {token}"}, 200)):
        response = requests.get(url, headers=headers, verify=str(ca_file), timeout=5)
        assert response.status_code == expected, (headers.keys(), response.status_code)
        if expected == 401:
            assert response.headers["WWW-Authenticate"] == f'Bearer realm="{realm}",service="{address}"'
        raw = response.raw.headers.getlist("Docker-Distribution-Api-Version")
        assert raw == ["registry/2.0"], raw


def test_docker_login_push_pull_run_and_skopeo(stack, tmp_path):
    """The Docker client trusts the registry through the program's trust script, logs in with a
    password holding '@' and ':', pushes, pulls and runs an image; skopeo copies it too."""
    _, address, _, _ = stack
    login = docker_cli("login", address, "--username", "alice", "--password-stdin", input=PASSWORD, check=False)
    assert login.returncode == 0, login.stderr
    image = f"{address}/team/busybox:1.0"
    docker_cli("tag", STANDIN_BUSYBOX, image)
    push = docker_cli("push", image, check=False)
    assert push.returncode == 0, push.stderr
    docker_cli("rmi", image)
    pull = docker_cli("pull", image, check=False)
    assert pull.returncode == 0, pull.stderr
    run = docker_cli("run", "--rm", image, "/bin/busybox", "echo", "pulled-and-ran", check=False)
    assert "pulled-and-ran" in run.stdout, run.stderr
    copy = subprocess.run(
        ["skopeo", "copy", "--src-creds", f"alice:{PASSWORD}", f"docker://{image}", f"oci:{tmp_path}/oci:copy"],
        capture_output=True, text=True, timeout=120,
    )
    assert copy.returncode == 0, copy.stderr
    index = json.loads((tmp_path / "oci" / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "copy"
    docker_cli("rmi", image, check=False)


def test_image_survives_container_replacement(stack):
    """An image pushed before both containers are replaced (new user list => new htpasswd upload
    and proxy; registry re-created) still pulls, with the same digest, afterwards."""
    deployment, address, _, config = stack
    docker_cli("login", address, "--username", "alice", "--password-stdin", input=PASSWORD)
    image = f"{address}/keep/busybox:v1"
    docker_cli("tag", STANDIN_BUSYBOX, image)
    docker_cli("push", image)
    digest_before = docker_cli("inspect", "--format", "{{index .RepoDigests 0}}", image).stdout.strip()
    docker_cli("rmi", image)

    changed = dict(config, users={"alice": PASSWORD, "bob": "another-long-password-42"})
    new_run = run_program(changed, secret_keys=["users"])
    old_htpasswd = deployment.container("proxy-container").plain_inputs["uploads"]
    assert new_run.monitor.registered and old_htpasswd != next(
        r for r in new_run.monitor.by_type("docker:index/container:Container") if r.name.endswith("proxy-container")
    ).plain_inputs["uploads"]
    deployment.replace(new_run)

    docker_cli("login", address, "--username", "bob", "--password-stdin", input="another-long-password-42")
    pull = docker_cli("pull", image, check=False)
    assert pull.returncode == 0, pull.stderr
    digest_after = docker_cli("inspect", "--format", "{{index .RepoDigests 0}}", image).stdout.strip()
    assert digest_after == digest_before
    docker_cli("rmi", image, check=False)
