"""Swarm mode with token authentication (the default auth mode) on a real two-node swarm.

One swarm for the module (tests.support.swarm: A manager, B worker), SeaweedFS's S3 gateway in
A's namespace, and the program's services deployed as declared: 2 registry replicas trusting
the token signer's certificate, the program's Redis, nginx on both nodes and the token service,
whose image the program builds on the manager's engine. The image is built here as the provider
would and loaded into node A only, as on a real swarm: the service's placement must keep it on
the manager. Access rules: ``alice`` is the admin (and the maintenance user), ``reader`` may
only pull. The stack's address is node A's (no DNS name serves both nodes here), so every
client's token requests go through A's nginx, wherever its /v2/ requests go.
"""

from __future__ import annotations

import base64
import subprocess
import time
import uuid
from contextlib import ExitStack
from typing import Optional

import pytest
import requests

from components.maintenance import ImageDeletionProvider
from components.migration import verify_registry
from components.render import token_service as ts
from components.swarm_gc import SwarmGarbageCollectionProvider, docker_timestamp
from tests.support import oci
from tests.support.clients import CLIENTS, Identity, docker_trust
from tests.support.deploy import IMAGE, STANDIN_NGINX, STANDIN_REGISTRY, STANDINS, \
    build_declared_image, docker_cli, free_port
from tests.support.objectstore import REDIS_STANDIN, build_scale_standins, redis_standins
from tests.support.program import REGISTRY_VERSION, run_program
from tests.support.scale_clients import RegistryUser
from tests.support.swarm import two_node_swarm, weed_in_namespace
from tests.support.swarm_deploy import SwarmDeployment
from tests.support.waiting import wait_for

PASSWORDS = {"alice": "alice-swarm-password-0123", "reader": "reader-swarm-password-0123"}
AUTH = {"admins": ["alice"], "rules": [{"repositories": ["**"], "pull": ["reader"]}],
        # Clients here all come from one address; the default limit (5/s) is for the world.
        "rateLimitPerSecond": 50, "rateLimitBurst": 100}
REPLICAS = 2
SECRET_KEYS = ["users", "storage"]


class Stack:
    def __init__(self, swarm, store, deployment, config, state, port, token_image, tmp, ca_file):
        self.swarm, self.store, self.deployment = swarm, store, deployment
        self.config, self.state, self.port, self.token_image = config, state, port, token_image
        self.tmp, self.ca_file = tmp, ca_file
        self.address = f"{swarm.manager.host_address}:{port}"

    def node_address(self, node: str) -> str:
        return f"{next(n for n in self.swarm.nodes if n.name == node).host_address}:{self.port}"

    def user(self, name: str, node: str, password: str = "") -> RegistryUser:
        return RegistryUser(self.node_address(node), name, password or PASSWORDS[name], self.ca_file.parent,
                            self.tmp)



@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    build_scale_standins()
    tmp = tmp_path_factory.mktemp("swarm-token")
    images = [STANDIN_REGISTRY, STANDIN_NGINX, REDIS_STANDIN]
    with two_node_swarm(images) as swarm, weed_in_namespace(swarm.manager) as store:
        port = free_port()
        name = f"swt-{uuid.uuid4().hex[:6]}"
        config = {
            "httpsPort": port, "namePrefix": name, "users": PASSWORDS, "auth": AUTH,
            # The address is node A's: the realm and the tokens' audience.
            "hosts": [], "ips": [swarm.manager.host_address, swarm.worker.host_address, "127.0.0.1"],
            "docker": {"host": swarm.manager.socket},
            "storage": store.settings(), "swarm": {"enabled": True, "replicas": REPLICAS},
        }
        state: dict = {}
        run = run_program(config, secret_keys=SECRET_KEYS, state=state)
        # What pulumi-docker's RemoteImage does on the manager's engine: build there (here:
        # build on the shared engine, then load into node A only).
        token_image = build_declared_image(run.monitor.one(IMAGE).plain_inputs)
        try:
            saved = subprocess.run(["docker", "save", token_image], capture_output=True, check=True, timeout=300)
            subprocess.run(["docker", "-H", swarm.manager.socket, "load"], input=saved.stdout, capture_output=True,
                           check=True, timeout=300)
            cert_dir = tmp / "certs"
            cert_dir.mkdir()
            ca_file = cert_dir / "ca.crt"
            ca_file.write_text(run.exports["caCertificatePem"])
            # pulumi-docker's RemoteImage.image_id is the image's id (docker inspect's .Id, the
            # same after save and load): what the service names, where the mocks put the name.
            image_id = docker_cli("image", "inspect", "--format", "{{.Id}}", token_image).stdout.strip()
            assert image_id.startswith("sha256:")
            standins = {**STANDINS, **redis_standins(), token_image: image_id}
            deployment = SwarmDeployment(run, swarm.manager.client(), standins)
            try:
                started = time.monotonic()
                deployment.up()
                deployment.wait_converged(swarm.nodes, port, str(ca_file), REPLICAS, timeout=180)
                print(f"\nswarm token stack converged in {time.monotonic() - started:.1f}s")
                yield Stack(swarm, store, deployment, config, state, port, token_image, tmp, ca_file)
            finally:
                deployment.down()
        finally:
            docker_cli("image", "rm", token_image, check=False)


