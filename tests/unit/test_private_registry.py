"""The whole graph under engine-like mocks: types, names, parents, provider, dependencies,
lifecycle options, secrecy (including what the state would hold), preview, and no churn."""

from __future__ import annotations

import base64
import functools
import json
import types

import pulumi
import pytest

from components.pki import rotation_generation
from components.render.nginx import CERT_PATH, HTPASSWD_PATH, KEY_PATH
from components.settings import CertificateSettings
from tests.support.engine import contains_secret, is_secret, reveal
from tests.support.program import run_program

ALICE = "p@ss:word-alice-0123"
BOB = "b0b:secret@pass-4567"
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nc3NoLWtleS1tYXRlcmlhbC1mb3ItdGVzdHM=\n-----END OPENSSH PRIVATE KEY-----\n"
USERS = {"alice": ALICE, "ci@example.com": BOB}
CONFIG = {
    "users": USERS,
    "hosts": ["localhost", "registry.example.com"],
    "httpsPort": 5443,
    "trust": [{"name": "laptop", "kinds": ["docker"]},
              {"name": "builder", "host": "10.1.2.3", "user": "ops", "privateKey": SSH_KEY}],
}
# Basic mode: nginx checks passwords. Token mode (the default): tests/unit/test_token_auth.py.
BASIC = {"auth": {"mode": "basic"}}
SECRET_KEYS = ["users", "trust"]

COMPONENT = "registry:index:PrivateRegistry"
CONTAINER = "docker:index/container:Container"
PROXY_CONTAINER = "registry-proxy-container"


def run(config=CONFIG, **kwargs):
    return run_program({**BASIC, **config}, secret_keys=kwargs.pop("secret_keys", SECRET_KEYS), **kwargs)


def named(monitor, name):
    (found,) = [r for r in monitor.registered if r.name == name]
    return found


# --- graph --------------------------------------------------------------------------------------


def test_every_resource_with_its_type_name_and_parent():
    """The exact set of resources, component tokens `registry:<module>:<Type>`, child names
    prefixed by their parent's name, every component a child of PrivateRegistry."""
    m = run().monitor
    parent_names = {r.urn: r.name for r in m.registered}
    graph = {(r.type, r.name, parent_names.get(r.parent, "<stack>")) for r in m.registered}
    salt = "random:index/randomBytes:RandomBytes"
    assert graph == {
        (COMPONENT, "registry", "<stack>"),
        ("pulumi:providers:docker", "registry-docker", "registry"),
        ("registry:pki:CertificateAuthority", "registry-ca", "registry"),
        ("tls:index/privateKey:PrivateKey", "registry-ca-key", "registry-ca"),
        ("tls:index/selfSignedCert:SelfSignedCert", "registry-ca-cert", "registry-ca"),
        ("registry:pki:ServerCertificate", "registry-server", "registry"),
        ("tls:index/privateKey:PrivateKey", "registry-server-key", "registry-server"),
        ("tls:index/certRequest:CertRequest", "registry-server-csr", "registry-server"),
        ("tls:index/locallySignedCert:LocallySignedCert", "registry-server-cert", "registry-server"),
        ("registry:users:Htpasswd", "registry-users", "registry"),
        *{(salt, n, "registry-users") for n in (r.name for r in m.by_type(salt))},
        ("registry:registry:Registry", "registry-registry", "registry"),
        ("docker:index/network:Network", "registry-registry-network", "registry-registry"),
        ("docker:index/volume:Volume", "registry-registry-data", "registry-registry"),
        ("docker:index/volume:Volume", "registry-registry-socket", "registry-registry"),
        ("docker:index/remoteImage:RemoteImage", "registry-registry-image", "registry-registry"),
        ("random:index/randomPassword:RandomPassword", "registry-registry-http-secret", "registry-registry"),
        (CONTAINER, "registry-registry-container", "registry-registry"),
        ("registry:proxy:Proxy", "registry-proxy", "registry"),
        ("docker:index/remoteImage:RemoteImage", "registry-proxy-image", "registry-proxy"),
        (CONTAINER, PROXY_CONTAINER, "registry-proxy"),
        ("registry:client_trust:ClientTrust", "registry-trust-laptop", "registry"),
        ("command:local:Command", "registry-trust-laptop-install", "registry-trust-laptop"),
        ("registry:client_trust:ClientTrust", "registry-trust-builder", "registry"),
        ("command:remote:Command", "registry-trust-builder-install", "registry-trust-builder"),
    }
    assert len(m.by_type(salt)) == 2
    assert "::pulumi:pulumi:Stack::private-registry-" in m.one(COMPONENT).parent


