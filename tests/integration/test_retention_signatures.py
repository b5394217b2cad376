"""Retention with what clients attach to images, against real software: the program's stack
(basic mode, the registry under test), images pushed with skopeo, signed and attested with
cosign (its bundle in the referrers tag schema's index, and the older `.sig`/`.att` tags), an
SBOM attached with `cosign attach sbom`, and a file attached with `oras attach`; the retention
provider and the garbage collection provider run in this process."""

from __future__ import annotations

import json

from components.maintenance_providers import GarbageCollectionProvider, RetentionProvider
from components.registry_api import RegistryNotFoundError
from tests.support import oci
from tests.support.clients import Cosign, Identity, OrasClient

REPOSITORY = "signed"
KEY_PASSWORD = "key-Pw@:1"  # noqa: S105 - a test key's password
ARTIFACT_TYPE = "application/vnd.example.release-note"
# What the test attaches to each image, by tag suffix ("" is the referrers index).
SUFFIXES = ("", ".sig", ".att", ".sbom")


def conn(stack) -> dict:
    return {"registryUrl": stack.url, "caPem": stack.ca_pem, "username": stack.username, "password": stack.password}


def attachment_tags(digest: str) -> set[str]:
    return {digest.replace(":", "-") + suffix for suffix in SUFFIXES}


def test_retention_keeps_a_kept_images_attachments_and_deletes_a_deleted_ones_and_orphans(registry_stack, tmp_path):
    """Five images, each signed (cosign 3's bundle and the legacy `.sig`), attested (`.att`),
    with an SBOM of its own (`.sbom`) and an oras-attached 256 KiB file; the oldest then loses its tag
    (its attachments are orphans). keepLast: 2, previewed, lists for deletion the two middle
    images with all their attachment tags and the orphans apart; applied with deleteOrphans,
    it deletes exactly those: every kept image keeps all four attachment tags and still
    verifies with cosign (both signature forms), and no attachment of a deleted image or an
    orphan is left. The artifacts the deleted referrers indexes listed are gone by digest,
    and the collection after it frees at least their attached files' bytes."""
    stack = registry_stack
    layout = tmp_path / "layout"
    digests = {}
    for age, tag in enumerate(["v0", "v1", "v2", "v3", "v4"]):
        oci.write_image(layout, tag, [oci.random_bytes(32 * 1024, seed=tag)], seed=tag)
        digests[tag] = oci.set_created(layout, tag, f"2026-0{age + 1}-01T00:00:00Z")
        stack.push(layout, tag, REPOSITORY)

    identity = Identity("maint", stack.username, stack.password)
    cosign, oras = Cosign(tmp_path, stack.host, stack.cert_dir), OrasClient(tmp_path, stack.host, stack.cert_dir)
    assert cosign.login(identity).ok and oras.login(identity).ok
    key, public_key = cosign.generate_key_pair(tmp_path / "keys", KEY_PASSWORD)
    predicate = tmp_path / "predicate.json"
    predicate.write_text(json.dumps({"builder": "tests"}))
    for tag, digest in digests.items():
        sbom = tmp_path / f"sbom-{tag}.spdx.json"
        sbom.write_text(json.dumps({"spdxVersion": "SPDX-2.3", "name": f"signed:{tag}"}))
        note = tmp_path / f"notes-{tag}" / "release-note.bin"
        note.parent.mkdir()
        note.write_bytes(oci.random_bytes(256 * 1024, seed=f"note-{tag}"))
        ref = f"{stack.host}/{REPOSITORY}@{digest}"
        for outcome in (cosign.sign(ref, key, KEY_PASSWORD), cosign.sign(ref, key, KEY_PASSWORD, legacy=True),
                        cosign.attest(ref, key, KEY_PASSWORD, predicate), cosign.attach_sbom(ref, sbom)):
            assert outcome.ok, str(outcome)
        attached = oras.attach(ref, note, ARTIFACT_TYPE)
        assert attached.ok, str(attached)
    with stack.client() as client:
        tags = set(client.tags(REPOSITORY))
        assert tags == set(digests) | {t for d in digests.values() for t in attachment_tags(d)}
        artifacts = {tag: client.manifest(REPOSITORY, digests[tag].replace(":", "-")).children for tag in digests}
        assert all(len(listed) == 2 for listed in artifacts.values()), artifacts  # cosign's bundle, oras's file
        # v0 loses its tag (deleted by digest, as a user would): what is attached to it is orphaned.
        client.delete(REPOSITORY, digests["v0"])

    provider = RetentionProvider()
    news = {**conn(stack), "repositories": REPOSITORY, "keepLast": 2, "deleteOrphans": True}
    preview = provider.check({}, {**news, "deleteOrphans": False})
    assert preview.failures == []
    doomed = {t for tag in ("v1", "v2") for t in {tag, *attachment_tags(digests[tag])}}
    orphans = attachment_tags(digests["v0"])
    assert set(preview.inputs["pendingDeletions"]) == {f"{REPOSITORY}:{t}" for t in doomed}
    checked = provider.check({}, news)
    assert set(checked.inputs["pendingDeletions"]) == {f"{REPOSITORY}:{t}" for t in doomed | orphans}
    created = provider.create(checked.inputs)
    assert created.outs["orphanedArtifacts"] == [] and created.outs["pendingDeletions"] == []

    kept = {"v3", "v4"}
    with stack.client() as client:
        left = set(client.tags(REPOSITORY))
        assert left == kept | {t for tag in kept for t in attachment_tags(digests[tag])}
        lost = [t for tag in kept for t in attachment_tags(digests[tag]) if t not in left]
        stale = [t for t in doomed | orphans if t in left]
        for tag in ("v0", "v1", "v2"):
            for artifact in artifacts[tag]:
                try:
                    client.resolve(REPOSITORY, artifact)
                    stale.append(artifact)
                except RegistryNotFoundError:
                    pass
    print(f"\nretention with attachments: {len(lost)} attachments of kept images lost, "
          f"{len(stale)} of deleted images or orphans left")
    assert lost == [] and stale == []
    for tag in kept:
        verified = cosign.verify(f"{stack.host}/{REPOSITORY}:{tag}", public_key)
        assert verified.ok, str(verified)

    before = stack.volume_bytes()
    _, collected = provider_run(GarbageCollectionProvider(), {
        **conn(stack), "dockerHost": stack.docker_host, "containerName": stack.registry_name,
        "mode": "readonly", "trigger": "retention"})
    assert collected.outs["blobsRemoved"] > 0
    # v0-v2's own layers, configs and manifests aside, three attached 256 KiB files went.
    assert before - stack.volume_bytes() >= 3 * 256 * 1024
    for tag in kept:
        assert stack.pull(REPOSITORY, tag, check=False).returncode == 0
        assert cosign.verify(f"{stack.host}/{REPOSITORY}:{tag}", public_key).ok


def provider_run(provider, news: dict):
    checked = provider.check({}, news)
    assert checked.failures == [], [f.reason for f in checked.failures]
    return checked, provider.create(checked.inputs)
