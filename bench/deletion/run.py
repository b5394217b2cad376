"""Deleting 200 tags: the ImageDeletion provider versus the tutorial's method, side by side.

Each round pushes 200 distinct small Docker schema 2 images (their own config and layer, one
shared base layer; schema 2 so the tutorial's single Accept header resolves them) to three
fresh repositories of a registry deployed from the program (nginx TLS + bcrypt basic auth in
front), then deletes all 200 tags of each:

* provider: ``ImageDeletionProvider().create`` with one rule naming the 200 tags: one
  keep-alive session, at most 16 requests at once (the default), the shared-digest safety
  check (tag list, a ``HEAD`` per tag), a ``DELETE`` per digest;
* provider with 4 at once (the earlier default), to show what the concurrency buys;
* tutorial: per tag, ``curl -I`` with the Docker manifest Accept header to read
  Docker-Content-Digest, then ``curl -X DELETE`` by digest: two curl processes, two new TLS
  connections per tag.

The three run in a different order each round, so drifting load on the machine does not
favour one. Every repository's tag list is verified empty afterwards. Credentials reach curl
through a config file on stdin (``-K -``), never the command line.
Usage: .venv/bin/python bench/deletion/run.py [--tags 200] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from components import maintenance_plan  # noqa: E402
from components.maintenance_providers import ImageDeletionProvider  # noqa: E402
from components.registry_api import DOCKER_MANIFEST, RegistryClient  # noqa: E402
from tests.support.deploy import registry_stack  # noqa: E402

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
METHODS = ("provider", "provider4", "tutorial")


def first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unavailable"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "requests": requests.__version__,
        "curl": first_line(["curl", "--version"]),
        "registry": first_line(["docker-registry", "--version"]) + " (stand-in image from this binary)",
        "nginx": first_line(["nginx", "-v"]) + " (stand-in image from this binary)",
        "docker": first_line(["docker", "version", "--format", "{{.Server.Version}}"]),
    }


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def push_all(stack, tags: list[str], repository: str) -> float:
    """Push a Docker schema 2 image per tag through the API (8 at once): a shared base layer,
    a layer and a config of its own. Faster than a client, and the registry stores the same."""
    session = requests.Session()
    session.auth = (stack.username, stack.password)
    session.verify = str(stack.cert_dir / "ca.crt")
    session.trust_env = False  # else REQUESTS_CA_BUNDLE would override verify
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=8)
    session.mount("https://", adapter)
    base = _blob(os.urandom(64 * 1024))

    def upload(blob: tuple[str, bytes]) -> None:
        started = session.post(f"{stack.url}/v2/{repository}/blobs/uploads/", timeout=60)
        started.raise_for_status()
        location = requests.compat.urljoin(stack.url, started.headers["Location"])
        separator = "&" if "?" in location else "?"
        done = session.put(f"{location}{separator}digest={blob[0]}", data=blob[1],
                           headers={"Content-Type": "application/octet-stream"}, timeout=60)
        done.raise_for_status()

    def push(tag: str) -> None:
        layer = _blob(f"{repository}:{tag}".encode() * 16)
        config = _blob(json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                                   "rootfs": {"type": "layers", "diff_ids": [base[0], layer[0]]},
                                   "tag": tag}).encode())
        for blob in (layer, config):
            upload(blob)
        manifest = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                    "config": {"mediaType": DOCKER_CONFIG, "size": len(config[1]), "digest": config[0]},
                    "layers": [{"mediaType": DOCKER_LAYER, "size": len(b[1]), "digest": b[0]} for b in (base, layer)]}
        put = session.put(f"{stack.url}/v2/{repository}/manifests/{tag}", data=json.dumps(manifest).encode(),
                          headers={"Content-Type": DOCKER_MANIFEST}, timeout=60)
        put.raise_for_status()

    start = time.perf_counter()
    upload(base)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(push, tags))
    session.close()
    return time.perf_counter() - start


def curl(stack, *args: str) -> subprocess.CompletedProcess:
    config = f'user = "{stack.username}:{stack.password}"\n'
    return subprocess.run(
        ["curl", "-sS", "-K", "-", "--cacert", str(stack.cert_dir / "ca.crt"), *args],
        input=config, capture_output=True, text=True, check=True,
    )


def tutorial_delete(stack, repository: str, tags: list[str]) -> None:
    for tag in tags:
        head = curl(stack, "-I", "-H", f"Accept: {DOCKER_MANIFEST}", f"{stack.url}/v2/{repository}/manifests/{tag}")
        digest = next(line.split(":", 1)[1].strip() for line in head.stdout.splitlines()
                      if line.lower().startswith("docker-content-digest:"))
        deleted = curl(stack, "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE",
                       f"{stack.url}/v2/{repository}/manifests/{digest}")
        if deleted.stdout != "202":
            raise RuntimeError(f"tutorial DELETE of {repository}:{tag} answered {deleted.stdout}")


def provider_delete(stack, repository: str, tags: list[str], max_workers: int) -> None:
    rule = {"registryUrl": stack.url, "caPem": stack.ca_pem, "username": stack.username,
            "password": stack.password, "repository": repository, "tags": tags}
    original = maintenance_plan.RegistryClient
    maintenance_plan.RegistryClient = functools.partial(RegistryClient, max_workers=max_workers)
    try:
        outs = ImageDeletionProvider().create(rule).outs
    finally:
        maintenance_plan.RegistryClient = original
    if len(outs["deletedDigests"]) != len(tags) or outs["pendingDeletions"]:
        raise RuntimeError(f"provider left {outs['pendingDeletions']} in {repository}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result here")
    options = parser.parse_args()

    tags = [f"t{i:03d}" for i in range(options.tags)]
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-deletion-") as work, \
            registry_stack(Path(work), prefix="bench-deletion") as stack:
        for number in range(options.rounds):
            repositories = {method: f"bench/r{number}-{method}" for method in METHODS}
            pushed = sum(push_all(stack, tags, repo) for repo in repositories.values())
            order = METHODS[number % 3:] + METHODS[:number % 3]
            seconds, loads = {}, {}
            for method in order:
                loads[method] = round(os.getloadavg()[0], 2)
                start = time.perf_counter()
                if method == "tutorial":
                    tutorial_delete(stack, repositories[method], tags)
                else:
                    provider_delete(stack, repositories[method], tags, 16 if method == "provider" else 4)
                seconds[method] = round(time.perf_counter() - start, 3)
            with stack.client() as api:
                left = {repo: api.tags(repo) for repo in repositories.values()}
            if any(left.values()):
                raise RuntimeError(f"tags left: {left}")
            rounds.append({"order": list(order), "seconds": seconds, "load_average_1m": loads,
                           "push_seconds": round(pushed, 1),
                           "tutorial_over_provider": round(seconds["tutorial"] / seconds["provider"], 2),
                           "tutorial_over_provider4": round(seconds["tutorial"] / seconds["provider4"], 2)})
            print(f"round {number + 1}: " + ", ".join(f"{m} {seconds[m]:.2f} s (load {loads[m]})" for m in order)
                  + f"; tutorial/provider {rounds[-1]['tutorial_over_provider']:.2f}x, "
                  f"tutorial/provider(4) {rounds[-1]['tutorial_over_provider4']:.2f}x", flush=True)

    result = {
        "tags": len(tags),
        "rounds": rounds,
        "median_tutorial_over_provider": statistics.median(r["tutorial_over_provider"] for r in rounds),
        "median_tutorial_over_provider4": statistics.median(r["tutorial_over_provider4"] for r in rounds),
        "machine": machine(),
    }
    print(f"deleting {len(tags)} tags through the TLS + basic-auth proxy, {len(rounds)} rounds: median "
          f"tutorial/provider {result['median_tutorial_over_provider']:.2f}x (16 at once), "
          f"{result['median_tutorial_over_provider4']:.2f}x (4 at once)")
    print(json.dumps(result["machine"], indent=2))
    if options.json:
        options.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
