"""Token authentication against the real registry (distribution 3.1.2 built from its Go module,
or Debian's 2.8.2 with TEST_REGISTRY_VERSION=2) with ``auth.token`` trusting the token
service's key as the program renders it (3: JWKS, 2.8: the certificate), the service on loopback, real
images pushed with skopeo through the token flow.

Access-control suite: every role x every API route and method on every repository (manifests,
blobs, uploads, tags list, deletion, cross-repository mounts from every other repository) and
the catalog, each request made the way clients do it (401 challenge -> token for the challenged
scope -> retry). The expected outcome comes from a rights table written here by hand, not from
the service's rule code. Forged-token suite: tokens forged every way, sent to the registry (and
refresh tokens to the service); none may be accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import time
from pathlib import Path

import jwt
import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from components.render import token_service as ts
from tests.support import oci
from tests.support.go_tools import registry_binary
from tests.support.program import REGISTRY_VERSION
from tests.support.token import ISSUER, SERVICE, free_port, key_and_cert, serve, token_files
from tests.support.waiting import http_status, wait_for
from token_service.tokens import libtrust_key_id

# "@ops" is a user literally named like the admins' group (the program refuses such a name at
# preview; here it is in the htpasswd file anyway): it must hold what anonymous clients hold.
PASSWORDS = {role: f"{role}-secret-password-{i:04d}" for i, role in
             enumerate(["admin", "node", "ci", "dev", "janitor", "auditor", "@ops"])}
POLICY = {
    "version": 1,
    "groups": {"ops": ["admin"], "nodes": ["node"]},
    "admins": ["@ops"],
    "rules": [
        {"repositories": ["ci/**"], "push": ["ci"]},
        {"repositories": ["team/**"], "pull": ["dev"], "push": ["dev"], "delete": ["janitor"]},
        {"repositories": ["**"], "pull": ["@nodes"]},
    ],
    "anonymous_pull": ["public/**"],
    "catalog": ["auditor"],
}
REPOS = ["ci/app", "team/web", "prod/api", "public/base"]
ALL = {"pull", "push", "delete"}
# What each role may do, by hand from POLICY (push brings pull; "impostor" is admin with a wrong password;
# anonymousPull is for anyone, so every role that logs in pulls public/base as anonymous clients do).
RIGHTS = {
    "admin": {repo: ALL for repo in REPOS},
    "node": {repo: {"pull"} for repo in REPOS},
    "ci": {"ci/app": {"pull", "push"}, "public/base": {"pull"}},
    "dev": {"team/web": {"pull", "push"}, "public/base": {"pull"}},
    "janitor": {"team/web": {"delete"}, "public/base": {"pull"}},
    "auditor": {"public/base": {"pull"}},
    "@ops": {"public/base": {"pull"}},
    "anonymous": {"public/base": {"pull"}},
    # Last: its wrong passwords spend the address's failure budget (token_service/throttle.py).
    "impostor": {},
}
CATALOG = {"admin", "auditor"}
MISSING_BLOB = "sha256:" + "0" * 64
EMPTY_DIGEST = "sha256:" + hashlib.sha256(b"").hexdigest()


def credentials(role: str):
    if role == "anonymous":
        return None
    if role == "impostor":
        return ("admin", "not-the-admin-password")
    return (role, PASSWORDS[role])


class Registry:
    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()

    def token(self, role: str, challenge: str) -> str | None:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = {"service": params["service"]}
        if "scope" in params:
            query["scope"] = params["scope"].split(" ")
        reply = self.session.get(params["realm"], params=query, auth=credentials(role), timeout=30)
        return reply.json()["token"] if reply.status_code == 200 else None

    def call(self, role: str, method: str, path: str, **kwargs) -> requests.Response:
        """One request as a client makes it: unauthenticated, then with a token for the challenge."""
        url = path if path.startswith("http") else self.base + path
        first = self.session.request(method, url, timeout=30, allow_redirects=False, **kwargs)
        assert first.status_code == 401, f"{method} {path} without a token gave {first.status_code}"
        token = self.token(role, first.headers["WWW-Authenticate"])
        if token is None:
            return first
        return self.bearer(token, method, url, **kwargs)

    def bearer(self, token: str, method: str, url: str, **kwargs) -> requests.Response:
        url = url if url.startswith("http") else self.base + url
        return self.session.request(method, url, headers={"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})},
                                    timeout=30, allow_redirects=False, **kwargs)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Token service + docker-registry with auth.token + one real image per repository (and one to delete)."""
    tmp = tmp_path_factory.mktemp("token-registry")
    files = token_files(tmp / "token", PASSWORDS, POLICY)
    service = serve(files)
    port = free_port()
    config = tmp / "config.yml"
    # The key the registry trusts, as the program gives it: 3 a JWKS of the signer, 2.8 its certificate.
    trusted = tmp / "token-signer"
    trusted.write_text(ts.registry_key_text(Path(files.cert).read_text(), REGISTRY_VERSION))
    config.write_text(yaml.safe_dump({
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(tmp / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "fixed-http-secret-for-tests"},
        "auth": {"token": {"realm": service.url, "service": SERVICE, "issuer": ISSUER,
                           ("jwks" if REGISTRY_VERSION == 3 else "rootcertbundle"): str(trusted)}},
    }))
    log = (tmp / "registry.log").open("wb")
    process = subprocess.Popen([registry_binary(REGISTRY_VERSION), "serve", str(config)], stdout=log, stderr=log,
                               env={"PATH": os.environ["PATH"], "OTEL_TRACES_EXPORTER": "none"})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_status(base + "/v2/", timeout=1) == 401, timeout=30, interval=0.1,
                 what="docker-registry answering", process=process, log=tmp / "registry.log")
        layout = tmp / "layout"
        images = {}
        for repo in REPOS:
            digest = oci.write_image(layout, repo.replace("/", "-"), [2048, 1024], seed=repo)
            doomed = oci.write_image(layout, repo.replace("/", "-") + "-doomed", [512], seed=repo + "-doomed")
            for tag, dest in [(repo.replace("/", "-"), "latest"), (repo.replace("/", "-") + "-doomed", "doomed")]:
                result = subprocess.run(
                    ["skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", f"admin:{PASSWORDS['admin']}",
                     f"oci:{layout}:{tag}", f"docker://127.0.0.1:{port}/{repo}:{dest}"],
                    capture_output=True, timeout=120)
                assert result.returncode == 0, result.stderr.decode()
            manifest = json.loads(oci.read_blob(layout, digest))
            images[repo] = {"manifest": digest, "doomed": doomed, "layer": manifest["layers"][0]["digest"],
                            "manifest_bytes": oci.read_blob(layout, digest)}
        yield Registry(base), images, files, service
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()
        service.stop()


