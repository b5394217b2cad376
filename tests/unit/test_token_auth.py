"""Token mode (the default) in the whole graph under engine-like mocks: the signer, the token
container, the registry's ``auth.token`` and trusted certificate, nginx's /token location,
what a changed password and a rotation replace. (The signing key and htpasswd are checked
secret wherever held by tests/unit/test_secrets.py, which runs in token mode.)"""

from __future__ import annotations

import functools
import json
import types

import pytest
import yaml

from components.pki import rotation_generation
from components.render import token_service as ts
from components.render.nginx import CONF_PATH, HTPASSWD_PATH
from components.render.registry_config import CONFIG_PATH
from components.settings import REGISTRY2_IMAGE, CertificateSettings
from tests.support.program import run_program

USERS = {"alice": "alice-password-0123456", "ci": "ci-password-01234567", "node": "node-password-0123456"}
CONFIG = {
    "users": USERS,
    "hosts": ["registry.example.com"],
    "httpsPort": 5443,
    "auth": {
        "admins": ["alice"],
        "rules": [{"repositories": ["ci/**"], "push": ["ci"]}, {"repositories": ["**"], "pull": ["node"]}],
        "anonymousPull": ["public/**"],
        "rateLimitPerSecond": 3,
        "rateLimitBurst": 7,
        "failedLoginsPerMinute": 30,
        "failedLoginBurst": 9,
    },
}
TOKEN = "registry-token-container"
REGISTRY = "registry-registry-container"
PROXY = "registry-proxy-container"
# The stack on distribution 2.8 (images.registry pinned to 2.8.3).
REGISTRY2 = {**CONFIG, "images": {"registry": REGISTRY2_IMAGE}}


def run(config=CONFIG, **kwargs):
    return run_program(config, secret_keys=["users"], **kwargs)


def named(monitor, name):
    (found,) = [r for r in monitor.registered if r.name == name]
    return found


def uploads(monitor, name) -> dict:
    return {u["file"]: u for u in named(monitor, name).plain_inputs["uploads"]}


@pytest.fixture(scope="module")
def program():
    return run()


def test_token_graph_and_wiring(program):
    """Signer key and certificate, token image and container on the registry network under the
    alias 'token'; the registry (distribution 3) trusts the signer's key from a JWKS of its
    certificate; nginx serves /token."""
    m = program.monitor
    cert = named(m, "registry-token-signer-cert").plain_outputs["certPem"]
    key = named(m, "registry-token-signer-key")
    assert key.plain_inputs["algorithm"] == "ECDSA" and key.plain_inputs["ecdsaCurve"] == "P256"
    registry_files = uploads(m, REGISTRY)
    config = yaml.safe_load(registry_files[CONFIG_PATH]["content"])
    assert config["auth"] == {"token": {"realm": "https://registry.example.com:5443/token",
                                        "service": "registry.example.com:5443",
                                        "issuer": "registry-dev-token-service",
                                        "jwks": ts.REGISTRY_JWKS_PATH}}
    assert registry_files[ts.REGISTRY_JWKS_PATH]["content"] == ts.render_jwks(cert)
    assert ts.REGISTRY_BUNDLE_PATH not in registry_files
    token = named(m, TOKEN).plain_inputs
    assert token["name"] == "registry-dev-token" and "ports" not in token or not token.get("ports")
    assert token["networksAdvanced"][0]["aliases"] == ["token"]
    assert set(token["envs"]) == {"TOKEN_ISSUER=registry-dev-token-service", "TOKEN_SERVICE=registry.example.com:5443",
                                  "TOKEN_TTL=300", "TOKEN_LISTEN=0.0.0.0:5001",
                                  "TOKEN_FAILURES_PER_MINUTE=30", "TOKEN_FAILURE_BURST=9"}
    files = uploads(m, TOKEN)
    assert files[ts.CERT_PATH]["content"] == cert
    assert files[ts.KEY_PATH]["content"] == key.plain_outputs["privateKeyPem"]
    policy = json.loads(files[ts.POLICY_PATH]["content"])
    assert policy["admins"] == ["alice"] and policy["anonymous_pull"] == ["public/**"]
    assert [line.split(":")[0] for line in files[ts.HTPASSWD_PATH]["content"].splitlines()] == sorted(USERS)
    assert all("$2y$11$" in line for line in files[ts.HTPASSWD_PATH]["content"].splitlines())
    image = named(m, "registry-token-image").plain_inputs
    assert image["name"].startswith("registry-dev-token-service:") and image["build"]["context"] == "token_service"
    conf = uploads(m, PROXY)[CONF_PATH]["content"]
    assert "location = /token {" in conf and "set $token_service token:5001;" in conf
    assert "rate=3r/s" in conf and "burst=7 nodelay" in conf
    assert "auth_basic \"" not in conf and 'proxy_set_header Authorization "";' not in conf
    assert HTPASSWD_PATH not in uploads(m, PROXY)
    deps = set(named(m, "registry-proxy").dependencies)
    assert named(m, TOKEN).urn in deps


