"""Maintenance providers and component without a registry: rule evaluation, exact diffs,
typed props, no secret in the pickled provider, and the resource graph under engine-like mocks.

The providers' registry access is replaced by an in-memory fake with the same methods as
RegistryClient; the real registry is in tests/integration/test_maintenance.py.
"""

from __future__ import annotations

import base64
import dataclasses
import pickle
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dill
import pulumi
import pytest

from components import maintenance_plan, maintenance_providers
from components.maintenance import Maintenance, MaintenanceArgs, deletes_by_tag, legacy_rule_hash, rule_hash
from components.maintenance_plan import (
    UNKNOWN,
    ImageDeletionProps,
    has_unknown,
    RepoSnapshot,
    RetentionProps,
    plan_deletion,
    plan_retention,
    plan_untag,
    repository_matches,
    untagged_to_delete,
)
from components.maintenance_providers import (
    GarbageCollectionProvider,
    ImageDeletionProvider,
    MaintenanceError,
    RetentionProvider,
    stable_id,
)
from components.registry_api import (
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    RegistryAuthError,
    RegistryError,
    RegistryNotFoundError,
    RegistryUnreachableError,
    SharedDigestError,
)
from components.settings import DeletionRule, GcSettings, MaintenanceSettings, RetentionRule
from tests.support.engine import is_secret
from tests.support.provider_host import Wired as wired
from tests.support.provider_host import as_host_sees

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Sup3r-s3cret@:pw"
URL = "https://localhost:5443"
CONN = {"registryUrl": URL, "caPem": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
        "username": "admin", "password": PASSWORD}
NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)


def d(char: str) -> str:
    return "sha256:" + char * 64


# --- an in-memory registry with RegistryClient's methods ---------------------------------------


class FakeRegistry:
    def __init__(self, repos, indexes=None, created=None, untagged=()):
        self.repos = {repo: dict(tags) for repo, tags in repos.items()}
        self.indexes = dict(indexes or {})
        self.created_at = dict(created or {})
        self.untagged = {tuple(x) for x in untagged}  # (repo, digest) present without a tag
        self.deleted: list[tuple[str, str]] = []
        self.untagged_tags: list[tuple[str, str]] = []
        self.described: list[tuple[str, ...]] = []
        self.resolved: list[str] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def ping(self):
        return None

    def map(self, fn, items):
        return [fn(item) for item in items]

    def catalog(self):
        return sorted(self.repos)

    def tags(self, repo):
        if repo not in self.repos:
            raise RegistryNotFoundError(URL, "repository not found (NAME_UNKNOWN)", repository=repo, code="NAME_UNKNOWN")
        return sorted(self.repos[repo])

    def _media(self, digest):
        return OCI_INDEX if digest in self.indexes else OCI_MANIFEST

    def descriptors(self, repo, tags):
        self.described.append(tuple(tags))
        return {t: Descriptor(self.repos[repo][t], self._media(self.repos[repo][t])) for t in tags if t in self.repos[repo]}

    def manifest(self, repo, digest):
        return Manifest(digest, self._media(digest), {"manifests": [{"digest": c} for c in self.indexes.get(digest, ())]})

    def resolve(self, repo, ref):
        self.resolved.append(ref)
        if ref in self.repos.get(repo, {}).values() or (repo, ref) in self.untagged:
            return ref
        raise RegistryNotFoundError(URL, "manifest not found", repository=repo, reference=ref)

    def created(self, repo, digest):
        return self.created_at.get(digest)

    def untag(self, repo, tag):
        """DELETE by tag as distribution 3 serves it: the manifest stays, untagged if that was its last tag."""
        digest = self.repos.get(repo, {}).pop(tag, None)
        if digest is None:
            return False
        self.untagged_tags.append((repo, tag))
        if digest not in self.repos[repo].values():
            self.untagged.add((repo, digest))
        return True

    def delete(self, repo, digest):
        present = digest in self.repos.get(repo, {}).values() or (repo, digest) in self.untagged
        self.repos[repo] = {t: x for t, x in self.repos.get(repo, {}).items() if x != digest}
        self.untagged.discard((repo, digest))
        if present:
            self.deleted.append((repo, digest))
        return present


@pytest.fixture
def fake(monkeypatch):
    """Install a FakeRegistry as what every provider's Connection.client() returns."""
    holder = {}

    def install(registry: FakeRegistry) -> FakeRegistry:
        holder["registry"] = registry
        return registry

    monkeypatch.setattr(maintenance_plan.ConnectionProps, "client", lambda self: holder["registry"])
    return install


# --- typed props ------------------------------------------------------------------------------


def test_props_round_trip_through_pulumi_dicts():
    """Dataclass fields map to camelCase keys; tuples travel as lists; defaults fill gaps."""
    props = ImageDeletionProps.from_dict({**CONN, "repository": "app", "tags": ["v1", "v2"], "extra": 1})
    assert props.tags == ("v1", "v2") and props.digests == () and props.allow_shared_digest is False
    assert props.to_dict() == {**CONN, "repository": "app", "tags": ["v1", "v2"], "digests": [],
                               "allowSharedDigest": False, "deleteByTag": False}
    retention = RetentionProps.from_dict({**CONN, "repositories": "team/*", "keepLast": 3})
    assert "keepYoungerThanHours" not in retention.to_dict() and retention.keep_last == 3


def test_ids_are_deterministic_and_follow_the_rule():
    """The same rule on the same registry gets the same id; any change to it, another id."""
    assert stable_id("deletion", URL, "app", ["v1"]) == stable_id("deletion", URL, "app", ["v1"])
    assert stable_id("deletion", URL, "app", ["v1"]) != stable_id("deletion", URL, "app", ["v2"])
    assert stable_id("deletion", URL, "app", ["v1"]) != stable_id("deletion", "https://other:5443", "app", ["v1"])


# --- deletion rules ---------------------------------------------------------------------------


