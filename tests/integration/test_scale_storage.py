"""A single-host stack moved from its filesystem volume to S3 (real SeaweedFS) with the Redis cache.

One stack for the module: deployed as declared with ``storage: filesystem``, images pushed
(two images sharing a layer, a multi-arch index); the volume's tree copied into the bucket with
:mod:`components.migration`; the program run again with ``storage: s3`` and the Redis cache and
its containers replaced as ``pulumi up`` would; every digest verified through the registry. The
same stack then serves pushes and pulls from the bucket.
"""

from __future__ import annotations

import hashlib
import uuid

import docker
import pytest
import yaml

from components.migration import copy_volume_to_bucket, verify_registry
from components.render.registry_config import CONFIG_PATH
from tests.support import oci
from tests.support.deploy import STANDIN_REGISTRY, STANDINS, Deployment, free_port, upload_content, wait_https
from tests.support.objectstore import build_scale_standins, redis_standins, seaweedfs
from tests.support.program import run_program
from tests.support.scale_clients import RegistryUser

PASSWORD = "scale-password-0123456789"


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """(user, deployment, store, pushed digests, copy report, verify report) after the migration."""
    build_scale_standins()
    client = docker.from_env()
    tmp = tmp_path_factory.mktemp("scale")
    name = f"scale-{uuid.uuid4().hex[:8]}"
    port = free_port()
    base = {
        "httpsPort": port, "bindAddress": "127.0.0.1", "namePrefix": name,
        "volume": {"name": f"{name}-data"}, "users": {"alice": PASSWORD},
    }
    cert_dir = tmp / "certs"
    cert_dir.mkdir()
    network = client.networks.create(f"{name}-net", driver="bridge")
    deployment = None
    try:
        with seaweedfs(client, network.name, f"{name}-s3", host_port=free_port()) as store:
            state: dict = {}
            run = run_program(base, secret_keys=["users"], state=state)
            (cert_dir / "ca.crt").write_text(run.exports["caCertificatePem"])
            deployment = Deployment(run, client=client, standins={**STANDINS, **redis_standins()}).up()
            user = RegistryUser(run.exports["registryAddress"], "alice", PASSWORD, cert_dir, tmp)
            wait_https(f"https://{user.host}/healthz", str(cert_dir / "ca.crt"))

            layout = tmp / "layout"
            shared = oci.random_bytes(192 * 1024, seed="shared")
            pushed = {
                ("team/app", "1"): oci.write_image(layout, "1", [shared, 64 * 1024], seed="a1"),
                ("team/app", "2"): oci.write_image(layout, "2", [shared, 96 * 1024], seed="a2"),
                ("team/multi", "m"): oci.write_index(layout, "m", [("amd64", [shared, 32 * 1024]),
                                                                    ("arm64", [48 * 1024])], seed="m"),
            }
            for (repository, tag) in pushed:
                user.push(layout, tag, repository, multi=tag == "m")

            copied = copy_volume_to_bucket(client, f"{name}-data", STANDIN_REGISTRY, store.client(), store.bucket)
            # Same stack, now on S3 with the Redis cache: `pulumi up` replaces the containers.
            switched = run_program(
                {**base, "storage": store.settings(), "redis": {"enabled": True}},
                secret_keys=["users", "storage"], state=state,
            )
            deployment.replace(switched)
            wait_https(f"https://{user.host}/healthz", str(cert_dir / "ca.crt"))
            with user.client() as api:
                verified = verify_registry(api)
            yield user, deployment, store, pushed, copied, verified, layout
    finally:
        if deployment is not None:
            deployment.down(remove_volumes=True)
        network.remove()


