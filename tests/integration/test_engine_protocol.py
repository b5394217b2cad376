"""The maintenance providers as ``pulumi up`` runs them: in the SDK's provider host, over gRPC.

Every test drives ``python -u -m pulumi.dynamic`` (tests/support/provider_host.py) the way the
engine does: Handshake, GetPluginInfo, Configure, then Check/Diff/Create/Update/Read/Delete
with properties marshalled through protobuf Structs (numbers as floats, unknowns in previews,
secrets plain), against distribution 2.8.2 behind the project's nginx (TLS + basic auth).
"""

from __future__ import annotations

import base64
import json
import pickletools
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc

from components.maintenance_providers import GarbageCollectionProvider, ImageDeletionProvider, RetentionProvider
from tests.support import deploy, oci
from tests.support.ports import free_port
from tests.support.provider_host import (
    ROOT,
    UNKNOWN,
    EngineResource,
    PreviewFailed,
    ProviderCallError,
    ProviderHost,
)

# Produced by pulumi.dynamic.dynamic.serialize_provider(<Class>()) on the code of commit 2da3c82,
# when the providers lived in components/maintenance.py: what existing stacks hold.
LEGACY_BLOBS = json.loads((Path(__file__).parents[1] / "support" / "legacy_providers.json").read_text())


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The program's registry and proxy, deployed once for the module."""
    with deploy.registry_stack(tmp_path_factory.mktemp("engine-protocol"), prefix="engine") as registry:
        yield registry


@pytest.fixture(scope="module")
def host():
    with ProviderHost(env={"PRIVATE_REGISTRY_READY_TIMEOUT_SECONDS": "2"}) as started:
        configured = started.start_session()
        assert configured.acceptSecrets is False
        yield started


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """An OCI layout with small images a..h, and an index `multi`."""
    path = tmp_path_factory.mktemp("layout") / "oci"
    base = oci.random_bytes(16 * 1024, seed="base")
    for tag in "abcdefgh":
        oci.write_image(path, tag, [base, oci.random_bytes(8 * 1024, seed=tag)], seed=tag)
    return path


def conn(stack, **overrides) -> dict:
    return {"registryUrl": stack.url, "caPem": stack.ca_pem, "username": stack.username,
            "password": rpc.wrap_rpc_secret(stack.password), **overrides}


FIRST_DEPLOYMENT = {"registryUrl": UNKNOWN, "caPem": UNKNOWN, "username": UNKNOWN, "password": UNKNOWN}


def tags(stack, repository: str) -> list[str]:
    with stack.client() as client:
        return client.tags(repository)


def assert_password_only_secret(stored, password: str) -> None:
    """The password is stored as a secret output, and no other output holds it."""
    assert rpc.is_rpc_secret(stored.outputs["password"])
    others = {k: v for k, v in stored.outputs.items() if k != "password"}
    assert password not in json.dumps(others, default=str)


# --- state contract ---------------------------------------------------------------------------


def _disassembled(blob: str) -> str:
    out = []
    pickletools.dis(base64.b64decode(blob), out=type("W", (), {"write": lambda self, s: out.append(s)})())
    return "".join(out)


