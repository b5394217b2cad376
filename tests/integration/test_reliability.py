"""Nothing lost: images pushed before a fault pull afterwards with every digest verified.

One stack is deployed for the module (the program's own containers on the real engine) and
images are pushed with skopeo: single-platform OCI images and multi-arch OCI indexes sharing a
layer. The tests then run in order, each adding its images to the survivors every later test
verifies again:

(a) both containers replaced by a new configuration that names new image tags;
(b) the registry killed with SIGKILL (a crash, from the host: ``docker kill`` would count as a
    manual stop and disable the restart policy) in the middle of a layer upload, back by its
    ``unless-stopped`` restart policy;
(c) the proxy killed the same way during a push;
(d) tags deleted (a single image and a multi-arch index) with the ImageDeletion provider, then
    garbage collection with the GarbageCollection provider (read-only mode, untagged manifests
    included) on the deployed registry container.

"Verified" means: the manifest's bytes hash to the digest pushed and the registry reports that
digest; for an index, every platform manifest the same way; every config and layer blob is
downloaded in full and hashes to its digest with the declared size. An interrupted push must
leave no half image: its tag is unknown (404), or the whole image verifies.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
import requests

from components.maintenance_providers import GarbageCollectionProvider, ImageDeletionProvider
from components.registry_api import MANIFEST_ACCEPT
from tests.support import oci
from tests.support.deploy import STANDIN_NGINX, STANDIN_REGISTRY, Deployment, docker_cli, live_stack, wait_https
from tests.support.program import run_program
from tests.support.waiting import wait_for

USER = "alice"
PASSWORD = "Reliab1e:pass@word-6c2f"
DOCKER_HOST = "unix:///var/run/docker.sock"
BIG_LAYER = 256 * 1024 * 1024  # big enough that a kill lands mid-upload
SHARED = oci.random_bytes(64 * 1024, seed="shared-base-layer")  # one layer every image family shares



@dataclass(frozen=True)
class Image:
    repository: str
    tag: str
    digest: str


@dataclass
class Stack:
    deployment: Deployment
    config: dict
    address: str
    ca_file: Path
    cert_dir: Path
    tmp: Path
    survivors: list[Image] = field(default_factory=list)
    extra_tags: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    def session(self) -> requests.Session:
        session = requests.Session()
        # Not the environment's CA bundle (REQUESTS_CA_BUNDLE would win over session.verify).
        session.trust_env = False
        session.auth = (USER, PASSWORD)
        session.verify = str(self.ca_file)
        return session

    def container_name(self, suffix: str) -> str:
        return self.deployment.container(suffix).plain_inputs["name"]

    def volume_path(self) -> Path:
        volume = docker.from_env().volumes.get(self.config["volume"]["name"])
        return Path(volume.attrs["Mountpoint"])

    # --- push -----------------------------------------------------------------------------
    def skopeo_push(self, layout: Path, tag: str, repository: str, *, index: bool = False) -> list[str]:
        return ["skopeo", "copy", "--quiet", *(["--all"] if index else []), "--dest-cert-dir", str(self.cert_dir),
                "--dest-creds", f"{USER}:{PASSWORD}", f"oci:{layout}:{tag}", f"docker://{self.address}/{repository}:{tag}"]

    def push(self, repository: str, tag: str, layers=None, *, platforms=None, seed: str = "") -> Image:
        """Write an image (or, with ``platforms``, an index) and push it; returns what was pushed."""
        layout = self.tmp / f"oci-{uuid.uuid4().hex[:8]}"
        if platforms:
            digest = oci.write_index(layout, tag, platforms, seed=seed or f"{repository}:{tag}")
        else:
            digest = oci.write_image(layout, tag, layers, seed=seed or f"{repository}:{tag}")
        result = subprocess.run(self.skopeo_push(layout, tag, repository, index=bool(platforms)),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return Image(repository, tag, digest)

    # --- pull and verify ------------------------------------------------------------------
    def manifest_status(self, repository: str, reference: str) -> int:
        with self.session() as s:
            return s.get(f"{self.url}/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT},
                         timeout=30).status_code

    def verify(self, image: Image) -> int:
        """Pull the image through the proxy, checking every digest; returns the blobs checked."""
        with self.session() as s:
            return self._verify(s, image.repository, image.tag, image.digest)

    def _verify(self, s: requests.Session, repository: str, reference: str, digest: str) -> int:
        response = s.get(f"{self.url}/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT},
                         timeout=30)
        assert response.status_code == 200, (repository, reference, response.status_code)
        assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest, (repository, reference)
        assert response.headers["Docker-Content-Digest"] == digest
        document = json.loads(response.content)
        if "manifests" in document:
            return sum(self._verify(s, repository, child["digest"], child["digest"]) for child in document["manifests"])
        for descriptor in (document["config"], *document["layers"]):
            h, size = hashlib.sha256(), 0
            with s.get(f"{self.url}/v2/{repository}/blobs/{descriptor['digest']}", stream=True, timeout=60) as blob:
                assert blob.status_code == 200, (repository, descriptor["digest"], blob.status_code)
                for chunk in blob.iter_content(1 << 20):
                    h.update(chunk)
                    size += len(chunk)
            assert ("sha256:" + h.hexdigest(), size) == (descriptor["digest"], descriptor["size"])
        return 1 + len(document["layers"])

    def verify_survivors(self) -> int:
        return sum(self.verify(image) for image in self.survivors)

    def blob_status(self, repository: str, digest: str) -> int:
        with self.session() as s:
            return s.head(f"{self.url}/v2/{repository}/blobs/{digest}", timeout=30).status_code

    # --- faults ---------------------------------------------------------------------------
    def crash(self, suffix: str) -> None:
        """SIGKILL the container's main process from the host, as a crash or the OOM killer would."""
        pid = docker.from_env().api.inspect_container(self.container_name(suffix))["State"]["Pid"]
        assert pid > 1, f"{suffix} is not running"
        os.kill(pid, signal.SIGKILL)

    def restarts(self, suffix: str) -> int:
        return docker.from_env().api.inspect_container(self.container_name(suffix))["RestartCount"]

    def wait_back(self, suffix: str, restarts_before: int, timeout: float = 60) -> float:
        """Seconds until Docker restarted the container and the registry answers through the proxy."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.restarts(suffix) > restarts_before:
                try:
                    with self.session() as s:
                        if s.get(f"{self.url}/v2/", timeout=2).status_code == 200:
                            return time.monotonic() - start
                except requests.RequestException:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"{suffix} not back after {timeout}s (restarts: {self.restarts(suffix)})")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    """The deployed stack with a first set of images; everything is removed afterwards."""
    tmp = tmp_path_factory.mktemp("reliability")
    stack = None
    try:
        # Basic mode: these clients send the password on every request.
        with live_stack(tmp, "rel", {USER: PASSWORD}, auth={"mode": "basic"}) as live:
            stack = Stack(live.deployment, live.config, live.address, live.ca_file, live.cert_dir, tmp)
            stack.survivors += [
                stack.push("keep/app", "v1", [SHARED, 300_000]),
                stack.push("keep/multi", "v1", platforms=[("amd64", [SHARED, 200_000]), ("arm64", [SHARED, 150_000])]),
            ]
            yield stack
    finally:
        for tag in stack.extra_tags if stack else ():
            docker_cli("rmi", tag, check=False)


def test_images_survive_replacing_both_containers_with_new_images_and_config(stack):
    """(a) A new configuration (another user, so a new htpasswd) naming new image tags replaces
    both containers, as `pulumi up` would; every image pushed before verifies afterwards."""
    before = {s: docker.from_env().api.inspect_container(stack.container_name(s))["Id"]
              for s in ("registry-container", "proxy-container")}
    pin = "@sha256:" + "5" * 64  # images must be pinned by digest; the stand-ins take their place
    new_refs = {"registry": f"example.test/registry:{STANDIN_REGISTRY.rsplit(':', 1)[1]}-replaced{pin}", "nginx": f"example.test/nginx:1.22.1-replaced{pin}"}
    local = {new_refs["registry"]: f"{STANDIN_REGISTRY}-replaced", new_refs["nginx"]: f"{STANDIN_NGINX}-replaced"}
    for source, tag in ((STANDIN_REGISTRY, local[new_refs["registry"]]), (STANDIN_NGINX, local[new_refs["nginx"]])):
        docker_cli("tag", source, tag)
        stack.extra_tags.append(tag)
    stack.config = dict(stack.config, images=new_refs, users={USER: PASSWORD, "bob": "B0b:second-pass@word-91"})
    stack.deployment.standins.update(local)
    new_run = run_program(stack.config, secret_keys=["users"])
    stack.deployment.replace(new_run)
    # Under the mocks every run issues a new CA (a real stack keeps its CA in state): trust it.
    stack.ca_file.write_text(new_run.exports["caCertificatePem"])
    wait_https(f"{stack.url}/healthz", str(stack.ca_file))

    for suffix, image in (("registry-container", local[new_refs["registry"]]), ("proxy-container", local[new_refs["nginx"]])):
        attrs = docker.from_env().api.inspect_container(stack.container_name(suffix))
        assert attrs["Id"] != before[suffix] and attrs["Config"]["Image"] == image
    assert stack.verify_survivors() >= 8
    stack.survivors.append(stack.push("after/replace", "v1", [SHARED, 100_000]))


def _push_and_crash(stack: Stack, suffix: str, repository: str, seed: str) -> tuple[subprocess.CompletedProcess, Image, float]:
    """Push an image with one big layer; SIGKILL the container while the layer is uploading."""
    layout = stack.tmp / f"big-{seed}"
    digest = oci.write_image(layout, "v1", [SHARED, BIG_LAYER], seed=seed)
    uploads = stack.volume_path() / "docker/registry/v2/repositories" / repository / "_uploads"
    restarts = stack.restarts(suffix)
    push = subprocess.Popen(stack.skopeo_push(layout, "v1", repository), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    def uploading() -> bool:
        assert push.poll() is None, f"the push ended before the kill: {push.communicate()}"
        stored = max((f.stat().st_size for f in uploads.glob("*/data")), default=0) if uploads.exists() else 0
        return stored >= 16 * 1024 * 1024

    wait_for(uploading, timeout=120, interval=0.005, what="16 MiB of the upload stored")
    stack.crash(suffix)
    out, err = push.communicate(timeout=300)
    recovered = stack.wait_back(suffix, restarts)
    return subprocess.CompletedProcess(push.args, push.returncode, out, err), Image(repository, "v1", digest), recovered


def _no_half_image(stack: Stack, image: Image) -> str:
    status = stack.manifest_status(image.repository, image.tag)
    if status == 404:
        return "unknown"
    stack.verify(image)
    return "complete"


@pytest.mark.parametrize(
    "container, repository",
    [("registry-container", "crash/registry"), ("proxy-container", "crash/proxy")],
    ids=["registry", "proxy"],
)
def test_container_killed_mid_push_restarts_and_loses_nothing(stack, container, repository):
    """(b) the registry process, (c) nginx is SIGKILLed while a 256 MiB layer is uploading:
    Docker restarts it (restart policy), the interrupted push failed and left no half image,
    every earlier image verifies, and pushing the same image again succeeds and verifies."""
    seed = repository.replace("/", "-")
    result, image, recovered = _push_and_crash(stack, container, repository, seed)
    assert result.returncode != 0, f"the push survived the {container}'s death"
    assert _no_half_image(stack, image) == "unknown"
    print(f"\n{container} killed mid-push: back and serving after {recovered:.1f}s")
    stack.verify_survivors()
    assert stack.push(repository, "v1", [SHARED, BIG_LAYER], seed=seed) == image
    stack.verify(image)
    stack.survivors.append(image)


def test_garbage_collection_after_deleting_other_tags_keeps_every_image(stack):
    """(d) In one repository, a single image and a multi-arch index are deleted (ImageDeletion
    provider) next to a kept image and a kept index; garbage collection (GarbageCollection
    provider: read-only mode, untagged manifests too) then frees the blobs only the deleted ones
    used -- including the deleted index's platform images -- while every kept image, the kept
    index's platform images, the shared layer and every earlier image still verify. The deleted
    image can be pushed again afterwards and verifies (no stale cache after the collection)."""
    repo = "gc/app"
    keep = stack.push(repo, "keep", [SHARED, 120_000])
    keep_multi = stack.push(repo, "keep-multi", platforms=[("amd64", [SHARED, 80_000]), ("arm64", [90_000])])
    drop = stack.push(repo, "drop", [SHARED, 110_000])
    drop_multi = stack.push(repo, "drop-multi", platforms=[("amd64", [70_000]), ("arm64", [SHARED, 60_000])])
    with stack.session() as s:
        def blobs_of(digest: str) -> set[str]:
            doc = s.get(f"{stack.url}/v2/{repo}/manifests/{digest}", headers={"Accept": MANIFEST_ACCEPT}).json()
            if "manifests" in doc:
                return {b for child in doc["manifests"] for b in blobs_of(child["digest"])}
            return {d["digest"] for d in (doc["config"], *doc["layers"])}

        kept_blobs = blobs_of(keep.digest) | blobs_of(keep_multi.digest)
        only_dropped = (blobs_of(drop.digest) | blobs_of(drop_multi.digest)) - kept_blobs
        shared = s.get(f"{stack.url}/v2/{repo}/manifests/{keep.digest}",
                       headers={"Accept": MANIFEST_ACCEPT}).json()["layers"][0]["digest"]
    # drop: config + own layer; drop-multi: two platform configs and their own layers.
    assert len(only_dropped) >= 5 and shared in kept_blobs

    ca_pem = stack.ca_file.read_text()
    connection = {"registryUrl": stack.url, "caPem": ca_pem, "username": USER, "password": PASSWORD}
    deletion = ImageDeletionProvider()
    checked = deletion.check({}, {**connection, "repository": repo, "tags": ["drop", "drop-multi"]})
    assert checked.failures == [], [f.reason for f in checked.failures]
    deleted = deletion.create(checked.inputs).outs
    assert sorted(deleted["deletedDigests"]) == sorted([drop.digest, drop_multi.digest])

    gc = GarbageCollectionProvider()
    checked = gc.check({}, {**connection, "dockerHost": DOCKER_HOST, "containerName": stack.container_name("registry-container"),
                            "mode": "readonly", "deleteUntagged": True, "trigger": "after-deletion"})
    assert checked.failures == [], [f.reason for f in checked.failures]
    report = gc.create(checked.inputs).outs
    print(f"\ngc: {report['blobsRemoved']} blobs removed, {report['bytesBefore'] - report['bytesAfter']} bytes freed, "
          f"untagged deleted {len(report['untaggedDeleted'])}, writes refused {report['writesRefusedSeconds']}s")

    assert stack.manifest_status(repo, "drop") == 404 and stack.manifest_status(repo, "drop-multi") == 404
    assert [d for d in only_dropped if stack.blob_status(repo, d) != 404] == []
    assert stack.blob_status(repo, shared) == 200
    stack.survivors += [keep, keep_multi]
    stack.verify_survivors()
    assert stack.push(repo, "drop", [SHARED, 110_000]) == drop
    stack.verify(drop)

