"""Swarm mode as the program declares it (under the engine-like mocks)."""

from __future__ import annotations

import base64

import yaml

from components.swarm import NGINX_SYSCTLS, content_name
from components.swarm_gc import SwarmGarbageCollectionProvider, _summary
from tests.support.program import run_program

S3 = {"driver": "s3", "s3": {"bucket": "images", "endpoint": "http://s3:8333", "pathStyle": True,
                             "accessKey": "AKID0123", "secretKey": "Secret0123"}}
CONFIG = {"swarm": {"enabled": True, "replicas": 3}, "storage": S3, "httpsPort": 8443, "auth": {"mode": "basic"},
          "maintenance": {"deletions": [{"repository": "team/app", "tags": ["old"]}]}}


def run(config=CONFIG):
    return run_program(config, secret_keys=["storage"])


def services(r) -> dict:
    return {x.name.rsplit("-", 1)[1]: x.plain_inputs for x in r.monitor.by_type("docker:index/service:Service")}


def secrets(r) -> dict:
    return {x.name: x.plain_inputs for x in r.monitor.by_type("docker:index/secret:Secret")}


def test_services_replicas_updates_and_ports():
    """Registry: 3 replicas, start-first rolling updates with rollback, DNS round robin, the
    alias nginx uses, the Go runtime environment (GOGC=400, distribution 3's tracing off), serving
    the config's own path (registry:3's default command reads another file); nginx: global, the HTTPS port in host mode, stop-first (the port is the
    node's), keepalive sysctls; Redis: one replica; no plain containers, an attachable overlay."""
    r = run()
    s = services(r)
    registry, proxy, redis = s["registry"], s["proxy"], s["redis"]
    assert registry["mode"]["replicated"]["replicas"] == 3
    assert registry["updateConfig"]["order"] == "start-first" and registry["updateConfig"]["failureAction"] == "rollback"
    assert registry["endpointSpec"]["mode"] == "dnsrr"
    assert registry["taskSpec"]["networksAdvanceds"][0]["aliases"] == ["registry"]
    assert registry["taskSpec"]["containerSpec"]["env"]["GOGC"] == "400"
    assert registry["taskSpec"]["containerSpec"]["env"]["OTEL_TRACES_EXPORTER"] == "none"
    assert registry["taskSpec"]["containerSpec"]["commands"] == ["/bin/registry", "serve", "/etc/docker/registry/config.yml"]
    assert proxy["mode"]["global"] is True and proxy["updateConfig"]["order"] == "stop-first"
    assert proxy["endpointSpec"]["ports"] == [
        {"targetPort": 443, "publishedPort": 8443, "publishMode": "host", "protocol": "tcp"}]
    assert proxy["taskSpec"]["containerSpec"]["sysctl"] == NGINX_SYSCTLS
    assert redis["mode"]["replicated"]["replicas"] == 1
    assert not r.monitor.by_type("docker:index/container:Container")
    network = r.monitor.one("docker:index/network:Network").plain_inputs
    assert network["driver"] == "overlay" and network["attachable"] is True


def test_files_travel_as_secrets_and_configs():
    """The registry config (http.secret, S3 keys, Redis password), its read-only twin, Redis's
    config, TLS key, certificate and htpasswd are Swarm secrets; nginx.conf is a Swarm config;
    each is named after its content; no secret value is in the engine's state in plain text."""
    r = run()
    declared = secrets(r)
    by_role = {name.split("swarm-", 1)[1]: inputs for name, inputs in declared.items()}
    assert set(by_role) == {"registry-config", "registry-config-readonly", "redis-config", "redis-auth",
                            "tls-cert", "tls-key", "htpasswd"}
    config = yaml.safe_load(base64.b64decode(by_role["registry-config"]["data"]))
    readonly = yaml.safe_load(base64.b64decode(by_role["registry-config-readonly"]["data"]))
    assert config["storage"]["maintenance"]["readonly"]["enabled"] is False
    assert readonly["storage"]["maintenance"]["readonly"]["enabled"] is True
    assert config["http"]["secret"] == readonly["http"]["secret"] and config["storage"]["cache"] == {
        "blobdescriptor": "redis"}
    for role, inputs in by_role.items():
        assert inputs["name"] == content_name("registry-dev", role, base64.b64decode(inputs["data"]).decode())
    configs = [x.plain_inputs for x in r.monitor.by_type("docker:index/serviceConfig:ServiceConfig")]
    assert len(configs) == 1 and "proxy_socket_keepalive on;" in base64.b64decode(configs[0]["data"]).decode()
    state = r.monitor.state_text()
    for secret in ("Secret0123", "AKID0123", config["http"]["secret"], config["redis"]["password"]):
        assert secret not in state


