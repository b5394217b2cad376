"""Token mode as the program deploys it (the default): nginx (TLS) in front of the registry
(``auth.token``) and the token service built from token_service/, with least-privilege rules
like stacks/Pulumi.prod.example.yaml's. Real pushes and pulls with skopeo through the realm on
the registry's own TLS name; a logged-in docker client pulling the anonymousPull globs;
maintenance's client with scoped tokens; the token endpoint's
per-address rate limit and the service's throttle of failed logins; read-only GC's stand-by trusting the same token certificate; and what
a password check (login) costs at the default bcrypt cost against a refresh-token grant."""

from __future__ import annotations

import statistics
from concurrent.futures import ThreadPoolExecutor
import subprocess
import time

import pytest
import requests

from components import docker_exec
from components.registry_api import RegistryAuthError, RegistryClient
from tests.support import oci
from tests.support.clients import DockerClient, Identity, SkopeoClient, docker_trust
from tests.support.deploy import live_stack

USERS = {"admin": "admin-password-0123456789", "ci": "ci-password-0123456789ab", "node": "node-password-0123456789"}
AUTH = {
    "admins": ["admin"],
    "rules": [{"repositories": ["ci/**"], "push": ["ci"]}, {"repositories": ["**"], "pull": ["node"]}],
    "anonymousPull": ["public/**"],
    "rateLimitPerSecond": 2,
    "rateLimitBurst": 5,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("token-stack")
    with live_stack(tmp, "tokstack", USERS, auth=AUTH) as live:
        layout = tmp / "layout"
        oci.write_image(layout, "v1", [64 * 1024, 16 * 1024], seed="token-stack")
        yield live, layout


def skopeo(live, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=180)


def test_login_cost_at_the_default_bcrypt_cost(stack):
    """What docker login's token request costs at the default bcrypt cost (11): the first
    password grant of a user runs bcrypt; a repeated one (credential cache) and a refresh-token
    grant (every later docker pull) do not. Runs first in this module, so admin's first check
    is the uncached one. Times through nginx, printed side by side."""
    live, _ = stack
    realm = f"https://{live.address}/token"
    base = {"service": live.address, "client_id": "docker", "access_type": "offline"}

    def post(data):
        started = time.perf_counter()
        reply = requests.post(realm, data={**base, **data}, verify=str(live.ca_file), timeout=30)
        assert reply.status_code == 200, reply.text
        return time.perf_counter() - started, reply.json()

    password = {"grant_type": "password", "username": "admin", "password": USERS["admin"]}
    first, body = post(password)
    repeated, refreshes = [], []
    for _ in range(4):
        time.sleep(0.6)  # stay under the rate limit
        repeated.append(post(password)[0])
        time.sleep(0.6)
        refreshes.append(post({"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
                               "scope": "repository:ci/app:pull"})[0])
    print(f"\ndocker login token request, bcrypt cost 11: first password check {first * 1000:.0f} ms; "
          f"repeated (cached) median {statistics.median(repeated) * 1000:.0f} ms; "
          f"refresh-token grant median {statistics.median(refreshes) * 1000:.0f} ms")
    assert first > statistics.median(refreshes)


def test_least_privilege_through_the_realm(stack, tmp_path):
    """ci pushes to ci/**, node pulls it; node cannot push, ci cannot push outside ci/**; all
    through nginx's TLS and the realm https://<address>/token."""
    live, layout = stack
    certs = f"--dest-cert-dir={live.cert_dir}"
    dest = f"docker://{live.address}/ci/app:v1"
    pushed = skopeo(live, "copy", certs, "--dest-creds", f"ci:{USERS['ci']}", f"oci:{layout}:v1", dest)
    assert pushed.returncode == 0, pushed.stderr
    pulled = skopeo(live, "copy", f"--src-cert-dir={live.cert_dir}", "--src-creds", f"node:{USERS['node']}",
                    dest, f"oci:{tmp_path / 'out'}:v1")
    assert pulled.returncode == 0, pulled.stderr
    for user, target in (("node", "ci/app:v2"), ("ci", "prod/app:v1")):
        refused = skopeo(live, "copy", certs, "--dest-creds", f"{user}:{USERS[user]}", f"oci:{layout}:v1",
                         f"docker://{live.address}/{target}")
        assert refused.returncode != 0 and ("unauthorized" in refused.stderr.lower() or "denied" in refused.stderr.lower()), refused.stderr


def test_logged_in_clients_pull_what_anyone_may(stack, tmp_path):
    """anonymousPull is for anyone: ci, logged in with `docker login` and holding no rule for
    public/**, pulls public/base with docker (which then sends its credentials on every pull)
    and with skopeo given its credentials, the same image an anonymous docker client pulls;
    its push there is still refused. Before, every logged-in client was refused the pull."""
    live, _ = stack
    # The stack's token endpoint allows 2 password-bearing requests a second, burst 5, per
    # address: the tests before this one spent the burst, and a docker push asks several times.
    time.sleep(3)
    with docker_trust(live.address, live.ca_file):
        admin = DockerClient(tmp_path / "admin", live.address, live.cert_dir)
        ci = DockerClient(tmp_path / "ci", live.address, live.cert_dir)
        anonymous = DockerClient(tmp_path / "anonymous", live.address, live.cert_dir)
        try:
            ref = admin.ref("public/base", "v1")
            assert admin.build(ref, f"public-{time.time_ns()}").ok
            assert admin.login(Identity("admin", "admin", USERS["admin"])).ok
            time.sleep(2)
            pushed = admin.push(ref)
            assert pushed.ok, str(pushed)
            digest = admin.content_digest(ref)
            time.sleep(3)  # stay under the token endpoint's rate limit (2/s, burst 5)
            login = ci.login(Identity("ci", "ci", USERS["ci"]))
            assert login.ok, str(login)
            pulled = ci.pull(ref)
            assert pulled.ok, str(pulled)
            assert digest is not None and ci.content_digest(ref) == digest
            time.sleep(2)
            assert ci.build(ref.replace(":v1", ":v2"), f"ci-{time.time_ns()}").ok
            refused = ci.push(ref.replace(":v1", ":v2"))
            assert refused.denied, str(refused)
            time.sleep(2)
            control = anonymous.pull(ref)
            assert control.ok and anonymous.content_digest(ref) == digest, str(control)
        finally:
            for client in (admin, ci, anonymous):
                client.cleanup()
    time.sleep(2)
    skopeo_ci = SkopeoClient(tmp_path / "skopeo", live.address, live.cert_dir)
    try:
        assert skopeo_ci.login(Identity("ci", "ci", USERS["ci"])).ok
        pulled = skopeo_ci.pull(ref)
        assert pulled.ok, str(pulled)
        assert skopeo_ci.content_digest(ref) == digest
    finally:
        skopeo_ci.cleanup()
    time.sleep(3)  # let the rate limit's bucket refill for the next tests


def test_maintenance_client_through_nginx(stack):
    """RegistryClient (the maintenance providers' client) follows the challenge to the same-origin
    realm: the admin lists and resolves, node may read but not delete."""
    live, _ = stack
    url = f"https://{live.address}"
    with RegistryClient(url, username="admin", password=USERS["admin"], ca_pem=live.ca_file.read_text()) as admin:
        assert "ci/app" in admin.catalog()
        digest = admin.resolve("ci/app", "v1")
    with RegistryClient(url, username="node", password=USERS["node"], ca_pem=live.ca_file.read_text()) as node:
        assert node.resolve("ci/app", "v1") == digest
        with pytest.raises(RegistryAuthError):
            node.delete("ci/app", digest)


def test_token_endpoint_is_rate_limited_per_address(stack):
    """Wrong passwords sent faster than the per-address rate are answered 429 once the burst is
    spent, without reaching bcrypt; /healthz and the registry stay available, and an anonymous
    token request from the same address right after is answered (the limit counts only
    requests that may carry a password)."""
    live, _ = stack
    realm = f"https://{live.address}/token"
    def guess(i: int) -> int:
        return requests.get(realm, params={"service": live.address}, auth=("ci", f"guess-{i:04d}-wrong-password"),
                            verify=str(live.ca_file), timeout=30).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(guess, range(30)))
    limited = statuses.count(429)
    print(f"\ntoken endpoint, 30 wrong-password requests 10 at a time (rate 2/s, burst 5): "
          f"{statuses.count(401)} reached the password check (401), {limited} refused by the rate limit (429)")
    assert set(statuses) <= {401, 429} and limited >= 10
    assert requests.get(f"https://{live.address}/healthz", verify=str(live.ca_file), timeout=5).status_code == 200
    spent = requests.get(realm, params={"service": live.address}, auth=("ci", "one-more-wrong-password"),
                         verify=str(live.ca_file), timeout=30)
    anonymous = requests.get(realm, params={"service": live.address, "scope": "repository:ci/app:pull"},
                             verify=str(live.ca_file), timeout=30)
    assert spent.status_code == 429 and anonymous.status_code == 200 and "token" in anonymous.json()
    time.sleep(3)  # let the bucket refill for the next tests


