"""What the maintenance rules delete: typed rules as they arrive from the engine, and plans.

Pure Python over registry snapshots; the only registry access is :func:`snapshot`, which reads
one repository through a :class:`~components.registry_api.RegistryClient`. The providers in
:mod:`components.maintenance_providers` turn these plans into deletions.

**Props from the wire.** Pulumi hands a dynamic provider its properties as deserialized
protobuf Structs: every number is a ``float`` (``keepLast: 2`` arrives as ``2.0``), and during
a preview an input that is not known yet is a :class:`pulumi.output.Unknown` object (the
provider host deserializes with ``keep_unknowns=True``). :func:`from_wire` and
:meth:`Props.from_dict` are the one place both are dealt with: unknowns become
:data:`UNKNOWN`, and numbers take the type of the dataclass field they fill (a whole float
for an ``int`` field becomes an ``int``; a fractional one is refused).

Registry 2.8 cannot untag: a ``DELETE`` by digest removes every tag on that digest, so
:func:`plan_deletion` refuses a digest that tags outside the rule share (unless
``allow_shared_digest``), and never deletes a platform manifest a remaining index lists.
Distribution 3 deletes by tag too: :func:`plan_untag` plans a rule of tags that way when the
program turns it on (``delete_by_tag``, see ``components.maintenance.deletes_by_tag``).
"""

from __future__ import annotations

import fnmatch
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from pulumi.output import Unknown
from pulumi.runtime import rpc

from components import grammar
from components.registry_api import RegistryClient, SharedDigestError

# The marker for "not known until the update runs", as the SDK serializes it.
UNKNOWN = rpc.UNKNOWN
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# --- props from the wire ------------------------------------------------------------------------