def test_content_names_change_with_content():
    """A changed content is a new Swarm object (they are immutable); the same content, the same name."""
    assert content_name("p", "x", "a") == content_name("p", "x", "a") != content_name("p", "x", "b")


def test_garbage_collection_across_replicas_declared():
    """With maintenance in Swarm mode: the deletions as on one host, and SwarmGarbageCollection
    (not the single-host one) with the service, both config secrets and the Redis flush target."""
    r = run()
    assert not r.monitor.by_type("pulumi-python:dynamic/registry:GarbageCollection")
    gc = r.monitor.one("pulumi-python:dynamic/registry:SwarmGarbageCollection").plain_inputs
    assert gc["serviceName"] == "registry-dev-registry" and gc["mode"] == "readonly"
    assert gc["writableConfigSecret"].startswith("registry-dev-registry-config-")
    assert gc["readonlyConfigSecret"].startswith("registry-dev-registry-config-readonly-")
    assert gc["redisHost"] == "redis" and gc["redisAuthSecret"].startswith("registry-dev-redis-auth-")
    assert r.monitor.by_type("pulumi-python:dynamic/registry:ImageDeletion")


def test_gc_provider_diff_and_summary():
    """Only a new trigger or mode collects again; the figures come from distribution's summary."""
    provider = SwarmGarbageCollectionProvider()
    olds = {"trigger": "a", "mode": "readonly", "serviceName": "s", "dockerHost": "unix:///x", "blobsEligible": 3}
    assert provider.diff("id", olds, {**olds, "blobsEligible": None}).changes is False
    assert provider.diff("id", olds, {**olds, "trigger": "b"}).changes is True
    assert provider.diff("id", olds, {**olds, "serviceName": "t"}).replaces == ["serviceName"]
    assert _summary("12 blobs marked, 3 blobs and 1 manifests eligible for deletion") == {
        "blobsMarked": 12, "blobsEligible": 3, "manifestsEligible": 1}


TOKEN = {**CONFIG, "auth": {"admins": ["admin"], "rules": [{"repositories": ["**"], "pull": ["reader"]}]},
         "users": {"admin": "admin-password-0123456789", "reader": "reader-password-0123456789"}}


def run_token(config=TOKEN, state=None):
    return run_program(config, secret_keys=["storage", "users"], state=state)


def test_token_mode_declares_the_token_service_on_a_manager():
    """Token mode (the default) in Swarm: the token service is one replicated task placed on a
    manager (the image is built on the manager's engine), image = the built image's id, start-first
    updates rolled back on failure, DNS round robin under the alias nginx uses; issuer and
    audience in its environment; the signing key and htpasswd are secrets only its user (65534)
    reads, the signing certificate and policy are configs; the registry (distribution 3) trusts
    the key from a JWKS config of that certificate, under the key id the tokens carry."""
    from components.render import token_service as ts
    from components.swarm import TOKEN_PLACEMENT

    r = run_token()
    token = services(r)["token"]
    image = r.monitor.one("docker:index/remoteImage:RemoteImage")
    assert image.plain_inputs["build"]["context"] == ts.CONTEXT
    assert image.plain_inputs["name"].startswith("registry-dev-token-service:")
    assert image.provider == services_resource(r, "token").provider
    spec = token["taskSpec"]
    c = spec["containerSpec"]
    assert token["mode"]["replicated"]["replicas"] == 1 and spec["placement"]["constraints"] == TOKEN_PLACEMENT
    assert TOKEN_PLACEMENT == ["node.role == manager"]
    assert c["image"] == image.plain_outputs["imageId"]
    assert token["updateConfig"]["order"] == "start-first" and token["updateConfig"]["failureAction"] == "rollback"
    assert token["endpointSpec"]["mode"] == "dnsrr" and spec["networksAdvanceds"][0]["aliases"] == [ts.TOKEN_ALIAS]
    assert c["env"]["TOKEN_SERVICE"] == "localhost:8443" and c["env"]["TOKEN_ISSUER"] == "registry-dev-token-service"
    assert c["env"]["TOKEN_FAILURES_PER_MINUTE"] == "12" and c["env"]["TOKEN_FAILURE_BURST"] == "3"
    assert c["healthcheck"]["tests"][0] == "CMD"
    assert {(s["fileName"], s["fileUid"], s["fileMode"]) for s in c["secrets"]} == {
        (ts.KEY_PATH, "65534", 0o400), (ts.HTPASSWD_PATH, "65534", 0o400)}
    cert = next(x for x in c["configs"] if x["fileName"] == ts.CERT_PATH)
    registry_configs = services(r)["registry"]["taskSpec"]["containerSpec"]["configs"]
    policy = next(x for x in c["configs"] if x["fileName"] == ts.POLICY_PATH)
    configs = r.monitor.by_type("docker:index/serviceConfig:ServiceConfig")
    texts = {x.name: base64.b64decode(x.plain_inputs["data"]).decode() for x in configs}
    jwks = next(x for x in configs if x.name == "registry-swarm-token-jwks")
    assert [(x["fileName"], x["configName"]) for x in registry_configs] == [
        (ts.REGISTRY_JWKS_PATH, jwks.plain_inputs["name"])]
    assert cert["configName"] == next(x for x in configs if x.name == "registry-swarm-token-cert").plain_inputs["name"]
    assert "-----BEGIN CERTIFICATE-----" in texts["registry-swarm-token-cert"]
    assert texts["registry-swarm-token-jwks"] == ts.render_jwks(texts["registry-swarm-token-cert"])
    assert '"reader"' in texts["registry-swarm-token-policy"] and policy["configName"].startswith(
        "registry-dev-token-policy-")


