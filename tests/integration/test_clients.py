"""Real clients, end to end, through the stack's authentication and access rules.

One stack per auth mode is deployed for the module (the program's own containers on the real
engine, tests/support/deploy.py). Five clients installed from Debian's packages -- the Docker
client (through the shared dockerd), podman, buildah, skopeo and containerd's ``ctr`` (through
dockerd's containerd, with a hosts directory) -- each build a tiny image of their own, log in,
push, pull it back with the same digest, and are refused what the stack's :class:`Policy` says
they may not do: push and delete with a wrong password or no login, pull without credentials.
Deletion is a registry API call no client but skopeo offers, so skopeo deletes, with the same
identities.

The expectations come from the policy, not from the test: when token authentication lands, a
token-mode case (a reader allowed to pull only, anonymous pulls of a public repository) runs the
same tests.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field

import pytest

from components.swarm_gc import docker_timestamp
from tests.support.clients import CLIENTS, Client, Policy, SkopeoClient, basic_policy, docker_trust, token_policy
from tests.support.deploy import LiveStack, live_stack

USER = "alice"
PASSWORD = "Cl1ents-pass@word:9f3e7a1c"
WRONG_PASSWORD = "Cl1ents-WRONG@word:9f3e7a1c"
READER = "reader"
READER_PASSWORD = "Cl1ents-reader@word:4b8d2e6f"


@dataclass
class Case:
    """A stack to deploy (auth mode settings and users) and what its policy allows."""

    name: str
    users: dict
    settings: dict
    policy: Policy


# One case per auth mode the program deploys. Token mode adds its settings, a second user and
# ``token_policy(...)`` (a reader allowed to pull only, anonymous pulls under a public prefix).
# Every loopback client reaches nginx through docker-proxy, from one address: the token case
# raises that address's failed-password budget so the wrong-password identity's refusals do
# not spend the next client's first login (the budget itself: test_token_throttle.py), and its
# password-login rate (5/s, burst 20 by default), which five clients logging in afresh on every
# command overran once (429 "too many requests to registry"; the limit: test_token_stack.py).
CASES = [
    Case("basic", {USER: PASSWORD}, {"auth": {"mode": "basic"}}, basic_policy(USER, PASSWORD, WRONG_PASSWORD)),
    Case("token", {USER: PASSWORD, READER: READER_PASSWORD},
         {"auth": {"mode": "token",
                   "rules": [{"repositories": ["public/**"], "pull": [READER], "push": [USER], "delete": [USER]}],
                   "anonymousPull": ["public/**"], "failedLoginBurst": 200,
                   "rateLimitPerSecond": 100, "rateLimitBurst": 1000}},
         token_policy((USER, PASSWORD), (READER, READER_PASSWORD), WRONG_PASSWORD, True, "public")),
]


@dataclass
class Deployed:
    case: Case
    live: LiveStack
    tmp: object
    clients: dict = field(default_factory=dict)

    def proxy_refused(self, since: float, repository: str) -> bool:
        """Whether the proxy refused (401/403) the API root or ``repository`` since ``since``
        (epoch seconds) and served nothing of ``repository`` (no 2xx) in that time."""
        proxy = self.live.deployment.container("proxy-container").plain_inputs["name"]
        logs = self.live.deployment.client.api.logs(proxy, stdout=True, stderr=False, since=since)
        refused = served = False
        for line in logs.decode(errors="replace").splitlines():
            entry = _access_log_entry(line)
            if entry is None:
                continue
            path, status = entry
            ours = path.startswith(f"/v2/{repository}/")
            refused |= status in (401, 403) and (ours or path == "/v2/")
            served |= ours and 200 <= status < 300
        return refused and not served

    def token_throttled(self, since: float, repository: str) -> bool:
        """Whether the token endpoint answered 429 (the failed-login throttle of the client's
        address) since ``since`` and the proxy served nothing of ``repository`` in that time."""
        proxy = self.live.deployment.container("proxy-container").plain_inputs["name"]
        logs = self.live.deployment.client.api.logs(proxy, stdout=True, stderr=False, since=int(since),
                                                     timestamps=True)
        throttled = served = False
        for stamped in logs.decode(errors="replace").splitlines():
            stamp, _, line = stamped.partition(" ")
            if docker_timestamp(stamp) < since:  # Docker's ``since`` is whole seconds: earlier actions' lines
                continue
            entry = _access_log_entry(line)
            if entry is not None:
                path, status = entry
                throttled |= path.split("?")[0] == "/token" and status == 429
                served |= path.startswith(f"/v2/{repository}/") and 200 <= status < 300
        return throttled and not served

    def client(self, name: str) -> Client:
        if name not in self.clients:
            self.clients[name] = CLIENTS[name](self.tmp, self.live.address, self.live.cert_dir)
        return self.clients[name]


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case.name)
def deployed(request, tmp_path_factory):
    """The stack of one case, trusted by the shared dockerd for its own address only; every
    client's state (images, logins, containerd namespace) is removed afterwards."""
    case: Case = request.param
    tmp = tmp_path_factory.mktemp(f"clients-{case.name}")
    with live_stack(tmp, f"clients-{case.name}", case.users, **case.settings) as live:
        with docker_trust(live.address, live.ca_file):
            stack = Deployed(case, live, tmp)
            try:
                yield stack
            finally:
                for client in stack.clients.values():
                    client.cleanup()


