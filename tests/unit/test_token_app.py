"""The token service over HTTP (waitress on loopback): GET and OAuth2 POST flows, refresh
tokens bound to the password, refusals, and logs free of secrets."""

import logging
import re

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from tests.support.token import ISSUER, SERVICE, get_token, serve, token_files
from token_service.access import open_policy
from token_service.config import Config, ConfigError
from token_service.tokens import libtrust_key_id, load_signing_key

USERS = {"alice": "alice-password-0123", "bob": "bob-password-456789"}
POLICY = {
    "version": 1,
    "groups": {},
    "admins": ["alice"],
    "rules": [{"repositories": ["bob/**"], "push": ["bob"]}],
    "anonymous_pull": ["public/**"],
    "catalog": [],
}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    files = token_files(tmp_path_factory.mktemp("token"), USERS, POLICY)
    # These tests send many wrong passwords from one address: the throttle's own tests are in
    # test_token_throttle.py and tests/integration/test_token_throttle.py.
    running = serve(files, failure_burst=1000)
    yield files, running.url
    running.stop()


def claims_of(files, token):
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    return jwt.decode(token, cert.public_key(), algorithms=["ES256"], audience=SERVICE, issuer=ISSUER)


def post(url, **form):
    return requests.post(url, data={"service": SERVICE, "client_id": "test", **form}, timeout=30)


def test_get_token_claims(service):
    """GET with Basic credentials: an ES256 token naming the certificate's key by its libtrust id in
    ``kid`` (no ``x5c``), iss/aud/exp/nbf, granted access."""
    files, url = service
    reply = get_token(url, ["repository:bob/app:pull,push,delete", "repository:alice/x:pull"], auth=("bob", USERS["bob"]))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300 and "refresh_token" not in body
    header = jwt.get_unverified_header(body["token"])
    cert_key = x509.load_pem_x509_certificate(files.cert.read_bytes()).public_key()
    assert header["alg"] == "ES256" and header["kid"] == libtrust_key_id(cert_key) and "x5c" not in header
    claims = claims_of(files, body["token"])
    assert claims["sub"] == "bob" and claims["exp"] - claims["nbf"] == 300
    assert claims["access"] == [{"type": "repository", "name": "bob/app", "actions": ["pull", "push"]}]


def test_anonymous_and_bad_credentials(service):
    """No credentials: a token with anonymous rights only; wrong password or unknown user: 401."""
    files, url = service
    reply = get_token(url, ["repository:public/base:pull,push", "repository:bob/app:pull"], offline_token="true")
    assert reply.status_code == 200 and "refresh_token" not in reply.json()
    assert claims_of(files, reply.json()["token"])["access"] == [
        {"type": "repository", "name": "public/base", "actions": ["pull"]}]
    for auth in [("bob", "wrong-password-xyz"), ("nobody", USERS["bob"]), ("bob", "x" * 100)]:
        reply = get_token(url, ["repository:bob/app:pull"], auth=auth)
        assert reply.status_code == 401 and reply.headers["WWW-Authenticate"].startswith("Basic")
    bad_header = requests.get(url, params={"service": SERVICE}, headers={"Authorization": "Basic !!!"}, timeout=10)
    assert bad_header.status_code == 401


# Names the token service once signed for (issue 21), each beside a name it must still grant.
HOSTILE_NAMES = ["victim/../secret/app", "bob/", "bob/app:latest", "bob//app", "bob/./app", "Bob/app",
                 "localhost:5000/bob/app", "bob/app@sha256:" + "a" * 64]


def test_names_outside_the_grammar_are_left_out_of_the_token(service):
    """GET and POST (password and refresh grants) asking for names the registry's grammar
    refuses, as the admin who holds every right: 200 with a token whose access (and the POST
    answer's ``scope``) holds only the well-formed scope of the same request, never a 4xx for
    the whole request and never a hostile name."""
    files, url = service
    scopes = [f"repository:{name}:pull,push" for name in HOSTILE_NAMES] + ["repository:bob/app:pull"]
    wanted = [{"type": "repository", "name": "bob/app", "actions": ["pull"]}]
    reply = get_token(url, scopes, auth=("alice", USERS["alice"]), offline_token="true")
    assert reply.status_code == 200, reply.text
    assert claims_of(files, reply.json()["token"])["access"] == wanted
    password = post(url, grant_type="password", username="alice", password=USERS["alice"], scope=" ".join(scopes))
    refresh = post(url, grant_type="refresh_token", refresh_token=reply.json()["refresh_token"], scope=" ".join(scopes))
    for answer in (password, refresh):
        assert answer.status_code == 200, answer.text
        assert answer.json()["scope"] == "repository:bob/app:pull"
        assert claims_of(files, answer.json()["access_token"])["access"] == wanted
    for name in HOSTILE_NAMES:
        alone = get_token(url, [f"repository:{name}:pull"], auth=("alice", USERS["alice"]))
        assert alone.status_code == 200 and claims_of(files, alone.json()["token"])["access"] == [], name