def _upload(registry: Registry, repo: str) -> str:
    """A fresh upload session opened by the admin; returns its Location URL."""
    reply = registry.call("admin", "POST", f"/v2/{repo}/blobs/uploads/")
    assert reply.status_code == 202, reply.text
    location = reply.headers["Location"]
    return location if location.startswith("http") else registry.base + location


def _allowed(role: str, repo: str, needs: set[str], source: str | None = None) -> bool:
    ok = needs <= RIGHTS[role].get(repo, set())
    return ok and (source is None or "pull" in RIGHTS[role].get(source, set()))


def test_access_matrix(stack):
    """Every role x route x method x repository (and mount source): 0 requests allowed that the
    rules forbid, 0 denied that they allow; allowed reads return the pushed content."""
    registry, images, _, _ = stack
    cases = []  # (role, label, expected allowed, status)
    for role in RIGHTS:
        base = registry.call(role, "GET", "/v2/")
        cases.append((role, "GET /v2/", role != "impostor", base.status_code))
        catalog = registry.call(role, "GET", "/v2/_catalog")
        cases.append((role, "GET /v2/_catalog", role in CATALOG, catalog.status_code))
        if role in CATALOG:
            assert sorted(catalog.json()["repositories"]) == sorted(REPOS)
        for repo in REPOS:
            image = images[repo]
            reads = [
                ("GET", f"/v2/{repo}/manifests/latest"), ("HEAD", f"/v2/{repo}/manifests/latest"),
                ("GET", f"/v2/{repo}/manifests/{image['manifest']}"),
                ("GET", f"/v2/{repo}/blobs/{image['layer']}"), ("HEAD", f"/v2/{repo}/blobs/{image['layer']}"),
                ("GET", f"/v2/{repo}/tags/list"),
            ]
            for method, path in reads:
                reply = registry.call(role, method, path, headers={"Accept": oci.MEDIA_TYPE_MANIFEST})
                cases.append((role, f"{method} {path}", _allowed(role, repo, {"pull"}), reply.status_code))
                if _allowed(role, repo, {"pull"}):
                    assert reply.status_code == 200, (role, method, path, reply.status_code)
                    if method == "GET" and "/manifests/" in path:
                        assert reply.content == image["manifest_bytes"]
            # Uploads: start, status, append, complete, cancel (sessions opened by the admin).
            start = registry.call(role, "POST", f"/v2/{repo}/blobs/uploads/")
            cases.append((role, f"POST {repo} upload", _allowed(role, repo, {"pull", "push"}), start.status_code))
            status = registry.call(role, "GET", _upload(registry, repo))
            cases.append((role, f"GET {repo} upload status", _allowed(role, repo, {"pull"}), status.status_code))
            patch = registry.call(role, "PATCH", _upload(registry, repo), data=b"abc",
                                  headers={"Content-Type": "application/octet-stream"})
            cases.append((role, f"PATCH {repo} upload", _allowed(role, repo, {"pull", "push"}), patch.status_code))
            put = registry.call(role, "PUT", _upload(registry, repo) + f"&digest={EMPTY_DIGEST}", data=b"")
            cases.append((role, f"PUT {repo} upload", _allowed(role, repo, {"pull", "push"}), put.status_code))
            cancel = registry.call(role, "DELETE", _upload(registry, repo))
            cases.append((role, f"DELETE {repo} upload", _allowed(role, repo, {"delete"}), cancel.status_code))
            tag = registry.call(role, "PUT", f"/v2/{repo}/manifests/t-{role.lstrip('@')}", data=image["manifest_bytes"],
                                headers={"Content-Type": oci.MEDIA_TYPE_MANIFEST})
            cases.append((role, f"PUT {repo} manifest", _allowed(role, repo, {"pull", "push"}), tag.status_code))
            if _allowed(role, repo, {"push"}):
                assert tag.status_code == 201 and start.status_code == 202 and put.status_code == 201
            gone = registry.call(role, "DELETE", f"/v2/{repo}/manifests/{image['doomed']}")
            cases.append((role, f"DELETE {repo} manifest", _allowed(role, repo, {"delete"}), gone.status_code))
            blob = registry.call(role, "DELETE", f"/v2/{repo}/blobs/{MISSING_BLOB}")
            cases.append((role, f"DELETE {repo} blob", _allowed(role, repo, {"delete"}), blob.status_code))
            for source in REPOS:
                if source == repo:
                    continue
                mount = registry.call(role, "POST", f"/v2/{repo}/blobs/uploads/?mount={images[source]['layer']}&from={source}")
                expected = _allowed(role, repo, {"pull", "push"}, source)
                cases.append((role, f"mount {source} -> {repo}", expected, mount.status_code))
                if expected:
                    assert mount.status_code == 201, (role, source, repo, mount.status_code)
    wrong_allowed = [c for c in cases if not c[2] and c[3] != 401]
    wrong_denied = [c for c in cases if c[2] and c[3] == 401]
    allowed = sum(1 for c in cases if c[2])
    print(f"\naccess-control suite: {len(cases)} requests ({len(RIGHTS)} roles), {allowed} expected allowed, "
          f"{len(cases) - allowed} expected denied; wrongly allowed {len(wrong_allowed)}, wrongly denied {len(wrong_denied)}")
    assert wrong_allowed == [] and wrong_denied == []
    assert len(cases) == len(RIGHTS) * (2 + len(REPOS) * (6 + 8 + len(REPOS) - 1))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict, claims: dict) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