def rule(**kw) -> ImageDeletionProps:
    return ImageDeletionProps.from_dict({**CONN, "repository": "app", **kw})


def test_deleting_tags_deletes_their_digests_and_reports_missing_ones_as_gone():
    """A tag's digest is what gets deleted; a tag that is not there counts as already gone, not an error."""
    snap = RepoSnapshot("app", {"v1": d("1"), "v2": d("2")})
    plan = plan_deletion(rule(tags=["v1", "v9"]), snap)
    assert plan.digests == (d("1"),) and plan.tags_removed == ("v1",) and plan.already_gone == ("v9",)
    assert plan.pending == ["app:v1"]


def test_a_digest_shared_with_another_tag_is_refused_naming_the_tag():
    """Registry 2.8 cannot untag: deleting v1's digest would take `latest` too, so it is refused."""
    snap = RepoSnapshot("app", {"v1": d("1"), "latest": d("1"), "v2": d("2")})
    with pytest.raises(SharedDigestError) as caught:
        plan_deletion(rule(tags=["v1"]), snap)
    message = str(caught.value)
    assert "latest" in message and "allowSharedDigest" in message and URL in message and "'app'" in message


def test_allow_shared_digest_deletes_and_reports_every_tag_on_it():
    """With allowSharedDigest the digest goes, and the plan lists every tag that goes with it."""
    snap = RepoSnapshot("app", {"v1": d("1"), "latest": d("1")})
    plan = plan_deletion(rule(tags=["v1"], allowSharedDigest=True), snap)
    assert plan.digests == (d("1"),) and plan.tags_removed == ("latest", "v1")


def test_naming_every_tag_of_a_digest_needs_no_permission():
    """A rule naming all tags on a digest deletes it without allowSharedDigest: nothing unnamed is lost."""
    snap = RepoSnapshot("app", {"v1": d("1"), "latest": d("1")})
    assert plan_deletion(rule(tags=["v1", "latest"]), snap).digests == (d("1"),)


def test_a_digest_rule_on_a_tagged_digest_is_refused_unless_allowed():
    """A digest rule whose digest still carries tags is refused naming them, unless allowed."""
    snap = RepoSnapshot("app", {"v1": d("1")})
    with pytest.raises(SharedDigestError, match="v1"):
        plan_deletion(rule(digests=[d("1")]), snap)
    assert plan_deletion(rule(digests=[d("1")], allowSharedDigest=True), snap).tags_removed == ("v1",)


def test_an_untagged_digest_is_deleted_and_listed_by_digest():
    """A digest present without tags is deleted and shown as repo@digest; an absent one is already gone."""
    snap = RepoSnapshot("app", {"v1": d("1")})
    plan = plan_deletion(rule(digests=[d("9"), d("8")]), snap, untagged_present=[d("9")])
    assert plan.digests == (d("9"),) and plan.pending == [f"app@{d('9')}"] and plan.already_gone == (d("8"),)


def test_deleting_an_index_tag_deletes_the_index_only():
    """A multi-arch tag: the index digest goes, its platform manifests are not deleted."""
    snap = RepoSnapshot("app", {"multi": d("i"), "other": d("j")},
                        children={d("i"): (d("a"), d("b")), d("j"): (d("a"), d("c"))})
    plan = plan_deletion(rule(tags=["multi"]), snap)
    assert plan.digests == (d("i"),)


def test_a_platform_manifest_of_a_kept_index_is_refused_even_when_allowed():
    """Deleting a child another tagged index lists would break that index: always refused."""
    snap = RepoSnapshot("app", {"multi": d("i"), "multi-amd64": d("a")}, children={d("i"): (d("a"), d("b"))})
    with pytest.raises(SharedDigestError, match="multi-architecture image.*multi"):
        plan_deletion(rule(tags=["multi-amd64"], allowSharedDigest=True), snap)
    assert plan_deletion(rule(tags=["multi-amd64", "multi"]), snap).digests == (d("a"), d("i"))


# --- retention rules --------------------------------------------------------------------------


def retention(**kw) -> RetentionProps:
    return RetentionProps.from_dict({**CONN, "repositories": "app", **kw})


def aged(tags: dict[str, tuple[str, float | None]], repo="app", children=None) -> RepoSnapshot:
    """Snapshot from {tag: (digest char, age in hours or None)}."""
    digests = {t: d(c) for t, (c, _) in tags.items()}
    created = {d(c): (None if age is None else NOW - timedelta(hours=age)) for c, age in tags.values()}
    return RepoSnapshot(repo, digests, children or {}, created)


def test_keep_last_keeps_the_newest_by_build_time():
    """keepLast keeps the N tags whose images were built last; the others go."""
    snap = aged({"v1": ("1", 30), "v2": ("2", 20), "v3": ("3", 10), "v4": ("4", 40)})
    plan = plan_retention(retention(keepLast=2), [snap], NOW)
    assert plan.pending == ["app:v1", "app:v4"] and plan.kept == ("app:v2", "app:v3")


def test_an_image_without_a_build_time_counts_as_oldest_and_ties_break_by_tag():
    """No build time means oldest; equal times are ordered by tag name, so the choice is deterministic."""
    snap = aged({"a": ("1", None), "b": ("2", 5), "c": ("3", 5)})
    assert plan_retention(retention(keepLast=1), [snap], NOW).kept == ("app:c",)
    assert plan_retention(retention(keepLast=2), [snap], NOW).pending == ["app:a"]


def test_keep_patterns_are_full_matches():
    """`v1` keeps v1, not v10: patterns match the whole tag."""
    snap = aged({"v1": ("1", 1), "v10": ("2", 1), "release-1": ("3", 1)})
    plan = plan_retention(retention(keepPatterns=["v1", "release-.*"]), [snap], NOW)
    assert plan.pending == ["app:v10"]