@pytest.mark.parametrize("host", ["unix:///var/run/docker.sock", "ssh://deploy@docker.example.com:2222",
                                  "tcp://docker.example.com:2376"])
def test_docker_resources_use_the_provider_for_the_configured_host(host):
    """One docker provider, host from settings (local socket or ssh://); every docker resource,
    and nothing else, goes through it."""
    ssh = host.startswith("ssh://")
    docker_settings = {"host": host, **({"sshOpts": ["-o", "StrictHostKeyChecking=yes"]} if ssh else {})}
    m = run({**CONFIG, "docker": docker_settings}).monitor
    provider = m.one("pulumi:providers:docker")
    assert provider.plain_inputs["host"] == host
    if ssh:
        # Provider configuration reaches the engine JSON-encoded.
        assert json.loads(provider.plain_inputs["sshOpts"]) == ["-o", "StrictHostKeyChecking=yes"]
    for r in m.registered:
        if r.custom and r.type.startswith("docker:"):
            assert r.provider.startswith(provider.urn + "::"), r.name
        elif r.custom and r.type != provider.type:
            assert provider.urn not in r.provider, r.name


def test_proxy_container_depends_on_certificate_htpasswd_and_registry():
    """The proxy is created after the server certificate, the users' salts (its htpasswd) and
    the registry container exist."""
    m = run().monitor
    deps = set(named(m, PROXY_CONTAINER).dependencies)
    assert named(m, "registry-server-cert").urn in deps
    assert named(m, "registry-server-key").urn in deps
    assert {r.urn for r in m.by_type("random:index/randomBytes:RandomBytes")} <= deps
    assert named(m, "registry-registry-container").urn in set(named(m, "registry-proxy").dependencies)
    assert named(m, "registry-registry-network").urn in deps


def test_generated_password_feeds_the_proxy_when_no_users_are_configured():
    """With no users the generated admin password is an input of the proxy (via the htpasswd)."""
    m = run({}, secret_keys=[]).monitor
    salt = m.one("random:index/randomBytes:RandomBytes")
    password = named(m, "registry-users-password-" + salt.name.removeprefix("registry-users-salt-"))
    assert {password.urn, salt.urn} <= set(named(m, PROXY_CONTAINER).dependencies)


def test_trust_commands_depend_on_the_ca_certificate():
    """A client trusts the CA once it exists; a new CA re-runs the install."""
    m = run().monitor
    ca_cert = named(m, "registry-ca-cert").urn
    for name in ("registry-trust-laptop-install", "registry-trust-builder-install"):
        assert ca_cert in named(m, name).dependencies
        assert "localhost:5443" in named(m, name).plain_inputs["create"]


def test_containers_replace_in_place_and_the_volume_survives_destroy():
    """Both containers are delete-before-replace (fixed names); the volume is retained on destroy
    by default and only then; nothing else is retained."""
    m = run().monitor
    assert {r.name for r in m.registered if r.delete_before_replace} == {"registry-registry-container", PROXY_CONTAINER}
    assert {r.name for r in m.registered if r.retain_on_delete} == {"registry-registry-data"}
    dropped = run({**CONFIG, "volume": {"keepOnDestroy": False, "name": "images"}}).monitor
    assert not any(r.retain_on_delete for r in dropped.registered)
    assert named(dropped, "registry-registry-data").plain_inputs["name"] == "images"


def test_images_are_pinned_by_digest_and_overridable():
    """Both images are tag@sha256 references by default; the images setting replaces them."""
    m = run().monitor
    names = {r.name: r.plain_inputs["name"] for r in m.by_type("docker:index/remoteImage:RemoteImage")}
    assert all("@sha256:" in n for n in names.values()), names
    digest = "sha256:" + "0" * 64
    custom = run({**CONFIG, "images": {"registry": f"mirror.example.com/registry:2.8.3@{digest}"}}).monitor
    assert named(custom, "registry-registry-image").plain_inputs["name"] == f"mirror.example.com/registry:2.8.3@{digest}"