def test_forged_tokens_are_refused(stack):
    """Tokens forged every way are refused by the registry (401), and forged refresh tokens by the
    service (400): 0 accepted. A genuine token for the same request is accepted (the control);
    so is, on distribution 3 only, a genuine one whose audience is a list naming the registry."""
    registry, images, files, service = stack
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert_pem = files.cert.read_bytes()
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    other_key_pem, other_cert_pem, other_key = key_and_cert("ec")
    other_x5c = [base64.b64encode(x509.load_pem_x509_certificate(other_cert_pem).public_bytes(serialization.Encoding.DER)).decode()]
    now = int(time.time())
    access = [{"type": "repository", "name": "prod/api", "actions": ["pull", "push", "delete"]},
              {"type": "registry", "name": "catalog", "actions": ["*"]}]
    good = {"iss": ISSUER, "sub": "admin", "aud": SERVICE, "exp": now + 300, "nbf": now, "iat": now,
            "jti": "x", "access": access}
    kid = libtrust_key_id(cert.public_key())
    header = {"typ": "JWT", "alg": "ES256", "kid": kid}

    def es256(claims, key=files.private_key, hdr=header):
        return jwt.encode(claims, key, algorithm="ES256", headers={k: v for k, v in hdr.items() if k not in ("alg", "typ")})

    def hs256(secret: bytes, hdr: dict) -> str:
        signing_input = _unsigned({**hdr, "alg": "HS256"}, good)
        return signing_input + "." + _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())

    genuine = es256(good)
    head, body, signature = genuine.split(".")
    tampered_access = _b64(json.dumps({**good, "access": access + [{"type": "repository", "name": "ci/app", "actions": ["*"]}]}).encode())
    forged = {
        "alg none, no signature": _unsigned({**header, "alg": "none"}, good) + ".",
        "alg none, genuine signature kept": _unsigned({**header, "alg": "none"}, good) + "." + signature,
        "HS256 keyed with the certificate PEM": hs256(cert_pem, header),
        "HS256 keyed with the certificate PEM, x5c of the trusted certificate": hs256(
            cert_pem, {"typ": "JWT", "x5c": x5c}),
        "HS256 keyed with the public key PEM": hs256(cert.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), header),
        "HS256 keyed with the public key DER, kid of the trusted key": hs256(cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
            {"typ": "JWT", "kid": libtrust_key_id(cert.public_key())}),
        "another key, its own certificate in x5c": es256(good, other_key, {"x5c": other_x5c}),
        "another key, the trusted certificate in x5c": es256(good, other_key, {"x5c": x5c}),
        "another key, kid of the trusted key": es256(good, other_key, {"kid": kid}),
        "another key, its own kid": es256(good, other_key, {"kid": libtrust_key_id(other_key.public_key())}),
        "another key, its self-signed certificate in x5c beside the trusted kid": es256(
            good, other_key, {"x5c": other_x5c, "kid": kid}),
        "another key, the trusted certificate in x5c beside the trusted kid": es256(
            good, other_key, {"x5c": x5c, "kid": kid}),
        "the trusted key, an unknown kid": es256(good, files.private_key, {"kid": ("B" if kid[0] == "A" else "A") + kid[1:]}),
        "the trusted key, kid of another key": es256(good, files.private_key,
                                                     {"kid": libtrust_key_id(other_key.public_key())}),
        "another key, its own JWK in the header": es256(good, other_key, {"jwk": json.loads(
            jwt.algorithms.ECAlgorithm.to_jwk(other_key.public_key()))}),
        "no x5c, no kid": es256(good, files.private_key, {}),
        "expired (exp 120 s ago, past the 60 s leeway)": es256({**good, "exp": now - 120, "nbf": now - 400}),
        "not yet valid (nbf in 120 s)": es256({**good, "nbf": now + 120}),
        "no exp": es256({k: v for k, v in good.items() if k != "exp"}),
        "wrong audience": es256({**good, "aud": "another-registry"}),
        "audience list naming another registry": es256({**good, "aud": ["another-registry"]}),
        "wrong issuer": es256({**good, "iss": "someone-else"}),
        "tampered access claim": f"{head}.{tampered_access}.{signature}",
        "tampered subject": f"{head}.{_b64(json.dumps({**good, 'sub': 'node'}).encode())}.{signature}",
        "truncated signature": f"{head}.{body}.{signature[:-8]}",
        "empty signature": f"{head}.{body}.",
        "RS256 header on an ES256 signature": f"{_b64(json.dumps({**header, 'alg': 'RS256'}).encode())}.{body}.{signature}",
    }
    control = registry.bearer(genuine, "GET", "/v2/_catalog")
    assert control.status_code == 200, control.text
    # A list audience naming this registry, signed by the trusted key (the token service never
    # issues one): distribution 3 takes it as RFC 7519 allows, 2.8 takes only a string.
    listed = registry.bearer(es256({**good, "aud": [SERVICE]}), "GET", "/v2/_catalog").status_code
    assert listed == (200 if REGISTRY_VERSION == 3 else 401)
    refused = {}
    for label, token in forged.items():
        for method, path in [("GET", "/v2/_catalog"), ("GET", "/v2/prod/api/manifests/latest"),
                             ("DELETE", f"/v2/prod/api/blobs/{MISSING_BLOB}")]:
            refused[(label, method, path)] = registry.bearer(token, method, path).status_code == 401

    # Tokens from the service used beyond their grant: scope widened at use, and a refresh token as access.
    ci_token = registry.token("ci", 'realm="%s",service="%s",scope="repository:ci/app:pull"' % (service.url, SERVICE))
    refresh = requests.get(service.url, params={"service": SERVICE, "offline_token": "true"},
                           auth=("ci", PASSWORDS["ci"]), timeout=30).json()["refresh_token"]
    widened = {
        "pull token used to push": (ci_token, "POST", "/v2/ci/app/blobs/uploads/"),
        "pull token used on another repository": (ci_token, "GET", "/v2/prod/api/manifests/latest"),
        "pull token used for the catalog": (ci_token, "GET", "/v2/_catalog"),
        "pull token used to delete": (ci_token, "DELETE", f"/v2/ci/app/manifests/{images['ci/app']['doomed']}"),
        "refresh token used as an access token": (refresh, "GET", "/v2/ci/app/manifests/latest"),
    }
    for label, (token, method, path) in widened.items():
        refused[(label, method, path)] = registry.bearer(token, method, path).status_code == 401
    asked_wide = registry.token("ci", 'realm="%s",service="%s",scope="repository:prod/api:* registry:catalog:*"' % (service.url, SERVICE))
    refused[("ci asks for prod/api:* and the catalog", "GET", "/v2/_catalog")] = \
        registry.bearer(asked_wide, "GET", "/v2/_catalog").status_code == 401
    refused[("ci asks for prod/api:*", "GET", "/v2/prod/api/tags/list")] = \
        registry.bearer(asked_wide, "GET", "/v2/prod/api/tags/list").status_code == 401

    # Refresh tokens forged every way, presented to the service's OAuth2 endpoint.
    rclaims = jwt.decode(refresh, options={"verify_signature": False})
    rhead = refresh.split(".")[0]
    rsig = refresh.split(".")[2]
    bad_refresh = {
        "refresh: alg none": _unsigned({"alg": "none", "typ": "JWT"}, {**rclaims, "sub": "admin"}) + ".",
        "refresh: HS256 keyed with the certificate PEM": (lambda si: si + "." + _b64(hmac.new(cert_pem, si.encode(), hashlib.sha256).digest()))(
            _unsigned({"alg": "HS256", "typ": "JWT"}, {**rclaims, "sub": "admin"})),
        "refresh: another key": jwt.encode({**rclaims, "sub": "admin"}, other_key, algorithm="ES256"),
        "refresh: another user's subject, signature kept": f"{rhead}.{_b64(json.dumps({**rclaims, 'sub': 'admin'}).encode())}.{rsig}",
        "refresh: expired": jwt.encode({**rclaims, "exp": now - 10}, files.private_key, algorithm="ES256"),
        "refresh: not yet valid": jwt.encode({**rclaims, "nbf": now + 3600}, files.private_key, algorithm="ES256"),
        "refresh: wrong issuer": jwt.encode({**rclaims, "iss": "x"}, files.private_key, algorithm="ES256"),
        "refresh: stale password binding": jwt.encode({**rclaims, "bnd": "0" * 32}, files.private_key, algorithm="ES256"),
        "refresh: an access token": genuine,
        "refresh: no token_use": jwt.encode({k: v for k, v in rclaims.items() if k != "token_use"}, files.private_key, algorithm="ES256"),
    }
    for label, token in bad_refresh.items():
        reply = requests.post(service.url, data={"grant_type": "refresh_token", "refresh_token": token,
                                                 "service": SERVICE, "client_id": "forger"}, timeout=30)
        refused[(label, "POST", "/token")] = reply.status_code == 400
    reply = requests.post(service.url, data={"grant_type": "refresh_token", "refresh_token": refresh, "username": "admin",
                                             "service": SERVICE, "client_id": "forger"}, timeout=30)
    refused[("ci's refresh token presented as admin", "POST", "/token")] = reply.status_code == 400

    accepted = sorted(key for key, ok in refused.items() if not ok)
    print(f"\nforged-token suite: {len(refused)} attempts ({len(forged)} forged access tokens x 3 requests, "
          f"{len(widened) + 2} scope widenings, {len(bad_refresh) + 1} refresh forgeries); accepted {len(accepted)}")
    assert accepted == []