def test_keep_younger_than_keeps_recent_builds():
    """keepYoungerThan keeps images built within the window; undated images are not young."""
    snap = aged({"new": ("1", 2), "old": ("2", 48), "undated": ("3", None)})
    plan = plan_retention(retention(keepYoungerThanHours=24), [snap], NOW)
    assert plan.pending == ["app:old", "app:undated"]


def test_keep_last_zero_with_a_pattern_deletes_all_others():
    """keepLast 0 keeps none by age: only the pattern's tags stay."""
    snap = aged({"keep": ("1", 9), "x": ("2", 1)})
    assert plan_retention(retention(keepLast=0, keepPatterns=["keep"]), [snap], NOW).pending == ["app:x"]


def test_a_tag_sharing_a_digest_with_a_kept_tag_is_blocked_not_deleted():
    """Deleting `old`'s digest would delete kept `stable` too: `old` is reported blocked instead."""
    snap = aged({"stable": ("1", 100), "old": ("1", 100), "new": ("2", 1)})
    plan = plan_retention(retention(keepLast=1, keepPatterns=["stable"]), [snap], NOW)
    assert plan.pending == [] and plan.blocked == ("app:old",)


def test_a_platform_manifest_a_kept_index_needs_is_blocked():
    """A tag on a platform manifest of a kept index is not deleted (that would break the index); it is reported blocked."""
    snap = aged({"multi": ("i", 1), "amd64-only": ("a", 100)}, children={d("i"): (d("a"), d("b"))})
    plan = plan_retention(retention(keepLast=1), [snap], NOW)
    assert plan.kept == ("app:multi",) and plan.pending == [] and plan.blocked == ("app:amd64-only",)


def att(subject: str, kind: str = "") -> str:
    """The tag cosign (``.sig``/``.att``/``.sbom``) or the referrers tag schema (no suffix) gives
    what is attached to ``subject``."""
    return subject.replace(":", "-") + (f".{kind}" if kind else "")


def test_signatures_are_not_counted_and_follow_their_image():
    """keepLast counts images only: two images and their signature, attestation and SBOM tags
    under keepLast: 2 lose nothing. Under keepLast: 1 the older image goes with its three
    attachments (the preview lists them) and the newer one's stay."""
    new, old = d("1"), d("2")
    tags = {"new": ("1", 1), "old": ("2", 50), att(new, "sig"): ("3", None), att(old, "sig"): ("4", None),
            att(old, "att"): ("5", None), att(old, "sbom"): ("6", None)}
    assert plan_retention(retention(keepLast=2), [aged(tags)], NOW).pending == []
    plan = plan_retention(retention(keepLast=1), [aged(tags)], NOW)
    assert plan.pending == sorted(["app:old", f"app:{att(old, 'sig')}", f"app:{att(old, 'att')}",
                                   f"app:{att(old, 'sbom')}"])
    assert set(plan.delete["app"]) == {old, d("4"), d("5"), d("6")}
    assert plan.kept == tuple(sorted(["app:new", f"app:{att(new, 'sig')}"])) and plan.orphans == ()


def test_an_attachment_sharing_its_manifest_with_a_kept_ones_is_blocked():
    """The same SBOM attached to a kept and a deleted image is one manifest under two tags:
    deleting it by digest would take the kept image's tag, so both stay (blockedTags)."""
    new, old = d("1"), d("2")
    tags = {"new": ("1", 1), "old": ("2", 50), att(new, "sbom"): ("6", None), att(old, "sbom"): ("6", None)}
    plan = plan_retention(retention(keepLast=1), [aged(tags)], NOW)
    assert set(plan.delete["app"]) == {old} and plan.blocked == (f"app:{att(old, 'sbom')}",)


def test_a_deleted_images_referrers_index_takes_its_artifacts_and_a_kept_ones_stays():
    """The referrers tag schema's index (cosign 3, oras) of a deleted image goes, and so do the
    artifacts it lists (untagged manifests nothing else reaches); a kept image's index and
    artifacts stay; an artifact's own signature follows the artifact."""
    new, old = d("1"), d("2")
    tags = {"new": ("1", 1), "old": ("2", 50), att(new): ("7", None), att(old): ("8", None),
            att(d("b"), "sig"): ("9", None)}
    snap = aged(tags, children={d("7"): (d("a"),), d("8"): (d("b"), d("c"))})
    plan = plan_retention(retention(keepLast=1), [snap], NOW)
    assert set(plan.delete["app"]) == {old, d("8"), d("b"), d("c"), d("9")}
    assert plan.pending == sorted(["app:old", f"app:{att(old)}", f"app:{att(d('b'), 'sig')}"])
    assert f"app:{att(new)}" in plan.kept


def test_attachments_of_a_kept_index_and_its_platform_images_stay():
    """A signature of a kept multi-architecture index, or of one of its platform manifests,
    stays; a signature of a platform manifest the deleted index alone listed goes."""
    tags = {"multi": ("e", 1), "gone": ("f", 50), att(d("e"), "sig"): ("3", None),
            att(d("a"), "sig"): ("4", None), att(d("b"), "sig"): ("5", None)}
    snap = aged(tags, children={d("e"): (d("a"),), d("f"): (d("b"),)})
    plan = plan_retention(retention(keepLast=1), [snap], NOW)
    assert set(plan.delete["app"]) == {d("f"), d("5")}


def test_orphans_are_listed_kept_when_their_subject_exists_untagged_and_deleted_on_request():
    """An attachment whose subject no tag reaches: an orphan, listed and left, if the subject
    is gone; kept if the subject still exists untagged; deleted (in the preview) with
    deleteOrphans, with the artifacts an orphaned referrers index lists."""
    x, y = d("c"), d("d")
    tags = {"v1": ("1", 1), att(x, "sig"): ("3", None), att(y): ("7", None)}
    snap = aged(tags, children={d("7"): (d("a"),)})
    plan = plan_retention(retention(keepLast=1), [snap], NOW)
    assert plan.pending == [] and plan.orphans == tuple(sorted([f"app:{att(x, 'sig')}", f"app:{att(y)}"]))
    present = dataclasses.replace(snap, present=frozenset({x}))
    assert plan_retention(retention(keepLast=1), [present], NOW).orphans == (f"app:{att(y)}",)
    cleaned = plan_retention(retention(keepLast=1, deleteOrphans=True), [snap], NOW)
    assert cleaned.orphans == () and set(cleaned.delete["app"]) == {d("3"), d("7"), d("a")}
    assert cleaned.pending == sorted([f"app:{att(x, 'sig')}", f"app:{att(y)}"])


