"""The token service's image, built from token_service/Dockerfile on the stand-in of its pinned
Python base, offline, with dependencies checked against requirements.lock's hashes; run as a
container serving docker-registry (distribution 2.8.2, ``auth.token``) for skopeo push and pull."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import requests

from tests.support import oci
from tests.support.deploy import docker_cli
from tests.support.token import ISSUER, SERVICE, free_port, token_files
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
BASE_STANDIN = "private-registry-standin/python:3.12-slim"
PREFIX = f"tokimg-{os.getpid()}"
USERS = {"pusher": "pusher-password-0001", "puller": "puller-password-0002"}
POLICY = {
    "version": 1, "groups": {}, "admins": [],
    "rules": [{"repositories": ["apps/**"], "push": ["pusher"]}, {"repositories": ["**"], "pull": ["puller"]}],
    "anonymous_pull": [], "catalog": [],
}


@pytest.fixture(scope="module")
def image():
    """The image built from token_service/ with BASE = the stand-in; removed afterwards."""
    wheels = ROOT / "token_service" / "wheels"
    assert wheels.is_dir() and any(wheels.glob("*.whl")), "run scripts/token-wheels.sh first (scripts/test.sh does)"
    tag = f"{PREFIX}/token-service:test"
    docker_cli("build", "-q", "--build-arg", f"BASE={BASE_STANDIN}", "-t", tag, str(ROOT / "token_service"))
    yield tag
    docker_cli("rmi", "-f", tag, check=False)


def _skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)


def test_dependencies_match_the_lock(image):
    """The image holds exactly the versions requirements.lock pins, and the service runs as nobody."""
    lock = (ROOT / "token_service" / "requirements.lock").read_text()
    def name(text: str) -> str:  # PEP 503: pip freeze writes prometheus_client for prometheus-client
        return re.sub(r"[-_.]+", "-", text).lower()

    pins = {name(m.group(1)): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.-]+)(?:\[[a-z]+\])?==(\S+)", lock, re.M)}
    frozen = docker_cli("run", "--rm", "--entrypoint", "python3", image, "-m", "pip", "freeze").stdout
    installed = {name(line.split("==")[0]): line.split("==")[1] for line in frozen.splitlines() if "==" in line}
    assert {name: installed.get(name) for name in pins} == pins
    user = docker_cli("image", "inspect", "-f", "{{.Config.User}}", image).stdout.strip()
    assert user == "65534:65534"


def test_docker_stop_ends_the_service_at_once(image):
    """As the container's PID 1 the service stops on SIGTERM (``docker stop``) within 3 s with
    exit code 0, not after the 10 s grace period and a SIGKILL: an old task of a rolling update
    stops issuing tokens as soon as Swarm stops it."""
    name = f"{PREFIX}-stop"
    docker_cli("run", "-d", "--name", name, "-e", f"TOKEN_ISSUER={ISSUER}", "-e", f"TOKEN_SERVICE={SERVICE}", image)
    try:
        wait_for(lambda: "Serving on" in docker_cli("logs", name, check=False).stderr, timeout=30,
                 what="the token service serving", log=lambda: docker_cli("logs", name, check=False).stderr)
        began = time.monotonic()
        docker_cli("stop", "-t", "10", name)
        stopped_in = time.monotonic() - began
        print(f"docker stop took {stopped_in:.2f}s")
        logs = docker_cli("logs", name, check=False).stderr
        assert docker_cli("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0", logs
        assert stopped_in < 3, logs
        assert "signal 15: stopping" in logs
    finally:
        docker_cli("rm", "-f", name, check=False)


def test_container_serves_the_registry(image, tmp_path):
    """The container (files bind-mounted read-only) issues tokens docker-registry accepts: skopeo
    pushes as the pusher and pulls as the puller; the puller cannot push; no password is logged."""
    files = token_files(tmp_path / "token", USERS, POLICY)
    for path in (files.key, files.cert, files.htpasswd, files.policy):
        path.chmod(0o644)
    files.root.chmod(0o755)
    token_port, registry_port = free_port(), free_port()
    name = f"{PREFIX}-service"
    docker_cli("run", "-d", "--name", name, "-p", f"127.0.0.1:{token_port}:5001",
               "-v", f"{files.root}:/run/token:ro", "-e", f"TOKEN_ISSUER={ISSUER}", "-e", f"TOKEN_SERVICE={SERVICE}",
               image)
    config = tmp_path / "config.yml"
    config.write_text(textwrap.dedent(f"""\
        version: 0.1
        log: {{level: warn}}
        storage: {{filesystem: {{rootdirectory: {tmp_path / "data"}}}}}
        http: {{addr: "127.0.0.1:{registry_port}"}}
        auth: {{token: {{realm: "http://127.0.0.1:{token_port}/token", service: "{SERVICE}",
                issuer: "{ISSUER}", rootcertbundle: "{files.cert}"}}}}
        """))
    log = (tmp_path / "registry.log").open("wb")
    registry = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
    try:
        def healthy() -> bool:
            if docker_cli("inspect", "-f", "{{.State.Health.Status}}", name, check=False).stdout.strip() == "healthy":
                return True
            running = docker_cli("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip()
            assert running == "true", docker_cli("logs", name, check=False).stderr
            return False

        wait_for(healthy, timeout=60, what="the token service healthy",
                 log=lambda: docker_cli("logs", name, check=False).stderr)
        assert requests.get(f"http://127.0.0.1:{token_port}/healthz", timeout=5).status_code == 200
        layout = tmp_path / "layout"
        oci.write_image(layout, "v1", [4096], seed="token-image")
        dest = f"docker://127.0.0.1:{registry_port}/apps/web:v1"
        pushed = _skopeo("copy", "--dest-tls-verify=false", "--dest-creds", f"pusher:{USERS['pusher']}", f"oci:{layout}:v1", dest)
        assert pushed.returncode == 0, pushed.stderr
        pulled = _skopeo("copy", "--src-tls-verify=false", "--src-creds", f"puller:{USERS['puller']}", dest, f"oci:{tmp_path / 'out'}:v1")
        assert pulled.returncode == 0, pulled.stderr
        refused = _skopeo("copy", "--dest-tls-verify=false", "--dest-creds", f"puller:{USERS['puller']}",
                          f"oci:{layout}:v1", f"docker://127.0.0.1:{registry_port}/apps/web:v2")
        assert refused.returncode != 0 and re.search(r"unauthorized|denied|authentication required", refused.stderr, re.I)
        logs = docker_cli("logs", name).stderr
        assert "200 for pusher" in logs and "200 for puller" in logs
        assert not any(password in logs for password in USERS.values())
    finally:
        registry.terminate()
        registry.wait(timeout=15)
        log.close()
        docker_cli("rm", "-f", name, check=False)