def test_migration_copies_and_verifies_every_digest(migrated):
    """Every file of the volume's tree reaches the bucket (blobs hashed against their digests on
    the way), and after the switch every tag, manifest (index children too) and blob the
    filesystem held is served from S3 with matching digests."""
    user, deployment, store, pushed, copied, verified, layout = migrated
    assert copied.files == copied.copied > 0 and copied.blobs_verified >= 7
    keys = store.keys("docker/registry/v2/")
    assert sum(k.endswith("/data") and "/blobs/sha256/" in k for k in keys) == copied.blobs_verified
    assert verified.repositories == 2 and verified.tags == 3
    assert set(pushed.values()) <= verified.manifests
    # Every config and layer blob written into the pushed layout (all but the manifests).
    written = {f"sha256:{p.name}" for p in (layout / "blobs" / "sha256").iterdir()}
    assert {d for _, d in verified.blobs} == written - verified.manifests
    assert len(written - verified.manifests) == 9
    registry = deployment.container("registry-container")
    mounts = [v["containerPath"] for v in registry.plain_inputs["volumes"]]
    assert "/var/lib/registry" not in mounts, "the S3 registry must not mount the data volume"
    for (repository, tag), digest in pushed.items():
        with user.client() as api:
            assert api.resolve(repository, tag) == digest
        assert user.pull(repository, tag, check=False, multi=tag == "m").returncode == 0


def test_push_and_pull_on_s3_with_shared_redis_cache(migrated):
    """After the switch, a new image pushed through nginx lands in the bucket (every blob key
    there), pulls back with verified digests, and the blob descriptors are cached in the Redis
    container the program declared (keys exist; the registry's config names it)."""
    user, deployment, store, _, _, _, layout = migrated
    digest = oci.write_image(layout, "new", [oci.random_bytes(300 * 1024, seed="new")], seed="new")
    user.push(layout, "new", "team/fresh")
    with user.client() as api:
        manifest = api.manifest("team/fresh", "new")
    assert manifest.digest == digest
    keys = set(store.keys("docker/registry/v2/blobs/"))
    for layer in [manifest.document["config"], *manifest.document["layers"]]:
        hexdigest = layer["digest"].split(":")[1]
        assert f"docker/registry/v2/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data" in keys
    assert user.pull("team/fresh", "new", check=False).returncode == 0

    config = yaml.safe_load(upload_content(deployment.container("registry-container"), CONFIG_PATH))
    assert config["storage"]["cache"] == {"blobdescriptor": "redis"} and config["redis"]["addr"] == "redis:6379"
    redis = deployment.client.containers.get(deployment.container("redis-container").plain_inputs["name"])
    password = config["redis"]["password"]
    unauthenticated = redis.exec_run(["redis-cli", "keys", "*"])
    assert b"NOAUTH" in unauthenticated.output
    listed = redis.exec_run(["redis-cli", "--no-auth-warning", "keys", "*"], environment={"REDISCLI_AUTH": password})
    cached = listed.output.decode().split()
    assert f"blobs::{manifest.document['layers'][0]['digest']}" in cached, cached[:10]
    policy = redis.exec_run(["redis-cli", "--no-auth-warning", "config", "get", "maxmemory-policy"],
                            environment={"REDISCLI_AUTH": password})
    assert policy.output.decode().split() == ["maxmemory-policy", "allkeys-lru"]


def test_blobs_served_through_the_proxy_not_redirected(migrated):
    """With redirects off (the default), a blob GET through nginx answers 200 with the bytes
    themselves: clients never need to reach the object store. The registry's environment holds
    no AWS_CA_BUNDLE (the test process's does)."""
    user, deployment, _, pushed, _, _, _ = migrated
    with user.client() as api:
        manifest = api.manifest("team/app", "1")
        layer = manifest.document["layers"][0]["digest"]
        # The client's session answers the token challenge (token mode, the default) itself.
        response = api.session.get(
            f"https://{user.host}/v2/team/app/blobs/{layer}", verify=str(user.cert_dir / "ca.crt"),
            allow_redirects=False, timeout=30,
        )
    assert response.status_code == 200


    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == layer
    name = deployment.container("registry-container").plain_inputs["name"]
    env = deployment.client.containers.get(name).attrs["Config"]["Env"] or []
    assert not [e for e in env if e.startswith("AWS_")], env