def test_retention_provider_looks_up_only_unreached_subjects_and_reports_orphans(fake):
    """create: only the subjects no tag reaches are looked up, once each; one untagged but present keeps its attachment, one gone
    makes its attachment an orphan, reported in orphanedArtifacts and left in place."""
    x, y = d("c"), d("d")
    registry = fake(FakeRegistry({"app": {"v1": d("1"), att(d("1"), "sig"): d("3"), att(x, "sig"): d("4"),
                                          att(y, "sig"): d("5")}},
                                 created={d("1"): NOW}, untagged=[("app", x)]))
    result = wired(RetentionProvider()).create({**CONN, "repositories": "app", "keepLast": 1})
    assert registry.deleted == [] and sorted(registry.resolved) == [x, y]
    assert result.outs["orphanedArtifacts"] == [f"app:{att(y, 'sig')}"]
    assert sorted(result.outs["keptTags"]) == sorted(["app:v1", f"app:{att(d('1'), 'sig')}", f"app:{att(x, 'sig')}"])


def test_rules_govern_repositories_by_pattern_first_match_wins():
    """A rule applies to repositories its fnmatch pattern matches, minus those earlier rules govern."""
    first = retention(repositories="team/*")
    second = retention(repositories="*", excludeRepositories=["team/*"])
    assert repository_matches(first, "team/app") and not repository_matches(first, "other")
    assert repository_matches(second, "other") and not repository_matches(second, "team/app")


def test_untagged_deletion_spares_platform_manifests_of_tagged_indexes():
    """What registry 2.8's --delete-untagged gets wrong: children of a tagged index stay."""
    snaps = {"app": RepoSnapshot("app", {"multi": d("i")}, children={d("i"): (d("a"), d("b"))})}
    listed = {"app": [d("a"), d("b"), d("c")], "gone": [d("e")]}
    assert untagged_to_delete(listed, snaps) == {"app": [d("c")], "gone": [d("e")]}


# --- check and diff ---------------------------------------------------------------------------


@pytest.mark.parametrize("news, words", [
    ({"repository": "App", "tags": ["v1"]}, "not a valid repository name"),
    ({"repository": "app", "tags": ["-x"]}, "not a valid tag"),
    ({"repository": "app", "digests": ["sha256:abc"]}, "not a digest"),
    ({"repository": "app"}, "names no tags and no digests"),
])
def test_check_reports_malformed_deletion_rules(news, words):
    """Malformed repository, tag or digest, or a rule naming nothing, fail check with the reason and no password."""
    result = wired(ImageDeletionProvider()).check({}, {**CONN, **news})
    assert len(result.failures) == 1 and words in result.failures[0].reason
    assert PASSWORD not in result.failures[0].reason


def test_check_lists_pending_deletions_for_the_preview(fake):
    """check asks the registry and puts the tags that would go into pendingDeletions, for the preview."""
    fake(FakeRegistry({"app": {"v1": d("1"), "v2": d("2")}}))
    result = wired(ImageDeletionProvider()).check({}, {**CONN, "repository": "app", "tags": ["v1"]})
    assert result.failures == [] and result.inputs["pendingDeletions"] == ["app:v1"]


def test_check_fails_the_preview_on_a_shared_digest_and_an_unknown_repository(fake):
    """Refusals create would make (shared digest, unknown repository) already fail the preview."""
    fake(FakeRegistry({"app": {"v1": d("1"), "latest": d("1")}}))
    shared = wired(ImageDeletionProvider()).check({}, {**CONN, "repository": "app", "tags": ["v1"]})
    assert "latest" in shared.failures[0].reason
    unknown = wired(ImageDeletionProvider()).check({}, {**CONN, "repository": "nope", "tags": ["v1"]})
    assert "NAME_UNKNOWN" in unknown.failures[0].reason


def test_check_without_a_reachable_registry_passes_without_a_list():
    """First deployment: the registry is not up yet at preview time; that is not an error."""
    unreachable = {**CONN, "registryUrl": "https://127.0.0.1:9", "caPem": ""}
    result = wired(ImageDeletionProvider()).check({}, {**unreachable, "repository": "app", "tags": ["v1"]})
    assert result.failures == [] and "pendingDeletions" not in result.inputs


def test_check_with_unknown_inputs_asks_nothing(fake):
    """With unknown inputs (preview before the registry exists) check neither fails nor asks the registry."""
    registry = fake(FakeRegistry({}))
    registry.tags = None  # any call would fail
    result = wired(ImageDeletionProvider()).check({}, {**CONN, "password": UNKNOWN, "repository": "app", "tags": ["v1"]})
    assert result.failures == [] and "pendingDeletions" not in result.inputs


def test_check_with_every_connection_input_unknown_fails_nothing_and_builds_no_client(monkeypatch):
    """First deployment: URL, user, password and CA all arrive as ``Unknown`` objects; check
    passes, keeps them unknown, and never builds a RegistryClient (an unknown CA is no PEM)."""
    monkeypatch.setattr(maintenance_plan, "RegistryClient", None)  # building one would raise
    unknowns = {key: UNKNOWN for key in CONN}
    for provider, rule in [(ImageDeletionProvider(), {"repository": "app", "tags": ["v1"]}),
                           (RetentionProvider(), {"repositories": "team/*", "keepLast": 2}),
                           (GarbageCollectionProvider(), {"dockerHost": "unix:///x.sock", "containerName": UNKNOWN})]:
        result = wired(provider).check({}, {**unknowns, **rule})
        assert result.failures == [] and has_unknown(result.inputs["password"])


