"""Deleting 200 tags: the ImageDeletion provider versus the tutorial's method, and distribution
2.8.2 versus 3.1.2, side by side.

Three stacks deployed from the program: on distribution 2.8.2, one in basic mode (nginx TLS +
bcrypt basic auth at cost 5, checked by nginx on every request; the tutorial's method needs it)
and one in the default token mode (the registry verifies a JWT on each request; the provider
fetches scoped tokens); on 3.1.2, one in token mode. Each round pushes 200 distinct small
Docker schema 2 images (their own config and layer, one shared base layer; schema 2 so the
tutorial's single Accept header resolves them) to a fresh repository per method, then deletes
all 200 tags of each:

* provider (basic), provider (token) and provider (token, 3): ``ImageDeletionProvider().create``
  with one rule naming the 200 tags: one keep-alive session, at most 16 requests at once (the
  default), the shared-digest and multi-arch safety checks (tag list, a ``HEAD`` per tag), a
  ``DELETE`` per digest;
* provider (token, 3, by tag): the same rule with ``deleteByTag`` (what the program sets on 3
  when the collection removes untagged manifests): the tag list, then a ``DELETE`` per tag;
* tutorial (basic): per tag, ``curl -I`` with the Docker manifest Accept header to read
  Docker-Content-Digest, then ``curl -X DELETE`` by digest: two curl processes, two new TLS
  connections per tag.

Beside the wall time, each method's CPU per deleted tag is printed for every party: each
container of the stack (cgroup v1 ``cpuacct.usage``, what ``docker stats`` reads) and the
client (this process's rusage for the provider, its waited-for children's for curl). Not
counted: the Docker daemons that carry the containers' log lines (shared with every other
container on the machine, so not attributable here).

The methods run in a different order each round, so drifting load on the machine does not
favour one. Every repository's tag list is verified empty afterwards. Credentials reach curl
through a config file on stdin (``-K -``), never the command line.
Usage: .venv/bin/python bench/deletion/run.py [--tags 200] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from components.maintenance_providers import ImageDeletionProvider  # noqa: E402
from components.registry_api import DOCKER_MANIFEST  # noqa: E402
from components.registry_auth import RegistryAuth  # noqa: E402
from components.settings import REGISTRY2_IMAGE  # noqa: E402
from tests.support.deploy import live_stack, registry_stack  # noqa: E402
from tests.support.go_tools import registry_binary  # noqa: E402

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# method -> the stack it runs against (stacks: auth mode and distribution version)
METHODS = {"provider": "basic-2", "provider-token": "token-2", "provider-token-3": "token-3",
           "provider-token-3-by-tag": "token-3", "tutorial": "basic-2"}
BY_TAG = {"provider-token-3-by-tag"}
# Where a stack pins distribution 2.8 (3 is the program's default image).
PINNED_2 = {"images": {"registry": REGISTRY2_IMAGE}}
CGROUP_CPU = Path("/sys/fs/cgroup/cpuacct/docker")
TOKEN_USER = "maint"


@dataclass
class Target:
    """One deployed stack as the bench uses it: where, who, and its containers' cgroup ids."""

    mode: str
    url: str
    ca_pem: str
    ca_file: Path
    username: str
    password: str
    containers: dict[str, str]  # role (registry, proxy, token) -> container id

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time each container has used so far (user + system, all its processes)."""
        return {role: int((CGROUP_CPU / cid / "cpuacct.usage").read_text()) / 1e9
                for role, cid in self.containers.items()}

    def session(self, pool: int = 8) -> requests.Session:
        session = requests.Session()
        session.auth = RegistryAuth(self.username, self.password, self.url, verify=lambda: str(self.ca_file))
        session.verify = str(self.ca_file)
        session.trust_env = False  # else REQUESTS_CA_BUNDLE would override verify
        session.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=pool))
        return session


def _roles(deployment) -> dict[str, str]:
    ids = {}
    for spec in deployment.containers():
        name = spec.plain_inputs["name"]
        role = next((r for r in ("registry", "proxy", "token") if spec.name.endswith(f"{r}-container")), None)
        if role:
            ids[role] = deployment.client.containers.get(name).id
    return ids


@contextmanager
def basic_target(work: Path) -> Iterator[Target]:
    """Basic mode on distribution 2.8.2 (the tutorial's registry)."""
    with registry_stack(work, prefix="bench-deletion", **PINNED_2) as stack:
        ids = {"registry": stack.registry_container().id, "proxy": stack.docker.containers.get(stack.proxy_name).id}
        yield Target("basic", stack.url, stack.ca_pem, stack.cert_dir / "ca.crt", stack.username, stack.password, ids)


@contextmanager
def token_target(work: Path, version: int) -> Iterator[Target]:
    """The program's default auth mode: token, on distribution ``version`` (2 or 3); the bench's
    user is an admin (may delete)."""
    password = secrets.token_urlsafe(18)
    with live_stack(work, f"bench-deletion-tok{version}", {TOKEN_USER: password}, wait_healthy=False,
                    auth={"admins": [TOKEN_USER]}, **(PINNED_2 if version == 2 else {})) as live:
        target = Target("token", f"https://{live.address}", live.ca_file.read_text(), live.ca_file, TOKEN_USER,
                        password, _roles(live.deployment))
        with target.session() as session:
            for _ in range(300):
                try:
                    if session.get(f"{target.url}/v2/", timeout=5).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.1)
            else:
                raise RuntimeError("token stack not ready")
        yield target


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
        "registry3": first_line([registry_binary(3), "--version"]) + " (stand-in image from this binary)",
        "nginx": first_line(["nginx", "-v"]) + " (stand-in image from this binary)",
        "docker": first_line(["docker", "version", "--format", "{{.Server.Version}}"]),
    }


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def push_all(target: Target, tags: list[str], repository: str) -> float:
    """Push a Docker schema 2 image per tag through the API (8 at once): a shared base layer,
    a layer and a config of its own. Faster than a client, and the registry stores the same."""
    session = target.session()
    url = target.url
    base = _blob(os.urandom(64 * 1024))

    def upload(blob: tuple[str, bytes]) -> None:
        started = session.post(f"{url}/v2/{repository}/blobs/uploads/", timeout=60)
        started.raise_for_status()
        location = requests.compat.urljoin(url, started.headers["Location"])
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
        put = session.put(f"{url}/v2/{repository}/manifests/{tag}", data=json.dumps(manifest).encode(),
                          headers={"Content-Type": DOCKER_MANIFEST}, timeout=60)
        put.raise_for_status()

    start = time.perf_counter()
    upload(base)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(push, tags))
    session.close()
    return time.perf_counter() - start