def test_proxy_publishes_the_https_port_on_the_bind_address():
    """httpsPort and bindAddress from settings reach the proxy's port mapping."""
    m = run({**CONFIG, "httpsPort": 8443, "bindAddress": "127.0.0.1"}).monitor
    assert named(m, PROXY_CONTAINER).plain_inputs["ports"] == [
        {"internal": 443, "external": 8443, "ip": "127.0.0.1", "protocol": "tcp"}]


# --- secrets ------------------------------------------------------------------------------------


def held_secrets(m) -> dict[str, str]:
    """Every secret value some resource holds, by what it is, as it would appear in JSON state."""
    values = {}
    for key in m.by_type("tls:index/privateKey:PrivateKey"):
        # The whole PEM and its first body line (the private part; the last line of an EC key is
        # public key material that publicKeyPem rightly shows).
        pem = key.plain_outputs["privateKeyPem"]
        values[f"{key.name} PEM"] = pem
        values[f"{key.name} first line"] = pem.splitlines()[1]
    uploads = {u["file"]: u["content"] for u in named(m, PROXY_CONTAINER).plain_inputs["uploads"]}
    values.update({f"htpasswd line {i}": line for i, line in enumerate(uploads[HTPASSWD_PATH].splitlines())})
    for password in m.by_type("random:index/randomPassword:RandomPassword"):
        values[password.name] = password.plain_outputs["result"]
    for command in m.by_type("command:remote:Command"):
        values[f"{command.name} SSH key"] = command.plain_inputs["connection"]["privateKey"]
    for r in m.registered:
        if r.type.startswith("pulumi-python:dynamic/") and "password" in r.plain_inputs:
            values[f"{r.name} password"] = r.plain_inputs["password"]
    return {what: json.dumps(v)[1:-1] for what, v in values.items()}


def unredacted_state(m) -> str:
    return json.dumps([{"urn": r.urn, "inputs": reveal(r.inputs), "outputs": reveal(r.outputs)} for r in m.registered],
                      default=str)


MAINTENANCE = {"deletions": [{"repository": "team/app", "tags": ["v1"]}],
               "retention": [{"repositories": "team/.*", "keepLast": 2}]}


@pytest.mark.parametrize("config, secret_keys", [(CONFIG, SECRET_KEYS), ({}, []), ({"maintenance": MAINTENANCE}, [])],
                         ids=["configured users", "generated admin", "maintenance"])
def test_state_holds_no_secret_in_plain_text(config, secret_keys):
    """CA and server key PEMs, htpasswd lines, generated passwords (admin, registry http secret),
    SSH keys and configured passwords never appear in the state the engine would write. The same
    search over the state with secrets revealed finds every held secret, so the check can fail."""
    result = run(config, secret_keys=secret_keys)
    m = result.monitor
    values = held_secrets(m)
    assert len(values) >= 7
    revealed = unredacted_state(m)
    assert [what for what, v in values.items() if v not in revealed] == []
    values.update({f"password of {u}": json.dumps(p)[1:-1] for u, p in result.exports["passwords"].items()})
    state = m.state_text()
    assert [what for what, v in values.items() if v in state] == []
    # Dynamic providers are stored pickled (base64) in every resource's __provider input.
    pickles = b"".join(base64.b64decode(r.plain_inputs["__provider"]) for r in m.registered
                       if r.type.startswith("pulumi-python:dynamic/"))
    assert bool(pickles) == ("maintenance" in config)
    raw = [json.loads(f'"{v}"') for v in values.values()]
    assert [v for v in raw if v.encode() in pickles] == []


def test_secret_values_are_flagged_secret_where_they_are_held():
    """Key PEMs (as the engine applies additional_secret_outputs), the generated password, the
    CA key input of the signed certificate, both containers' uploads, remote SSH credentials."""
    m = run().monitor
    for key in m.by_type("tls:index/privateKey:PrivateKey"):
        assert is_secret(key.outputs["privateKeyPem"]) and is_secret(key.outputs["privateKeyPemPkcs8"])
    assert is_secret(named(m, "registry-registry-http-secret").outputs["result"])
    assert is_secret(named(m, "registry-server-cert").inputs["caPrivateKeyPem"])
    assert is_secret(named(m, "registry-ca-cert").inputs["privateKeyPem"])
    assert is_secret(named(m, "registry-server-csr").inputs["privateKeyPem"])
    for name in ("registry-registry-container", PROXY_CONTAINER):
        assert is_secret(named(m, name).inputs["uploads"]) and is_secret(named(m, name).outputs["uploads"])
    assert contains_secret(named(m, "registry-trust-builder-install").inputs["connection"])
    # Public material stays readable (a diff shows it).
    assert not contains_secret(named(m, "registry-ca-cert").outputs["certPem"])
    assert not contains_secret(named(m, "registry-server-csr").inputs["dnsNames"])