def test_numbers_arrive_as_floats_and_take_their_field_type(fake):
    """keepLast 2 arrives as 2.0 and plans as 2 (it slices a list); keepYoungerThanHours stays
    a float; a fractional keepLast fails check naming the input."""
    props = RetentionProps.from_dict(as_host_sees({**CONN, "repositories": "app", "keepLast": 2,
                                                   "keepYoungerThanHours": 36}))
    assert props.keep_last == 2 and type(props.keep_last) is int and type(props.keep_younger_than_hours) is float
    fake(FakeRegistry({"app": {"a": d("1"), "b": d("2"), "c": d("3")}},
                      created={d("1"): NOW, d("2"): NOW - timedelta(1), d("3"): NOW - timedelta(2)}))
    checked = wired(RetentionProvider()).check({}, {**CONN, "repositories": "app", "keepLast": 2})
    assert checked.failures == [] and checked.inputs["pendingDeletions"] == ["app:c"]
    fractional = wired(RetentionProvider()).check({}, {**CONN, "repositories": "app", "keepLast": 1.5})
    assert "keepLast must be a whole number" in fractional.failures[0].reason


def test_diff_counts_an_unknown_object_as_a_change():
    """In a preview the new password may be an ``Unknown`` object: that is a change, not equal."""
    provider = ImageDeletionProvider()
    stored = {**CONN, "repository": "app", "tags": ["v1"], "digests": [], "allowSharedDigest": False}
    assert wired(provider).diff("id", stored, stored).changes is False
    result = wired(provider).diff("id", stored, {**stored, "password": UNKNOWN})
    assert result.changes is True and result.replaces == []


def olds_for(provider, news, extra=None):
    return {**provider.check({}, news).inputs, **(extra or {})}


def test_diff_of_unchanged_inputs_is_no_change():
    """An unchanged stack previews as unchanged: same inputs, same pending list => no diff."""
    provider = wired(ImageDeletionProvider())
    news = {**CONN, "registryUrl": "https://127.0.0.1:9", "repository": "app", "tags": ["v1"]}
    olds = {**provider.check({}, news).inputs, "pendingDeletions": [], "deletedDigests": [d("1")]}
    checked = {**provider.check(olds, news).inputs, "pendingDeletions": []}
    result = provider.diff("id", olds, checked)
    assert result.changes is False and result.replaces == []


@pytest.mark.parametrize("change, replaces", [
    ({"tags": ["v1", "v2"]}, ["tags"]),
    ({"allowSharedDigest": True}, ["allowSharedDigest"]),
    ({"password": "rotated"}, []),
    ({"caPem": "-----BEGIN CERTIFICATE-----\ny\n-----END CERTIFICATE-----\n"}, []),
    ({"pendingDeletions": ["app:v1"]}, []),
])
def test_diff_names_what_changed_and_replaces_only_for_rule_changes(change, replaces):
    """A different rule is a different resource (replace); credentials or a re-pushed tag update."""
    provider = wired(ImageDeletionProvider())
    base = {**CONN, "repository": "app", "tags": ["v1"], "digests": [], "allowSharedDigest": False,
            "pendingDeletions": []}
    result = provider.diff("id", base, {**base, **change})
    assert result.changes is True and result.replaces == replaces


def test_diff_treats_unknown_values_as_changes_and_absent_defaults_as_equal():
    """Unknown means changed; a missing optional input equals its default; only the pattern replaces a retention rule."""
    provider = wired(RetentionProvider())
    base = {**CONN, "repositories": "app", "keepLast": 2}
    stored = {**base, "excludeRepositories": [], "keepPatterns": [], "dryRun": False}
    assert provider.diff("id", stored, base).changes is False
    assert provider.diff("id", stored, {**base, "password": UNKNOWN}).changes is True
    assert provider.diff("id", stored, {**base, "keepLast": 3}).replaces == []
    assert provider.diff("id", stored, {**base, "repositories": "team/*"}).replaces == ["repositories"]


# --- create / update / read against the fake --------------------------------------------------


def test_create_deletes_reports_and_leaves_nothing_pending(fake):
    """create deletes the digest, records what it deleted, and leaves pendingDeletions empty under a deterministic id."""
    registry = fake(FakeRegistry({"app": {"v1": d("1"), "v2": d("2")}}))
    result = wired(ImageDeletionProvider()).create({**CONN, "repository": "app", "tags": ["v1"]})
    assert registry.deleted == [("app", d("1"))]
    assert result.outs["pendingDeletions"] == [] and result.outs["deletedTags"] == ["v1"]
    assert result.outs["deletedDigests"] == [d("1")] and result.outs["deletionRuns"] == 1
    assert result.id.startswith("deletion-")


def test_refresh_finds_a_re_pushed_tag_and_update_deletes_it_again(fake):
    """read reports the truth: a tag pushed again shows as pending; update removes it, runs += 1."""
    registry = fake(FakeRegistry({"app": {"v1": d("1")}}))
    provider = wired(ImageDeletionProvider())
    created = provider.create({**CONN, "repository": "app", "tags": ["v1"]})
    registry.repos["app"]["v1"] = d("1")
    refreshed = provider.read(created.id, created.outs)
    assert refreshed.outs["pendingDeletions"] == ["app:v1"]
    news = provider.check(refreshed.outs, {**CONN, "repository": "app", "tags": ["v1"]}).inputs
    assert news["pendingDeletions"] == ["app:v1"]
    assert provider.diff(created.id, {**refreshed.outs, "pendingDeletions": []}, news).changes is True
    updated = provider.update(created.id, refreshed.outs, news)
    assert updated.outs["deletionRuns"] == 2 and updated.outs["pendingDeletions"] == []


