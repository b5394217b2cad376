"""Scaling out: 16 concurrent pulls of a 10-layer image against 1, 2 and 4 registry replicas on S3
(real SeaweedFS) in Swarm mode, and against one registry on a filesystem volume, in one run.

    .venv/bin/python bench/scale.py [--layer-kib 512] [--clients 16] [--rounds 2]

One two-node swarm (tests/support/swarm.py) with SeaweedFS's S3 gateway in node A's namespace.
On it: the program's Swarm-mode stack (``storage: s3``, Redis cache; replicas changed by running
the program again and updating the service as ``pulumi up`` would), and next to it on node A's
engine the program's single-host stack on its volume. Every client pulls through node A's nginx
(one TLS front for every variant), so the variants differ only behind nginx: replicas, storage.
Each round measures every variant once (filesystem first, then 1, 2, 4 replicas); figures are
medians over rounds, ratios medians of same-round ratios against S3 with 1 replica.
All processes run on this one machine (its cores are shared by clients, nginx, the replicas
and SeaweedFS): growth with replicas here is a lower bound of what separate hosts give.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

from common import ROOT, log, machine, median, write_result  # noqa: F401 - sys.path set by common

from tests.support.deploy import (
    STANDIN_BUSYBOX, STANDIN_NGINX, STANDIN_REGISTRY, STANDINS, Deployment, free_port, wait_https,
)
from tests.support.objectstore import REDIS_STANDIN, build_scale_standins, redis_standins
from tests.support.oci import write_image
from tests.support.program import run_program
from tests.support.scale_clients import RegistryUser
from tests.support.swarm import two_node_swarm, weed_in_namespace
from tests.support.swarm_deploy import SwarmDeployment

PASSWORD = "bench-password-0123456789"
REPLICAS = (1, 2, 4)


def concurrent_pulls(user: RegistryUser, repository: str, tag: str, clients: int) -> float:
    """Seconds for ``clients`` simultaneous pulls of the image; raises if any fails."""
    results: list = [None] * clients

    def pull(i: int) -> None:
        results[i] = user.pull(repository, tag, check=False)

    threads = [threading.Thread(target=pull, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    failed = [r.stderr[-300:] for r in results if r is None or r.returncode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} pulls failed: {failed[:2]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layer-kib", type=int, default=512)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    build_scale_standins()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    layout = work / "layout"
    write_image(layout, "bench", [args.layer_kib * 1024] * args.layers, seed="bench-scale")
    image_mib = args.layer_kib * args.layers / 1024
    images = [STANDIN_REGISTRY, STANDIN_NGINX, STANDIN_BUSYBOX, REDIS_STANDIN]
    seconds: dict[str, list[float]] = {"filesystem x1": [], **{f"s3 x{n}": [] for n in REPLICAS}}
    with two_node_swarm(images) as swarm, weed_in_namespace(swarm.manager) as store:
        node = swarm.manager
        name = f"bsc-{uuid.uuid4().hex[:6]}"
        cert_dir = work / "certs"
        cert_dir.mkdir()
        swarm_port, fs_port = free_port(), free_port()
        ips = ["127.0.0.1", node.host_address, swarm.worker.host_address]
        swarm_config = {
            "httpsPort": swarm_port, "namePrefix": name, "users": {"bench": PASSWORD}, "ips": ips,
            "docker": {"host": node.socket}, "storage": store.settings(), "swarm": {"enabled": True, "replicas": 1},
            "redis": {"enabled": True}, "auth": {"mode": "basic"},
        }
        state: dict = {}
        run = run_program(swarm_config, secret_keys=["users", "storage"], state=state)
        (cert_dir / "ca.crt").write_text(run.exports["caCertificatePem"])
        fs_run = run_program(
            {"httpsPort": fs_port, "namePrefix": f"{name}-fs", "users": {"bench": PASSWORD}, "ips": ips,
             "auth": {"mode": "basic"}},
            secret_keys=["users"],
        )
        fs_cert_dir = work / "fs-certs"
        fs_cert_dir.mkdir()
        (fs_cert_dir / "ca.crt").write_text(fs_run.exports["caCertificatePem"])
        deployment = SwarmDeployment(run, node.client(), {**STANDINS, **redis_standins()})
        fs = Deployment(fs_run, client=node.client(), standins={**STANDINS, **redis_standins()})
        users = {
            "s3": RegistryUser(f"{node.host_address}:{swarm_port}", "bench", PASSWORD, cert_dir, work),
            "filesystem": RegistryUser(f"{node.host_address}:{fs_port}", "bench", PASSWORD, fs_cert_dir, work),
        }
        try:
            deployment.up()
            deployment.wait_converged(swarm.nodes, swarm_port, str(cert_dir / "ca.crt"), 1)
            fs.up()
            wait_https(f"https://{users['filesystem'].host}/healthz", str(fs_cert_dir / "ca.crt"))
            users["s3"].push(layout, "bench", "bench/app")
            users["filesystem"].push(layout, "bench", "bench/app")
            for kind in ("s3", "filesystem"):  # warm: descriptor caches, TLS sessions
                concurrent_pulls(users[kind], "bench/app", "bench", 2)
            for round_index in range(args.rounds):
                elapsed = concurrent_pulls(users["filesystem"], "bench/app", "bench", args.clients)
                seconds["filesystem x1"].append(elapsed)
                log(f"round {round_index + 1}: filesystem x1 {args.clients * image_mib / elapsed:7.1f} MiB/s")
                for replicas in (REPLICAS if round_index % 2 == 0 else tuple(reversed(REPLICAS))):
                    scaled = run_program({**swarm_config, "swarm": {"enabled": True, "replicas": replicas}},
                                         secret_keys=["users", "storage"], state=state)
                    deployment.update(scaled)
                    deployment.wait_converged(swarm.nodes, swarm_port, str(cert_dir / "ca.crt"), replicas)
                    concurrent_pulls(users["s3"], "bench/app", "bench", 2)
                    elapsed = concurrent_pulls(users["s3"], "bench/app", "bench", args.clients)
                    seconds[f"s3 x{replicas}"].append(elapsed)
                    log(f"round {round_index + 1}: s3 x{replicas} {args.clients * image_mib / elapsed:7.1f} MiB/s")
        finally:
            fs.down(remove_volumes=True)
            deployment.down()
    total_mib = args.clients * image_mib
    result: dict = {
        "benchmark": "scale",
        "clients": args.clients, "layers": args.layers, "layer KiB": args.layer_kib, "rounds": args.rounds,
        "client": "skopeo copy docker:// -> oci: (one process per client, all at once) through node A's nginx",
        "variants": {},
        "machine": machine(),
    }
    base = seconds["s3 x1"]
    for name, values in seconds.items():
        result["variants"][name] = {
            "MiB/s": round(total_mib / median(values), 1),
            "seconds": [round(v, 3) for v in values],
            # >1: faster than one S3 replica in the same round.
            "vs s3 x1": round(median(b / v for b, v in zip(base, values)), 3),
        }
    write_result("scale", result)
    for name, figures in result["variants"].items():
        log(f"{name:14s} {figures['MiB/s']:7.1f} MiB/s   vs s3 x1: {figures['vs s3 x1']:.2f}")
    subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