def test_pickled_providers_are_references_that_load_from_another_cwd_when_installed(tmp_path):
    """Existing stacks' providers (pickled as components.maintenance.<Class>) and new ones
    (components.maintenance_providers.<Class>) are pickles by reference: an import path and a
    class name, no code. Both load and answer Check in a provider host started from another
    directory, with the project installed as a package (pyproject.toml) and not on the path."""
    for name, blob in LEGACY_BLOBS.items():
        listing = _disassembled(blob)
        assert "'components.maintenance'" in listing and f"'{name}'" in listing and "STACK_GLOBAL" in listing
    current = {cls.__name__: serialize_provider(cls())
               for cls in (ImageDeletionProvider, RetentionProvider, GarbageCollectionProvider)}
    for name, blob in current.items():
        assert "'components.maintenance_providers'" in _disassembled(blob)

    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    for package in ("components", "token_service"):  # pyproject.toml's packages
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "wheels"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    inputs = {
        "ImageDeletionProvider": {"repository": "app", "tags": ["v1"]},
        "RetentionProvider": {"repositories": "app", "keepLast": 2},
        "GarbageCollectionProvider": {"dockerHost": "unix:///nowhere.sock", "containerName": "reg"},
    }
    # The test venv holds the project as an editable install (requirements.txt's `-e .`): hide
    # it, so that only the package installed into `target` (or nothing) can provide `components`.
    hide = tmp_path / "hide-editable"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in str(getattr(f, '__module__', ''))]\n"
    )
    with ProviderHost(cwd=elsewhere, env={"PYTHONPATH": f"{hide}:{target}"}) as installed:
        installed.start_session()
        for blobs in (LEGACY_BLOBS, current):
            for name, blob in blobs.items():
                resource = EngineResource(installed, blob, name, name.lower())
                checked, failures = resource.check({**FIRST_DEPLOYMENT, **inputs[name]})
                assert failures == [] and checked["__provider"] == blob
    # Control: without the installed package, the same host cannot load them.
    with ProviderHost(cwd=elsewhere, env={"PYTHONPATH": str(hide)}) as bare:
        bare.start_session()
        with pytest.raises(ProviderCallError, match="No module named 'components'"):
            EngineResource(bare, LEGACY_BLOBS["ImageDeletionProvider"], "ImageDeletion", "d").check(
                {**FIRST_DEPLOYMENT, "repository": "app", "tags": ["v1"]})


# --- deletion ---------------------------------------------------------------------------------


def test_deletion_lifecycle_from_first_preview_to_destroy(host, stack, layout):
    """First deployment: the preview with unknown URL, user, password and CA passes without a
    list. Then: preview lists the tag; up deletes it; an unchanged preview shows no change; a
    re-pushed tag shows as a change, and up deletes it again (runs: 2); refresh reports a tag
    pushed once more; destroy leaves images alone. Counts are whole numbers; the password is
    a secret output and in no other output."""
    for tag in "abc":
        stack.push(layout, tag, "del/app")
    resource = EngineResource.of(host, ImageDeletionProvider(), "ImageDeletion", "delete-app")
    rule = {"repository": "del/app", "tags": ["b"]}

    first = resource.preview({**FIRST_DEPLOYMENT, **rule})
    assert first.failures == [] and "pendingDeletions" not in first.inputs
    assert resource.preview({**conn(stack), **rule}).inputs["pendingDeletions"] == ["del/app:b"]

    stored = resource.up({**conn(stack), **rule})
    assert stored.outputs["deletedTags"] == ["b"] and stored.outputs["deletionRuns"] == 1
    assert tags(stack, "del/app") == ["a", "c"]
    assert_password_only_secret(stored, stack.password)

    unchanged = resource.preview({**conn(stack), **rule}, stored)
    assert unchanged.failures == [] and unchanged.changes is False

    stack.push(layout, "b", "del/app")
    drift = resource.preview({**conn(stack), **rule}, stored)
    assert drift.changes is True and drift.replaces == [] and drift.inputs["pendingDeletions"] == ["del/app:b"]
    stored = resource.up({**conn(stack), **rule}, stored)
    assert stored.outputs["deletionRuns"] == 2 and tags(stack, "del/app") == ["a", "c"]

    stack.push(layout, "b", "del/app")
    refreshed = resource.refresh(stored)
    assert refreshed.outputs["pendingDeletions"] == ["del/app:b"]
    resource.destroy(refreshed)
    assert tags(stack, "del/app") == ["a", "b", "c"]