def test_deleting_by_tag_removes_only_the_named_tags_and_refuses_nothing():
    """On distribution 3 a rule's tags go by tag: a tag sharing its manifest with another tag
    goes alone (no shared-digest refusal, nothing else removed), a missing one is already gone."""
    plan = plan_untag(rule(tags=["v1", "v9"], deleteByTag=True), ["latest", "v1", "v2"])
    assert plan.untag == ("v1",) and plan.tags_removed == ("v1",) and plan.digests == ()
    assert plan.already_gone == ("v9",) and plan.pending == ["app:v1"]


def test_create_by_tag_asks_for_the_tag_list_only_and_untags(fake):
    """create with deleteByTag: one tag list, no HEAD per tag; the named tags are untagged (the
    shared manifest keeps its other tag, a manifest left untagged stays for the collection),
    the run is counted for the collection's trigger; a rerun finds them gone and counts nothing."""
    registry = fake(FakeRegistry({"app": {"v1": d("1"), "latest": d("1"), "v2": d("2")}}))
    provider = wired(ImageDeletionProvider())
    news = {**CONN, "repository": "app", "tags": ["v1", "v2", "v9"], "deleteByTag": True}
    assert provider.check({}, news).inputs["pendingDeletions"] == ["app:v1", "app:v2"]
    result = provider.create(news)
    assert registry.described == [] and registry.deleted == []
    assert registry.untagged_tags == [("app", "v1"), ("app", "v2")]
    assert registry.repos["app"] == {"latest": d("1")} and ("app", d("2")) in registry.untagged
    assert result.outs["deletedTags"] == ["v1", "v2"] and result.outs["deletedDigests"] == []
    assert result.outs["deletionRuns"] == 1 and result.outs["alreadyGone"] == ["v9"]
    again = provider.update(result.id, result.outs, provider.check(result.outs, news).inputs)
    assert again.outs["deletionRuns"] == 1 and again.outs["alreadyGone"] == ["v1", "v2", "v9"]


def test_a_rule_naming_digests_deletes_by_digest_even_where_tags_could_go_by_tag(fake):
    """deleteByTag covers rules of tags only: a rule that names a digest deletes by digest, with
    the shared-digest checks, as on 2.8."""
    registry = fake(FakeRegistry({"app": {"v1": d("1"), "v2": d("2")}}, untagged=[("app", d("3"))]))
    wired(ImageDeletionProvider()).create({**CONN, "repository": "app", "tags": ["v1"], "digests": [d("3")],
                                           "deleteByTag": True})
    assert sorted(registry.deleted) == [("app", d("1")), ("app", d("3"))] and registry.untagged_tags == []
    with pytest.raises(MaintenanceError, match="also delete tag.s. v2 .*deleteUntagged: true deletes a rule's tags by tag"):
        wired(ImageDeletionProvider()).create({**CONN, "repository": "app", "digests": [d("2")], "deleteByTag": True})


@pytest.mark.parametrize("version, gc, expected", [
    (3, GcSettings(delete_untagged=True), True),
    (3, GcSettings(delete_untagged=True, mode="stop"), True),
    (3, GcSettings(), False),
    (3, GcSettings(delete_untagged=True, mode="dry-run"), False),
    (3, GcSettings(delete_untagged=True, enabled=False), False),
    (2, GcSettings(delete_untagged=True), False),
])
def test_rules_delete_by_tag_only_where_a_collection_then_removes_the_untagged_manifests(version, gc, expected):
    """By tag only on distribution 3 and when the collection after the deletions removes
    untagged manifests: otherwise a manifest whose tags went would stay pullable by digest."""
    assert deletes_by_tag(MaintenanceSettings(deletions=SETTINGS.deletions, gc=gc), version) is expected


def test_retention_dry_run_only_reports(fake):
    """A dry run lists what would go and deletes nothing."""
    registry = fake(FakeRegistry({"app": {"a": d("1"), "b": d("2")}}, created={d("1"): NOW, d("2"): NOW - timedelta(1)}))
    result = wired(RetentionProvider()).create({**CONN, "repositories": "app", "keepLast": 1, "dryRun": True})
    assert registry.deleted == [] and result.outs["pendingDeletions"] == ["app:b"]
    assert result.outs["deletedTags"] == [] and result.outs["deletionRuns"] == 0


def test_retention_deletes_what_the_rule_does_not_keep(fake):
    """A real run deletes only in the governed repository what the rule does not keep."""
    registry = fake(FakeRegistry({"app": {"a": d("1"), "b": d("2")}, "other": {"x": d("3")}},
                                 created={d("1"): NOW, d("2"): NOW - timedelta(1), d("3"): NOW - timedelta(9)}))
    result = wired(RetentionProvider()).create({**CONN, "repositories": "app", "keepLast": 1})
    assert registry.deleted == [("app", d("2"))]
    assert result.outs["deletedTags"] == ["app:b"] and result.outs["pendingDeletions"] == []
    assert result.outs["keptTags"] == ["app:a"]


def test_registry_errors_become_maintenance_errors_from_the_cause(fake):
    """Registry failures surface as MaintenanceError naming the resource, chained from the registry error."""
    fake(FakeRegistry({}))
    with pytest.raises(MaintenanceError) as caught:
        wired(ImageDeletionProvider()).create({**CONN, "repository": "nope", "tags": ["v1"]})
    assert isinstance(caught.value.__cause__, RegistryNotFoundError) and "'nope'" in str(caught.value)


