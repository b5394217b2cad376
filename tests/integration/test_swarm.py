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

from tests.support import oci
from tests.support.deploy import STANDIN_BUSYBOX, STANDIN_NGINX, STANDIN_REGISTRY, STANDINS, free_port
from tests.support.objectstore import REDIS_STANDIN, build_scale_standins, redis_standins
from tests.support.program import run_program
from tests.support.scale_clients import RegistryUser
from tests.support.swarm import two_node_swarm, weed_in_namespace
from tests.support.swarm_deploy import SwarmDeployment, task_container, wait_for

PASSWORD = "swarm-password-0123456789"
REPLICAS = 2
ROLLED_IMAGE = "docker.io/library/registry:2.8.3-rolled"
ROLLED_STANDIN = "private-registry-standin/registry:2.8.2-rolled"


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