def test_registry_2_trusts_the_signer_certificate_as_its_root_bundle():
    """On distribution 2.8 the registry's auth.token names the signer's certificate as
    rootcertbundle (2.8 has no jwks option) and holds that certificate, no JWKS."""
    m = run(REGISTRY2).monitor
    cert = named(m, "registry-token-signer-cert").plain_outputs["certPem"]
    registry_files = uploads(m, REGISTRY)
    auth = yaml.safe_load(registry_files[CONFIG_PATH]["content"])["auth"]["token"]
    assert auth["rootcertbundle"] == ts.REGISTRY_BUNDLE_PATH and "jwks" not in auth
    assert registry_files[ts.REGISTRY_BUNDLE_PATH]["content"] == cert
    assert ts.REGISTRY_JWKS_PATH not in registry_files


@pytest.fixture
def clock(monkeypatch):
    now = {"t": 1_800_000_000.0}
    monkeypatch.setattr("components.settings.time", types.SimpleNamespace(time=lambda: now["t"]))
    return now


def changed(before, after) -> set[str]:
    a = {r.urn: r.plain_inputs for r in before.monitor.registered}
    b = {r.urn: r.plain_inputs for r in after.monitor.registered}
    assert a.keys() == b.keys()
    return {urn.rsplit("::", 1)[1] for urn in a if a[urn] != b[urn]}


def test_password_change_replaces_only_the_token_container(clock):
    """A new password changes the htpasswd, which only the token service holds in token mode."""
    state: dict = {}
    first = run(state=state)
    second = run({**CONFIG, "users": {**USERS, "ci": "ci-password-changed-0"}}, state=state)
    assert changed(first, second) == {TOKEN}


def test_rules_change_replaces_only_the_token_container(clock):
    """New access rules change the policy file, held only by the token service."""
    state: dict = {}
    first = run(state=state)
    second = run({**CONFIG, "auth": {**CONFIG["auth"], "anonymousPull": []}}, state=state)
    assert changed(first, second) == {TOKEN}


@pytest.mark.parametrize("config, registry_replaced", [(CONFIG, False), (REGISTRY2, True)],
                         ids=["registry-3", "registry-2.8"])
def test_rotation_renews_the_signer_with_the_server_certificate(clock, config, registry_replaced):
    """At a rotation boundary the signer's certificate is renewed with the server's (same key);
    the token service (which signs with it) is replaced. Distribution 3 trusts the key (JWKS),
    which did not change, so its registry is left running; 2.8 trusts the certificate, so it is
    replaced too. Nothing else changes."""
    state: dict = {}
    period = CertificateSettings().rotation_period_hours * 3600
    k = rotation_generation(clock["t"], CertificateSettings())
    clock["t"] = (k + 1) * period - 1
    late = run(config, state=state)
    clock["t"] = (k + 1) * period
    rotated = run(config, state=state)
    assert changed(late, rotated) == {"registry-server-csr", "registry-server-cert", PROXY,
                                      "registry-token-signer-cert", TOKEN} | ({REGISTRY} if registry_replaced else set())
    subject = named(rotated.monitor, "registry-token-signer-cert").plain_inputs["subject"]
    assert subject["serialNumber"] == f"rotation-{k + 1}"