def test_gc_update_collects_again_only_when_the_deletions_change(monkeypatch, fake):
    """A new trigger (what was deleted) or mode re-runs the collection; a new password does not."""
    runs = []
    fake(FakeRegistry({}))
    monkeypatch.setattr(GarbageCollectionProvider, "collect",
                        staticmethod(lambda client, props: runs.append(props.trigger) or {"bytesAfter": len(runs)}))
    provider = wired(GarbageCollectionProvider())
    news = {**CONN, "dockerHost": "unix:///x.sock", "containerName": "reg", "trigger": "t1"}
    created = provider.create(news)
    assert runs == ["t1"] and created.id == provider.create(news).id
    runs.clear()
    same = provider.update(created.id, created.outs, {**news, "password": "rotated"})
    assert runs == [] and same.outs["bytesAfter"] == 1 and same.outs["password"] == "rotated"
    again = provider.update(created.id, created.outs, {**news, "trigger": "t2"})
    assert runs == ["t2"] and again.outs["bytesAfter"] == 1


class Flaky:
    """A client whose ping fails with the given errors, then succeeds."""

    def __init__(self, *errors):
        self.errors = list(errors)
        self.pings = 0

    def ping(self):
        self.pings += 1
        if self.errors:
            raise self.errors.pop(0)


def test_waiting_for_the_registry_retries_only_while_it_starts(monkeypatch):
    """Unreachable and 502 (nginx up, registry not yet) are retried; auth errors are not."""
    monkeypatch.setattr(maintenance_providers.time, "sleep", lambda _: None)
    starting = Flaky(RegistryUnreachableError(URL, "refused"), RegistryError(URL, "HTTP 502", status=502))
    maintenance_providers.wait_until_serving(starting, timeout=5)
    assert starting.pings == 3
    refused = Flaky(RegistryAuthError(URL, "401", status=401))
    with pytest.raises(RegistryAuthError):
        maintenance_providers.wait_until_serving(refused, timeout=5)
    assert refused.pings == 1
    down = Flaky(*[RegistryUnreachableError(URL, "refused")] * 1000)
    with pytest.raises(RegistryUnreachableError):
        maintenance_providers.wait_until_serving(down, timeout=0)


# --- pickling ---------------------------------------------------------------------------------


def test_pickled_providers_hold_no_secret_even_after_use(fake):
    """Pulumi stores dill.dumps(provider) in state: it must carry no password, before or after work."""
    fake(FakeRegistry({"app": {"v1": d("1")}}))
    provider = ImageDeletionProvider()
    wired(provider).create({**CONN, "repository": "app", "tags": ["v1"]})
    for candidate in (provider, RetentionProvider(), GarbageCollectionProvider()):
        data = dill.dumps(candidate, protocol=pickle.DEFAULT_PROTOCOL, recurse=True)
        assert PASSWORD.encode() not in data
        assert b"components.maintenance_providers" in data and len(data) < 200


# --- the component under engine-like mocks ---------------------------------------------------

SETTINGS = MaintenanceSettings(
    deletions=(DeletionRule(repository="app", tags=("v1",)), DeletionRule(repository="team/api", digests=(d("1"),))),
    retention=(RetentionRule(repositories="team/*", keep_last=3), RetentionRule(repositories="*", keep_patterns=("v.*",))),
    retention_dry_run=True,
    gc=GcSettings(mode="readonly", delete_untagged=True),
)


def build(settings=SETTINGS, registry_version=2):
    registry = pulumi.CustomResource("test:index:RegistryContainer", "registry", {"name": "reg-registry"})
    component = Maintenance(
        "maint",
        MaintenanceArgs(settings=settings, registry_url=URL, ca_pem=CONN["caPem"], username="admin",
                        password=PASSWORD, docker_host="unix:///var/run/docker.sock",
                        container_name=registry.name, registry_version=registry_version),
        opts=pulumi.ResourceOptions(depends_on=[registry]),
    )
    return registry, component


def test_component_graph_order_and_secrecy(pulumi_mocks):
    """Children named maint-..., parented to the component, after the registry; retention after
    the deletions; GC after both; the password secret everywhere and absent from the state text."""

    @pulumi.runtime.test
    def run():
        _, component = build()
        return component.pending_deletions.apply(lambda _: None)

    run()
    m = pulumi_mocks
    comp = m.one("registry:maintenance:Maintenance")
    registry = m.one("test:index:RegistryContainer")
    deletions = m.by_type("pulumi-python:dynamic/registry:ImageDeletion")
    retentions = m.by_type("pulumi-python:dynamic/registry:RetentionPolicy")
    gc = m.one("pulumi-python:dynamic/registry:GarbageCollection")
    assert len(deletions) == 2 and len(retentions) == 2
    for child in [*deletions, *retentions, gc]:
        assert child.name.startswith("maint-") and child.parent == comp.urn
        assert registry.urn in child.dependencies
        assert is_secret(child.inputs["password"]) and "password" in child.additional_secret_outputs
        assert is_secret(child.outputs["password"])
        assert is_secret(child.inputs["__provider"])
    for retention_resource in retentions:
        assert {x.urn for x in deletions} <= set(retention_resource.dependencies)
    assert {x.urn for x in [*deletions, *retentions]} <= set(gc.dependencies)
    assert registry.urn in gc.property_dependencies["containerName"]
    assert {r.plain_inputs["repositories"]: r.plain_inputs["excludeRepositories"] for r in retentions} == {
        "team/*": [], "*": ["team/*"]}
    assert all(r.plain_inputs["dryRun"] is True for r in retentions)
    assert gc.plain_inputs["mode"] == "readonly" and gc.plain_inputs["deleteUntagged"] is True
    assert PASSWORD not in m.state_text()
    for resource in m.registered:
        provider = resource.plain_inputs.get("__provider")
        if provider:
            assert PASSWORD.encode() not in base64.b64decode(provider)


@pytest.mark.parametrize("version", [2, 3])
def test_deletion_inputs_name_delete_by_tag_only_when_set(pulumi_mocks, version):
    """On 3 with deleteUntagged every deletion resource gets deleteByTag: true; on 2.8 the
    inputs are exactly what they were before the setting existed (no key), so no stack diffs."""

    @pulumi.runtime.test
    def run():
        _, component = build(registry_version=version)
        return component.pending_deletions.apply(lambda _: None)

    run()
    deletions = pulumi_mocks.by_type("pulumi-python:dynamic/registry:ImageDeletion")
    assert len(deletions) == 2
    for resource in deletions:
        assert resource.plain_inputs.get("deleteByTag", "absent") == (True if version == 3 else "absent")