def test_a_user_named_like_a_group_gets_no_group_rights(tmp_path):
    """A user literally named '@ops' in the htpasswd file (the program refuses such a name at
    preview; this one arrives anyway) logs in, but its tokens carry only the anonymous pull,
    never group ops's admin rights or the catalog, while ops's member alice gets them."""
    users = {"alice": USERS["alice"], "@ops": "group-like-password-0001"}
    policy = {"version": 1, "groups": {"ops": ["alice"]}, "admins": ["@ops"], "rules": [],
              "anonymous_pull": ["public/**"], "catalog": ["@ops"]}
    files = token_files(tmp_path, users, policy)
    running = serve(files)
    try:
        scopes = ["repository:prod/app:pull,push,delete", "registry:catalog:*", "repository:public/base:pull"]
        impostor = get_token(running.url, scopes, auth=("@ops", users["@ops"]))
        assert impostor.status_code == 200, impostor.text
        assert claims_of(files, impostor.json()["token"])["access"] == [
            {"type": "repository", "name": "public/base", "actions": ["pull"]}]
        member = get_token(running.url, scopes, auth=("alice", users["alice"]))
        assert len(claims_of(files, member.json()["token"])["access"]) == 3
    finally:
        running.stop()


def test_a_logged_in_user_pulls_the_anonymous_globs(service):
    """bob, logged in, with no rule for public/**, gets the anonymous pull there on every flow
    a client uses after docker login (GET with Basic credentials, POST password grant, POST
    refresh-token grant): the same pull an anonymous client gets, never push."""
    files, url = service
    scope = "repository:public/base:pull,push"
    wanted = [{"type": "repository", "name": "public/base", "actions": ["pull"]}]
    basic = get_token(url, [scope], auth=("bob", USERS["bob"]), offline_token="true")
    assert claims_of(files, basic.json()["token"])["access"] == wanted
    password = post(url, grant_type="password", username="bob", password=USERS["bob"], scope=scope)
    refresh = post(url, grant_type="refresh_token", refresh_token=basic.json()["refresh_token"], scope=scope)
    for answer in (password, refresh):
        assert answer.status_code == 200 and answer.json()["scope"] == "repository:public/base:pull"
        assert claims_of(files, answer.json()["access_token"])["access"] == wanted
    anonymous = get_token(url, [scope])
    assert claims_of(files, anonymous.json()["token"])["access"] == wanted


def test_wrong_service_and_account(service):
    """Another service, or an account other than the user, is refused with 400."""
    _, url = service
    assert requests.get(url, params={"service": "other"}, timeout=10).status_code == 400
    assert get_token(url, [], auth=("bob", USERS["bob"]), account="alice").status_code == 400
    assert post(url, grant_type="password", username="bob", password=USERS["bob"], service="other").status_code == 400


def test_oauth_password_and_refresh(service):
    """POST password grant with access_type=offline gives a refresh token; the refresh grant then
    issues scoped tokens without the password and returns the same refresh token."""
    files, url = service
    reply = post(url, grant_type="password", username="bob", password=USERS["bob"], access_type="offline",
                 scope="repository:bob/app:push")
    assert reply.status_code == 200, reply.text
    refresh = reply.json()["refresh_token"]
    assert reply.json()["scope"] == "repository:bob/app:push"
    again = post(url, grant_type="refresh_token", refresh_token=refresh, scope="repository:bob/app:pull,push")
    assert again.status_code == 200 and again.json()["refresh_token"] == refresh
    assert claims_of(files, again.json()["access_token"])["access"][0]["actions"] == ["pull", "push"]
    assert post(url, grant_type="refresh_token", refresh_token=refresh, username="alice").status_code == 400
    assert post(url, grant_type="password", username="bob", password="nope-nope-nope").json() == {"error": "invalid_grant"}
    assert post(url, grant_type="client_credentials").json() == {"error": "unsupported_grant_type"}
    no_client = requests.post(url, data={"service": SERVICE, "grant_type": "password"}, timeout=10)
    assert no_client.status_code == 400


def test_get_offline_token_is_a_refresh_token(service):
    """GET with offline_token=true (docker login's fallback) gives a refresh token the POST flow accepts;
    the registry would refuse it as an access token (its audience is not the service)."""
    files, url = service
    reply = get_token(url, [], auth=("alice", USERS["alice"]), offline_token="true", client_id="docker")
    refresh = reply.json()["refresh_token"]
    with pytest.raises(jwt.InvalidAudienceError):
        claims_of(files, refresh)
    assert post(url, grant_type="refresh_token", refresh_token=refresh).status_code == 200


def test_refresh_token_dies_with_the_password(tmp_path):
    """A changed password (new htpasswd line) or a removed user invalidates the user's refresh tokens."""
    files = token_files(tmp_path, USERS, open_policy())
    running = serve(files)
    try:
        refresh = get_token(running.url, [], auth=("bob", USERS["bob"]), offline_token="true").json()["refresh_token"]
        assert post(running.url, grant_type="refresh_token", refresh_token=refresh).status_code == 200
        files.write_users({**USERS, "bob": "a-new-password-for-bob"})
        assert post(running.url, grant_type="refresh_token", refresh_token=refresh).status_code == 400
        assert get_token(running.url, [], auth=("bob", USERS["bob"])).status_code == 401
        assert get_token(running.url, [], auth=("bob", "a-new-password-for-bob")).status_code == 200
        files.write_users({"alice": USERS["alice"]})
        assert get_token(running.url, [], auth=("bob", "a-new-password-for-bob")).status_code == 401
    finally:
        running.stop()