# Names the registry's grammar refuses, which the token service once signed for (issue 21).
HOSTILE_NAMES = ["victim/../secret/app", "team/", "team/web:latest", "team//web", "team/./web", "Team/web",
                 "localhost:5000/team/web", "team/web/", "team/web@sha256:" + "0" * 64]


def test_names_outside_the_grammar_never_reach_a_token(stack):
    """Through the realm the registry's challenge names: the admin (every right on every
    repository) and dev (a 'team/**' rule) asking for the names distribution's grammar refuses
    beside team/web get a token for team/web alone, which the registry accepts for its manifest;
    a token asked for the refused names only carries no access and opens nothing (401)."""
    registry, images, _, _ = stack
    challenge = registry.session.get(registry.base + "/v2/team/web/manifests/latest", timeout=30)
    realm = re.search(r'realm="([^"]*)"', challenge.headers["WWW-Authenticate"])[1]
    path = "/v2/team/web/manifests/latest"
    accept = {"Accept": oci.MEDIA_TYPE_MANIFEST}
    for role in ("admin", "dev"):
        hostile = [f"repository:{name}:pull,push,delete" for name in HOSTILE_NAMES]
        reply = registry.session.get(realm, params={"service": SERVICE, "scope": hostile + ["repository:team/web:pull"]},
                                     auth=credentials(role), timeout=30)
        assert reply.status_code == 200, reply.text
        token = reply.json()["token"]
        assert jwt.decode(token, options={"verify_signature": False})["access"] == [
            {"type": "repository", "name": "team/web", "actions": ["pull"]}]
        good = registry.bearer(token, "GET", path, headers=accept)
        assert good.status_code == 200 and good.content == images["team/web"]["manifest_bytes"]
        empty = registry.session.get(realm, params={"service": SERVICE, "scope": hostile}, auth=credentials(role),
                                     timeout=30).json()["token"]
        assert jwt.decode(empty, options={"verify_signature": False})["access"] == []
        assert registry.bearer(empty, "GET", path, headers=accept).status_code == 401


