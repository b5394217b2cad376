"""Swarm mode on a real two-node swarm, S3 on real SeaweedFS, the shared cache on real Redis.

One swarm for the module (tests.support.swarm: two extra dockerd in namespaces the test makes,
A manager, B worker), SeaweedFS's S3 gateway in A's namespace, and the program's services
deployed as declared (``swarm.enabled``, 2 registry replicas, ``storage: s3``, the program's own
Redis service). Clients reach each node's nginx on that node's address (host-mode publishing);
nginx reaches the registry replicas by DNS round robin on the overlay network.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import requests

from components.maintenance import ImageDeletionProvider
from components.migration import verify_registry
from components.swarm_gc import SwarmGarbageCollectionProvider
from tests.support import oci
from tests.support.background import repeating
from tests.support.deploy import STANDIN_BUSYBOX, STANDIN_NGINX, STANDIN_REGISTRY, STANDINS, free_port
from tests.support.objectstore import REDIS_STANDIN, build_scale_standins, redis_standins
from tests.support.program import run_program
from tests.support.scale_clients import RegistryUser
from tests.support.swarm import two_node_swarm, weed_in_namespace
from tests.support.swarm_deploy import SwarmDeployment, task_container
from tests.support.waiting import wait_for

PASSWORD = "swarm-password-0123456789"
REPLICAS = 2
# Another image of the distribution under test (its tag names the version, so the config fits).
ROLLED_IMAGE = f"docker.io/library/registry:{STANDIN_REGISTRY.rsplit(':', 1)[1]}-rolled@sha256:" + "5" * 64
ROLLED_STANDIN = f"{STANDIN_REGISTRY}-rolled"


class Stack:
    def __init__(self, swarm, store, deployment, config, state, port, users, layout, ca_file):
        self.swarm, self.store, self.deployment = swarm, store, deployment
        self.config, self.state, self.port = config, state, port
        self.users, self.layout, self.ca_file = users, layout, ca_file

    def user(self, node: str) -> RegistryUser:
        return self.users[node]

    def wait_converged(self, replicas: int = REPLICAS) -> None:
        self.deployment.wait_converged(self.swarm.nodes, self.port, str(self.ca_file), replicas)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    build_scale_standins()
    import subprocess

    subprocess.run(["docker", "tag", STANDIN_REGISTRY, ROLLED_STANDIN], check=True, capture_output=True)
    images = [STANDIN_REGISTRY, ROLLED_STANDIN, STANDIN_NGINX, STANDIN_BUSYBOX, REDIS_STANDIN]
    tmp = tmp_path_factory.mktemp("swarm")
    with two_node_swarm(images) as swarm, weed_in_namespace(swarm.manager) as store:
        port = free_port()
        name = f"swm-{uuid.uuid4().hex[:6]}"
        config = {
            "httpsPort": port, "namePrefix": name, "users": {"alice": PASSWORD},
            "ips": ["127.0.0.1", swarm.manager.host_address, swarm.worker.host_address],
            "docker": {"host": swarm.manager.socket},
            "storage": store.settings(), "swarm": {"enabled": True, "replicas": REPLICAS},
            "auth": {"mode": "basic"},
        }
        state: dict = {}
        run = run_program(config, secret_keys=["users", "storage"], state=state)
        cert_dir = tmp / "certs"
        cert_dir.mkdir()
        ca_file = cert_dir / "ca.crt"
        ca_file.write_text(run.exports["caCertificatePem"])
        standins = {**STANDINS, **redis_standins(), ROLLED_IMAGE: ROLLED_STANDIN}
        deployment = SwarmDeployment(run, swarm.manager.client(), standins)
        users = {
            node.name: RegistryUser(f"{node.host_address}:{port}", "alice", PASSWORD, cert_dir, tmp)
            for node in swarm.nodes
        }
        try:
            deployment.up()
            result = Stack(swarm, store, deployment, config, state, port, users, tmp / "layout", ca_file)
            result.wait_converged()
            yield result
        finally:
            deployment.down()


def test_services_as_declared_on_both_nodes(stack):
    """The registry runs REPLICAS tasks spread over both nodes, nginx one task per node, Redis
    one; the registry's config and the TLS key are Swarm secrets, nginx.conf a Swarm config;
    each node's nginx answers /healthz on its own address."""
    d = stack.deployment
    registry_nodes = {t["NodeID"] for t in d.running_tasks("registry")}
    assert len(d.running_tasks("registry")) == REPLICAS and len(registry_nodes) == 2
    assert len(d.running_tasks("proxy")) == 2 and len(d.running_tasks("redis")) == 1
    spec = d.client.api.inspect_service(d.service_name("registry"))["Spec"]
    assert spec["UpdateConfig"]["Order"] == "start-first" and spec["EndpointSpec"]["Mode"] == "dnsrr"
    secret_files = [s["File"]["Name"] for s in spec["TaskTemplate"]["ContainerSpec"]["Secrets"]]
    assert secret_files == ["/etc/docker/registry/config.yml"]
    proxy = d.client.api.inspect_service(d.service_name("proxy"))["Spec"]
    assert proxy["Mode"] == {"Global": {}}
    assert {s["File"]["Name"] for s in proxy["TaskTemplate"]["ContainerSpec"]["Secrets"]} == {
        "/etc/nginx/tls/server.crt", "/etc/nginx/tls/server.key", "/etc/nginx/htpasswd"}
    assert [c["File"]["Name"] for c in proxy["TaskTemplate"]["ContainerSpec"]["Configs"]] == ["/etc/nginx/nginx.conf"]
    for node in stack.swarm.nodes:
        response = requests.get(f"https://{node.host_address}:{stack.port}/v2/", verify=str(stack.ca_file), timeout=5)
        assert response.status_code == 401


