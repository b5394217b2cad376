"""Real clients, end to end, through the stack's authentication and access rules.

One stack per auth mode is deployed for the module (the program's own containers on the real
engine, tests/support/deploy.py). Five clients installed from Debian's packages -- the Docker
client (through the shared dockerd), podman, buildah, skopeo and containerd's ``ctr`` (through
dockerd's containerd, with a hosts directory) -- and three built from their Go modules by
scripts/install-go-tools.sh -- crane, regctl and oras -- each build a tiny image of their own,
log in, push, pull it back with the same digest, and are refused what the stack's
:class:`Policy` says they may not do: push and delete with a wrong password or no login, pull
without credentials. The clients that delete (skopeo, crane, regctl, oras) delete by digest,
with the same identities. Then what users of a registry do beyond push and pull: copies between
repositories (crane, regctl), an artifact that is not an image (oras), a signature made and
verified with a key of the test's own (cosign), each refused to whoever may not push.

The expectations come from the policy, not from the test: when token authentication lands, a
token-mode case (a reader allowed to pull only, anonymous pulls of a public repository) runs the
same tests.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

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


# Outcomes checked against the policy in this run, by (client, action, "allowed" or "refused"):
# written to the JSON file $CLIENTS_TALLY names, if set (the figures in README.md come from it).
TALLY: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def _tally():
    yield
    path = os.environ.get("CLIENTS_TALLY")
    if path:
        rows = [{"client": c, "action": a, "expected": e, "cases": n} for (c, a, e), n in sorted(TALLY.items())]
        with open(path, "w") as out:
            json.dump(rows, out, indent=1)


def _expect(outcome, allowed: bool, what: str, *, refused_in_log=None) -> None:
    """Allowed: the client succeeded. Not allowed: it failed and its output says it was refused
    for who is asking; or, where the client hides the refusal behind a later attempt
    (``refused_in_log``), it failed and the proxy's log shows the refusal. ``what`` starts with
    the client's and the action's names (counted in :data:`TALLY` once the check passed)."""
    if allowed:
        assert outcome.ok, f"{what} should be allowed: {outcome}"
    elif not outcome.denied and refused_in_log is not None:
        assert not outcome.ok, f"{what} should be refused: {outcome}"
        assert refused_in_log(), f"{what}: failed, but not refused by the proxy: {outcome}"
    else:
        assert outcome.denied, f"{what} should be refused for who is asking: {outcome}"
    client, action = what.split(" ")[:2]
    TALLY[(client, action, "allowed" if allowed else "refused")] += 1


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
            # A login that checks nothing (ctr keeps none, crane only writes its config): the
            # refusals come at push and pull.
            if client.login_checks_credentials:
                _expect(login, policy.may(identity_name, "login"), f"{name} login as {identity_name}",
                        refused_in_log=_refusal_check(deployed, name, login, since, repository, identity_name))
            else:
                assert login.ok, f"{name}'s login checks nothing, yet failed as {identity_name}: {login}"
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


DELETERS = [name for name, cls in CLIENTS.items() if callable(getattr(cls, "delete", None))]


@pytest.mark.parametrize("name", DELETERS)
def test_denied_and_allowed_delete(deployed, name):
    """Deleting a manifest by digest (skopeo delete, crane delete, regctl manifest delete, oras
    manifest delete: the registry API's DELETE) is refused for every identity the policy does
    not allow to delete, and the manifest stays; the allowed identity then deletes it, and it is
    gone."""
    policy = deployed.case.policy
    client = deployed.client(name)
    skopeo: SkopeoClient = deployed.client("skopeo")
    writer = policy.writer()
    repository = _repository(policy, f"delete-{name}")
    ref = client.ref(repository, "v1")
    assert client.build(ref, f"delete-{name}-{uuid.uuid4().hex}").ok
    client.login(writer)
    assert client.push(ref).ok
    skopeo.login(writer)
    pushed = skopeo.inspect(ref)
    assert pushed.ok, str(pushed)
    by_digest = f"{deployed.live.address}/{repository}@{_manifest_digest(pushed.output)}"
    refused = 0
    for identity_name, identity in policy.identities.items():
        if policy.may(identity_name, "delete"):
            continue
        since = time.time()
        outcome = client.delete(by_digest, identity)
        _expect(outcome, False, f"{name} delete as {identity_name}", refused_in_log=_refusal_check(
            deployed, name, outcome, since, repository, identity_name))
        assert skopeo.inspect(ref).ok, f"the manifest went after a refused delete as {identity_name}"
        refused += 1
    assert refused >= 1
    _expect(client.delete(by_digest, writer), True, f"{name} delete as {writer.name}")
    gone = skopeo.inspect(ref)
    assert not gone.ok and "manifest unknown" in gone.output.lower(), str(gone)


DIGEST = re.compile(r"\bsha256:[0-9a-f]{64}\b")
# What a registry answers for a manifest (or a repository) that is not there.
ABSENT = re.compile(r"manifest unknown|name unknown|repository name not known", re.IGNORECASE)


def _digest_of(outcome) -> str:
    """The one digest a ``digest`` command printed (the last, should a warning name another)."""
    assert outcome.ok, str(outcome)
    found = DIGEST.findall(outcome.output)
    assert found, str(outcome)
    return found[-1]


def _absent(skopeo: SkopeoClient, ref: str) -> bool:
    """``ref`` is not in the registry: the writer's inspect finds no such manifest."""
    looked = skopeo.inspect(ref)
    return not looked.ok and ABSENT.search(looked.output) is not None


def _act_as(client, identity):
    """Log ``client`` out, then in as ``identity`` with its own login (anonymous: not at all)."""
    client.logout()
    return None if identity.anonymous else client.login(identity)


def _not_pushing(policy: Policy):
    return [(name, identity) for name, identity in policy.identities.items() if not policy.may(name, "push")]


def _refused_to_non_pushers(deployed, name: str, client, what: str, attempt, landed,
                            repository: Optional[str] = None) -> None:
    """Every identity the policy forbids to push, logged in with ``client``'s (``name``) own login, has
    ``attempt(repository)`` refused, for who it is (:func:`_refusal_check`), and
    ``landed(repository)`` is False afterwards; at least two such identities were tried.
    ``repository``: the one to use, else a new one per identity. ``client`` ends logged out."""
    policy = deployed.case.policy
    refused = 0
    for identity_name, identity in _not_pushing(policy):
        _act_as(client, identity)
        target = repository or _repository(policy, f"{name}-{what}-refused")
        since = time.time()
        outcome = attempt(target)
        _expect(outcome, False, f"{name} {what} as {identity_name}", refused_in_log=_refusal_check(
            deployed, name, outcome, since, target, identity_name))
        assert not landed(target), f"{name} {what} as {identity_name} landed"
        refused += 1
    client.logout()
    assert refused >= 2


@pytest.mark.parametrize("name", ["crane", "regctl"])
def test_copy_between_repositories(deployed, name):
    """``crane copy`` / ``regctl image copy``, registry to registry: the writer copies an image
    into another repository, and the copy has the source's digest there; every identity that
    may not push (the reader, who may pull the source; a wrong password; anonymous) has its copy
    into a new repository refused, for who it is, and nothing lands there."""
    policy = deployed.case.policy
    client = deployed.client(name)
    skopeo: SkopeoClient = deployed.client("skopeo")
    writer = policy.writer()
    skopeo.login(writer)
    source = client.ref(_repository(policy, f"{name}-copy-from"), "v1")
    assert client.build(source, f"{name}-copy-{uuid.uuid4().hex}").ok
    _act_as(client, writer)
    assert client.push(source).ok
    source_digest = _digest_of(client.digest(source))
    target = client.ref(_repository(policy, f"{name}-copy-to"), "v1")
    _expect(client.copy(source, target), True, f"{name} copy as {writer.name}")
    assert _digest_of(client.digest(target)) == source_digest
    there = skopeo.inspect(target)
    assert there.ok and _manifest_digest(there.output) == source_digest, str(there)
    _refused_to_non_pushers(deployed, name, client, "copy", lambda repository: client.copy(source, client.ref(repository, "v1")),
                            lambda repository: not _absent(skopeo, client.ref(repository, "v1")))


ARTIFACT_TYPE = "application/vnd.example.artifact"
ARTIFACT_MEDIA_TYPE = "application/vnd.example+type"


def test_oras_artifact_push_pull(deployed):
    """``oras push`` of a file as an artifact (``--artifact-type``, the file's own media type):
    the registry holds a manifest of that artifact type whose one layer has that media type and
    the file's digest; every identity the policy lets pull gets the same bytes back with ``oras
    pull`` (the token stack: the reader and anonymous too), others are refused; every identity
    that may not push has its own ``oras push`` refused, for who it is, and nothing lands."""
    import hashlib
    import os

    policy = deployed.case.policy
    oras = deployed.client("oras")
    skopeo: SkopeoClient = deployed.client("skopeo")
    writer = policy.writer()
    skopeo.login(writer)
    folder = oras.home / f"artifact-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    payload = folder / "payload.bin"
    data = os.urandom(4096) + b"oras-artifact\n"
    payload.write_bytes(data)
    repository = _repository(policy, "oras-artifact")
    ref = oras.ref(repository, "v1")
    _act_as(oras, writer)
    _expect(oras.push_artifact(ref, [(payload, ARTIFACT_MEDIA_TYPE)], ARTIFACT_TYPE), True,
            f"oras push-artifact as {writer.name}")
    stored = skopeo.inspect(ref)
    assert stored.ok, str(stored)
    manifest = json.loads(stored.output)
    assert manifest.get("artifactType") == ARTIFACT_TYPE, manifest
    assert [(layer["mediaType"], layer["digest"]) for layer in manifest["layers"]] == [
        (ARTIFACT_MEDIA_TYPE, "sha256:" + hashlib.sha256(data).hexdigest())], manifest
    pulled = 0
    for identity_name, identity in policy.identities.items():
        login = _act_as(oras, identity)
        acting_as = identity_name if login is None or login.ok else "anonymous"
        out = oras.home / f"pulled-artifact-{uuid.uuid4().hex[:6]}"
        out.mkdir()
        since = time.time()
        outcome = oras.pull_artifact(ref, out)
        _expect(outcome, policy.may(acting_as, "pull"), f"oras pull-artifact as {identity_name} ({acting_as})",
                refused_in_log=_refusal_check(deployed, "oras", outcome, since, repository, identity_name))
        if outcome.ok:
            assert (out / "payload.bin").read_bytes() == data
            pulled += 1
    assert pulled >= 1
    _refused_to_non_pushers(
        deployed, "oras", oras, "push-artifact",
        lambda repository: oras.push_artifact(oras.ref(repository, "v1"), [(payload, ARTIFACT_MEDIA_TYPE)], ARTIFACT_TYPE),
        lambda repository: not _absent(skopeo, oras.ref(repository, "v1")))


COSIGN_KEY_PASSWORD = "Cosign-key@pass:7d1e"
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
NO_SIGNATURE = re.compile(r"no signatures found|no matching signatures", re.IGNORECASE)


def _sigstore_referrers(regctl, ref: str) -> bool:
    """Whether ``ref`` (by digest) has a sigstore bundle among its OCI referrers, as regctl
    (logged in as the writer) lists them."""
    listed = regctl._go("artifact", "list", ref, "--format", "{{jsonPretty .Descriptors}}",
                        label="regctl artifact list")
    assert listed.ok, str(listed)
    return SIGSTORE_BUNDLE in listed.output


def test_cosign_sign_and_verify(deployed):
    """``cosign sign`` with a key pair made here (no transparency log, no Sigstore service):
    the writer's signature of an image by digest lands in the registry as an OCI referrer of that
    image (a sigstore bundle, which regctl lists and which sits under the referrers tag
    ``sha256-<hex>`` crane lists: neither 2.8 nor 3.1.2 serves the referrers API); ``cosign verify`` with the
    public key passes for it and fails, finding no signature, for an unsigned image that has no
    referrer. Every identity that may not push has its signature of the unsigned image refused,
    for who it is, and the image stays unsigned."""
    from tests.support.clients import Cosign

    policy = deployed.case.policy
    writer = policy.writer()
    crane = deployed.client("crane")
    regctl = deployed.client("regctl")
    if "cosign" not in deployed.clients:
        deployed.clients["cosign"] = Cosign(deployed.tmp, deployed.live.address, deployed.live.cert_dir)
    cosign = deployed.clients["cosign"]
    repository = _repository(policy, "cosign")
    _act_as(crane, writer)
    _act_as(regctl, writer)
    digests = {}
    for tag in ("signed", "unsigned"):
        ref = crane.ref(repository, tag)
        assert crane.build(ref, f"cosign-{tag}-{uuid.uuid4().hex}").ok
        assert crane.push(ref).ok
        digests[tag] = _digest_of(crane.digest(ref))
    signed = f"{deployed.live.address}/{repository}@{digests['signed']}"
    unsigned = f"{deployed.live.address}/{repository}@{digests['unsigned']}"
    key, public_key = cosign.generate_key_pair(cosign.home / f"keys-{uuid.uuid4().hex[:6]}", COSIGN_KEY_PASSWORD)

    cosign.logout()
    _expect(cosign.login(writer), True, "cosign login as writer")
    _expect(cosign.sign(signed, key, COSIGN_KEY_PASSWORD), True, "cosign sign as writer")
    verified = cosign.verify(signed, public_key)
    assert verified.ok and digests["signed"] in verified.output, str(verified)
    not_signed = cosign.verify(unsigned, public_key)
    assert not not_signed.ok and NO_SIGNATURE.search(not_signed.output), str(not_signed)

    assert _sigstore_referrers(regctl, signed), "regctl lists no sigstore bundle referring to the signed image"
    assert not _sigstore_referrers(regctl, unsigned)
    tags = crane._go("ls", f"{deployed.live.address}/{repository}", label="crane ls")
    assert tags.ok, str(tags)
    listed = set(tags.output.split())
    assert "sha256-" + digests["signed"].split(":", 1)[1] in listed, str(tags)
    assert "sha256-" + digests["unsigned"].split(":", 1)[1] not in listed, str(tags)

    _refused_to_non_pushers(deployed, "cosign", cosign, "sign", lambda _: cosign.sign(unsigned, key, COSIGN_KEY_PASSWORD),
                            lambda _: _sigstore_referrers(regctl, unsigned), repository=repository)
    cosign.login(writer)
    still = cosign.verify(unsigned, public_key)
    assert not still.ok and NO_SIGNATURE.search(still.output), str(still)
    cosign.logout()
    crane.logout()
    regctl.logout()
