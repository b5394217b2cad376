"""Load held: 20 concurrent clients push and pull distinct images for a bounded time.

One stack is deployed for the module. Twenty threads each run skopeo in a loop for
``LOAD_SECONDS`` (45 by default, at most 120): write a new image (a base layer every client
shares, so the same blob is pushed concurrently, plus a layer of its own of random size), push
it, pull it back by digest, and now and then pull another client's image too. Every pull is
checked: the manifest skopeo fetched hashes to the digest pushed, and every blob it wrote
hashes to its name. Afterwards every image pushed is verified once more through the proxy.
Zero errors allowed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from components.registry_api import MANIFEST_ACCEPT
from tests.support import oci
from tests.support.deploy import live_stack

USER = "loader"
PASSWORD = "L0ad:test-pass@word-83b1"
CLIENTS = 20
SECONDS = min(float(os.environ.get("LOAD_SECONDS", "45")), 120.0)
BASE = oci.random_bytes(256 * 1024, seed="load-base-layer")



@dataclass
class Stack:
    address: str
    ca_file: Path
    cert_dir: Path
    tmp: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    """The deployed stack; everything is removed afterwards."""
    tmp = tmp_path_factory.mktemp("load")
    # Basic mode: these clients send the password on every request.
    with live_stack(tmp, "load", {USER: PASSWORD}, auth={"mode": "basic"}) as live:
        yield Stack(live.address, live.ca_file, live.cert_dir, tmp)


@dataclass
class Tally:
    pushes: int = 0
    pulls: int = 0
    cross_pulls: int = 0
    bytes_pushed: int = 0
    push_seconds: list[float] = field(default_factory=list)
    pull_seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pushed: list[tuple[str, str, str]] = field(default_factory=list)  # (repository, tag, digest)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)


def _check_pulled(layout: Path, digest: str) -> None:
    """The pulled layout holds the pushed manifest, and every blob hashes to its name."""
    index = json.loads((layout / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [digest], index
    blobs = list((layout / "blobs" / "sha256").iterdir())
    assert len(blobs) >= 4  # manifest, config, two layers
    for blob in blobs:
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob


def _client(stack: Stack, number: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(number)
    repository = f"load/client-{number:02d}"
    creds = f"{USER}:{PASSWORD}"
    certs = str(stack.cert_dir)
    i = 0
    while time.monotonic() < deadline:
        tag = f"v{i}"
        work = stack.tmp / f"c{number}-{i}"
        try:
            digest = oci.write_image(work / "push", tag, [BASE, rng.randint(16 * 1024, 1024 * 1024)],
                                     seed=f"{number}-{i}")
            started = time.monotonic()
            pushed = _skopeo("copy", "--quiet", "--dest-cert-dir", certs, "--dest-creds", creds,
                             f"oci:{work / 'push'}:{tag}", f"docker://{stack.address}/{repository}:{tag}")
            push_time = time.monotonic() - started
            assert pushed.returncode == 0, f"push: {pushed.stderr.strip()[-300:]}"
            size = sum(f.stat().st_size for f in (work / "push" / "blobs" / "sha256").iterdir())
            with tally.lock:
                tally.pushes += 1
                tally.bytes_pushed += size
                tally.push_seconds.append(push_time)
                tally.pushed.append((repository, tag, digest))
                others = [p for p in tally.pushed if p[0] != repository]
            targets = [(repository, digest)]
            if others and rng.random() < 0.3:
                other = rng.choice(others)
                targets.append((other[0], other[2]))
            for n, (repo, want) in enumerate(targets):
                started = time.monotonic()
                pulled = _skopeo("copy", "--quiet", "--src-cert-dir", certs, "--src-creds", creds,
                                 f"docker://{stack.address}/{repo}@{want}", f"oci:{work / f'pull{n}'}:x")
                assert pulled.returncode == 0, f"pull {repo}@{want}: {pulled.stderr.strip()[-300:]}"
                _check_pulled(work / f"pull{n}", want)
                with tally.lock:
                    tally.pulls += 1
                    tally.cross_pulls += n
                    tally.pull_seconds.append(time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
            with tally.lock:
                tally.errors.append(f"client {number} {repository}:{tag}: {type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        i += 1


def _verify_through_proxy(stack: Stack, repository: str, tag: str, digest: str) -> None:
    with requests.Session() as s:
        s.trust_env = False  # the stack's CA, not REQUESTS_CA_BUNDLE
        s.auth, s.verify = (USER, PASSWORD), str(stack.ca_file)
        base = f"https://{stack.address}/v2/{repository}"
        manifest = s.get(f"{base}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT}, timeout=30)
        assert manifest.status_code == 200 and "sha256:" + hashlib.sha256(manifest.content).hexdigest() == digest
        document = json.loads(manifest.content)
        for descriptor in (document["config"], *document["layers"]):
            blob = s.get(f"{base}/blobs/{descriptor['digest']}", timeout=30)
            assert blob.status_code == 200
            assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == descriptor["digest"]


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else (values or [0.0])[0]


def test_twenty_concurrent_clients_push_and_pull_without_error(stack):
    """20 skopeo clients push and pull distinct images concurrently for the bounded time (all
    sharing one base layer): no push or pull fails, every pulled manifest and blob matches its
    digest, and every image pushed still verifies through the proxy afterwards."""
    tally = Tally()
    started = time.monotonic()
    deadline = started + SECONDS
    threads = [threading.Thread(target=_client, args=(stack, n, deadline, tally)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SECONDS + 300)
    elapsed = time.monotonic() - started

    verify_errors = []

    def verify(item):
        try:
            _verify_through_proxy(stack, *item)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            verify_errors.append(f"{item}: {type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(verify, tally.pushed))
    print(
        f"\nload: {CLIENTS} clients, {elapsed:.0f}s: {tally.pushes} pushes ({tally.bytes_pushed / 2**20:.0f} MiB), "
        f"{tally.pulls} pulls ({tally.cross_pulls} of another client's image), {len(tally.errors)} errors; "
        f"push p50 {_p(tally.push_seconds, 50):.2f}s p95 {_p(tally.push_seconds, 95):.2f}s, "
        f"pull p50 {_p(tally.pull_seconds, 50):.2f}s p95 {_p(tally.pull_seconds, 95):.2f}s; "
        f"{len(tally.pushed) - len(verify_errors)}/{len(tally.pushed)} images verified afterwards"
    )
    assert not any(thread.is_alive() for thread in threads)
    assert tally.errors == []
    assert verify_errors == []
    assert len({repository for repository, _, _ in tally.pushed}) == CLIENTS
    assert tally.pushes >= CLIENTS and tally.pulls >= tally.pushes