def test_push_through_one_node_pull_through_the_other(stack):
    """An image pushed through node A's nginx pulls through node B's with verified digests, and
    its blobs are in the bucket."""
    digest = oci.write_image(stack.layout, "ab", [oci.random_bytes(256 * 1024, seed="ab"), 64 * 1024], seed="ab")
    stack.user("a").push(stack.layout, "ab", "team/ab")
    with stack.user("b").client() as api:
        assert api.resolve("team/ab", "ab") == digest
    assert stack.user("b").pull("team/ab", "ab", check=False).returncode == 0
    assert any(k.endswith("/data") for k in stack.store.keys("docker/registry/v2/blobs/"))


def _registry_tasks_by_node(stack) -> list[tuple]:
    """(node, container id) of every running registry task."""
    return [task_container(stack.swarm.nodes, t) for t in stack.deployment.running_tasks("registry")]


def _in_threads(count: int, fn) -> list:
    results: list = [None] * count

    def work(index: int) -> None:
        results[index] = fn(index)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads, results


@pytest.mark.parametrize("during", ["pull", "push"])
def test_replica_killed_mid_transfer(stack, during):
    """A registry task is SIGKILLed while 4 pulls (or 4 pushes) of a 3 x 6 MiB image run through
    both nodes: the clients all finish (skopeo with 3 retries of network errors; a transfer cut
    short, by a 502 or an early EOF, is made again, at most 3 times in all, as docker push and
    pull retry a layer), Swarm starts a
    replacement task, the killed replica had been serving blob requests, and every tag in the
    registry (earlier ones included) verifies digest by digest: nothing half-stored."""
    tag = f"big-{during}"
    oci.write_image(stack.layout, tag, [6 << 20, 6 << 20, 6 << 20], seed=tag)
    if during == "pull":
        stack.user("a").push(stack.layout, tag, "team/big")
        transfer = lambda i: stack.user("ab"[i % 2]).pull("team/big", tag, check=False, retries=3, attempts=3)  # noqa: E731
    else:
        transfer = lambda i: stack.user("ab"[i % 2]).push(  # noqa: E731
            stack.layout, tag, f"team/push{i}", check=False, retries=3, attempts=3)
    node, victim = _registry_tasks_by_node(stack)[0]
    container = node.client().containers.get(victim)
    started = time.time()
    threads, results = _in_threads(4, transfer)
    time.sleep(1.5)
    container.kill()
    for thread in threads:
        thread.join(timeout=300)
    failed = [r.stderr for r in results if r is None or r.returncode != 0]
    assert not failed, failed
    print(f"kill mid-{during}: attempts per client {[r.attempts_used for r in results]}")
    logs = container.logs(since=int(started) - 1).decode(errors="replace")
    assert "/blobs/" in logs, "the killed replica served no blob request: the kill proved nothing"
    stack.wait_converged()
    with stack.user("b").client() as api:
        report = verify_registry(api)
    assert report.tags >= (6 if during == "push" else 2)