def test_deletion_by_digest_and_shared_digests(host, stack, layout):
    """A digest rule on a tagged digest fails the preview naming the tag; with
    allowSharedDigest it deletes the manifest and its tag. A tag whose digest another tag
    shares fails the preview naming the other tag; with allowSharedDigest both tags go."""
    for tag in "de":
        stack.push(layout, tag, "del/shared")
    with stack.client() as client:
        digest_e = client.resolve("del/shared", "e")
    stack.push(layout, "d", "del/shared", "d-alias")
    by_digest = EngineResource.of(host, ImageDeletionProvider(), "ImageDeletion", "by-digest")
    digest_rule = {**conn(stack), "repository": "del/shared", "digests": [digest_e]}
    assert "tag(s) e " in by_digest.preview(digest_rule).failures[0]
    stored = by_digest.up({**digest_rule, "allowSharedDigest": True})
    assert stored.outputs["deletedDigests"] == [digest_e] and stored.outputs["deletedTags"] == ["e"]
    assert tags(stack, "del/shared") == ["d", "d-alias"]
    assert by_digest.preview({**digest_rule, "allowSharedDigest": True}, stored).changes is False

    shared = EngineResource.of(host, ImageDeletionProvider(), "ImageDeletion", "shared")
    refused = shared.preview({**conn(stack), "repository": "del/shared", "tags": ["d"]})
    assert len(refused.failures) == 1 and "d-alias" in refused.failures[0]
    with pytest.raises(PreviewFailed, match="d-alias"):
        shared.up({**conn(stack), "repository": "del/shared", "tags": ["d"]})
    allowed = shared.up({**conn(stack), "repository": "del/shared", "tags": ["d"], "allowSharedDigest": True})
    assert allowed.outputs["deletedTags"] == ["d", "d-alias"]


def test_errors_are_clear_and_never_show_the_password(host, stack, layout, tmp_path):
    """Wrong password, unknown repository, unreachable registry, deletion disabled: each fails
    (at preview where it can be known then) with the cause, and never with the password."""
    stack.push(layout, "a", "err/app")
    resource = EngineResource.of(host, ImageDeletionProvider(), "ImageDeletion", "errors")
    wrong = "Wr0ng@:pass-" + str(time.time())
    with pytest.raises(ProviderCallError) as caught:
        resource.up({**conn(stack, password=wrong), "repository": "err/app", "tags": ["a"]})
    assert "authentication failed" in caught.value.details and wrong not in caught.value.details

    unknown = resource.preview({**conn(stack), "repository": "err/nothing", "tags": ["a"]})
    assert "NAME_UNKNOWN" in unknown.failures[0] and stack.password not in unknown.failures[0]

    unreachable = {**conn(stack, registryUrl=f"https://localhost:{free_port()}"), "repository": "err/app", "tags": ["a"]}
    assert resource.preview(unreachable).failures == []
    with pytest.raises(ProviderCallError, match="unreachable"):
        resource.up(unreachable)

    with deploy.registry_stack(tmp_path / "disabled", prefix="engine-nodel", delete_enabled=False) as disabled:
        disabled.push(layout, "a", "err/app")
        with pytest.raises(ProviderCallError) as refused:
            resource.up({**conn(disabled), "repository": "err/app", "tags": ["a"]})
        assert "storage.delete.enabled" in refused.value.details and disabled.password not in refused.value.details


# --- retention --------------------------------------------------------------------------------


def _push_aged(stack, layout: Path, repository: str, ages: dict[str, float]) -> None:
    now = time.time()
    for tag, hours in ages.items():
        oci.set_created(layout, tag, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - hours * 3600)))
        stack.push(layout, tag, repository)


AGES = {"a": 500, "b": 400, "c": 300, "d": 200, "e": 100, "f": 2}