def test_failed_logins_are_throttled_by_nginxs_address(stack):
    """The token service spends one failure budget per address nginx saw, whatever forwarding
    headers the client sends: wrong passwords paced under nginx's limit, each with a new
    X-Forwarded-For and X-Real-IP, reach the service's own 429 (JSON, Retry-After, no bcrypt)
    once the budget (burst 5, 1/s) is spent; a refresh-token grant and a known-good login from
    the same address are still answered 200."""
    live, _ = stack
    realm = f"https://{live.address}/token"
    verify = str(live.ca_file)
    login = {"grant_type": "password", "service": live.address, "client_id": "t", "username": "admin",
             "password": USERS["admin"], "access_type": "offline"}
    refresh = requests.post(realm, data=login, verify=verify, timeout=30).json()["refresh_token"]  # cached pair

    def guess(i: int) -> requests.Response:
        spoof = f"192.0.2.{i % 250 + 1}"
        return requests.get(realm, params={"service": live.address}, auth=("ci", f"guess-{i:04d}-wrong"),
                            headers={"X-Forwarded-For": spoof, "X-Real-IP": spoof}, verify=verify, timeout=30)

    throttled, statuses = None, []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for second in range(15):
            started = time.monotonic()
            for reply in pool.map(guess, (2 * second, 2 * second + 1)):
                statuses.append(reply.status_code)
                if reply.status_code == 429 and reply.headers.get("Content-Type") == "application/json":
                    throttled = reply
            if throttled is not None:
                break
            time.sleep(max(0.0, 1.05 - (time.monotonic() - started)))  # 2 a second: under nginx's 2/s
    print(f"\nthrottle through nginx, wrong passwords 2/s with rotating forwarding headers: {statuses}")
    assert throttled is not None, statuses
    assert throttled.json()["errors"][0]["code"] == "TOOMANYREQUESTS" and throttled.headers["Retry-After"].isdigit()
    assert set(statuses) <= {401, 429}
    again = requests.post(realm, data={"grant_type": "refresh_token", "service": live.address, "client_id": "t",
                                       "refresh_token": refresh}, verify=verify, timeout=30)
    assert again.status_code == 200
    assert requests.post(realm, data=login, verify=verify, timeout=30).status_code == 200
    time.sleep(5)  # let both budgets refill for the next tests


def test_gc_standby_trusts_the_token_certificate(stack):
    """Read-only GC in token mode: the stand-by (started with the registry's config) finds the
    token certificate, so pulls with tokens keep working through the collection."""
    live, _ = stack
    name = live.deployment.container("registry-container").plain_inputs["name"]
    failures = []

    def probe():
        with RegistryClient(f"https://{live.address}", username="node", password=USERS["node"],
                            ca_pem=live.ca_file.read_text()) as node:
            node.resolve("ci/app", "v1")

    def pull_during_readonly(self, *, dry_run, delete_untagged=False, **kwargs):
        if not dry_run:
            try:
                probe()
            except Exception as exc:  # noqa: BLE001 - recorded and asserted below
                failures.append(repr(exc))
        return original(self, dry_run=dry_run, delete_untagged=delete_untagged, **kwargs)

    original = docker_exec.RegistryContainer.run_gc
    docker_exec.RegistryContainer.run_gc = pull_during_readonly
    try:
        with docker_exec.RegistryContainer("unix:///var/run/docker.sock", name) as registry:
            report = docker_exec.garbage_collect(registry, mode="readonly", probe=probe)
    finally:
        docker_exec.RegistryContainer.run_gc = original
    assert failures == [] and report is not None
    probe()
