"""Deleting 200 tags: the ImageDeletion provider versus the tutorial's method. One run.

Both delete 200 tags (200 distinct small images sharing a base layer, pushed as Docker
schema 2 so the tutorial's single Accept header resolves them) from a registry behind the
project's nginx TLS + bcrypt basic-auth proxy:

* provider: ``ImageDeletionProvider().create`` with one rule naming the 200 tags: one
  keep-alive session, at most 16 requests at once (the default), the shared-digest safety
  check (tag list, a ``HEAD`` per tag), a ``DELETE`` per digest;
* provider with 4 at once (the earlier default), to show what the concurrency buys;
* tutorial: per tag, ``curl -I`` with the Docker manifest Accept header to read
  Docker-Content-Digest, then ``curl -X DELETE`` by digest: two curl processes, two new TLS
  connections per tag.

Credentials reach curl through a config file on stdin (``-K -``), never the command line.
Every repository's tag list is verified empty afterwards.
Usage: .venv/bin/python bench/deletion/run.py [--tags 200] [--json PATH]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
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

from components.maintenance_providers import ImageDeletionProvider  # noqa: E402
from components.registry_api import DOCKER_MANIFEST  # noqa: E402
from components import maintenance_plan  # noqa: E402
from components.registry_api import RegistryClient  # noqa: E402
from tests.support.deploy import registry_stack  # noqa: E402
from tests.support import oci  # noqa: E402


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
        "skopeo": first_line(["skopeo", "--version"]),
        "registry": first_line(["docker-registry", "--version"]) + " (stand-in image from this binary)",
        "nginx": first_line(["nginx", "-v"]) + " (stand-in image from this binary)",
        "docker": first_line(["docker", "version", "--format", "{{.Server.Version}}"]),
    }


def push_all(stack, layout: Path, tags: list[str], repository: str) -> float:
    """Push every tag (Docker schema 2), four skopeo processes at a time."""

    def push(tag: str) -> None:
        stack.skopeo("copy", "-q", "--format", "v2s2", "--dest-cert-dir", str(stack.cert_dir),
                     "--dest-creds", f"{stack.username}:{stack.password}",
                     f"oci:{layout}:{tag}", f"docker://{stack.host}/{repository}:{tag}")

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(push, tags))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the result here")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-deletion-") as work:
        work_path = Path(work)
        # The program's registry and proxy, deployed as the program declares them.
        with registry_stack(work_path, prefix="bench-deletion") as stack:
            layout = work_path / "layout"
            base = oci.random_bytes(64 * 1024, seed="bench-base")
            tags = [f"t{i:03d}" for i in range(options.tags)]
            for tag in tags:
                oci.write_image(layout, tag, [base, tag.encode() * 16], seed=tag)

            repositories = {"provider": "bench/provider", "provider4": "bench/provider4", "tutorial": "bench/tutorial"}
            pushed = {name: push_all(stack, layout, tags, repo) for name, repo in repositories.items()}

            def provider_delete(repository: str, max_workers: int) -> float:
                rule = {"registryUrl": stack.url, "caPem": stack.ca_pem, "username": stack.username,
                        "password": stack.password, "repository": repository, "tags": tags}
                original = maintenance_plan.RegistryClient
                maintenance_plan.RegistryClient = functools.partial(RegistryClient, max_workers=max_workers)
                try:
                    start = time.perf_counter()
                    outs = ImageDeletionProvider().create(rule).outs
                    seconds = time.perf_counter() - start
                finally:
                    maintenance_plan.RegistryClient = original
                assert len(outs["deletedDigests"]) == len(tags) and outs["pendingDeletions"] == []
                return seconds

            seconds = {"provider": provider_delete("bench/provider", 16),
                       "provider4": provider_delete("bench/provider4", 4)}
            start = time.perf_counter()
            tutorial_delete(stack, "bench/tutorial", tags)
            seconds["tutorial"] = time.perf_counter() - start

            with stack.client() as api:
                left = {repo: api.tags(repo) for repo in repositories.values()}
            assert all(remaining == [] for remaining in left.values()), left

    result = {
        "tags": len(tags),
        "provider_seconds": round(seconds["provider"], 3),
        "provider_4_workers_seconds": round(seconds["provider4"], 3),
        "tutorial_seconds": round(seconds["tutorial"], 3),
        "tutorial_over_provider": round(seconds["tutorial"] / seconds["provider"], 2),
        "tutorial_over_provider_4_workers": round(seconds["tutorial"] / seconds["provider4"], 2),
        "push_seconds": {k: round(v, 1) for k, v in pushed.items()},
        "machine": machine(),
    }
    print(f"deleting {len(tags)} tags through the TLS + basic-auth proxy (one run):")
    print(f"  provider (keep-alive, 16 at once, safety checks):        {seconds['provider']:8.2f} s")
    print(f"  provider (keep-alive, 4 at once, safety checks):         {seconds['provider4']:8.2f} s")
    print(f"  tutorial (curl HEAD + curl DELETE per tag, new TLS each): {seconds['tutorial']:8.2f} s")
    print(f"  ratio tutorial / provider: {result['tutorial_over_provider']:.2f}x "
          f"(4 at once: {result['tutorial_over_provider_4_workers']:.2f}x)")
    print(json.dumps(result["machine"], indent=2))
    if options.json:
        options.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
