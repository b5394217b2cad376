"""The maintenance providers against real software: the program's registry (distribution 2.8.2
stand-in image) behind its nginx TLS + basic-auth proxy (the registry on its Unix socket, the
stand-by on a second one), deployed by tests/support/deploy.py, images pushed and pulled with
skopeo, garbage collection through the Docker API. The providers' check/create/diff/update/
read/delete are called in this process; test_engine_protocol.py runs them in the provider host
over gRPC, as the engine does.
"""

from __future__ import annotations

import hashlib
import statistics
import threading
import time
from dataclasses import dataclass

import pytest
import requests

from components import docker_exec, maintenance_providers
from components.docker_exec import CONFIG_PATH
from components.maintenance_providers import (
    GarbageCollectionProvider,
    ImageDeletionProvider,
    MaintenanceError,
    RetentionProvider,
)
from components.registry import RESTART_POLICY
from components.registry_api import RegistryError, RegistryNotFoundError
from tests.support import deploy, oci
from tests.support.ports import free_port
from tests.support.program import REGISTRY_VERSION


def conn(stack, **overrides) -> dict:
    return {"registryUrl": stack.url, "caPem": stack.ca_pem, "username": stack.username,
            "password": stack.password, **overrides}


def run_create(provider, news: dict, olds: dict | None = None):
    """check then create, as `pulumi up` does for a new resource."""
    checked = provider.check(olds or {}, news)
    assert checked.failures == [], [f.reason for f in checked.failures]
    return checked, provider.create(checked.inputs)


def assert_pulls(stack, repository: str, tag: str, digest: str) -> None:
    """The tag resolves to the expected digest and a real pull (skopeo verifies digests) succeeds."""
    with stack.client() as client:
        assert client.resolve(repository, tag) == digest
    result = stack.pull(repository, tag, check=False)
    assert result.returncode == 0, result.stderr.decode()


def assert_gone(stack, repository: str, tag: str) -> None:
    with stack.client() as client, pytest.raises(RegistryNotFoundError):
        client.resolve(repository, tag)


@dataclass
class Pushed:
    layout: object
    digests: dict
    children: dict


@pytest.fixture
def pushed(registry_stack, tmp_path):
    """app: one, latest (= one), two, three (shared base layer); multi and multi2, two OCI
    indexes sharing their linux/amd64 platform image; a big layer only `two` has."""
    layout = tmp_path / "layout"
    base = oci.random_bytes(256 * 1024, seed="base")
    amd64 = oci.random_bytes(64 * 1024, seed="amd64")
    digests = {
        "one": oci.write_image(layout, "one", [base, oci.random_bytes(64 * 1024, seed="one")], seed="one"),
        "two": oci.write_image(layout, "two", [base, 2 * 1024 * 1024], seed="two"),
        "three": oci.write_image(layout, "three", [base, oci.random_bytes(64 * 1024, seed="three")], seed="three"),
        "multi": oci.write_index(layout, "multi", [("amd64", [base, amd64]), ("arm64", [base, 96 * 1024])], seed="m"),
        "multi2": oci.write_index(layout, "multi2", [("amd64", [base, amd64]), ("arm64", [base, 32 * 1024])],
                                  seed="m"),
    }
    children = {tag: oci.index_children(layout, digests[tag]) for tag in ("multi", "multi2")}
    assert children["multi"]["linux/amd64"] == children["multi2"]["linux/amd64"]
    for tag in ("one", "two", "three"):
        registry_stack.push(layout, tag, "app")
    registry_stack.push(layout, "one", "app", "latest")
    for tag in ("multi", "multi2"):
        registry_stack.push(layout, tag, "app", multi=True)
    return Pushed(layout, digests, children)


