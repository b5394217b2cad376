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
    alias nginx uses; nginx: global, the HTTPS port in host mode, stop-first (the port is the
    node's), keepalive sysctls; Redis: one replica; no plain containers, an attachable overlay."""
    r = run()
    s = services(r)
    registry, proxy, redis = s["registry"], s["proxy"], s["redis"]
    assert registry["mode"]["replicated"]["replicas"] == 3
    assert registry["updateConfig"]["order"] == "start-first" and registry["updateConfig"]["failureAction"] == "rollback"
    assert registry["endpointSpec"]["mode"] == "dnsrr"
    assert registry["taskSpec"]["networksAdvanceds"][0]["aliases"] == ["registry"]
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
