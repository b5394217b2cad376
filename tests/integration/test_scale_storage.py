"""A single-host stack moved from its filesystem volume to S3 (real SeaweedFS over TLS from a
private CA) with the Redis cache, then collected and shown to refuse the endpoint without the CA.

One stack for the module: deployed as declared with ``storage: filesystem``, images pushed
(two images sharing a layer, a multi-arch index); the volume's tree copied into the bucket with
:mod:`components.migration`; the program run again with ``storage: s3`` (an ``https`` endpoint
whose certificate a test CA signs, that CA as ``storage.s3.caCertificatePem``) and the Redis
cache, its containers replaced as ``pulumi up`` would; every digest verified through the
registry. The same stack then serves pushes and pulls from the bucket; then, without Redis (one
host's collection does not flush it), deletions and garbage collection in ``readonly`` and
``stop`` modes; last, the program run without the CA.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import yaml

from components.maintenance import GarbageCollectionProvider, ImageDeletionProvider
from components.migration import copy_volume_to_bucket, verify_registry
from components.render.registry_config import CONFIG_PATH
from components.render.storage import S3_CA_ENV, S3_CA_PATH
from tests.support import oci
from tests.support.background import repeating
from tests.support.certs import server_pki
from tests.support.deploy import STANDIN_REGISTRY, STANDINS, Deployment, free_port, upload_content, wait_https
from tests.support.objectstore import build_scale_standins, redis_standins, seaweedfs
from tests.support.program import REGISTRY_VERSION, run_program
from tests.support.scale_clients import RegistryUser
from tests.support.waiting import wait_for

PASSWORD = "scale-password-0123456789"
BLOBS = "docker/registry/v2/blobs/"
PROGRAM_SECRETS = ["users", "storage"]


@dataclass
class Migrated:
    user: RegistryUser
    deployment: Deployment
    store: object  # tests.support.objectstore.ObjectStore
    pushed: dict
    copied: object
    verified: object
    layout: Path
    base: dict  # the program's settings but storage and Redis
    state: dict  # the stack's state across program runs

    def __iter__(self):
        return iter((self.user, self.deployment, self.store, self.pushed, self.copied, self.verified, self.layout))


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """The stack after the migration (user, deployment, store, pushed digests, copy report,
    verify report, layout), its settings and state."""
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
        pki = server_pki(names=("s3",), ips=("127.0.0.1",))
        with seaweedfs(client, network.name, f"{name}-s3", host_port=free_port(), tls=pki, ca_dir=tmp) as store:
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
            yield Migrated(user, deployment, store, pushed, copied, verified, layout, base, state)
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
    assert config["storage"]["cache"] == {"blobdescriptor": "redis"}
    # Distribution 3 takes a list of addresses (and ignores 2.8's addr).
    assert (config["redis"]["addrs"] if REGISTRY_VERSION == 3 else [config["redis"]["addr"]]) == ["redis:6379"]
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


def test_the_registry_reaches_the_tls_endpoint_through_the_given_ca(migrated):
    """The bucket is behind https with a certificate a private CA signs: the registry container
    gets that CA at the CA path and SSL_CERT_DIR naming its folder (which is how the pushes and
    pulls above reached the bucket); its config keeps `secure: true` and has no `skipverify`."""
    registry = migrated.deployment.container("registry-container")
    assert migrated.store.internal_endpoint.startswith("https://")
    assert upload_content(registry, S3_CA_PATH) == migrated.store.ca_pem
    assert S3_CA_ENV in registry.plain_inputs["envs"]
    s3 = yaml.safe_load(upload_content(registry, CONFIG_PATH))["storage"]["s3"]
    assert s3["secure"] is True and s3["regionendpoint"] == migrated.store.internal_endpoint
    assert "skipverify" not in s3


def _blob_keys(api, repository: str, tag: str) -> set[str]:
    """Keys of the manifest, config and layers of ``repository:tag`` in the bucket."""
    manifest = api.manifest(repository, tag)
    digests = [manifest.digest, manifest.document["config"]["digest"], *[l["digest"] for l in manifest.document["layers"]]]
    return {f"{BLOBS}sha256/{d.split(':')[1][:2]}/{d.split(':')[1]}/data" for d in digests}


def _deploy_with_gc(migrated, deletions: list[dict], mode: str):
    """The program run again without Redis and with ``deletions`` and GC in ``mode``; the
    containers replaced as `pulumi up` would; (run, deletion props, gc props)."""
    run = run_program(
        {**migrated.base, "storage": migrated.store.settings(), "redis": {"enabled": False},
         "maintenance": {"deletions": deletions, "gc": {"mode": mode}}},
        secret_keys=PROGRAM_SECRETS, state=migrated.state,
    )
    migrated.deployment.replace(run)
    wait_https(f"https://{migrated.user.host}/healthz", str(migrated.user.cert_dir / "ca.crt"))
    return run


def test_gc_on_the_tls_bucket_readonly_keeps_pulls_then_stop_mode(migrated):
    """On the https bucket with its private CA (no Redis): a tag deleted through the program's
    ImageDeletion, then its GarbageCollection in readonly mode while a loop pulls a kept tag
    (paced below the token endpoint's per-address login limit): the read-only stand-by reaches
    the bucket (the registry's networks, its CA file), not one pull fails, the deleted image's
    manifest, config and own layer (3 blobs) leave the bucket and nothing else does; sizes are
    not measured on S3 (None). Then another tag deleted and collected in stop mode: the one-off
    collector reaches the bucket the same way and removes its blobs. Every kept tag verifies
    digest by digest; no stand-by is left."""
    user, store = migrated.user, migrated.store
    with user.client() as api:
        doomed = _blob_keys(api, "team/app", "2") - _blob_keys(api, "team/app", "1")
    assert len(doomed) == 3 and doomed <= set(store.keys(BLOBS))
    run = _deploy_with_gc(migrated, [{"repository": "team/app", "tags": ["2"]}], "readonly")
    deletion = ImageDeletionProvider()
    props = run.monitor.one("pulumi-python:dynamic/registry:ImageDeletion").plain_inputs
    assert deletion.create(deletion.check({}, props).inputs).outs["deletedTags"] == ["2"]
    gc_props = run.monitor.one("pulumi-python:dynamic/registry:GarbageCollection").plain_inputs
    assert gc_props["mode"] == "readonly"

    keys_before = set(store.keys(BLOBS))
    started = time.monotonic()
    # Paced below the token endpoint's limit for password-carrying requests (5/s per address):
    # each skopeo pull logs in afresh, and back to back they would be answered 429 by design.
    with repeating(lambda *_: user.pull("team/app", "1", check=False), interval=0.25) as outcomes:
        time.sleep(1)
        gc = GarbageCollectionProvider()
        report = gc.create(gc.check({}, {**gc_props, "trigger": "deleted-2"}).inputs).outs
        time.sleep(1)
    failed = [o.stderr[-300:] for o in outcomes if o.returncode != 0]
    print(f"single-host GC readonly on TLS S3: {time.monotonic() - started:.1f}s, {len(outcomes)} pulls, "
          f"{len(failed)} failed, writes refused {report['writesRefusedSeconds']}s")
    assert len(outcomes) >= 2 and not failed, failed[:3]
    assert (report["blobsRemoved"], report["bytesBefore"], report["bytesAfter"]) == (3, None, None)
    assert set(store.keys(BLOBS)) == keys_before - doomed

    with user.client() as api:
        doomed = _blob_keys(api, "team/fresh", "new") - _blob_keys(api, "team/app", "1")
    deletion.create(deletion.check({}, {**props, "repository": "team/fresh", "tags": ["new"]}).inputs)
    keys_before = set(store.keys(BLOBS))
    gc = GarbageCollectionProvider()
    report = gc.create(gc.check({}, {**gc_props, "mode": "stop", "trigger": "deleted-new"}).inputs).outs
    assert report["blobsRemoved"] == len(doomed) == 3
    assert set(store.keys(BLOBS)) == keys_before - doomed
    with user.client() as api:
        verified = verify_registry(api, skip=frozenset({("team/app", "2"), ("team/fresh", "new")}))
    assert verified.tags == 2  # team/app:1 and the index team/multi:m
    standbys = migrated.deployment.client.containers.list(all=True, filters={"label": "private-registry.role"})
    assert not [c for c in standbys if c.name.startswith(migrated.base["namePrefix"])]


def test_without_the_ca_the_endpoint_is_refused_not_trusted(migrated):
    """The same https bucket with caCertificatePem unset: the config still says `secure: true`
    with no `skipverify` and the container gets no CA; a push fails, and the registry's log says
    why: the endpoint's certificate is signed by an unknown authority. Nothing falls back to
    plain HTTP or unverified TLS."""
    run = run_program(
        {**migrated.base, "storage": migrated.store.settings(with_ca=False), "redis": {"enabled": False}},
        secret_keys=PROGRAM_SECRETS, state=migrated.state,
    )
    registry = next(c for c in run.monitor.by_type("docker:index/container:Container")
                    if c.name.endswith("registry-container"))
    s3 = yaml.safe_load(upload_content(registry, CONFIG_PATH))["storage"]["s3"]
    assert s3["secure"] is True and "skipverify" not in s3
    assert not [u for u in registry.plain_inputs["uploads"] if u["file"] == S3_CA_PATH]
    assert S3_CA_ENV not in (registry.plain_inputs.get("envs") or [])
    started = time.time()
    # The storage health check fails without the CA: the registry never becomes healthy; the
    # other containers (nginx, the token service) do.
    deployment = migrated.deployment
    deployment.replace(run, wait_healthy=False)
    for spec in deployment.containers():
        if spec is not registry:
            wait_for(lambda: (deployment.client.api.inspect_container(spec.plain_inputs["name"])["State"]
                              .get("Health") or {}).get("Status") == "healthy", timeout=60,
                     what=f"{spec.plain_inputs['name']} healthy")
    oci.write_image(migrated.layout, "no-ca", [32 * 1024], seed="no-ca")
    pushed = migrated.user.push(migrated.layout, "no-ca", "team/no-ca", check=False)
    assert pushed.returncode != 0
    print(f"push without the CA: {pushed.stderr.strip()[-300:]}")
    name = registry.plain_inputs["name"]
    logs = migrated.deployment.client.containers.get(name).logs(since=int(started) - 1).decode(errors="replace")
    assert "x509: certificate signed by unknown authority" in logs, logs[-2000:]