class PullLoop:
    """Pulls one tag back to back in a thread, recording (start, end, ok, error) per pull.

    Entering waits for a first pull to finish, leaving for two more, so the record spans the
    whole block with pulls on both sides.
    """

    def __init__(self, stack, repository: str, tag: str):
        self.stack, self.repository, self.tag = stack, repository, tag
        self.results: list[tuple[float, float, bool, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            start = time.time()
            result = self.stack.pull(self.repository, self.tag, check=False)
            self.results.append((start, time.time(), result.returncode == 0, result.stderr.decode()[-300:]))

    def _wait_for(self, count: int, timeout: float = 120.0):
        deadline = time.monotonic() + timeout
        while len(self.results) < count and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        self._wait_for(1)
        return self

    def __exit__(self, *exc):
        self._wait_for(len(self.results) + 2)
        self._stop.set()
        self._thread.join(timeout=120)

    def within(self, start: float, end: float):
        return [r for r in self.results if r[0] >= start and r[1] <= end]

    def overlapping(self, start: float, end: float):
        return [r for r in self.results if r[1] > start and r[0] < end]


def test_deletion_refuses_shared_digests_deletes_tags_and_index_keeps_what_others_need(registry_stack, pushed):
    """A tag whose digest another tag shares is refused (error names the other tag); deleting
    `two` and the index `multi` makes them 404; every other tag still pulls with its digest,
    including `multi2`, whose amd64 image `multi` also listed; an unchanged rule then diffs clean."""
    provider = ImageDeletionProvider()
    refused = provider.check({}, {**conn(registry_stack), "repository": "app", "tags": ["one"]})
    assert len(refused.failures) == 1 and "latest" in refused.failures[0].reason
    with pytest.raises(MaintenanceError, match="latest"):
        provider.create({**conn(registry_stack), "repository": "app", "tags": ["one"]})

    news = {**conn(registry_stack), "repository": "app", "tags": ["two", "multi"]}
    checked, created = run_create(provider, news)
    assert checked.inputs["pendingDeletions"] == ["app:multi", "app:two"]
    assert created.outs["deletedDigests"] == sorted([pushed.digests["two"], pushed.digests["multi"]])
    assert created.outs["pendingDeletions"] == []
    for tag in ("two", "multi"):
        assert_gone(registry_stack, "app", tag)
    for tag in ("one", "latest", "three", "multi2"):
        assert_pulls(registry_stack, "app", tag, pushed.digests["one" if tag == "latest" else tag])
    with registry_stack.client() as client:
        # The index's platform manifests are not deleted with it.
        assert client.resolve("app", pushed.children["multi"]["linux/arm64"]) == pushed.children["multi"]["linux/arm64"]

    again = provider.check(created.outs, news)
    assert provider.diff(created.id, created.outs, again.inputs).changes is False

    allowed = {**conn(registry_stack), "repository": "app", "tags": ["one"], "allowSharedDigest": True}
    _, shared = run_create(provider, allowed)
    assert shared.outs["deletedTags"] == ["latest", "one"]
    for tag in ("one", "latest"):
        assert_gone(registry_stack, "app", tag)
    assert_pulls(registry_stack, "app", "three", pushed.digests["three"])


def test_refresh_sees_a_re_pushed_tag_and_update_deletes_it_again(registry_stack, pushed):
    """read reports what is really there: a deleted tag pushed again is pending; the preview
    (check + diff) shows a change; update deletes it again; delete leaves images alone."""
    provider = ImageDeletionProvider()
    news = {**conn(registry_stack), "repository": "app", "tags": ["three"]}
    _, created = run_create(provider, news)
    assert_gone(registry_stack, "app", "three")
    registry_stack.push(pushed.layout, "three", "app")
    refreshed = provider.read(created.id, created.outs)
    assert refreshed.outs["pendingDeletions"] == ["app:three"]
    preview = provider.check(refreshed.outs, news)
    assert preview.inputs["pendingDeletions"] == ["app:three"]
    assert provider.diff(created.id, created.outs, preview.inputs).changes is True
    updated = provider.update(created.id, refreshed.outs, preview.inputs)
    assert updated.outs["deletionRuns"] == 2 and updated.outs["pendingDeletions"] == []
    assert_gone(registry_stack, "app", "three")
    provider.delete(created.id, updated.outs)
    assert_pulls(registry_stack, "app", "one", pushed.digests["one"])


def test_retention_keeps_exactly_what_the_rules_say(registry_stack, tmp_path):
    """team/api: keep the 2 newest tags, `stable`, and anything under 24 h old. The newest are
    `hotfix` and `v5`; `latest` shares `v5`'s digest, so it cannot go and is reported blocked.
    The dry run deletes nothing and lists exactly the doomed tags; the real run leaves exactly
    the kept ones. A second rule for `*` does not touch team/api (first matching rule governs)."""
    layout = tmp_path / "layout"
    now = time.time()

    def stamp(hours_ago: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - hours_ago * 3600))

    ages = {"v1": 500, "v2": 400, "v3": 300, "v4": 200, "v5": 100, "stable": 1000, "hotfix": 2, "latest": 100}
    for tag, age in ages.items():
        if tag == "latest":
            continue
        oci.write_image(layout, tag, [oci.random_bytes(32 * 1024, seed=tag)], seed=tag)
        oci.set_created(layout, tag, stamp(age))
        registry_stack.push(layout, tag, "team/api")
    registry_stack.push(layout, "v5", "team/api", "latest")
    oci.write_image(layout, "x", [oci.random_bytes(8 * 1024, seed="x")], seed="x")
    registry_stack.push(layout, "x", "other/app", "old")

    provider = RetentionProvider()
    rule = {**conn(registry_stack), "repositories": "team/*", "keepLast": 2, "keepPatterns": ["stable"],
            "keepYoungerThanHours": 24}
    expected_doomed = ["team/api:v1", "team/api:v2", "team/api:v3", "team/api:v4"]
    checked, dry = run_create(provider, {**rule, "dryRun": True})
    assert checked.inputs["pendingDeletions"] == expected_doomed
    assert dry.outs["pendingDeletions"] == expected_doomed and dry.outs["deletedTags"] == []
    with registry_stack.client() as client:
        assert client.tags("team/api") == sorted(ages)
    assert dry.outs["keptTags"] == ["team/api:hotfix", "team/api:stable", "team/api:v5"]
    assert dry.outs["blockedTags"] == ["team/api:latest"]

    again = provider.check(dry.outs, {**rule, "dryRun": True})
    assert provider.diff(dry.id, dry.outs, again.inputs).changes is False

    live = provider.check(dry.outs, {**rule, "dryRun": False})
    assert provider.diff(dry.id, dry.outs, live.inputs).replaces == []
    updated = provider.update(dry.id, dry.outs, live.inputs)
    assert updated.outs["deletedTags"] == expected_doomed and updated.outs["pendingDeletions"] == []
    with registry_stack.client() as client:
        assert client.tags("team/api") == ["hotfix", "latest", "stable", "v5"]
        assert client.tags("other/app") == ["old"]

    other = {**conn(registry_stack), "repositories": "*", "excludeRepositories": ["team/*"], "keepLast": 0}
    checked_other = provider.check({}, other)
    assert checked_other.inputs["pendingDeletions"] == ["other/app:old"]


def test_gc_frees_space_and_not_one_pull_fails_before_during_or_after_it(registry_stack, pushed, monkeypatch):
    """After deleting `two` (with a 2 MiB layer of its own) and the index `multi`, read-only GC
    with delete_untagged, while two loops pull kept tags back to back from before it starts
    until after it ends -- through the stand-by's arrival, the registry's stop, the collection,
    the registry's return and the stand-by's removal: not one pull fails. A push while only the
    stand-by serves is refused with the registry's 405 and works afterwards. The volume shrinks
    by at least the 2 MiB layer (measured by `du` from another container); `multi`'s own arm64
    image goes while the amd64 one `multi2` needs stays; every kept tag verifies by digest; the
    registry's container is the same, with the same config and restart policy, and no stand-by
    is left."""
    deletion = ImageDeletionProvider()
    run_create(deletion, {**conn(registry_stack), "repository": "app", "tags": ["two", "multi"]})
    fresh = oci.write_image(pushed.layout, "fresh", [oci.random_bytes(128 * 1024, seed="fresh")], seed="fresh")
    before = registry_stack.volume_bytes()
    registry = registry_stack.registry_container()
    config_before = registry.exec_run(["cat", CONFIG_PATH]).output

    during: dict = {}
    real_run_gc = docker_exec.StandbyRegistry.run_gc

    def run_gc_with_clients(self, *, dry_run, delete_untagged=False, **kwargs):
        if not dry_run:
            # Only the read-only stand-by serves now: a push must be refused, pulls must work.
            during["collector"] = self.name
            during["push"] = registry_stack.skopeo(
                "copy", "-q", "--dest-cert-dir", str(registry_stack.cert_dir), "--dest-creds",
                f"{registry_stack.username}:{registry_stack.password}",
                f"oci:{pushed.layout}:fresh", f"docker://{registry_stack.host}/app:fresh", check=False)
            during["pulls"] = [registry_stack.pull("app", tag, check=False).returncode for tag in ("one", "multi2")]
        return real_run_gc(self, dry_run=dry_run, delete_untagged=delete_untagged, **kwargs)

    monkeypatch.setattr(docker_exec.StandbyRegistry, "run_gc", run_gc_with_clients)
    gc = GarbageCollectionProvider()
    news = {**conn(registry_stack), "dockerHost": registry_stack.docker_host,
            "containerName": registry_stack.registry_name, "mode": "readonly", "deleteUntagged": True,
            "trigger": "deletions-1"}
    with PullLoop(registry_stack, "app", "three") as loop_three, PullLoop(registry_stack, "app", "one") as loop_one:
        _, collected = run_create(gc, news)
    after = registry_stack.volume_bytes()
    outs = collected.outs
    t = outs["timeline"]
    pulls = loop_three.results + loop_one.results

    failed = [(round(start - t["writes_refused_from"], 2), error) for start, _, ok, error in pulls if not ok]
    assert failed == [], failed
    phases = {
        "before": (pulls[0][0] - 1, t["writes_refused_from"]),
        "registry and stand-by": (t["writes_refused_from"], t["registry_stopped"]),
        "stand-by only": (t["registry_stopped"], t["registry_serving"]),
        "registry back, stand-by leaving": (t["registry_serving"], t["served_again"]),
        "after": (t["served_again"], time.time()),
    }
    for name, (start, end) in phases.items():
        assert [r for r in pulls if r[1] > start and r[0] < end], f"no pull during '{name}'"
    assert during["collector"] == registry_stack.registry_name + docker_exec.STANDBY_SUFFIX
    # Refused with the registry's 405, never accepted and lost.
    assert during["push"].returncode != 0 and b"405" in during["push"].stderr, during["push"].stderr
    assert during["pulls"] == [0, 0]

    assert before - after >= 2 * 1024 * 1024
    assert (outs["bytesBefore"], outs["bytesAfter"]) == (before, after)
    assert outs["blobsRemoved"] >= 3 and outs["writesRefusedSeconds"] > 0 and outs["readsUnavailableSeconds"] == 0
    assert outs["untaggedDeleted"] == [f"app@{pushed.children['multi']['linux/arm64']}"]
    registry.reload()
    assert registry.status == "running" and registry.attrs["HostConfig"]["RestartPolicy"]["Name"] == RESTART_POLICY
    assert registry.exec_run(["cat", CONFIG_PATH]).output == config_before
    assert registry_stack.docker.containers.list(all=True, filters={"label": "private-registry.role=gc-standby",
                                                                    "name": registry_stack.registry_name}) == []

    window = [r for r in pulls if r[1] > t["writes_refused_from"] and r[0] < t["served_again"]]
    outside = [r[1] - r[0] for r in pulls if r not in window]
    print(f"\nGC readonly: {before - after} bytes freed, {outs['blobsRemoved']} blobs, {outs['durationSeconds']}s; "
          f"writes refused {outs['writesRefusedSeconds']}s; pulls {len(pulls)} ({len(window)} overlapping the "
          f"window), failed {len(failed)}; pull time median outside {statistics.median(outside):.2f}s, "
          f"longest in the window {max(r[1] - r[0] for r in window):.2f}s")

    for tag in ("one", "latest", "three", "multi2"):
        assert_pulls(registry_stack, "app", tag, pushed.digests["one" if tag == "latest" else tag])
    with registry_stack.client() as client, pytest.raises(RegistryNotFoundError):
        client.resolve("app", pushed.children["multi"]["linux/arm64"])
    registry_stack.push(pushed.layout, "fresh", "app")
    assert_pulls(registry_stack, "app", "fresh", fresh)

    unchanged = gc.check(outs, news)
    assert gc.diff(collected.id, outs, unchanged.inputs).changes is False
    rerun = gc.check(outs, {**news, "trigger": "deletions-2"})
    assert gc.diff(collected.id, outs, rerun.inputs).changes is True


def test_gc_hands_back_a_standby_left_by_a_crashed_run(registry_stack, pushed):
    """A run that died with its stand-by serving and the registry stopped: the next collection
    (here a dry run) first starts the registry, and removes the stand-by once the registry
    answers; the registry then serves reads and writes through the proxy."""
    with docker_exec.RegistryContainer(registry_stack.docker_host, registry_stack.registry_name) as target:
        standby = target.start_standby(docker_exec.standby_config(target.read_file(CONFIG_PATH)))
        standby.wait_answering(60)
        target.stop_when_idle()
    assert registry_stack.registry_container().status == "exited"
    assert_pulls(registry_stack, "app", "three", pushed.digests["three"])

    gc = GarbageCollectionProvider()
    _, dry = run_create(gc, {**conn(registry_stack), "dockerHost": registry_stack.docker_host,
                             "containerName": registry_stack.registry_name, "mode": "dry-run", "trigger": "t"})
    assert dry.outs["blobsRemoved"] == 0
    assert registry_stack.registry_container().status == "running"
    assert registry_stack.docker.containers.list(all=True, filters={"name": standby.name}) == []
    oci.write_image(pushed.layout, "after", [oci.random_bytes(16 * 1024, seed="after")], seed="after")
    registry_stack.push(pushed.layout, "after", "app")
    assert_pulls(registry_stack, "app", "one", pushed.digests["one"])


def test_registry_is_stopped_only_once_a_slow_download_through_the_proxy_has_ended(registry_stack, tmp_path):
    """A 24 MiB layer read slowly through nginx (more than its 4 MiB of response buffers and the
    kernel's socket buffers, so the registry keeps writing while the client drains): the
    registry is not stopped while that response is in flight -- the download completes with
    the layer's digest and size -- and it is stopped after more than one look. (The registry's
    own network namespace never lists that connection: the kernel lists it in nginx's.)"""
    layout = tmp_path / "slow"
    size = 24 * 1024 * 1024
    oci.write_image(layout, "big", [oci.random_bytes(size, seed="slow")], seed="slow")
    registry_stack.push(layout, "big", "slow")
    with registry_stack.client() as client:
        layer = client.manifest("slow", "big").document["layers"][0]
    started, result = threading.Event(), {}

    def download():
        digest, received = hashlib.sha256(), 0
        try:
            with requests.get(f"{registry_stack.url}/v2/slow/blobs/{layer['digest']}", stream=True, timeout=60,
                              auth=(registry_stack.username, registry_stack.password),
                              verify=str(registry_stack.cert_dir / "ca.crt")) as response:
                response.raise_for_status()
                for chunk in response.iter_content(256 * 1024):
                    digest.update(chunk)
                    received += len(chunk)
                    started.set()
                    time.sleep(0.05)
        except requests.RequestException as exc:
            result["error"] = repr(exc)
        result["digest"], result["bytes"] = f"sha256:{digest.hexdigest()}", received
        started.set()

    reader = threading.Thread(target=download)
    reader.start()
    assert started.wait(30)
    with docker_exec.RegistryContainer(registry_stack.docker_host, registry_stack.registry_name) as target:
        try:
            looks = target.stop_when_idle()
        finally:
            reader.join(60)
            target.start()
            target.wait_answering(60)
    assert "error" not in result, result
    assert (result["digest"], result["bytes"]) == (layer["digest"], layer["size"])
    assert looks > 1


def test_deletion_by_tag_leaves_other_tags_and_the_collection_frees_what_it_untagged(registry_stack, pushed):
    """Distribution 3: a rule deleting `one` and `two` by tag (deleteByTag, what the program sets
    on 3 with deleteUntagged) asks only for the tag list and sends one DELETE per tag; `latest`,
    on the same manifest as `one`, stays and pulls, and nothing is refused. `two`'s manifest,
    left untagged, still resolves by digest until the collection with deleteUntagged removes
    it and frees its 2 MiB layer. On 2.8 the registry refuses a DELETE by tag, so the program
    never sends one there (components.maintenance.deletes_by_tag)."""
    with registry_stack.client() as client:
        if REGISTRY_VERSION == 2:
            with pytest.raises(RegistryError):
                client.untag("app", "two")
            assert client.resolve("app", "two") == pushed.digests["two"]
            return
    deletion = ImageDeletionProvider()
    news = {**conn(registry_stack), "repository": "app", "tags": ["one", "two", "gone"], "deleteByTag": True}
    checked, created = run_create(deletion, news)
    assert checked.inputs["pendingDeletions"] == ["app:one", "app:two"]
    assert created.outs["deletedTags"] == ["one", "two"] and created.outs["alreadyGone"] == ["gone"]
    assert_gone(registry_stack, "app", "one")
    assert_gone(registry_stack, "app", "two")
    assert_pulls(registry_stack, "app", "latest", pushed.digests["one"])
    with registry_stack.client() as client:
        assert client.resolve("app", pushed.digests["two"]) == pushed.digests["two"]

    before = registry_stack.volume_bytes()
    _, collected = run_create(GarbageCollectionProvider(), {
        **conn(registry_stack), "dockerHost": registry_stack.docker_host, "containerName": registry_stack.registry_name,
        "mode": "readonly", "deleteUntagged": True, "trigger": "by-tag"})
    assert f"app@{pushed.digests['two']}" in collected.outs["untaggedDeleted"]
    assert before - registry_stack.volume_bytes() >= 2 * 1024 * 1024
    with registry_stack.client() as client, pytest.raises(RegistryNotFoundError):
        client.resolve("app", pushed.digests["two"])
    for tag in ("latest", "three", "multi", "multi2"):
        assert_pulls(registry_stack, "app", tag, pushed.digests["one" if tag == "latest" else tag])


def test_gc_dry_run_changes_nothing_and_stop_mode_frees_space(registry_stack, pushed):
    """dry-run reports eligible blobs but the volume keeps its size; stop mode (the tutorial's)
    then frees the space, and the registry serves again afterwards."""
    with registry_stack.client() as client:
        client.delete("app", pushed.digests["two"])
    gc = GarbageCollectionProvider()
    base = {**conn(registry_stack), "dockerHost": registry_stack.docker_host,
            "containerName": registry_stack.registry_name, "trigger": "t"}
    before = registry_stack.volume_bytes()
    _, dry = run_create(gc, {**base, "mode": "dry-run"})
    assert dry.outs["blobsEligible"] >= 2 and dry.outs["blobsRemoved"] == 0
    assert registry_stack.volume_bytes() == before
    _, stopped = run_create(gc, {**base, "mode": "stop"})
    assert before - registry_stack.volume_bytes() >= 2 * 1024 * 1024
    assert stopped.outs["readsUnavailableSeconds"] == stopped.outs["writesRefusedSeconds"] > 0
    assert_pulls(registry_stack, "app", "three", pushed.digests["three"])


def test_bad_input_raises_clear_errors_without_the_password(registry_stack, pushed, tmp_path, monkeypatch):
    """Unknown repository, malformed tag, wrong credentials, unreachable registry, deletion
    disabled: each fails with a message naming what and why, never containing the password."""
    provider = ImageDeletionProvider()
    secret_texts = [registry_stack.password]

    def failure(news: dict) -> str:
        with pytest.raises(MaintenanceError) as caught:
            provider.create(news)
        chain, error = [], caught.value
        while error is not None:
            chain.append(str(error))
            error = error.__cause__
        text = " | ".join(chain)
        assert not any(secret in text for secret in secret_texts)
        return str(caught.value)

    assert "'no/such-repo'" in failure({**conn(registry_stack), "repository": "no/such-repo", "tags": ["v1"]})
    assert "NAME_UNKNOWN" in failure({**conn(registry_stack), "repository": "no/such-repo", "tags": ["v1"]})
    malformed = provider.check({}, {**conn(registry_stack), "repository": "app", "tags": ["bad:tag"]})
    assert "not a valid tag" in malformed.failures[0].reason
    wrong = "Wr0ng@:pass-" + str(time.time())
    secret_texts.append(wrong)
    assert "authentication failed" in failure({**conn(registry_stack, password=wrong), "repository": "app",
                                               "tags": ["one"]})
    monkeypatch.setattr(maintenance_providers, "READY_TIMEOUT_SECONDS", 1.0)
    unreachable = f"https://localhost:{free_port()}"
    assert "unreachable" in failure({**conn(registry_stack, registryUrl=unreachable), "repository": "app",
                                     "tags": ["one"]})

    with deploy.registry_stack(tmp_path / "disabled", delete_enabled=False) as disabled:
        secret_texts.append(disabled.password)
        disabled.push(pushed.layout, "three", "app")
        message = failure({**conn(disabled), "repository": "app", "tags": ["three"]})
        assert "405" in message and "storage.delete.enabled" in message and "repository 'app'" in message


def test_create_waits_for_a_registry_that_is_still_starting(registry_stack, pushed):
    """First deployment: the registry container may not serve yet when the deletion runs. With
    the registry stopped (nginx answers 502) and started two seconds later, create still works."""
    container = registry_stack.registry_container()
    container.stop()
    starter = threading.Timer(2.0, container.start)
    starter.start()
    try:
        _, created = run_create(ImageDeletionProvider(), {**conn(registry_stack), "repository": "app",
                                                          "tags": ["three"]})
    finally:
        starter.join()
    assert created.outs["deletedTags"] == ["three"]
    assert_gone(registry_stack, "app", "three")