def services_resource(r, role: str):
    return next(x for x in r.monitor.by_type("docker:index/service:Service") if x.name.endswith(f"-{role}"))


def test_token_mode_registry_configs_and_nginx():
    """The registry config and its read-only twin (used during garbage collection) both carry
    auth.token (realm on the stack's address, the signer's issuer, the bundle path), so the
    replicas check tokens in both; nginx serves /token from the service's alias through Docker's
    DNS with the configured rate limit, does no basic auth and holds no htpasswd; nginx waits
    for the token service; the signing key is in no state in plain text."""
    from components.render import token_service as ts

    r = run_token({**TOKEN, "auth": {**TOKEN["auth"], "rateLimitPerSecond": 7, "rateLimitBurst": 9}})
    by_role = {name.split("swarm-", 1)[1]: inputs for name, inputs in secrets(r).items()}
    assert set(by_role) == {"registry-config", "registry-config-readonly", "redis-config", "redis-auth",
                            "tls-cert", "tls-key", "token-key", "token-htpasswd"}
    for role in ("registry-config", "registry-config-readonly"):
        config = yaml.safe_load(base64.b64decode(by_role[role]["data"]))
        assert config["auth"] == ts.registry_token_auth(address="localhost:8443", prefix="registry-dev", registry_version=3)
        assert config["auth"]["token"]["realm"] == "https://localhost:8443/token"
    conf = base64.b64decode(next(x.plain_inputs["data"] for x in r.monitor.by_type(
        "docker:index/serviceConfig:ServiceConfig") if x.name.endswith("nginx-conf"))).decode()
    assert "location = /token" in conf and f"set $token_service {ts.TOKEN_ALIAS}:{ts.TOKEN_PORT};" in conf
    assert "rate=7r/s" in conf and "burst=9 nodelay" in conf and "auth_basic_user_file" not in conf
    proxy = services(r)["proxy"]["taskSpec"]["containerSpec"]
    assert not any(s["fileName"].endswith("htpasswd") for s in proxy["secrets"])
    assert services_resource(r, "token").urn in services_resource(r, "proxy").dependencies
    key = base64.b64decode(by_role["token-key"]["data"]).decode()
    assert "PRIVATE KEY" in key and key.strip().splitlines()[1] not in r.monitor.state_text()


def test_token_mode_changes_roll_only_what_they_touch():
    """Content names: a changed password is a new htpasswd secret of the token service (the
    registry config stays); a changed rule a new policy config; the same settings again change
    nothing."""
    state: dict = {}

    def names(r) -> dict:
        found = {x.name: x.plain_inputs["name"] for x in r.monitor.by_type("docker:index/secret:Secret")}
        found.update({x.name: x.plain_inputs["name"] for x in r.monitor.by_type(
            "docker:index/serviceConfig:ServiceConfig")})
        return found

    first = names(run_token(state=state))
    assert names(run_token(state=state)) == first
    password = names(run_token({**TOKEN, "users": {**TOKEN["users"], "reader": "another-password-0123456"}},
                               state=state))
    changed = {k for k in first if first[k] != password[k]}
    assert changed == {"registry-swarm-token-htpasswd"}
    pushers = {**TOKEN["auth"], "rules": [{"repositories": ["**"], "push": ["reader"]}]}
    rules = names(run_token({**TOKEN, "auth": pushers}, state=state))
    assert {k for k in first if first[k] != rules[k]} == {"registry-swarm-token-policy"}


def test_basic_mode_declares_no_token_service():
    """auth.mode basic in Swarm: no token service, image or signer; nginx keeps the htpasswd."""
    r = run()
    assert "token" not in services(r) and not r.monitor.by_type("docker:index/remoteImage:RemoteImage")
    assert [x.name for x in r.monitor.by_type("tls:index/selfSignedCert:SelfSignedCert")] == ["registry-ca-cert"]
    proxy = services(r)["proxy"]["taskSpec"]["containerSpec"]
    assert any(s["fileName"] == "/etc/nginx/htpasswd" for s in proxy["secrets"])
