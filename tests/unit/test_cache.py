"""The program with object storage and the Redis cache: what it declares."""

from __future__ import annotations

import yaml

from components.render.registry_config import CONFIG_PATH
from components.render.storage import S3_CA_ENV, S3_CA_PATH
from tests.support.deploy import upload_content
from tests.support.program import run_program



def _ca_pem() -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    import datetime

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "s3 ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


S3 = {"driver": "s3", "s3": {"bucket": "images", "endpoint": "http://s3:8333", "pathStyle": True,
                             "accessKey": "AKID0123", "secretKey": "Secret0123"}}


def containers(run) -> dict:
    return {r.name: r for r in run.monitor.by_type("docker:index/container:Container")}


def test_default_stack_has_no_redis_and_mounts_the_volume():
    """Today's single host: no Redis container, the volume mounted, the in-memory cache."""
    run = run_program({})
    declared = containers(run)
    assert not [n for n in declared if "redis" in n]
    registry = declared["registry-registry-container"]
    assert "/var/lib/registry" in [v["containerPath"] for v in registry.plain_inputs["volumes"]]
    config = yaml.safe_load(upload_content(registry, CONFIG_PATH))
    assert config["storage"]["cache"] == {"blobdescriptor": "inmemory"} and "redis" not in config


def test_s3_and_own_redis_declared_and_secret():
    """storage s3 + redis: the registry's config (a secret) names the bucket and the Redis
    container's password; the Redis container carries the same password in its config; the
    registry mounts no data volume (its socket's only); neither key appears in the engine's state in plain text."""
    run = run_program({"storage": S3, "redis": {"enabled": True}}, secret_keys=["storage"])
    declared = containers(run)
    registry, redis = declared["registry-registry-container"], declared["registry-redis-container"]
    config = yaml.safe_load(upload_content(registry, CONFIG_PATH))
    assert config["storage"]["s3"]["bucket"] == "images" and config["storage"]["cache"]["blobdescriptor"] == "redis"
    password = config["redis"]["password"]
    assert f'requirepass "{password}"' in upload_content(redis, "/usr/local/etc/redis/redis.conf")
    assert [v["containerPath"] for v in registry.plain_inputs["volumes"]] == ["/run/registry-socket"]
    assert redis.plain_inputs["command"] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    state = run.monitor.state_text()
    for secret in ("Secret0123", "AKID0123", password):
        assert secret not in state


def test_s3_endpoint_ca_goes_in_by_file_and_ssl_cert_dir():
    """A CA for an https endpoint is uploaded next to the config and trusted through
    SSL_CERT_DIR; no AWS_* variable is ever set on the registry."""
    ca = _ca_pem()
    s3 = {"driver": "s3", "s3": {**S3["s3"], "endpoint": "https://s3:8333", "caCertificatePem": ca}}
    run = run_program({"storage": s3}, secret_keys=["storage"])
    registry = containers(run)["registry-registry-container"]
    assert upload_content(registry, S3_CA_PATH) == ca
    assert registry.plain_inputs["envs"] == ["GOGC=400", "OTEL_TRACES_EXPORTER=none", S3_CA_ENV]
    assert not [e for e in registry.plain_inputs["envs"] if e.startswith("AWS_")]


def test_external_redis_no_container():
    """An external Redis: its address and password in the config, no Redis container declared."""
    run = run_program({"redis": {"address": "cache.internal:6380", "password": "ext-pass-0123"}}, secret_keys=["redis"])
    declared = containers(run)
    assert not [n for n in declared if "redis-container" in n]
    config = yaml.safe_load(upload_content(declared["registry-registry-container"], CONFIG_PATH))
    assert config["redis"]["addrs"] == ["cache.internal:6380"] and config["redis"]["password"] == "ext-pass-0123"
