"""A two-node Docker swarm for tests: two extra ``dockerd`` in network namespaces the test creates.

Topology (addresses in 10.213.N.0/28, N picked per swarm among those with no route on the host):

    host  --veth--  node A (netns <p>-a)  --veth--  node B (netns <p>-b)  --veth--  host
    .1              .2        .9 (swarm)            .10 (swarm)  .6                 .5

Each node is a ``dockerd`` entered into its namespace with ``nsenter --net`` (``ip netns exec``
would remount /sys and hide the cgroup hierarchy), with its own data root, exec root, pid
file, config file, Unix socket and cgroup parent, and ``--bridge=none`` (no default bridge:
Swarm tasks use overlay networks and the ``docker_gwbridge`` the node makes in its own
namespace). iptables rules each node writes live in its own namespace. Node A is the manager,
B a worker; swarm traffic runs on the A-B link, the test reaches each node on its own link.
Nothing here touches the shared engine but ``docker save`` of the images to load.

:func:`two_node_swarm` tears everything down (services, daemons, mounts, namespaces, files)
even when the test fails. :func:`weed_in_namespace` runs SeaweedFS's S3 gateway as a process in
node A's namespace, where every task reaches it through its node's gateway bridge.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import docker

from tests.support.certs import ServerPki
from tests.support.objectstore import ObjectStore
from tests.support.waiting import wait_for

SUBNET_BASE = "10.213"


def _run(*args: str, check: bool = True, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=timeout, **kwargs)


@dataclass
class Node:
    name: str  # "a" or "b"
    netns: str
    root: Path
    host_address: str  # where the test reaches this node
    swarm_address: str  # where the other node reaches it
    process: Optional[subprocess.Popen] = None

    @property
    def socket(self) -> str:
        return f"unix://{self.root}/docker.sock"

    def client(self, timeout: int = 120) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.socket, timeout=timeout)

    def cli(self, *args: str, check: bool = True, timeout: float = 120, input: Optional[str] = None):
        return _run("docker", "-H", self.socket, *args, check=check, timeout=timeout, input=input)

    def netns_run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return _run("nsenter", f"--net=/run/netns/{self.netns}", *args, check=check, timeout=timeout)


@dataclass
class Swarm:
    prefix: str
    root: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def worker(self) -> Node:
        return self.nodes[1]

    def node_ids(self) -> dict[str, str]:
        """Swarm node id -> our node name ('a', 'b')."""
        out = {}
        for node in self.nodes:
            info = node.client().info()
            out[info["Swarm"]["NodeID"]] = node.name
        return out


def _free_subnet() -> int:
    routes = _run("ip", "-4", "route", "show").stdout
    used = set()
    for line in routes.splitlines():
        target = line.split()[0]
        if target.startswith(SUBNET_BASE + "."):
            used.add(int(target.split(".")[2]))
    candidates = [n for n in range(16, 240) if n not in used]
    return candidates[secrets.randbelow(len(candidates))]


def _start_dockerd(node: Node, timeout: float = 60) -> None:
    node.root.mkdir(parents=True, exist_ok=True)
    (node.root / "daemon.json").write_text(json.dumps({}))
    log = open(node.root / "dockerd.log", "ab")
    node.process = subprocess.Popen(
        [
            "nsenter", f"--net=/run/netns/{node.netns}", "dockerd",
            "--config-file", str(node.root / "daemon.json"),
            "--data-root", str(node.root / "data"),
            "--exec-root", str(node.root / "x"),
            "--pidfile", str(node.root / "docker.pid"),
            "-H", node.socket,
            "--bridge=none",
            f"--cgroup-parent=/{node.netns}",
        ],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )
    wait_for(lambda: node.cli("info", check=False).returncode == 0, timeout, interval=0.3,
             what=f"dockerd of node {node.name} started", process=node.process, log=node.root / "dockerd.log")


def _stop_dockerd(node: Node) -> None:
    if node.process is None or node.process.poll() is not None:
        return
    node.process.send_signal(signal.SIGTERM)
    try:
        node.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(timeout=10)


def _unmount_under(root: Path) -> None:
    mounts = _run("findmnt", "-rn", "-o", "TARGET", check=False).stdout.split()
    for target in sorted((m for m in mounts if m.startswith(str(root) + "/")), key=len, reverse=True):
        _run("umount", "-l", target, check=False)


@contextmanager
def two_node_swarm(images: list[str], *, prefix: Optional[str] = None) -> Iterator[Swarm]:
    """A manager (A) and a worker (B) with ``images`` loaded from the shared engine."""
    prefix = prefix or f"scw{secrets.token_hex(2)}"
    assert len(prefix) <= 8, "interface names are at most 15 characters"
    root = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp"))
    subnet = _free_subnet()
    net = ipaddress.ip_network(f"{SUBNET_BASE}.{subnet}.0/28")
    addr = [str(a) for a in net]  # addr[1] host-A, [2] A, [5] host-B, [6] B, [9] A-swarm, [10] B-swarm
    swarm = Swarm(prefix=prefix, root=root)
    a = Node("a", f"{prefix}-a", root / "a", host_address=addr[2], swarm_address=addr[9])
    b = Node("b", f"{prefix}-b", root / "b", host_address=addr[6], swarm_address=addr[10])
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, root, True)
        for node, host_end in ((a, addr[1]), (b, addr[5])):
            _run("ip", "netns", "add", node.netns)
            cleanup.callback(_run, "ip", "netns", "del", node.netns, check=False)
            outer, inner = f"{prefix}{node.name}h", f"{prefix}{node.name}n"
            _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            cleanup.callback(_run, "ip", "link", "del", outer, check=False)
            _run("ip", "link", "set", inner, "netns", node.netns)
            _run("ip", "addr", "add", f"{host_end}/30", "dev", outer)
            _run("ip", "link", "set", outer, "up")
            _run("ip", "-n", node.netns, "addr", "add", f"{node.host_address}/30", "dev", inner)
            _run("ip", "-n", node.netns, "link", "set", inner, "up")
            _run("ip", "-n", node.netns, "link", "set", "lo", "up")
        _run("ip", "link", "add", f"{prefix}ab", "type", "veth", "peer", "name", f"{prefix}ba")
        _run("ip", "link", "set", f"{prefix}ab", "netns", a.netns)
        _run("ip", "link", "set", f"{prefix}ba", "netns", b.netns)
        for node, link in ((a, f"{prefix}ab"), (b, f"{prefix}ba")):
            _run("ip", "-n", node.netns, "addr", "add", f"{node.swarm_address}/30", "dev", link)
            _run("ip", "-n", node.netns, "link", "set", link, "up")
        # Tasks leave their node through docker_gwbridge (NAT, which dockerd sets up in the namespace).
        for node in (a, b):
            node.netns_run("sysctl", "-qw", "net.ipv4.ip_forward=1")
            swarm.nodes.append(node)
            cleanup.callback(_unmount_under, node.root)
            cleanup.callback(_stop_dockerd, node)
            _start_dockerd(node)
        archive = root / "images.tar"
        _run("docker", "save", "-o", str(archive), *images, timeout=300)
        for node in (a, b):
            node.cli("load", "-i", str(archive), timeout=300)
        archive.unlink()
        a.cli("swarm", "init", "--advertise-addr", a.swarm_address, "--listen-addr", f"{a.swarm_address}:2377",
              "--data-path-addr", a.swarm_address)
        token = a.cli("swarm", "join-token", "-q", "worker").stdout.strip()
        b.cli("swarm", "join", "--token", token, "--advertise-addr", b.swarm_address,
              "--listen-addr", f"{b.swarm_address}:2377", f"{a.swarm_address}:2377")
        yield swarm


@contextmanager
def weed_in_namespace(node: Node, *, bucket: str = "images", port: Optional[int] = None,
                      tls: Optional[ServerPki] = None) -> Iterator[ObjectStore]:
    """SeaweedFS (``weed server -s3``) as a process in ``node``'s namespace: tasks reach its S3
    gateway at the node's swarm address, the test at the node's host address. Its servers' ports
    are picked at random (S3 ``port`` too, unless given): weed names its Unix sockets
    ``/tmp/seaweedfs-<server>-<port>.sock``, shared by every namespace, so two swarms on the
    same machine must not use the same ports. With ``tls`` (a certificate for both addresses)
    the gateway serves HTTPS only."""
    base = 10000 + secrets.randbelow(4000) * 10  # grpc ports are these + 10000
    port = port or base + 3
    weed = Path(sys.executable).parent / "weed"
    if not weed.exists():
        weed = Path(shutil.which("weed") or "weed")
    data = node.root.parent / "weed"
    data.mkdir(parents=True, exist_ok=True)
    access_key = "AK" + secrets.token_hex(8).upper()
    secret_key = secrets.token_urlsafe(24)
    config = data / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "registry", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    config.chmod(0o600)
    tls_args: list[str] = []
    if tls:
        (data / "s3.crt").write_bytes(tls.cert_pem)
        (data / "s3.key").write_bytes(tls.key_pem)
        (data / "s3.key").chmod(0o600)
        (data / "ca.crt").write_text(tls.ca_pem)
        tls_args = [f"-s3.cert.file={data / 's3.crt'}", f"-s3.key.file={data / 's3.key'}"]
    scheme = "https" if tls else "http"
    log = open(data / "weed.log", "ab")
    process = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{node.netns}", str(weed), "server", f"-dir={data}", "-s3",
         f"-s3.config={config}", f"-s3.port={port}", f"-master.port={base}", f"-volume.port={base + 1}",
         f"-filer.port={base + 2}", "-s3.port.iceberg=0", "-ip=127.0.0.1", "-ip.bind=0.0.0.0",
         "-master.volumeSizeLimitMB=64", "-volume.max=64", *tls_args],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd=data,
    )
    store = ObjectStore(
        container=f"weed:{process.pid}", internal_endpoint=f"{scheme}://{node.swarm_address}:{port}",
        host_endpoint=f"{scheme}://{node.host_address}:{port}", access_key=access_key, secret_key=secret_key,
        bucket=bucket, ca_pem=tls.ca_pem if tls else None, ca_file=str(data / "ca.crt") if tls else None,
    )
    try:
        def bucket_made() -> bool:
            try:
                store.client().create_bucket(Bucket=bucket)
                return True
            except Exception:  # the gateway answers once master, volume and filer are up
                return False

        wait_for(bucket_made, 60, what="SeaweedFS up (a bucket made)", process=process, log=data / "weed.log")
        yield store
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