def _pull_ab(stack, n: int) -> tuple[int, str]:
    result = stack.user("ab"[n % 2]).pull("team/ab", "ab", check=False)
    return result.returncode, result.stderr[-300:]


def _update_done(deployment, suffix: str) -> bool:
    status = deployment.client.api.inspect_service(deployment.service_name(suffix)).get("UpdateStatus") or {}
    return status.get("State") == "completed"


def test_rolling_update_of_the_registry_image_zero_failed_pulls(stack):
    """The program run again with another registry image updates the service in place: Swarm
    replaces one replica at a time, the new task started before the old one stops, while pulls
    run back to back through both nodes without retries. Not one pull fails; afterwards every
    replica runs the new image."""
    new = run_program({**stack.config, "images": {"registry": ROLLED_IMAGE}}, secret_keys=["users", "storage"],
                      state=stack.state)
    with repeating(lambda _, n: _pull_ab(stack, n), threads=2) as outcomes:
        time.sleep(1)
        stack.deployment.update(new)
        wait_for(lambda: _update_done(stack.deployment, "registry"), timeout=180, what="registry update")
        time.sleep(2)
    failures = [o for o in outcomes if o[0] != 0]
    if failures:
        label = f"com.docker.swarm.service.name={stack.deployment.service_name('registry')}"
        errors = []
        for node in stack.swarm.nodes:
            for container in node.client().containers.list(all=True, filters={"label": label}):
                errors += [f"{container.name[-12:]} {line}" for line in
                           container.logs(timestamps=True).decode(errors="replace").splitlines()
                           if "level=error" in line or "level=fatal" in line or "level=warn" in line
                           or "shutting down" in line.lower()]
        raise AssertionError(f"{len(failures)} of {len(outcomes)} pulls failed, first {failures[:2]}; "
                             "registry errors:\n" + "\n".join(errors[-25:]))
    assert len(outcomes) >= 4
    tasks = stack.deployment.running_tasks("registry")
    assert len(tasks) == REPLICAS
    assert {t["Spec"]["ContainerSpec"]["Image"] for t in tasks} == {ROLLED_STANDIN}


def test_node_drained_pulls_keep_working(stack):
    """Node B drained (its registry replica and nginx leave it): pulls through node A never fail
    while Swarm moves the replica, and both replicas then run on A; B made active again gets
    its nginx back."""
    ids = {name: node_id for node_id, name in stack.swarm.node_ids().items()}
    manager = stack.swarm.manager
    def pull(*_) -> tuple[int, str]:
        result = stack.user("a").pull("team/ab", "ab", check=False)
        return result.returncode, result.stderr[-300:]

    try:
        with repeating(pull) as outcomes:
            time.sleep(1)
            manager.cli("node", "update", "--availability", "drain", ids["b"])
            wait_for(lambda: {t["NodeID"] for t in stack.deployment.running_tasks("registry")} == {ids["a"]}
                     and len(stack.deployment.running_tasks("registry")) == REPLICAS, timeout=120, what="drain")
            time.sleep(2)
    finally:
        manager.cli("node", "update", "--availability", "active", ids["b"])
    failures = [o for o in outcomes if o[0] != 0]
    assert len(outcomes) >= 2 and not failures, (len(outcomes), failures[:3])
    stack.wait_converged()