# --- preview --------------------------------------------------------------------------------------


def test_preview_with_unknown_values_declares_the_same_graph():
    """`pulumi preview` (certificates, salts and passwords not yet known) runs, declares the same
    resources, keeps the proxy's secret uploads secret and leaves unknown uploads unknown."""
    preview = run(preview=True)
    up = run()
    assert sorted((r.type, r.name) for r in preview.monitor.registered) == sorted((r.type, r.name) for r in up.monitor.registered)
    proxy = named(preview.monitor, PROXY_CONTAINER)
    assert is_secret(proxy.inputs["uploads"])
    uploads = {u["file"]: u["content"] for u in proxy.plain_inputs["uploads"]}
    for path in (CERT_PATH, KEY_PATH, HTPASSWD_PATH):
        assert isinstance(uploads[path], pulumi.output.Unknown), path
    assert preview.exports["caCertificatePem"] is None
    assert preview.exports["registryAddress"] == "localhost:5443"
    assert "passwords" in preview.secret_exports


# --- no churn ------------------------------------------------------------------------------------


@pytest.fixture
def stateful(monkeypatch):
    """Runs of the program that share one state, like successive `pulumi up`s of a stack."""
    state: dict = {}
    return functools.partial(run, state=state)


@pytest.fixture
def clock(monkeypatch):
    """Set the time the settings read (and so the certificate rotation generation)."""
    now = {"t": 1_800_000_000.0}
    monkeypatch.setattr("components.settings.time", types.SimpleNamespace(time=lambda: now["t"]))
    return now


def inputs_by_urn(result) -> dict:
    return {r.urn: r.plain_inputs for r in result.monitor.registered}


def changed(before, after) -> set[str]:
    a, b = inputs_by_urn(before), inputs_by_urn(after)
    assert a.keys() == b.keys()
    return {urn.rsplit("::", 1)[1] for urn in a if a[urn] != b[urn]}


def test_unchanged_stack_has_identical_inputs_for_every_resource(stateful, clock):
    """Two `pulumi up`s of the same config declare every resource with identical inputs: no diff."""
    first, second = stateful(), stateful()
    assert changed(first, second) == set()
    assert len(inputs_by_urn(first)) == len(first.monitor.registered)


def test_changed_password_changes_only_the_proxy(stateful, clock):
    """A new password re-renders the htpasswd, which only the proxy container holds; the CA,
    certificates, registry and volume are untouched."""
    first = stateful()
    second = stateful({**CONFIG, "users": {**USERS, "alice": ALICE + "-new"}})
    assert changed(first, second) == {PROXY_CONTAINER}
    before = {u["file"]: u["content"] for u in named(first.monitor, PROXY_CONTAINER).plain_inputs["uploads"]}
    after = {u["file"]: u["content"] for u in named(second.monitor, PROXY_CONTAINER).plain_inputs["uploads"]}
    assert {path for path in before if before[path] != after[path]} == {HTPASSWD_PATH}
    ci_line = [line for line in before[HTPASSWD_PATH].splitlines() if line.startswith("ci@example.com:")]
    assert ci_line and ci_line[0] in after[HTPASSWD_PATH]


def test_rotation_boundary_replaces_only_the_server_certificate_and_the_proxy(stateful, clock):
    """Within a rotation period nothing changes; at the boundary the CSR (its generation), the
    signed certificate and the proxy serving it change, and the data volume and registry do not."""
    period = CertificateSettings().rotation_period_hours * 3600
    k = rotation_generation(clock["t"], CertificateSettings())
    clock["t"] = k * period
    start = stateful()
    clock["t"] = (k + 1) * period - 1
    late = stateful()
    clock["t"] = (k + 1) * period
    rotated = stateful()
    assert changed(start, late) == set()
    assert changed(late, rotated) == {"registry-server-csr", "registry-server-cert", PROXY_CONTAINER}
    subject = named(rotated.monitor, "registry-server-csr").plain_inputs["subject"]
    assert subject["serialNumber"] == f"rotation-{k + 1}"
