"""Swarm mode's garbage collection in ``dry-run`` and ``stop`` modes and its guard against a
writable replica, on S3 served over TLS by a private CA, on a real two-node swarm.

One swarm for the module (tests.support.swarm: A manager, B worker), SeaweedFS's S3 gateway in
A's namespace serving HTTPS only with a certificate from a test CA (tests.support.certs), and the
program's services deployed as declared with ``storage.s3.caCertificatePem`` set to that CA, 2
registry replicas and the program's own Redis. Images are pushed and one tag deleted through the
nodes' nginx; the program's SwarmGarbageCollection provider then runs against the manager in
each mode (``readonly`` with pulls is in tests/integration/test_swarm.py; here, a replica killed
while it switches back).
"""

from __future__ import annotations

import base64
import time
import uuid

import pytest
import yaml

from components.maintenance import ImageDeletionProvider
from components.migration import verify_registry
from components.render.storage import S3_CA_ENV, S3_CA_PATH
from components.swarm_gc import (CONFIG_PATH, JOB_LABEL, SwarmGarbageCollectionProvider, SwarmGcError,
                                 docker_timestamp)
from tests.support import oci
from tests.support.background import repeating
from tests.support.certs import server_pki
from tests.support.deploy import STANDIN_BUSYBOX, STANDIN_NGINX, STANDIN_REGISTRY, STANDINS, free_port
from tests.support.objectstore import REDIS_STANDIN, build_scale_standins, redis_standins
from tests.support.program import run_program
from tests.support.scale_clients import RegistryUser
from tests.support.swarm import two_node_swarm, weed_in_namespace
from tests.support.swarm_deploy import SECRET, SwarmDeployment, task_container

PASSWORD = "swarm-gc-password-0123456789"
REPLICAS = 2
BLOBS = "docker/registry/v2/blobs/"


def _blob_key(digest: str) -> str:
    hexdigest = digest.split(":")[1]
    return f"{BLOBS}sha256/{hexdigest[:2]}/{hexdigest}/data"