def test_token_service_on_the_manager_wired_to_registry_and_nginx(stack):
    """The token service runs one task, on the manager A (node B does not even have its image);
    its key and htpasswd are Swarm secrets only its user (nobody) reads, its certificate and
    policy configs; the registry replicas trust that certificate's key (distribution 3: a
    JWKS of it at auth.token.jwks; 2.8: the same certificate as rootcertbundle); nginx holds
    no htpasswd. Both nodes' /v2/ answer 401 with a Bearer
    challenge naming the realm on the stack's address, and node B's nginx serves /token from
    the service on A over the overlay network: the reader gets a token, a wrong password 401."""
    d = stack.deployment
    ids = stack.swarm.node_ids()
    tasks = d.running_tasks("-token")
    assert len(tasks) == 1 and ids[tasks[0]["NodeID"]] == "a"
    with pytest.raises(Exception, match="No such image|not found"):
        stack.swarm.worker.client().images.get(stack.token_image)
    spec = d.client.api.inspect_service(d.service_name("-token"))["Spec"]
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.role == manager"]
    assert spec["UpdateConfig"]["Order"] == "start-first" and spec["EndpointSpec"]["Mode"] == "dnsrr"
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Image"].startswith("sha256:")  # by id, as pulumi-docker's image_id names it
    assert {(s["File"]["Name"], s["File"]["UID"], s["File"]["Mode"]) for s in container["Secrets"]} == {
        (ts.KEY_PATH, "65534", 0o400), (ts.HTPASSWD_PATH, "65534", 0o400)}
    assert {c["File"]["Name"] for c in container["Configs"]} == {ts.CERT_PATH, ts.POLICY_PATH}
    assert container["Healthcheck"]["Test"][0] == "CMD"
    signer_cert = next(c["ConfigName"] for c in container["Configs"] if c["File"]["Name"] == ts.CERT_PATH)
    registry = d.client.api.inspect_service(d.service_name("registry"))["Spec"]["TaskTemplate"]["ContainerSpec"]
    if REGISTRY_VERSION == 3:
        (trusted,) = registry["Configs"]
        assert trusted["File"]["Name"] == ts.REGISTRY_JWKS_PATH
        jwks = base64.b64decode(d.client.api.inspect_config(trusted["ConfigID"])["Spec"]["Data"]).decode()
        cert = base64.b64decode(d.client.api.inspect_config(signer_cert)["Spec"]["Data"]).decode()
        assert jwks == ts.render_jwks(cert)
    else:
        assert [(c["File"]["Name"], c["ConfigName"]) for c in registry["Configs"]] == [
            (ts.REGISTRY_BUNDLE_PATH, signer_cert)]
    proxy = d.client.api.inspect_service(d.service_name("proxy"))["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert {s["File"]["Name"] for s in proxy["Secrets"]} == {"/etc/nginx/tls/server.crt", "/etc/nginx/tls/server.key"}

    for node in ("a", "b"):
        reply = requests.get(f"https://{stack.node_address(node)}/v2/", verify=str(stack.ca_file), timeout=10)
        assert reply.status_code == 401
        assert reply.headers["WWW-Authenticate"].startswith(f'Bearer realm="https://{stack.address}/token"')
    realm_b = f"https://{stack.node_address('b')}/token"
    query = {"service": stack.address, "scope": "repository:team/x:pull"}
    good = requests.get(realm_b, params=query, auth=("reader", PASSWORDS["reader"]), verify=str(stack.ca_file),
                        timeout=30)
    assert good.status_code == 200 and good.json()["token"].count(".") == 2
    bad = requests.get(realm_b, params=query, auth=("reader", "wrong-password-0123456789"),
                       verify=str(stack.ca_file), timeout=30)
    assert bad.status_code == 401


@pytest.mark.parametrize("client", ["skopeo", "docker"])
def test_login_push_through_one_node_pull_through_the_other(stack, client):
    """skopeo, and the Docker client through the shared dockerd: alice logs in and pushes
    through node A's nginx; reader logs in through node B's and pulls the image back with the
    digest the registry holds; reader's push through B is refused (the rules grant only pull),
    and so is an anonymous pull."""
    kind = CLIENTS[client]
    home = stack.tmp / f"{client}-{uuid.uuid4().hex[:6]}"
    with ExitStack() as cleanup:
        if client == "docker":
            for node in ("a", "b"):
                cleanup.enter_context(docker_trust(stack.node_address(node), stack.ca_file))
        writer, reader, anonymous = (kind(home / role, stack.node_address(node), stack.ca_file.parent)
                                     for role, node in (("writer", "a"), ("reader", "b"), ("anonymous", "b")))
        for c in (writer, reader, anonymous):
            cleanup.callback(c.cleanup)
        alice = Identity("writer", "alice", PASSWORDS["alice"])
        bob = Identity("reader", "reader", PASSWORDS["reader"])
        assert writer.login(alice).ok
        ref_a = writer.ref(f"team/{client}", "v1")
        assert writer.build(ref_a, f"swarm-token-{uuid.uuid4().hex}").ok
        pushed = writer.push(ref_a)
        assert pushed.ok, pushed
        with stack.user("alice", "a").client() as api:
            digest = api.resolve(f"team/{client}", "v1")
        login = reader.login(bob)
        assert login.ok, login
        ref_b = reader.ref(f"team/{client}", "v1")
        pulled = reader.pull(ref_b)
        assert pulled.ok, pulled
        assert reader.content_digest(ref_b) == digest
        own = reader.ref(f"team/{client}-reader", "v1")
        assert reader.build(own, f"reader-{uuid.uuid4().hex}").ok
        refused = reader.push(own)
        assert refused.denied, refused
        anonymous.identity = Identity("anonymous")
        refused = anonymous.pull(ref_b)
        assert refused.denied, refused


def test_deletion_and_readonly_gc_with_token_auth(stack):
    """The program's deletion rule, applied by its ImageDeletion provider through the stack's
    address with bearer tokens (as alice, the admin), deletes the tag; the program's
    SwarmGarbageCollection then rolls the replicas onto the read-only config (which keeps
    token auth), collects, and rolls back: the deleted image's own blob leaves the bucket, the
    kept image verifies, pushes work again, and an unauthenticated /v2/ is still 401."""
    layout = stack.tmp / "layout"
    shared = oci.random_bytes(96 * 1024, seed="tok-shared")
    old = oci.write_image(layout, "old", [shared, oci.random_bytes(256 * 1024, seed="tok-old")], seed="tok-old")
    oci.write_image(layout, "keep", [shared, 32 * 1024], seed="tok-keep")
    alice = stack.user("alice", "a")
    for tag in ("old", "keep"):
        alice.push(layout, tag, "team/gc")
    with alice.client() as api:
        old_layer = api.manifest("team/gc", "old").document["layers"][1]["digest"].split(":")[1]
    old_key = f"docker/registry/v2/blobs/sha256/{old_layer[:2]}/{old_layer}/data"
    assert old_key in stack.store.keys("docker/registry/v2/blobs/")

    run = run_program({**stack.config, "maintenance": {"deletions": [{"repository": "team/gc", "tags": ["old"]}]}},
                      secret_keys=SECRET_KEYS, state=stack.state)
    deletion = run.monitor.one("pulumi-python:dynamic/registry:ImageDeletion").plain_inputs
    assert deletion["registryUrl"] == f"https://{stack.address}" and deletion["username"] == "alice"
    provider = ImageDeletionProvider()
    checked = provider.check({}, deletion)
    assert checked.failures == []
    created = provider.create(checked.inputs)
    assert created.outs["deletedTags"] == ["old"] and created.outs["deletedDigests"] == [old]

    gc = run.monitor.one("pulumi-python:dynamic/registry:SwarmGarbageCollection").plain_inputs
    assert gc["registryUrl"] == f"https://{stack.address}" and gc["mode"] == "readonly"
    props = {**gc, "trigger": "after-deletion", "redisImage": stack.deployment.standins[gc["redisImage"]]}
    started = time.monotonic()
    report = SwarmGarbageCollectionProvider().create(props).outs
    print(f"swarm GC with token auth: {time.monotonic() - started:.1f}s, blobsEligible {report['blobsEligible']}, "
          f"writes refused {report['writesRefusedSeconds']}s")
    assert report["blobsEligible"] >= 1 and report["writesRefusedSeconds"] > 0
    wait_for(lambda: old_key not in stack.store.keys("docker/registry/v2/blobs/"), timeout=30, what="blob removal")
    # The maintenance client sends the password only to a realm on the registry's own origin: A.
    with stack.user("alice", "a").client() as api:
        assert not api.writes_refused("team/after-gc")
        assert verify_registry(api, skip=frozenset({("team/gc", "old")})).tags >= 2
    oci.write_image(layout, "after", [shared, 16 * 1024], seed="tok-after")
    stack.user("alice", "b").push(layout, "after", "team/gc")
    assert requests.get(f"https://{stack.node_address('b')}/v2/team/gc/tags/list", verify=str(stack.ca_file),
                        timeout=10).status_code == 401


def test_password_change_rolls_the_token_service(stack):
    """A new password for reader is a new htpasswd secret (named by content): the program run
    again updates the token service in place, start-first; the old task, stopped by Swarm once
    the new one runs, exits on SIGTERM (code 0, within the 10 s grace period, not killed after
    it). Then, through node B, the old password is refused on every try (401, then 429 once the
    address's failed-login budget is spent) and the new one gets a token; the registry replicas
    are not restarted."""
    d = stack.deployment
    registry_tasks = {t["ID"] for t in d.running_tasks("registry")}
    old_task = d.running_tasks("-token")[0]["ID"]
    new_password = "reader-rotated-password-0123"
    new = run_program({**stack.config, "users": {**PASSWORDS, "reader": new_password}}, secret_keys=SECRET_KEYS,
                      state=stack.state)
    d.update(new)
    (new_task,) = wait_for(lambda: [t for t in d.running_tasks("-token") if t["ID"] != old_task] or None,
                           timeout=120, what="the updated token service running")

    def old_stopped() -> Optional[dict]:
        status = d.client.api.tasks(filters={"id": old_task})[0]["Status"]
        return status if status["State"] in ("shutdown", "complete", "failed") else None

    stopped = wait_for(old_stopped, timeout=30, what="the old token task stopped")
    after = docker_timestamp(stopped["Timestamp"]) - docker_timestamp(new_task["Status"]["Timestamp"])
    print(f"old token task stopped {after:.1f}s after the new one ran, exit code "
          f"{stopped['ContainerStatus'].get('ExitCode')}")
    assert stopped["ContainerStatus"].get("ExitCode") == 0, stopped
    assert len(d.running_tasks("-token")) == 1
    time.sleep(1.5)  # nginx re-resolves the service name after 1 s (resolver valid=1s)

    realm_b = f"https://{stack.node_address('b')}/token"
    query = {"service": stack.address, "scope": "repository:team/app:pull"}

    def status(password: str) -> int:
        return requests.get(realm_b, params=query, auth=("reader", password), verify=str(stack.ca_file),
                            timeout=30).status_code

    # 401 while the address has failed-login budget (burst 3), then 429 without a password
    # check; never a token.
    tries = [status(PASSWORDS["reader"]) for _ in range(5)]
    assert set(tries) <= {401, 429} and tries[0] == 401, tries
    wait_for(lambda: status(new_password) == 200, timeout=30, what="the new password accepted once the budget refills")
    assert {t["ID"] for t in d.running_tasks("registry")} == registry_tasks