COMBINED = re.compile(r'"[A-Z]+ (/\S*) HTTP/[\d.]+" (\d{3}) ')


def _access_log_entry(line: str):
    """(path, status) of one line of the proxy's access log: the program's JSON format, or
    nginx's combined format; None for anything else."""
    if line.startswith("{"):
        try:
            entry = json.loads(line)
            return entry["request"].split(" ")[1], int(entry["status"])
        except (ValueError, KeyError, IndexError):
            return None
    match = COMBINED.search(line)
    return (match.group(1), int(match.group(2))) if match else None


def _repository(policy: Policy, client: str) -> str:
    return f"{policy.repository_prefix}/{client}-{uuid.uuid4().hex[:6]}"


def _expect(outcome, allowed: bool, what: str, *, refused_in_log=None) -> None:
    """Allowed: the client succeeded. Not allowed: it failed and its output says it was refused
    for who is asking; or, where the client hides the refusal behind a later attempt
    (``refused_in_log``), it failed and the proxy's log shows the refusal."""
    if allowed:
        assert outcome.ok, f"{what} should be allowed: {outcome}"
    elif not outcome.denied and refused_in_log is not None:
        assert not outcome.ok, f"{what} should be refused: {outcome}"
        assert refused_in_log(), f"{what}: failed, but not refused by the proxy: {outcome}"
    else:
        assert outcome.denied, f"{what} should be refused for who is asking: {outcome}"


# dockerd counts 127.0.0.0/8 as an insecure registry: after HTTPS is refused it retries over
# plain HTTP and reports only that attempt's error (nginx: 400, plain HTTP to the HTTPS port).
DOCKER_HTTP_FALLBACK = "plain HTTP request was sent to HTTPS port"
# How the clients report a 429 (ctr, docker: the status; skopeo, podman, buildah: "too many requests").
THROTTLED = re.compile(r"\b429\b|too many requests", re.IGNORECASE)


def _refusal_check(deployed, name: str, outcome, since: float, repository: str, identity_name: str):
    if name == "docker" and DOCKER_HTTP_FALLBACK in outcome.output:
        return lambda: deployed.proxy_refused(since, repository)
    # Token mode: after a few wrong passwords from this address the token service (and nginx)
    # refuse its password checks with 429 for a while; clients report only that status.
    if identity_name == "wrong-password" and THROTTLED.search(outcome.output):
        return lambda: deployed.token_throttled(since, repository)
    return None