def test_policy_reload_and_health(tmp_path):
    """A rewritten policy applies to the next request; /healthz is 200, 503 once the key is gone."""
    files = token_files(tmp_path, USERS, open_policy())
    running = serve(files)
    try:
        scope = ["repository:x/y:pull,push,delete"]
        assert len(get_token(running.url, scope, auth=("bob", USERS["bob"])).json()["token"]) > 0
        files.write_policy(POLICY)
        token = get_token(running.url, scope, auth=("bob", USERS["bob"])).json()["token"]
        assert claims_of(files, token)["access"] == []
        health = running.url.replace("/token", "/healthz")
        assert requests.get(health, timeout=10).status_code == 200
        files.key.unlink()
        fresh = serve(files)
        try:
            assert requests.get(fresh.url.replace("/token", "/healthz"), timeout=10).status_code == 503
        finally:
            fresh.stop()
        assert requests.put(running.url, timeout=10).status_code == 405
        assert requests.get(running.url.replace("/token", "/other"), timeout=10).status_code == 404
    finally:
        running.stop()


def test_logs_hold_no_secrets(service, caplog):
    """Log lines name users and outcomes, never a password, an access token or a refresh token."""
    _, url = service
    with caplog.at_level(logging.INFO, logger="token_service"):
        ok = get_token(url, ["repository:bob/app:pull"], auth=("bob", USERS["bob"]), offline_token="true").json()
        get_token(url, [], auth=("bob", "wrong-password-here"))
        post(url, grant_type="refresh_token", refresh_token=ok["refresh_token"])
    text = caplog.text
    assert "GET /token: 200 for bob" in text and "401 for bob" in text
    for secret in (USERS["bob"], "wrong-password-here", ok["token"], ok["refresh_token"], ok["token"][-20:]):
        assert secret not in text


def test_rsa_key_signs_rs256(tmp_path):
    """An RSA signing key gives RS256 tokens; a certificate of another key is refused."""
    files = token_files(tmp_path, USERS, open_policy(), kind="rsa")
    signing = load_signing_key(files.key.read_bytes(), files.cert.read_bytes())
    assert signing.algorithm == "RS256"
    other = token_files(tmp_path / "other", USERS, open_policy())
    with pytest.raises(ValueError, match="does not belong"):
        load_signing_key(files.key.read_bytes(), other.cert.read_bytes())


# An EC P-256 public key and its key id as computed by docker/libtrust's keyIDEncode over Go's
# x509.MarshalPKIXPublicKey and SHA-256 (util.go's code, run with go1.19.8 on this machine).
KNOWN_EC_PUBLIC_KEY = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE+evkZBR8wQLZIyTQmdknwaUOQtV6
CKEW/+wKKYGdjGVwuvfRKIiQKmoMHWet0QMSPIWatpv46UMck4STDUt+7g==
-----END PUBLIC KEY-----
"""
KNOWN_EC_KEY_ID = "2OKJ:BENR:PAE6:HQEQ:5NYM:GWJL:FTRA:ED5Y:WUEB:ZGJC:AVS2:P2YZ"


def test_libtrust_key_id_matches_libtrust():
    """The ``kid`` of a key is libtrust's key id: a value computed by libtrust's code is reproduced;
    twelve groups of four base32 characters; another key has another id."""
    assert libtrust_key_id(load_pem_public_key(KNOWN_EC_PUBLIC_KEY)) == KNOWN_EC_KEY_ID
    other = libtrust_key_id(ec.generate_private_key(ec.SECP256R1()).public_key())
    assert other != KNOWN_EC_KEY_ID and re.fullmatch(r"[A-Z2-7]{4}(?::[A-Z2-7]{4}){11}", other)


def test_config_from_env():
    """Configuration comes from the environment; missing or out-of-range values name the variable."""
    config = Config.from_env({"TOKEN_ISSUER": "i", "TOKEN_SERVICE": "s", "TOKEN_TTL": "120", "TOKEN_LISTEN": "[::]:5002"})
    assert (config.ttl, config.host, config.port) == (120, "[::]", 5002)
    for env, name in [({"TOKEN_SERVICE": "s"}, "TOKEN_ISSUER"),
                      ({"TOKEN_ISSUER": "i", "TOKEN_SERVICE": "s", "TOKEN_TTL": "5"}, "TOKEN_TTL"),
                      ({"TOKEN_ISSUER": "i", "TOKEN_SERVICE": "s", "TOKEN_LISTEN": "x"}, "TOKEN_LISTEN")]:
        with pytest.raises(ConfigError, match=name):
            Config.from_env(env)