class Stack:
    def __init__(self, swarm, store, deployment, users, gc_props, doomed_keys, layout):
        self.swarm, self.store, self.deployment, self.users = swarm, store, deployment, users
        self.gc_props, self.doomed_keys, self.layout = gc_props, doomed_keys, layout

    def registry_tasks(self) -> list[dict]:
        return self.deployment.running_tasks("registry")

    def registry_spec(self) -> dict:
        d = self.deployment
        return d.client.api.inspect_service(d.service_name("registry"))["Spec"]

    def collect(self, mode: str, **overrides) -> dict:
        return SwarmGarbageCollectionProvider().create({**self.gc_props, "mode": mode, **overrides}).outs


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The swarm, TLS SeaweedFS and the deployed program; `team/gc:old` (a layer of its own next
    to one `keep` shares) pushed and deleted, `keep` and a multi-arch index `multi` kept."""
    build_scale_standins()
    images = [STANDIN_REGISTRY, STANDIN_NGINX, STANDIN_BUSYBOX, REDIS_STANDIN]
    tmp = tmp_path_factory.mktemp("swarm-gc")
    with two_node_swarm(images) as swarm:
        pki = server_pki(names=(), ips=(swarm.manager.swarm_address, swarm.manager.host_address))
        with weed_in_namespace(swarm.manager, tls=pki) as store:
            port = free_port()
            config = {
                "httpsPort": port, "namePrefix": f"swgc-{uuid.uuid4().hex[:6]}", "users": {"alice": PASSWORD},
                "ips": ["127.0.0.1", swarm.manager.host_address, swarm.worker.host_address],
                "docker": {"host": swarm.manager.socket},
                "storage": store.settings(), "swarm": {"enabled": True, "replicas": REPLICAS},
                "auth": {"mode": "basic"},
                "maintenance": {"deletions": [{"repository": "team/gc", "tags": ["old"]}]},
            }
            run = run_program(config, secret_keys=["users", "storage"], state={})
            cert_dir = tmp / "certs"
            cert_dir.mkdir()
            ca_file = cert_dir / "ca.crt"
            ca_file.write_text(run.exports["caCertificatePem"])
            deployment = SwarmDeployment(run, swarm.manager.client(), {**STANDINS, **redis_standins()})
            users = {node.name: RegistryUser(f"{node.host_address}:{port}", "alice", PASSWORD, cert_dir, tmp)
                     for node in swarm.nodes}
            try:
                deployment.up()
                deployment.wait_converged(swarm.nodes, port, str(ca_file), REPLICAS)
                layout = tmp / "layout"
                shared = oci.random_bytes(128 * 1024, seed="sgc-shared")
                oci.write_image(layout, "old", [shared, oci.random_bytes(256 * 1024, seed="sgc-old")], seed="sgc-old")
                oci.write_image(layout, "keep", [shared, 96 * 1024], seed="sgc-keep")
                oci.write_index(layout, "multi", [("amd64", [shared, 48 * 1024]), ("arm64", [64 * 1024])],
                                seed="sgc-multi")
                for tag in ("old", "keep", "multi"):
                    users["a"].push(layout, tag, "team/gc", multi=tag == "multi")
                with users["b"].client() as api:
                    old = api.manifest("team/gc", "old")
                # The manifest, the config and the layer only `old` has: what a collection frees.
                doomed = {_blob_key(old.digest), _blob_key(old.document["config"]["digest"]),
                          _blob_key(old.document["layers"][1]["digest"])}
                deletion = run.monitor.one("pulumi-python:dynamic/registry:ImageDeletion").plain_inputs
                provider = ImageDeletionProvider()
                checked = provider.check({}, {**deletion, "registryUrl": f"https://{users['b'].host}"})
                assert checked.failures == []
                assert provider.create(checked.inputs).outs["deletedDigests"] == [old.digest]

                gc = run.monitor.one("pulumi-python:dynamic/registry:SwarmGarbageCollection").plain_inputs
                gc_props = {**gc, "registryUrl": f"https://{users['a'].host}", "trigger": "after-deletion",
                            "redisImage": deployment.standins[gc["redisImage"]]}
                yield Stack(swarm, store, deployment, users, gc_props, doomed, layout)
            finally:
                deployment.down()


def test_replicas_reach_the_tls_endpoint_through_the_configured_ca(stack):
    """The S3 endpoint is https with a certificate from a private CA; the registry service
    carries that CA as a Swarm config at the CA path and SSL_CERT_DIR naming its folder, and no
    AWS_* variable; both registry configs (writable, read-only) keep `secure: true` and set no
    `skipverify`; images pushed through node A are in the bucket and pull through node B."""
    assert stack.store.internal_endpoint.startswith("https://")
    container = stack.registry_spec()["TaskTemplate"]["ContainerSpec"]
    ca_ref = next(c for c in container.get("Configs") or [] if c["File"]["Name"] == S3_CA_PATH)
    ca_config = stack.deployment.client.configs.get(ca_ref["ConfigID"])
    assert base64.b64decode(ca_config.attrs["Spec"]["Data"]).decode() == stack.store.ca_pem
    assert S3_CA_ENV in container["Env"] and not [e for e in container["Env"] if e.startswith("AWS_")]
    secrets = {r.plain_inputs["name"]: r.plain_inputs["data"] for r in stack.deployment.run.monitor.by_type(SECRET)}
    for role in ("writableConfigSecret", "readonlyConfigSecret"):
        config = yaml.safe_load(base64.b64decode(secrets[stack.gc_props[role]]))
        assert config["storage"]["s3"]["secure"] is True and "skipverify" not in config["storage"]["s3"]
    assert stack.doomed_keys <= set(stack.store.keys(BLOBS))
    assert stack.users["b"].pull("team/gc", "keep", check=False).returncode == 0
    assert stack.users["b"].pull("team/gc", "multi", check=False, multi=True).returncode == 0


def test_dry_run_reports_what_would_go_and_touches_nothing(stack):
    """dry-run: the collection runs as a Swarm job (over TLS to the store, with the replicas'
    CA) and reports 3 blobs eligible (the deleted image's manifest, config and own layer) and 0
    manifests; every key stays in the bucket, the same registry tasks keep running on the
    writable config, the service spec is not updated."""
    keys_before = set(stack.store.keys(BLOBS))
    tasks_before = {t["ID"] for t in stack.registry_tasks()}
    version_before = stack.deployment.client.api.inspect_service(
        stack.deployment.service_name("registry"))["Version"]["Index"]
    started = time.monotonic()
    report = stack.collect("dry-run")
    print(f"swarm GC dry-run: {time.monotonic() - started:.1f}s; {report['blobsEligible']} blobs eligible")
    assert (report["blobsEligible"], report["manifestsEligible"], report["writesRefusedSeconds"]) == (3, 0, 0.0)
    assert set(stack.store.keys(BLOBS)) == keys_before
    assert {t["ID"] for t in stack.registry_tasks()} == tasks_before and len(tasks_before) == REPLICAS
    service = stack.deployment.client.api.inspect_service(stack.deployment.service_name("registry"))
    assert service["Version"]["Index"] == version_before


def test_no_collection_while_a_replica_accepts_pushes(stack):
    """readonly mode whose "read-only" config still accepts pushes (the writable config given as
    the read-only one, as an environment override would make it): after the switch the pushes
    probed through the load-balanced address are accepted, so the collection refuses to run,
    says why, deletes nothing, and the service stays on its writable config with every replica."""
    keys_before = set(stack.store.keys(BLOBS))
    writable = stack.gc_props["writableConfigSecret"]
    with pytest.raises(SwarmGcError, match="still accepts pushes.*not collecting"):
        stack.collect("readonly", readonlyConfigSecret=writable)
    assert set(stack.store.keys(BLOBS)) == keys_before
    assert not stack.deployment.client.api.services(filters={"label": JOB_LABEL})
    spec = stack.registry_spec()
    assert spec["TaskTemplate"]["ContainerSpec"]["Secrets"][0]["SecretName"] == writable
    assert spec["Mode"]["Replicated"]["Replicas"] == REPLICAS and len(stack.registry_tasks()) == REPLICAS


def test_stop_mode_collects_with_every_replica_stopped_then_all_back(stack):
    """stop mode: while the collection job runs (sampled every 0.2 s on the manager), no
    registry task runs; afterwards the service is back at 2 replicas, both running; the 3 blobs
    the dry run named are gone from the bucket and no other key is; every kept tag verifies
    digest by digest through node B; a push through node B is accepted and pulls through A."""
    keys_before = set(stack.store.keys(BLOBS))
    assert stack.doomed_keys <= keys_before
    client = stack.deployment.client

    def sample(*_) -> tuple[bool, int]:
        jobs = client.api.services(filters={"label": f"{JOB_LABEL}=gc"})
        running = [t for t in stack.deployment.client.api.tasks(
            filters={"service": stack.deployment.service_name("registry")}) if t["Status"]["State"] == "running"]
        return bool(jobs), len(running)

    started = time.monotonic()
    with repeating(sample, interval=0.2, join_timeout=30) as samples:
        report = stack.collect("stop")
    elapsed = time.monotonic() - started
    during = [count for job, count in samples if job]
    print(f"swarm GC stop: {elapsed:.1f}s, writes refused {report['writesRefusedSeconds']}s; "
          f"{len(during)} samples during the job, max running replicas {max(during, default=None)}")
    assert during and max(during) == 0
    assert (report["blobsEligible"], report["manifestsEligible"]) == (3, 0) and report["writesRefusedSeconds"] > 0
    assert set(stack.store.keys(BLOBS)) == keys_before - stack.doomed_keys
    spec = stack.registry_spec()
    assert spec["Mode"]["Replicated"]["Replicas"] == REPLICAS and len(stack.registry_tasks()) == REPLICAS
    with stack.users["b"].client() as api:
        verified = verify_registry(api, skip=frozenset({("team/gc", "old")}))
        assert not api.writes_refused("team/after-gc")
    assert verified.tags >= 2
    fresh = oci.write_image(stack.layout, "after", [64 * 1024], seed="sgc-after")
    stack.users["b"].push(stack.layout, "after", "team/gc")
    with stack.users["a"].client() as api:
        assert api.resolve("team/gc", "after") == fresh
    assert stack.users["a"].pull("team/gc", "after", check=False).returncode == 0


def test_a_replica_killed_while_switching_back_is_switched_back_again(stack):
    """readonly mode with the first task the switch back to the writable config starts killed
    while Swarm monitors it: Swarm rolls that update back (new tasks on the read-only config);
    the collection waits for the rollback to finish and updates again, and ends with both
    replicas running the writable config and pushes accepted through either node."""
    d = stack.deployment
    writable, readonly = stack.gc_props["writableConfigSecret"], stack.gc_props["readonlyConfigSecret"]
    service = d.service_name("registry")
    before = {t["ID"] for t in d.client.api.tasks(filters={"service": service})}
    seen_readonly, killed = [], []

    def config(task_spec: dict) -> str:
        """The config secret a task spec (a task's, or the service's template) mounts."""
        return next(s["SecretName"] for s in task_spec["ContainerSpec"]["Secrets"] if s["File"]["Name"] == CONFIG_PATH)

    def watch(*_) -> None:
        if killed:
            return
        running = [t for t in d.client.api.tasks(filters={"service": service})
                   if t["Status"]["State"] == "running" and t["DesiredState"] == "running"]
        if any(config(t["Spec"]) == readonly for t in running):
            seen_readonly.append(True)
            return
        if not seen_readonly:
            return
        switched_back = [t for t in running if config(t["Spec"]) == writable and t["ID"] not in before]
        if switched_back:
            node, container = task_container(stack.swarm.nodes, switched_back[0])
            node.client().containers.get(container).kill()
            killed.append((switched_back[0]["ID"], time.time()))

    with repeating(watch, interval=0.2, join_timeout=30):
        report = stack.collect("readonly")
    assert len(killed) == 1, killed
    killed_at = killed[0][1]
    tasks = d.client.api.tasks(filters={"service": service})
    rolled_back = [t for t in tasks if config(t["Spec"]) == readonly and docker_timestamp(t["CreatedAt"]) > killed_at]
    print(f"swarm GC readonly with a replica killed on the way back: {report['durationSeconds']}s, "
          f"{len(rolled_back)} tasks started by Swarm's rollback, then switched back again")
    assert rolled_back, "Swarm did not roll the switch back: the kill was not within its monitor period"
    assert config(stack.registry_spec()["TaskTemplate"]) == writable
    running = stack.registry_tasks()
    assert len(running) == REPLICAS and all(config(t["Spec"]) == writable for t in running)
    for user in stack.users.values():
        with user.client() as api:
            assert not api.writes_refused("team/after-restore")