@pytest.mark.parametrize("name", list(CLIENTS))
def test_login_push_pull(deployed, name):
    """The allowed identity logs in with the client's own login (password on stdin), pushes an
    image the client built, and pulls it back afresh with the digest it pushed."""
    policy = deployed.case.policy
    client = deployed.client(name)
    writer = policy.writer()
    ref = client.ref(_repository(policy, name), "v1")
    built = client.build(ref, f"{name}-{uuid.uuid4().hex}")
    assert built.ok, str(built)
    _expect(client.login(writer), True, f"{name} login as {writer.name}")
    _expect(client.push(ref), True, f"{name} push as {writer.name}")
    skopeo = deployed.client("skopeo")
    skopeo.login(writer)
    pushed = skopeo.inspect(ref)
    assert pushed.ok, str(pushed)
    _expect(client.pull(ref), True, f"{name} pull as {writer.name}")
    digest = client.content_digest(ref)
    registry_digest = _manifest_digest(pushed.output)
    assert digest == registry_digest, (name, digest, registry_digest)


def _manifest_digest(raw_manifest: str) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(raw_manifest.encode()).hexdigest()


@pytest.mark.parametrize("name", list(CLIENTS))
def test_denied_identities(deployed, name):
    """Every identity the policy does not allow is refused, for who it is (the client's output
    names an authentication or authorization failure): its login, its push of a new image, its
    pull of an image that is there; anonymous clients push and pull without logging in."""
    policy = deployed.case.policy
    client = deployed.client(name)
    writer = policy.writer()
    repository = _repository(policy, name)
    present = client.ref(repository, "present")
    assert client.build(present, f"{name}-present-{uuid.uuid4().hex}").ok
    client.login(writer)
    assert client.push(present).ok
    checked = 0
    for identity_name, identity in policy.identities.items():
        if identity is writer:
            continue
        client.logout()
        acting_as = identity_name
        if not identity.anonymous:
            since = time.time()
            login = client.login(identity)
            # ctr keeps no login: its refusals come at push and pull.
            if name != "ctr":
                _expect(login, policy.may(identity_name, "login"), f"{name} login as {identity_name}",
                        refused_in_log=_refusal_check(deployed, name, login, since, repository, identity_name))
            if not login.ok and not client.sends_given_credentials:
                # The refused login stored nothing: what follows runs without credentials,
                # with exactly an anonymous client's rights.
                client.logout()
                acting_as = "anonymous"
        target = client.ref(repository, f"by-{identity_name}")
        assert client.build(target, f"{name}-{identity_name}-{uuid.uuid4().hex}").ok
        for action, ref in (("push", target), ("pull", present)):
            since = time.time()
            outcome = getattr(client, action)(ref)
            _expect(outcome, policy.may(acting_as, action), f"{name} {action} as {identity_name} ({acting_as})",
                    refused_in_log=_refusal_check(deployed, name, outcome, since, repository, identity_name))
        checked += 1
    client.logout()
    assert checked >= 2


def test_denied_and_allowed_delete(deployed):
    """Deleting a manifest (skopeo delete, the registry API's DELETE) is refused for every
    identity the policy does not allow to delete, and the manifest stays; the allowed identity
    then deletes it, and it is gone."""
    policy = deployed.case.policy
    skopeo: SkopeoClient = deployed.client("skopeo")
    writer = policy.writer()
    repository = _repository(policy, "delete")
    ref = skopeo.ref(repository, "v1")
    assert skopeo.build(ref, f"delete-{uuid.uuid4().hex}").ok
    skopeo.login(writer)
    assert skopeo.push(ref).ok
    refused = 0
    for identity_name, identity in policy.identities.items():
        if policy.may(identity_name, "delete"):
            continue
        since = time.time()
        outcome = skopeo.delete(ref, identity)
        _expect(outcome, False, f"delete as {identity_name}", refused_in_log=_refusal_check(
            deployed, "skopeo", outcome, since, repository, identity_name))
        assert skopeo.inspect(ref).ok, f"the manifest went after a refused delete as {identity_name}"
        refused += 1
    assert refused >= 1
    _expect(skopeo.delete(ref, writer), True, f"delete as {writer.name}")
    gone = skopeo.inspect(ref)
    assert not gone.ok and "manifest unknown" in gone.output.lower(), str(gone)