def curl(target: Target, *args: str) -> subprocess.CompletedProcess:
    config = f'user = "{target.username}:{target.password}"\n'
    return subprocess.run(
        ["curl", "-sS", "-K", "-", "--cacert", str(target.ca_file), *args],
        input=config, capture_output=True, text=True, check=True,
    )


def tutorial_delete(target: Target, repository: str, tags: list[str]) -> None:
    for tag in tags:
        head = curl(target, "-I", "-H", f"Accept: {DOCKER_MANIFEST}", f"{target.url}/v2/{repository}/manifests/{tag}")
        digest = next(line.split(":", 1)[1].strip() for line in head.stdout.splitlines()
                      if line.lower().startswith("docker-content-digest:"))
        deleted = curl(target, "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE",
                       f"{target.url}/v2/{repository}/manifests/{digest}")
        if deleted.stdout != "202":
            raise RuntimeError(f"tutorial DELETE of {repository}:{tag} answered {deleted.stdout}")


def provider_delete(target: Target, repository: str, tags: list[str], *, by_tag: bool = False) -> None:
    rule = {"registryUrl": target.url, "caPem": target.ca_pem, "username": target.username,
            "password": target.password, "repository": repository, "tags": tags, "deleteByTag": by_tag}
    outs = ImageDeletionProvider().create(rule).outs
    deleted = outs["deletedTags"] if by_tag else outs["deletedDigests"]
    if len(deleted) != len(tags) or outs["pendingDeletions"]:
        raise RuntimeError(f"provider left {outs['pendingDeletions']} in {repository}")