@pytest.mark.parametrize("name, setting, kept", [
    ("keep-last", {"keepLast": 2}, ["e", "f"]),
    ("keep-patterns", {"keepPatterns": ["[ab]", "^f$"]}, ["a", "b", "f"]),
    ("keep-younger", {"keepYoungerThanHours": 250}, ["d", "e", "f"]),
    ("dry-run", {"keepLast": 1, "dryRun": True}, ["f"]),
])
def test_retention_setting_through_the_engine(host, stack, tmp_path, name, setting, kept):
    """Each retention setting, from a first-deployment preview (unknown credentials) through up,
    an unchanged preview and refresh: the registry holds exactly the kept tags (all of them for
    a dry run, which lists the rest as pending); keepLast arrives as a float and works."""
    layout = tmp_path / "layout"
    for tag in AGES:
        oci.write_image(layout, tag, [oci.random_bytes(4 * 1024, seed=f"{name}-{tag}")], seed=f"{name}-{tag}")
    repository = f"ret/{name}"
    _push_aged(stack, layout, repository, AGES)
    resource = EngineResource.of(host, RetentionProvider(), "RetentionPolicy", f"retain-{name}")
    rule = {"repositories": repository, **setting}

    assert resource.preview({**FIRST_DEPLOYMENT, **rule}).failures == []
    dry = bool(setting.get("dryRun"))
    doomed = sorted(f"{repository}:{t}" for t in AGES if t not in kept)
    assert resource.preview({**conn(stack), **rule}).inputs["pendingDeletions"] == doomed
    stored = resource.up({**conn(stack), **rule})
    assert tags(stack, repository) == (sorted(AGES) if dry else kept)
    assert stored.outputs["keptTags"] == [f"{repository}:{t}" for t in kept]
    assert stored.outputs["pendingDeletions"] == (doomed if dry else [])
    assert resource.preview({**conn(stack), **rule}, stored).changes is False
    assert resource.refresh(stored).outputs["pendingDeletions"] == (doomed if dry else [])
    assert_password_only_secret(stored, stack.password)


# --- garbage collection -----------------------------------------------------------------------


def test_gc_every_mode_through_the_engine(host, stack, layout):
    """A first-deployment preview (container name and credentials unknown) passes; dry-run
    collects nothing; a mode change to stop collects (bytes freed); a new trigger in readonly
    mode with deleteUntagged collects again; an unchanged preview shows no change; refresh keeps
    the figures; the figures arrive as numbers."""
    for tag in "gh":
        stack.push(layout, tag, "gc/app")
    with stack.client() as client:
        client.delete("gc/app", client.resolve("gc/app", "g"))
    resource = EngineResource.of(host, GarbageCollectionProvider(), "GarbageCollection", "gc")
    base = {**conn(stack), "dockerHost": stack.docker_host, "containerName": stack.registry_name}
    first = resource.preview({**FIRST_DEPLOYMENT, "dockerHost": stack.docker_host, "containerName": UNKNOWN,
                              "mode": "readonly", "trigger": UNKNOWN})
    assert first.failures == []

    stored = resource.up({**base, "mode": "dry-run", "trigger": "t1"})
    assert stored.outputs["blobsRemoved"] == 0 and stored.outputs["blobsEligible"] >= 1
    stored = resource.up({**base, "mode": "stop", "trigger": "t1"}, stored)
    assert stored.outputs["blobsRemoved"] >= 1
    assert stored.outputs["bytesBefore"] > stored.outputs["bytesAfter"]
    stored = resource.up({**base, "mode": "readonly", "deleteUntagged": True, "trigger": "t2"}, stored)
    assert stored.outputs["writesRefusedSeconds"] > 0 and stored.outputs["readsUnavailableSeconds"] == 0
    assert resource.preview({**base, "mode": "readonly", "deleteUntagged": True, "trigger": "t2"},
                            stored).changes is False
    assert resource.refresh(stored).outputs["bytesAfter"] == stored.outputs["bytesAfter"]
    assert tags(stack, "gc/app") == ["h"]
    assert_password_only_secret(stored, stack.password)
    bad = resource.preview({**base, "mode": "sometimes", "trigger": "t3"}, stored)
    assert "mode must be one of" in bad.failures[0]