def test_component_names_follow_rule_content_not_position(pulumi_mocks):
    """Reordering rules keeps every resource name, so nothing is replaced."""

    @pulumi.runtime.test
    def run():
        build()
        reordered = MaintenanceSettings(deletions=tuple(reversed(SETTINGS.deletions)), gc=GcSettings(enabled=False))
        Maintenance("other", MaintenanceArgs(settings=reordered, registry_url=URL, ca_pem="", username="admin",
                                             password=PASSWORD, docker_host="unix:///x", container_name="reg"))

    run()
    names = [r.name for r in pulumi_mocks.by_type("pulumi-python:dynamic/registry:ImageDeletion")]
    first = sorted(n.removeprefix("maint-") for n in names if n.startswith("maint-"))
    second = sorted(n.removeprefix("other-") for n in names if n.startswith("other-"))
    assert len(first) == 2 and first == second
    assert len(pulumi_mocks.by_type("pulumi-python:dynamic/registry:GarbageCollection")) == 1


def test_names_hash_the_rules_fields_canonically_and_alias_the_names_repr_gave(pulumi_mocks):
    """A rule's resource name is a hash of its fields as sorted JSON without fields at their
    default: pinned here, so a change that would rename (and so replace, delete and collect
    again) is seen. A rule type with one more defaulted field hashes the same; a different value
    does not. Each child carries an alias to the name ``repr`` hashing gave it."""
    rule = DeletionRule(repository="app", tags=("v1",))
    assert rule_hash(rule) == "68410adb"
    assert rule_hash(RetentionRule(repositories="team/*", keep_last=3)) == "4ffa208e"

    @dataclasses.dataclass(frozen=True)
    class DeletionRuleWithMore:
        repository: str
        tags: tuple = ()
        digests: tuple = ()
        allow_shared_digest: bool = False
        added_later: bool = False

    assert rule_hash(DeletionRuleWithMore(repository="app", tags=("v1",))) == rule_hash(rule)
    assert rule_hash(DeletionRuleWithMore(repository="app", tags=("v1",), added_later=True)) != rule_hash(rule)
    assert rule_hash(DeletionRule(repository="app", tags=("v2",))) != rule_hash(rule)

    @pulumi.runtime.test
    def run():
        build()

    run()
    deletion = next(r for r in pulumi_mocks.by_type("pulumi-python:dynamic/registry:ImageDeletion")
                    if r.plain_inputs["repository"] == "app")
    assert deletion.name == f"maint-delete-app-{rule_hash(rule)}"
    assert {"spec": {"name": f"maint-delete-app-{legacy_rule_hash(rule)}"}} in [
        {"spec": {"name": a.get("spec", {}).get("name")}} for a in deletion.aliases]


def test_component_registers_its_typed_outputs(pulumi_mocks, monkeypatch):
    """The component's attributes are the outputs it registers; without GC its figures are None."""
    seen = {}
    registered = {}
    original = Maintenance.register_outputs

    def capture(self, outputs):
        registered.update(outputs)
        seen["component"] = self
        return original(self, outputs)

    monkeypatch.setattr(Maintenance, "register_outputs", capture)

    @pulumi.runtime.test
    def run():
        settings = MaintenanceSettings(deletions=(DeletionRule(repository="app", tags=("v1",)),),
                                       gc=GcSettings(enabled=False))
        _, component = build(settings)
        return pulumi.Output.all(component.gc_bytes_after, component.deleted_tags, component.pending_deletions).apply(
            lambda values: seen.update(values=values))

    run()
    assert seen["values"] == [None, [], []]
    assert pulumi_mocks.by_type("pulumi-python:dynamic/registry:GarbageCollection") == []
    assert set(registered) == {"pending_deletions", "deleted_tags", "gc_bytes_before", "gc_bytes_after",
                               "gc_blobs_removed", "gc_duration_seconds", "gc_writes_refused_seconds"}
    assert all(registered[name] is getattr(seen["component"], name) for name in registered)


def test_component_gc_figures_are_whole_numbers_though_the_engine_returns_floats(pulumi_mocks, monkeypatch):
    """The engine hands a resource's numeric outputs back as floats (protobuf Struct): the
    component's byte and blob counts are ints again (the SDK converts what a resource declares
    as ``Output[int]``); durations stay floats."""
    from tests.support.engine import EngineMocks

    original = EngineMocks.new_resource

    def with_gc_figures(self, args):
        id_, outputs = original(self, args)
        if args.typ.endswith("GarbageCollection"):
            outputs = {**outputs, "bytesBefore": 4096.0, "bytesAfter": 1024.0, "blobsRemoved": 3.0,
                       "durationSeconds": 1.5}
        return id_, outputs

    monkeypatch.setattr(EngineMocks, "new_resource", with_gc_figures)
    seen = {}

    @pulumi.runtime.test
    def run():
        _, component = build()
        return pulumi.Output.all(component.gc_bytes_before, component.gc_bytes_after, component.gc_blobs_removed,
                                 component.gc_duration_seconds).apply(lambda values: seen.update(values=values))

    run()
    before, after, removed, duration = seen["values"]
    assert (before, after, removed) == (4096, 1024, 3) and all(type(v) is int for v in (before, after, removed))
    assert duration == 1.5


@pytest.mark.parametrize("module", ["components.maintenance_providers", "components.maintenance"])
def test_the_provider_import_paths_load_without_settings_or_pydantic(module):
    """What the provider host imports to unpickle a provider (the state-contract paths, new and
    legacy) pulls in neither the settings module nor pydantic."""
    code = (f"import sys, {module}; "
            "bad = sorted(m for m in sys.modules if m == 'components.settings' or m.split('.')[0] == 'pydantic'); "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