def test_gc_across_replicas_readonly_zero_failed_pulls(stack):
    """Deletion through the load-balanced address, then the program's SwarmGarbageCollection in
    readonly mode: every replica is rolled onto the read-only config, the collection runs as a
    Swarm job, the shared Redis cache is flushed, the replicas are rolled back. Pulls of a kept
    image and of a multi-arch index run back to back through both nodes the whole time without
    one failure; the deleted image's own blobs leave the bucket; everything kept verifies digest
    by digest; pushes are accepted again and the service is back on its writable config."""
    layout = stack.layout
    shared = oci.random_bytes(128 * 1024, seed="gc-shared")
    old = oci.write_image(layout, "old", [shared, oci.random_bytes(512 * 1024, seed="gc-old")], seed="gc-old")
    oci.write_image(layout, "keep", [shared, 96 * 1024], seed="gc-keep")
    oci.write_index(layout, "multi", [("amd64", [shared, 48 * 1024]), ("arm64", [64 * 1024])], seed="gc-multi")
    for tag in ("old", "keep", "multi"):
        stack.user("a").push(layout, tag, "team/gc", multi=tag == "multi")
    with stack.user("a").client() as api:
        old_manifest = api.manifest("team/gc", "old")
    old_layer = old_manifest.document["layers"][1]["digest"].split(":")[1]
    old_key = f"docker/registry/v2/blobs/sha256/{old_layer[:2]}/{old_layer}/data"
    assert old_key in stack.store.keys("docker/registry/v2/blobs/")

    run = run_program({**stack.config, "maintenance": {"deletions": [{"repository": "team/gc", "tags": ["old"]}]}},
                      secret_keys=["users", "storage"], state=stack.state)
    url_b = f"https://{stack.user('b').host}"
    deletion = run.monitor.one("pulumi-python:dynamic/registry:ImageDeletion").plain_inputs
    provider = ImageDeletionProvider()
    checked = provider.check({}, {**deletion, "registryUrl": url_b})
    assert checked.failures == []
    created = provider.create(checked.inputs)
    assert created.outs["deletedTags"] == ["old"] and created.outs["deletedDigests"] == [old]

    gc = run.monitor.one("pulumi-python:dynamic/registry:SwarmGarbageCollection").plain_inputs
    assert gc["mode"] == "readonly" and gc["redisHost"] == "redis" and gc["redisAuthSecret"]
    # The images the program pins are swapped for stand-ins, as for the services.
    props = {**gc, "registryUrl": f"https://{stack.user('a').host}", "trigger": "after-deletion",
             "redisImage": stack.deployment.standins[gc["redisImage"]]}
    def pull(thread: int, n: int) -> tuple[int, str, str]:
        i = thread + n
        tag = ("keep", "multi")[i % 2]
        result = stack.user("ab"[i % 2]).pull("team/gc", tag, check=False, multi=tag == "multi")
        return result.returncode, tag, result.stderr[-300:]

    with repeating(pull, threads=2) as outcomes:
        report = SwarmGarbageCollectionProvider().create(props).outs
    failures = [o for o in outcomes if o[0] != 0]
    assert len(outcomes) >= 4 and not failures, (len(outcomes), failures[:3])
    figures = {k: report[k] for k in ("blobsEligible", "manifestsEligible", "durationSeconds", "writesRefusedSeconds")}
    print(f"swarm GC (readonly, {REPLICAS} replicas): {len(outcomes)} pulls, 0 failed; {figures}")
    assert report["blobsEligible"] >= 2 and report["writesRefusedSeconds"] > 0
    assert old_key not in stack.store.keys("docker/registry/v2/blobs/")
    spec = stack.deployment.client.api.inspect_service(stack.deployment.service_name("registry"))["Spec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Secrets"][0]["SecretName"] == gc["writableConfigSecret"]
    with stack.user("b").client() as api:
        assert not api.writes_refused("team/after-gc")
        # SeaweedFS removes the emptied tag folder some time later; until then S3 lists it.
        verified = verify_registry(api, skip=frozenset({("team/gc", "old")}))
    assert verified.tags >= 3
    fresh = oci.write_image(layout, "after", [shared, 32 * 1024], seed="gc-after")
    stack.user("b").push(layout, "after", "team/gc")
    with stack.user("a").client() as api:
        assert api.resolve("team/gc", "after") == fresh
    assert stack.user("a").pull("team/gc", "after", check=False).returncode == 0