def from_wire(value: Any) -> Any:
    """``value`` with every unknown (an ``Unknown`` object or the wire marker) as :data:`UNKNOWN`."""
    if isinstance(value, Unknown) or (isinstance(value, str) and value == UNKNOWN):
        return UNKNOWN
    if isinstance(value, Mapping):
        return {k: from_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [from_wire(v) for v in value]
    return value


def has_unknown(value: Any) -> bool:
    """Whether ``value`` (after :func:`from_wire`, or raw from the provider host) holds an unknown."""
    if isinstance(value, Unknown) or (isinstance(value, str) and value == UNKNOWN):
        return True
    if isinstance(value, Mapping):
        return any(has_unknown(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_unknown(v) for v in value)
    return False


class PropsError(ValueError):
    """An input has the wrong type; the message names the input."""


def _key(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _coerce(key: str, kind: Any, value: Any) -> Any:
    """A wire value as the field's type: Struct numbers are floats, lists may be tuples."""
    if typing.get_origin(kind) is typing.Union:
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise PropsError(f"{key} must be a list of strings")
        return tuple(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise PropsError(f"{key} must be true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
            raise PropsError(f"{key} must be a whole number, not {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PropsError(f"{key} must be a number")
        return float(value)
    if kind is str and not isinstance(value, str):
        raise PropsError(f"{key} must be a string")
    return value


class Props:
    """Base for the providers' inputs: a frozen dataclass whose fields map to camelCase keys.

    Tuples travel as lists; ``None`` fields are left out (Pulumi drops ``None`` inputs).
    """

    @classmethod
    def keys(cls) -> list[str]:
        return [_key(f.name) for f in fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, props: Mapping[str, Any]):
        """The typed props from what the provider host passes; raises :class:`PropsError`."""
        hints = typing.get_type_hints(cls)
        values = {}
        for f in fields(cls):  # type: ignore[arg-type]
            key = _key(f.name)
            if props.get(key) is not None:
                values[f.name] = _coerce(key, hints[f.name], props[key])
            elif f.default is MISSING:
                raise PropsError(f"{key} is missing")
        return cls(**values)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """``{key: default}`` for the optional fields, as they travel (tuples as lists)."""
        return {
            _key(f.name): list(f.default) if isinstance(f.default, tuple) else f.default
            for f in fields(cls)  # type: ignore[arg-type]
            if f.default is not MISSING
        }

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is not None:
                out[_key(f.name)] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class ConnectionProps(Props):
    """How to reach the registry's API. ``password`` is a secret input and a secret output."""

    registry_url: str
    ca_pem: str
    username: str
    password: str

    def client(self) -> RegistryClient:
        # An empty CA means the system trust store (a registry with a public certificate).
        return RegistryClient(
            self.registry_url, username=self.username, password=self.password, ca_pem=self.ca_pem or None
        )


@dataclass(frozen=True)
class ImageDeletionProps(ConnectionProps):
    repository: str
    tags: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    allow_shared_digest: bool = False
    # Distribution 3, with a collection of untagged manifests to follow: tags go by tag.
    delete_by_tag: bool = False


@dataclass(frozen=True)
class RetentionProps(ConnectionProps):
    repositories: str
    exclude_repositories: tuple[str, ...] = ()
    keep_last: Optional[int] = None
    keep_patterns: tuple[str, ...] = ()
    keep_younger_than_hours: Optional[float] = None
    dry_run: bool = False
    # Delete attachments (signatures, attestations, SBOMs) whose subject image is gone.
    delete_orphans: bool = False


@dataclass(frozen=True)
class GarbageCollectionProps(ConnectionProps):
    docker_host: str
    container_name: str
    mode: str = "readonly"
    delete_untagged: bool = False
    trigger: str = ""


# --- registry snapshots -----------------------------------------------------------------------


@dataclass(frozen=True)
class RepoSnapshot:
    """One repository's tags as the registry reports them."""

    repository: str
    tags: Mapping[str, str]  # tag -> digest
    children: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # index digest -> platform digests
    created: Mapping[str, Optional[datetime]] = field(default_factory=dict)  # digest -> build time
    # Untagged manifests known to exist (looked up: the subjects of attachments no tag reaches).
    present: frozenset[str] = frozenset()

    def tags_of(self, digest: str) -> list[str]:
        return sorted(tag for tag, d in self.tags.items() if d == digest)

    def indexes_listing(self, digest: str) -> list[str]:
        """Tagged indexes that list ``digest`` as a platform manifest."""
        return sorted(index for index, kids in self.children.items() if digest in kids)


def snapshot(client: RegistryClient, repository: str, *, with_created: bool = False) -> RepoSnapshot:
    """Tags, digests, index contents (and build times) of one repository."""
    described = client.descriptors(repository, client.tags(repository))
    tags = {tag: d.digest for tag, d in described.items()}
    index_digests = sorted({d.digest for d in described.values() if d.is_index})
    manifests = client.map(lambda digest: client.manifest(repository, digest), index_digests)
    children = {m.digest: m.children for m in manifests}
    created: dict[str, Optional[datetime]] = {}
    if with_created:
        digests = sorted(set(tags.values()))
        created = dict(zip(digests, client.map(lambda digest: client.created(repository, digest), digests)))
    return RepoSnapshot(repository, tags, children, created)


# --- deletion rules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeletionPlan:
    """What one deletion rule removes: digests, and every tag that goes with them."""

    repository: str
    digests: tuple[str, ...]
    tags_removed: tuple[str, ...]
    untagged: tuple[str, ...]  # digests to delete that no tag points to
    already_gone: tuple[str, ...]
    untag: tuple[str, ...] = ()  # tags removed by tag (their manifests stay, for the collection)

    @property
    def pending(self) -> list[str]:
        """``repo:tag`` for each tag that will go, ``repo@digest`` for untagged digests."""
        return sorted(
            [f"{self.repository}:{tag}" for tag in self.tags_removed]
            + [f"{self.repository}@{digest}" for digest in self.untagged]
        )


def plan_deletion(rule: ImageDeletionProps, snap: RepoSnapshot, untagged_present: Sequence[str] = ()) -> DeletionPlan:
    """Which digests a deletion rule deletes, refusing what would hurt other tags.

    ``untagged_present`` are the rule's digests that exist without any tag (found by ``HEAD``).
    Raises :class:`SharedDigestError` when a digest to delete carries tags the rule does not
    name (unless ``allow_shared_digest``), or is a platform manifest of an index that stays.
    """
    requested = set(rule.tags)
    targets: dict[str, None] = {}
    gone: list[str] = []
    for tag in rule.tags:
        if tag in snap.tags:
            targets[snap.tags[tag]] = None
        else:
            gone.append(tag)
    for digest in rule.digests:
        if digest in snap.tags.values() or digest in untagged_present:
            targets[digest] = None
        else:
            gone.append(digest)
    for digest in targets:
        others = [tag for tag in snap.tags_of(digest) if tag not in requested]
        if others and not rule.allow_shared_digest:
            raise SharedDigestError(
                rule.registry_url,
                f"deleting this digest would also delete tag(s) {', '.join(others)} (a deletion by digest removes "
                "every tag on it); add them to the rule's tags, or set allowSharedDigest: true (on distribution 3, "
                "maintenance.gc.deleteUntagged: true deletes a rule's tags by tag, leaving other tags alone)",
                repository=rule.repository, reference=digest,
            )
        parents = [index for index in snap.indexes_listing(digest) if index not in targets]
        if parents:
            parent_tags = sorted({tag for index in parents for tag in snap.tags_of(index)})
            raise SharedDigestError(
                rule.registry_url,
                f"this is a platform manifest of the multi-architecture image(s) tagged {', '.join(parent_tags)}; "
                "deleting it would break them: delete those tags instead",
                repository=rule.repository, reference=digest,
            )
    digests = tuple(sorted(targets))
    removed = tuple(sorted({tag for digest in digests for tag in snap.tags_of(digest)}))
    untagged = tuple(digest for digest in digests if not snap.tags_of(digest))
    return DeletionPlan(rule.repository, digests, removed, untagged, tuple(gone))


def plan_untag(rule: ImageDeletionProps, present: Sequence[str]) -> DeletionPlan:
    """A rule that deletes by tag (names no digests): each named tag in ``present`` (the
    repository's tag list) goes by itself. Nothing is refused: another tag on the same
    manifest stays, and so does the manifest while any tag or index reaches it."""
    listed = set(present)
    untag = tuple(sorted({tag for tag in rule.tags if tag in listed}))
    gone = tuple(tag for tag in rule.tags if tag not in listed)
    return DeletionPlan(rule.repository, (), untag, (), gone, untag)


# --- retention rules --------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionPlan:
    """What a retention rule deletes, per repository, and what it would but cannot."""

    delete: Mapping[str, Mapping[str, tuple[str, ...]]]  # repository -> digest -> tags
    blocked: tuple[str, ...]  # "repo:tag" the rule does not keep but that share a digest (or index) with a kept tag
    kept: tuple[str, ...]
    orphans: tuple[str, ...] = ()  # "repo:tag" attachments whose subject is gone, left in place

    @property
    def pending(self) -> list[str]:
        return sorted(f"{repo}:{tag}" for repo, digests in self.delete.items() for tags in digests.values() for tag in tags)

    def jobs(self) -> list[tuple[str, str]]:
        """``(repository, digest)`` for every deletion, in a fixed order."""
        return sorted((repo, digest) for repo, digests in self.delete.items() for digest in digests)


def repository_matches(rule: RetentionProps, repository: str) -> bool:
    """The rule governs a repository its pattern matches and no earlier rule's pattern does."""
    return fnmatch.fnmatchcase(repository, rule.repositories) and not any(
        fnmatch.fnmatchcase(repository, pattern) for pattern in rule.exclude_repositories
    )


def plan_retention(rule: RetentionProps, snaps: Sequence[RepoSnapshot], now: datetime) -> RetentionPlan:
    """Keep what the rule keeps; every other tag's digest is deleted if no kept tag needs it.

    Kept: tags a ``keep_patterns`` entry matches in full (RE2, linear time:
    :func:`components.grammar.compile_tag_pattern`); the ``keep_last`` newest tags; tags whose
    image is younger than ``keep_younger_than_hours``. "Newest" and "younger" use the image's
    build time (see :meth:`RegistryClient.created` for that clock and why); an image without
    one counts as the oldest, and ties are broken by tag name (later in sort order counts as
    newer), so the choice is deterministic.

    Attachment tags (:func:`components.grammar.parse_attachment_tag`: signatures,
    attestations, SBOMs, referrers indexes) are not images: the rule neither counts nor keeps
    them. Each follows its subject (:func:`_attachments`).
    """
    patterns = [grammar.compile_tag_pattern(p) for p in rule.keep_patterns]
    horizon = None
    if rule.keep_younger_than_hours is not None:
        horizon = now - timedelta(hours=rule.keep_younger_than_hours)
    delete: dict[str, dict[str, tuple[str, ...]]] = {}
    blocked: list[str] = []
    kept_all: list[str] = []
    orphans: list[str] = []
    for snap in snaps:
        def built(tag: str) -> datetime:
            return snap.created.get(snap.tags[tag]) or _EPOCH

        attached = {tag: found.subject for tag in snap.tags if (found := grammar.parse_attachment_tag(tag))}
        images = sorted(tag for tag in snap.tags if tag not in attached)
        keep = {tag for tag in images if any(p.fullmatch(tag) for p in patterns)}
        if horizon is not None:
            keep |= {tag for tag in images if built(tag) > horizon}
        if rule.keep_last:
            newest = sorted(images, key=lambda tag: (built(tag), tag), reverse=True)
            keep |= set(newest[: rule.keep_last])
        kept_digests = {snap.tags[tag] for tag in keep}
        needed = kept_digests | {kid for d in kept_digests for kid in snap.children.get(d, ())}
        chosen: dict[str, tuple[str, ...]] = {}
        for digest in sorted({snap.tags[tag] for tag in images}):
            tags = [tag for tag in snap.tags_of(digest) if tag not in attached]
            if all(tag in keep for tag in tags):
                continue
            if digest in needed:
                blocked.extend(f"{snap.repository}:{tag}" for tag in tags if tag not in keep)
            else:
                chosen[digest] = tuple(tags)
        kept_attachments, orphaned = _attachments(snap, attached, chosen, delete_orphans=rule.delete_orphans)
        # A deletion by digest takes every tag on it: an attachment sharing its manifest with
        # one that stays (the same SBOM attached to two images) stays too.
        going = {tag for tags in chosen.values() for tag in tags}
        for digest in [d for d in chosen if any(tag not in going for tag in snap.tags_of(d))]:
            blocked.extend(f"{snap.repository}:{tag}" for tag in chosen.pop(digest))
        if chosen:
            delete[snap.repository] = chosen
        kept_all.extend(f"{snap.repository}:{tag}" for tag in sorted(keep | kept_attachments))
        orphans.extend(f"{snap.repository}:{tag}" for tag in orphaned)
    return RetentionPlan(delete, tuple(sorted(blocked)), tuple(sorted(kept_all)), tuple(sorted(orphans)))


def _attachments(snap: RepoSnapshot, attached: Mapping[str, str], chosen: dict[str, tuple[str, ...]], *,
                 delete_orphans: bool) -> tuple[set[str], list[str]]:
    """Give each attachment tag its subject's fate; returns (kept attachment tags, orphans left).

    An attachment whose subject stays reachable (a remaining tag, a remaining index's platform
    manifest, a kept attachment, or an untagged manifest in ``snap.present``) is kept; one
    whose subject is deleted is deleted with it (added to ``chosen``), and so is every artifact
    a deleted referrers index lists that nothing else reaches; one whose subject is gone is an
    orphan: deleted with ``delete_orphans``, else listed.
    """
    def reach(digests: set[str]) -> set[str]:
        return digests | {kid for d in digests for kid in snap.children.get(d, ())}

    staying = reach({snap.tags[tag] for tag in snap.tags if tag not in attached and snap.tags[tag] not in chosen})
    going = reach(set(chosen)) - staying
    kept: set[str] = set()
    undecided = dict(attached)
    while undecided:
        decided = []
        for tag, subject in sorted(undecided.items()):
            digest = snap.tags[tag]
            if subject in staying:
                staying |= reach({digest})
                kept.add(tag)
            elif subject in going:
                going |= reach({digest}) - staying
                chosen[digest] = (*chosen.get(digest, ()), tag)
            else:
                continue
            decided.append(tag)
        if not decided:
            break
        for tag in decided:
            del undecided[tag]
    orphans = []
    for tag, subject in sorted(undecided.items()):
        if subject in snap.present:
            kept.add(tag)
        elif delete_orphans:
            chosen[snap.tags[tag]] = (*chosen.get(snap.tags[tag], ()), tag)
            going |= reach({snap.tags[tag]}) - staying
        else:
            orphans.append(tag)
    for tag, digest in snap.tags.items():
        if tag in attached and digest in chosen:
            for artifact in snap.children.get(digest, ()):
                if artifact not in staying:
                    chosen.setdefault(artifact, ())
    return kept, orphans


# --- garbage collection -----------------------------------------------------------------------


def protected_manifests(snap: RepoSnapshot) -> set[str]:
    """Every manifest a tag reaches: tagged manifests and the platform manifests of tagged indexes."""
    return set(snap.tags.values()) | {kid for kids in snap.children.values() for kid in kids}


def untagged_to_delete(untagged: Mapping[str, Sequence[str]], snaps: Mapping[str, RepoSnapshot]) -> dict[str, list[str]]:
    """Untagged manifests that no tag reaches, per repository (multi-arch safe ``--delete-untagged``)."""
    result = {}
    for repo, digests in untagged.items():
        keep = protected_manifests(snaps[repo]) if repo in snaps else set()
        doomed = sorted(d for d in digests if d not in keep)
        if doomed:
            result[repo] = doomed
    return result