def _client_cpu(method: str) -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if method == "tutorial" else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(method: str, target: Target, repository: str, tags: list[str]) -> dict:
    """Wall time and CPU seconds of each party (containers, client) for one method's deletion."""
    load = round(os.getloadavg()[0], 2)
    before, client_before = target.cpu_seconds(), _client_cpu(method)
    start = time.perf_counter()
    if method == "tutorial":
        tutorial_delete(target, repository, tags)
    else:
        provider_delete(target, repository, tags, by_tag=method in BY_TAG)
    wall = time.perf_counter() - start
    after, client_after = target.cpu_seconds(), _client_cpu(method)
    cpu = {role: round(after[role] - before[role], 3) for role in before}
    cpu["client"] = round(client_after - client_before, 3)
    return {"seconds": round(wall, 3), "cpu_seconds": cpu, "load_average_1m": load}


def per_tag_ms(entry: dict, tags: int) -> str:
    return ", ".join(f"{role} {seconds * 1000 / tags:.2f}" for role, seconds in entry["cpu_seconds"].items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result here")
    options = parser.parse_args()

    tags = [f"t{i:03d}" for i in range(options.tags)]
    methods = tuple(METHODS)
    rounds: list[dict] = []
    load_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="bench-deletion-") as work, ExitStack() as stacks:
        targets = {"basic-2": stacks.enter_context(basic_target(Path(work) / "basic")),
                   "token-2": stacks.enter_context(token_target(Path(work) / "token2", 2)),
                   "token-3": stacks.enter_context(token_target(Path(work) / "token3", 3))}
        for number in range(options.rounds):
            repositories = {method: f"bench/r{number}-{method}" for method in methods}
            pushed = sum(push_all(targets[METHODS[m]], tags, repo) for m, repo in repositories.items())
            shift = number % len(methods)
            order = methods[shift:] + methods[:shift]
            results = {m: measure(m, targets[METHODS[m]], repositories[m], tags) for m in order}
            for method, repo in repositories.items():
                with targets[METHODS[method]].session() as session:
                    reply = session.get(f"{targets[METHODS[method]].url}/v2/{repo}/tags/list", timeout=30)
                    left = reply.json().get("tags") if reply.status_code == 200 else None
                if left:
                    raise RuntimeError(f"tags left in {repo}: {left}")
            tutorial = results["tutorial"]["seconds"]
            ratios = {m: round(tutorial / results[m]["seconds"], 2) for m in methods if m != "tutorial"}
            on_28 = results["provider-token"]["seconds"]
            versus_28 = {m: round(on_28 / results[m]["seconds"], 2) for m in methods if m.startswith("provider-token-3")}
            rounds.append({"order": list(order), "results": results, "push_seconds": round(pushed, 1),
                           "tutorial_over": ratios, "token_2_8_over": versus_28})
            print(f"round {number + 1}: " + "; ".join(
                f"{m} {results[m]['seconds']:.2f} s (load {results[m]['load_average_1m']}; CPU ms/tag: "
                f"{per_tag_ms(results[m], len(tags))})" for m in order)
                + "; " + ", ".join(f"tutorial/{m} {r:.2f}x" for m, r in ratios.items())
                + "; " + ", ".join(f"provider-token/{m} {r:.2f}x" for m, r in versus_28.items()), flush=True)

    medians = {m: statistics.median(r["tutorial_over"][m] for r in rounds) for m in methods if m != "tutorial"}
    medians_28 = {m: statistics.median(r["token_2_8_over"][m] for r in rounds) for m in rounds[0]["token_2_8_over"]}
    result = {
        "tags": len(tags),
        "stacks": METHODS,
        "load_average_1m_start": load_start,
        "load_average_1m_end": round(os.getloadavg()[0], 2),
        "rounds": rounds,
        "median_tutorial_over": medians,
        "median_token_2_8_over": medians_28,
        "machine": machine(),
    }
    print(f"deleting {len(tags)} tags, {len(rounds)} rounds, load {result['load_average_1m_start']}"
          f"-{result['load_average_1m_end']}: median " + ", ".join(
              f"tutorial (basic-2) / {m} ({METHODS[m]}) {r:.2f}x" for m, r in medians.items())
          + "; " + ", ".join(f"provider-token (2.8) / {m} {r:.2f}x" for m, r in medians_28.items()))
    print(json.dumps(result["machine"], indent=2))
    if options.json:
        options.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