def test_maintenance_client_fetches_scoped_tokens(stack):
    """The maintenance providers' RegistryClient works in token mode: it follows the bearer
    challenge, fetches one token per repository and action, lists, resolves and deletes within
    the user's rights, and is refused (401 -> auth error) beyond them."""
    from components.registry_api import RegistryAuthError, RegistryClient
    from components.registry_auth import RegistryAuth, RegistryTokenError

    registry, images, _, service = stack
    token_origin = service.url.rsplit("/", 1)[0]

    def client(user: str) -> RegistryClient:
        c = RegistryClient(registry.base, username=user, password=PASSWORDS[user], ca_pem=None)
        c.session.auth = RegistryAuth(user, PASSWORDS[user], registry.base, realm_origins=(token_origin,))
        return c

    with client("node") as node:
        assert "latest" in node.tags("prod/api")
        for _ in range(3):
            assert node.resolve("prod/api", "latest") == images["prod/api"]["manifest"]
        assert node.session.auth.tokens_fetched == 1  # tags list and manifests share the pull scope
        with pytest.raises(RegistryAuthError):
            node.delete("prod/api", images["prod/api"]["manifest"])
    with client("admin") as admin:
        assert sorted(admin.catalog()) == sorted(REPOS)
        assert admin.resolve("ci/app", "latest") == images["ci/app"]["manifest"]
    plain = RegistryClient(registry.base, username="node", password=PASSWORDS["node"], ca_pem=None)
    try:
        with pytest.raises(Exception, match="not on its own origin"):
            plain.tags("prod/api")
    finally:
        plain.close()
    wrong = RegistryClient(registry.base, username="node", password="not-the-password-x", ca_pem=None)
    wrong.session.auth = RegistryAuth("node", "not-the-password-x", registry.base, realm_origins=(token_origin,))
    try:
        with pytest.raises(Exception) as info:
            wrong.tags("prod/api")
        assert "HTTP 401" in str(info.value) and "not-the-password-x" not in str(info.value)
        assert isinstance(info.value.__cause__, RegistryTokenError) or "token service" in str(info.value)
    finally:
        wrong.close()