def test_basic_mode_has_no_token_service():
    """auth.mode basic: no signer, no token container, nginx checks passwords, the registry has no auth."""
    m = run({"users": USERS, "auth": {"mode": "basic"}}).monitor
    names = {r.name for r in m.registered}
    assert not {n for n in names if "token" in n}
    assert "auth" not in yaml.safe_load(uploads(m, REGISTRY)[CONFIG_PATH]["content"])
    assert "auth_basic \"Registry realm\"" in uploads(m, PROXY)[CONF_PATH]["content"]


def test_missing_wheels_fail_with_the_fix(monkeypatch):
    """Without the image's wheels the program stops with the command that fetches them."""
    monkeypatch.setattr(ts, "missing_wheels", lambda: "the token service image needs wheels: run scripts/token-wheels.sh")
    with pytest.raises(Exception, match="scripts/token-wheels.sh"):
        run()


@pytest.mark.parametrize("version", [3, 2])
def test_standby_finds_the_token_certificate_in_the_config(version):
    """The GC stand-by copies the file named by auth.token.jwks (3) or rootcertbundle (2.8),
    absolute paths only."""
    from components.docker_exec import token_bundle_path
    from components.render.registry_config import render_registry_config

    auth = ts.registry_token_auth(address="r.example:5443", prefix="p", registry_version=version)
    token = render_registry_config(http_secret="s", auth=auth)
    assert token_bundle_path(token) == ts.registry_key_path(version)
    assert ts.registry_key_path(version) == (ts.REGISTRY_JWKS_PATH if version == 3 else ts.REGISTRY_BUNDLE_PATH)
    assert token_bundle_path(render_registry_config(http_secret="s")) is None
    assert token_bundle_path("auth: {token: {rootcertbundle: relative.crt}}\nstorage: {}\n") is None


def test_nginx_token_mode_refuses_basic_auth_beside_it():
    """nginx in token mode must not also check passwords on /v2/ (the registry checks tokens)."""
    from components.render.nginx import NginxOptions, render_nginx_conf

    with pytest.raises(ValueError, match="auth=False"):
        render_nginx_conf(NginxOptions(token_upstream="token:5001"))


def _key_and_cert(private_key):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private_key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(private_key, hashes.SHA256()))
    key_pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("kind", ["ecdsa-p256", "rsa-2048"])
def test_jwks_states_the_key_under_the_id_tokens_carry(kind):
    """render_jwks holds one signing key whose kid is the libtrust id the token service puts in
    every token's header, with its algorithm; a token the token service signs verifies against
    that key and fails against it once one character of the signature changes."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from token_service.tokens import load_signing_key

    private = ec.generate_private_key(ec.SECP256R1()) if kind == "ecdsa-p256" else rsa.generate_private_key(
        public_exponent=65537, key_size=2048)
    key_pem, cert_pem = _key_and_cert(private)
    signing = load_signing_key(key_pem, cert_pem)
    jwks = json.loads(ts.render_jwks(cert_pem.decode()))
    (jwk,) = jwks["keys"]
    assert jwk["kid"] == signing.kid and jwk["use"] == "sig" and jwk["alg"] == signing.algorithm
    assert "d" not in jwk and "p" not in jwk
    token = jwt.encode({"aud": "r.example", "access": []}, signing.private_key, algorithm=signing.algorithm,
                       headers={"kid": signing.kid})
    trusted = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    assert jwt.decode(token, trusted.key, algorithms=[jwk["alg"]], audience="r.example")["aud"] == "r.example"
    head, body, signature = token.split(".")
    forged = f"{head}.{body}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}{signature[-1]}"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, trusted.key, algorithms=[jwk["alg"]], audience="r.example")
