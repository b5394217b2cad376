"""Image deletion, retention and garbage collection as Pulumi dynamic resources.

Three resources, each a thin dynamic provider over :mod:`components.registry_api` and
:mod:`components.docker_exec`, and one component, :class:`Maintenance`, that builds them from
the stack's ``maintenance`` settings:

* :class:`ImageDeletion`, one per deletion rule: delete tags or digests of one repository.
* :class:`RetentionPolicy`, one per retention rule: keep what the rule says, delete the rest.
* :class:`GarbageCollection`: ``registry garbage-collect`` after the deletions, without
  stopping pulls (see :func:`components.docker_exec.garbage_collect`).

What the registry can and cannot do shapes the rules. Registry 2.8 cannot untag: a ``DELETE``
by digest removes every tag on that digest, so deleting a digest that tags outside the rule
share is refused (the error names them) unless the rule sets ``allow_shared_digest``. Deleting
a tag of a multi-architecture index deletes the index only; its platform manifests stay for
other tags and indexes, and go only in a garbage collection with ``delete_untagged``, which
spares every manifest a tagged index still lists (registry 2.8's own ``--delete-untagged``
does not: it deletes the platform manifests of tagged indexes, breaking them).

Previews show what will go. Each deletion and retention resource computes, in ``check``
(which runs during ``pulumi preview``), the ``pendingDeletions`` it would make right now by
asking the registry, and keeps it as an input, so the preview's diff lists those tags. After a
real run, ``pendingDeletions`` is what is still to delete (empty, or the dry-run's list), so an
unchanged stack over an unchanged registry previews with no changes, while a re-pushed tag
that a rule deletes, or a tag that has aged out of a retention rule, shows up as an update.
Limits: the list is what the registry held at preview time (pushes between preview and
``up`` change it; ``up`` computes afresh and reports what it did in ``deletedTags``), and when
the registry cannot be asked at preview time (not running yet, credentials changing in the
same update) the preview cannot list the tags.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Optional

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult
from pulumi.runtime import rpc

from components import docker_exec, registry_api
from components.registry_api import RegistryClient, RegistryError, RegistryNotFoundError, SharedDigestError
from components.settings import MaintenanceSettings

UNKNOWN = rpc.UNKNOWN
# How long create/update wait for a registry that is not serving yet (just started by the same
# `pulumi up`: nginx answers 502 until the registry listens).
READY_TIMEOUT_SECONDS = 60.0
READONLY_PROBE_REPOSITORY = "private-registry-maintenance/readonly-probe"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class MaintenanceError(Exception):
    """A maintenance resource could not do its work; the message says which and why."""


# --- props: small typed classes <-> the dicts Pulumi passes ------------------------------------


def _normal(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    return value


def _key(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class Props:
    """Base for the providers' inputs: a frozen dataclass whose fields map to camelCase keys.

    Tuples travel as lists; ``None`` fields are left out (Pulumi drops ``None`` inputs).
    """

    @classmethod
    def keys(cls) -> list[str]:
        return [_key(f.name) for f in fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, props: Mapping[str, Any]):
        values = {}
        for f in fields(cls):  # type: ignore[arg-type]
            key = _key(f.name)
            if key in props and props[key] is not None:
                value = props[key]
                values[f.name] = tuple(value) if isinstance(value, (list, tuple)) else value
        return cls(**values)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """``{key: default}`` for the optional fields, as they travel (tuples as lists)."""
        return {
            _key(f.name): _normal(f.default)
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
class Connection(Props):
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
class ImageDeletionProps(Props):
    registry_url: str
    ca_pem: str
    username: str
    password: str
    repository: str
    tags: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    allow_shared_digest: bool = False

    @property
    def connection(self) -> Connection:
        return Connection(self.registry_url, self.ca_pem, self.username, self.password)


@dataclass(frozen=True)
class RetentionProps(Props):
    registry_url: str
    ca_pem: str
    username: str
    password: str
    repositories: str
    exclude_repositories: tuple[str, ...] = ()
    keep_last: Optional[int] = None
    keep_patterns: tuple[str, ...] = ()
    keep_younger_than_hours: Optional[float] = None
    dry_run: bool = False

    @property
    def connection(self) -> Connection:
        return Connection(self.registry_url, self.ca_pem, self.username, self.password)


@dataclass(frozen=True)
class GarbageCollectionProps(Props):
    registry_url: str
    ca_pem: str
    username: str
    password: str
    docker_host: str
    container_name: str
    mode: str = "readonly"
    delete_untagged: bool = False
    trigger: str = ""

    @property
    def connection(self) -> Connection:
        return Connection(self.registry_url, self.ca_pem, self.username, self.password)


def stable_id(kind: str, *parts: Any) -> str:
    """A deterministic resource id: the same rule on the same registry always gets the same id."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return f"{kind}-{digest[:24]}"


def _has_unknown(value: Any) -> bool:
    if value == UNKNOWN:
        return True
    if isinstance(value, Mapping):
        return any(_has_unknown(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_unknown(v) for v in value)
    return False


# --- the base provider ------------------------------------------------------------------------


class MaintenanceProvider(ResourceProvider, ABC):
    """Base class for this module's dynamic providers.

    The contract every provider here keeps:

    * **No state on the provider.** Pulumi pickles the provider object (with dill) into the
      stack's state for every resource. These providers have no attributes and reference no
      module-level secrets, so the pickle holds only the class's import path; credentials
      travel as secret inputs in ``props`` and come back as secret outputs.
    * **Typed inputs.** ``props_type`` (a :class:`Props` dataclass) validates and converts the
      dict Pulumi passes; ``check`` reports malformed input as ``CheckFailure``s.
    * **Exact diff.** ``diff`` compares exactly the ``props_type`` keys plus ``pendingDeletions``
      (when ``check`` could compute it); equal values mean no changes, so an unchanged stack
      previews as unchanged. A change to a key in ``replace_keys`` (the ones the deterministic
      id is derived from) replaces the resource; anything else updates it in place.
      An unknown value (preview) counts as a change.
    * **Errors** are :class:`MaintenanceError` saying which resource failed, raised ``from``
      the registry or Docker error (whose message names registry, repository and tag).
    * ``delete`` does nothing by default: a deleted image cannot be brought back, so removing
      a rule from the stack only stops enforcing it.
    """

    props_type: ClassVar[type[Props]]
    replace_keys: ClassVar[frozenset[str]] = frozenset()
    compared_outputs: ClassVar[tuple[str, ...]] = ("pendingDeletions",)

    # --- hooks for subclasses
    def validate(self, props: Any) -> list[str]:
        """Problems with the (fully known) input, as messages; none means valid."""
        return []

    def preview(self, props: Any) -> dict[str, Any]:
        """Computed inputs for the preview (asks the registry); {} when it cannot."""
        return {}

    @abstractmethod
    def create(self, props: dict[str, Any]) -> CreateResult: ...

    # --- the Pulumi protocol
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        checked = {k: v for k, v in news.items() if k not in self.compared_outputs}
        if _has_unknown({k: checked.get(k) for k in self.props_type.keys()}):
            return CheckResult(checked, [])
        try:
            typed = self.props_type.from_dict(checked)
        except TypeError as exc:
            return CheckResult(checked, [CheckFailure("", f"missing or unexpected input: {exc}")])
        failures = [CheckFailure("", message) for message in self.validate(typed)]
        # Canonical form (defaults filled in), so equal rules compare equal in diff.
        checked.update(typed.to_dict())
        if not failures:
            try:
                checked.update(self.preview(typed))
            except (RegistryNotFoundError, SharedDigestError, registry_api.RegistryInputError) as exc:
                # Wrong input, or a refusal create would make too: say so at preview time.
                failures.append(CheckFailure("", str(exc)))
            except RegistryError:
                pass  # not reachable yet (first deployment) or credentials changing: no list
        return CheckResult(checked, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = [*self.props_type.keys(), *(k for k in self.compared_outputs if k in news)]
        changed = self.changed_keys(olds, news, keys)
        replaces = [k for k in changed if k in self.replace_keys]
        return DiffResult(
            changes=bool(changed),
            replaces=replaces,
            stables=[k for k in keys if k not in changed],
            delete_before_replace=False,
        )

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None

    @classmethod
    def changed_keys(cls, olds: Mapping[str, Any], news: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
        """Keys whose value differs (a missing optional input equals its default; unknown differs)."""
        defaults = cls.props_type.defaults()

        def value(props: Mapping[str, Any], key: str) -> Any:
            return _normal(props[key] if props.get(key) is not None else defaults.get(key))

        return [k for k in keys if news.get(k) == UNKNOWN or value(olds, k) != value(news, k)]


def wait_until_serving(client: RegistryClient, timeout: float | None = None) -> None:
    """Ping until the registry answers; only "not up yet" (unreachable, 502-504) is retried."""
    deadline = time.monotonic() + (READY_TIMEOUT_SECONDS if timeout is None else timeout)
    while True:
        try:
            client.ping()
            return
        except RegistryError as exc:
            starting = isinstance(exc, registry_api.RegistryUnreachableError) or exc.status in (502, 503, 504)
            if not starting or time.monotonic() >= deadline:
                raise
        time.sleep(0.5)


def _fail(what: str, exc: BaseException) -> MaintenanceError:
    return MaintenanceError(f"{what}: {exc}")


def _deletion_record(previous: Mapping[str, Any], digests: list[str], tags: list[str]) -> dict[str, Any]:
    """Outputs about the last run that deleted something; a run that deleted nothing keeps them.

    ``deletionRuns`` counts such runs, so garbage collection (triggered by these outputs) runs
    again even when a re-pushed image is deleted under the same digest as before.
    """
    if not digests:
        return {
            "deletedDigests": list(previous.get("deletedDigests") or []),
            "deletedTags": list(previous.get("deletedTags") or []),
            "deletionRuns": int(previous.get("deletionRuns") or 0),
        }
    return {
        "deletedDigests": sorted(digests),
        "deletedTags": sorted(tags),
        "deletionRuns": int(previous.get("deletionRuns") or 0) + 1,
    }


# --- registry snapshots and plans (plain Python, unit-tested) ---------------------------------


@dataclass(frozen=True)
class RepoSnapshot:
    """One repository's tags as the registry reports them."""

    repository: str
    tags: Mapping[str, str]  # tag -> digest
    children: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # index digest -> platform digests
    created: Mapping[str, Optional[datetime]] = field(default_factory=dict)  # digest -> build time

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


@dataclass(frozen=True)
class DeletionPlan:
    """What one deletion rule removes: digests, and every tag that goes with them."""

    repository: str
    digests: tuple[str, ...]
    tags_removed: tuple[str, ...]
    untagged: tuple[str, ...]  # digests to delete that no tag points to
    already_gone: tuple[str, ...]

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
                f"deleting this digest would also delete tag(s) {', '.join(others)} (registry 2.8 cannot untag); "
                "add them to the rule's tags, or set allowSharedDigest: true",
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


@dataclass(frozen=True)
class RetentionPlan:
    """What a retention rule deletes, per repository, and what it would but cannot."""

    delete: Mapping[str, Mapping[str, tuple[str, ...]]]  # repository -> digest -> tags
    blocked: tuple[str, ...]  # "repo:tag" the rule does not keep but that share a digest (or index) with a kept tag
    kept: tuple[str, ...]

    @property
    def pending(self) -> list[str]:
        return sorted(f"{repo}:{tag}" for repo, digests in self.delete.items() for tags in digests.values() for tag in tags)

    def digests(self) -> list[str]:
        return sorted(f"{repo}@{digest}" for repo, digests in self.delete.items() for digest in digests)


def repository_matches(rule: RetentionProps, repository: str) -> bool:
    """The rule governs a repository its pattern matches and no earlier rule's pattern does."""
    return fnmatch.fnmatchcase(repository, rule.repositories) and not any(
        fnmatch.fnmatchcase(repository, pattern) for pattern in rule.exclude_repositories
    )


def plan_retention(rule: RetentionProps, snaps: Sequence[RepoSnapshot], now: datetime) -> RetentionPlan:
    """Keep what the rule keeps; every other tag's digest is deleted if no kept tag needs it.

    Kept: tags matching a ``keep_patterns`` regex (full match); the ``keep_last`` newest tags;
    tags whose image is younger than ``keep_younger_than_hours``. "Newest" and "younger" use
    the image's build time (see :meth:`RegistryClient.created` for that clock and why); an
    image without one counts as the oldest, and ties are broken by tag name (later in sort
    order counts as newer), so the choice is deterministic.
    """
    patterns = [re.compile(p) for p in rule.keep_patterns]
    horizon = None
    if rule.keep_younger_than_hours is not None:
        horizon = now - timedelta(hours=rule.keep_younger_than_hours)
    delete: dict[str, dict[str, tuple[str, ...]]] = {}
    blocked: list[str] = []
    kept_all: list[str] = []
    for snap in snaps:
        def built(tag: str) -> datetime:
            return snap.created.get(snap.tags[tag]) or _EPOCH

        keep = {tag for tag in snap.tags if any(p.fullmatch(tag) for p in patterns)}
        if horizon is not None:
            keep |= {tag for tag in snap.tags if (snap.created.get(snap.tags[tag]) or _EPOCH) > horizon}
        if rule.keep_last:
            newest = sorted(snap.tags, key=lambda tag: (built(tag), tag), reverse=True)
            keep |= set(newest[: rule.keep_last])
        kept_digests = {snap.tags[tag] for tag in keep}
        needed = kept_digests | {kid for d in kept_digests for kid in snap.children.get(d, ())}
        chosen: dict[str, tuple[str, ...]] = {}
        for digest in sorted(set(snap.tags.values())):
            tags = snap.tags_of(digest)
            if all(tag in keep for tag in tags):
                continue
            if digest in needed:
                blocked.extend(f"{snap.repository}:{tag}" for tag in tags if tag not in keep)
            else:
                chosen[digest] = tuple(tags)
        if chosen:
            delete[snap.repository] = chosen
        kept_all.extend(f"{snap.repository}:{tag}" for tag in sorted(keep))
    return RetentionPlan(delete, tuple(sorted(blocked)), tuple(sorted(kept_all)))


# --- ImageDeletion ----------------------------------------------------------------------------


class ImageDeletionProvider(MaintenanceProvider):
    """Deletes one rule's tags or digests from one repository. See :func:`plan_deletion`."""

    props_type = ImageDeletionProps
    replace_keys = frozenset({"registryUrl", "repository", "tags", "digests", "allowSharedDigest"})

    def validate(self, props: ImageDeletionProps) -> list[str]:
        problems = []
        url = props.registry_url
        for check, value in [
            (lambda v: registry_api.validate_repository(url, v), props.repository),
            *[(lambda v: registry_api.validate_tag(url, props.repository, v), tag) for tag in props.tags],
            *[(lambda v: registry_api.validate_digest(url, props.repository, v), d) for d in props.digests],
        ]:
            try:
                check(value)
            except registry_api.RegistryInputError as exc:
                problems.append(str(exc))
        if not props.tags and not props.digests:
            problems.append(f"deletion rule for '{props.repository}' names no tags and no digests")
        return problems

    @staticmethod
    def _plan(client: RegistryClient, props: ImageDeletionProps) -> DeletionPlan:
        snap = snapshot(client, props.repository)
        loose = [d for d in props.digests if d not in snap.tags.values()]

        def present(digest: str) -> bool:
            try:
                client.resolve(props.repository, digest)
                return True
            except RegistryNotFoundError:
                return False

        untagged = [d for d, ok in zip(loose, client.map(present, loose)) if ok]
        return plan_deletion(props, snap, untagged)

    def preview(self, props: ImageDeletionProps) -> dict[str, Any]:
        with props.connection.client() as client:
            return {"pendingDeletions": self._plan(client, props).pending}

    def _apply(self, props: ImageDeletionProps, previous: Mapping[str, Any]) -> dict[str, Any]:
        what = f"image deletion in '{props.repository}'"
        try:
            with props.connection.client() as client:
                wait_until_serving(client)
                plan = self._plan(client, props)
                removed = client.map(lambda digest: client.delete(props.repository, digest), plan.digests)
                after = self._plan(client, props).pending
        except (RegistryError, MaintenanceError) as exc:
            raise _fail(what, exc) from exc
        deleted = [d for d, ok in zip(plan.digests, removed) if ok]
        return {
            **props.to_dict(),
            "pendingDeletions": after,
            **_deletion_record(previous, deleted, list(plan.tags_removed) if deleted else []),
            "alreadyGone": list(plan.already_gone),
        }

    @staticmethod
    def _id(props: ImageDeletionProps) -> str:
        return stable_id(
            "deletion", props.registry_url, props.repository, sorted(props.tags), sorted(props.digests),
            props.allow_shared_digest,
        )

    def create(self, props: dict[str, Any]) -> CreateResult:
        typed = ImageDeletionProps.from_dict(props)
        return CreateResult(self._id(typed), self._apply(typed, {}))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._apply(ImageDeletionProps.from_dict(news), olds))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Refresh: what of the rule is still (or again) in the registry goes to ``pendingDeletions``."""
        typed = ImageDeletionProps.from_dict(props)
        try:
            with typed.connection.client() as client:
                pending = self._plan(client, typed).pending
        except RegistryError as exc:
            raise _fail(f"refreshing image deletion in '{typed.repository}'", exc) from exc
        return ReadResult(id_, {**props, "pendingDeletions": pending})


# --- RetentionPolicy --------------------------------------------------------------------------


class RetentionProvider(MaintenanceProvider):
    """Applies one retention rule to the repositories it governs. See :func:`plan_retention`."""

    props_type = RetentionProps
    replace_keys = frozenset({"registryUrl", "repositories"})

    def validate(self, props: RetentionProps) -> list[str]:
        problems = []
        for pattern in props.keep_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append(f"keepPatterns entry '{pattern}' is not a valid regular expression: {exc}")
        if props.keep_last is not None and props.keep_last < 0:
            problems.append("keepLast must be 0 or more")
        if props.keep_last is None and not props.keep_patterns and props.keep_younger_than_hours is None:
            problems.append(f"retention rule for '{props.repositories}' keeps nothing (set keepLast, keepPatterns or keepYoungerThan)")
        return problems

    @staticmethod
    def _plan(client: RegistryClient, props: RetentionProps) -> RetentionPlan:
        repositories = [repo for repo in client.catalog() if repository_matches(props, repo)]
        snaps = []
        for repo in repositories:
            try:
                snaps.append(snapshot(client, repo, with_created=True))
            except RegistryNotFoundError as exc:
                if getattr(exc, "code", "") != "NAME_UNKNOWN":
                    raise
        return plan_retention(props, snaps, datetime.now(timezone.utc))

    def preview(self, props: RetentionProps) -> dict[str, Any]:
        with props.connection.client() as client:
            return {"pendingDeletions": self._plan(client, props).pending}

    def _apply(self, props: RetentionProps, previous: Mapping[str, Any]) -> dict[str, Any]:
        what = f"retention for '{props.repositories}'"
        try:
            with props.connection.client() as client:
                wait_until_serving(client)
                plan = self._plan(client, props)
                deleted_digests: list[str] = []
                deleted_tags: list[str] = []
                if not props.dry_run:
                    jobs = [(repo, digest) for repo, digests in plan.delete.items() for digest in digests]
                    results = client.map(lambda job: client.delete(*job), jobs)
                    deleted_digests = [f"{repo}@{digest}" for (repo, digest), ok in zip(jobs, results) if ok]
                    deleted_tags = plan.pending
                    plan = self._plan(client, props)
        except (RegistryError, MaintenanceError) as exc:
            raise _fail(what, exc) from exc
        return {
            **props.to_dict(),
            "pendingDeletions": plan.pending,
            "blockedTags": list(plan.blocked),
            "keptTags": list(plan.kept),
            **_deletion_record(previous, deleted_digests, deleted_tags),
        }

    @staticmethod
    def _id(props: RetentionProps) -> str:
        return stable_id("retention", props.registry_url, props.repositories)

    def create(self, props: dict[str, Any]) -> CreateResult:
        typed = RetentionProps.from_dict(props)
        return CreateResult(self._id(typed), self._apply(typed, {}))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._apply(RetentionProps.from_dict(news), olds))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Refresh: the tags the rule would delete now go to ``pendingDeletions``."""
        typed = RetentionProps.from_dict(props)
        try:
            with typed.connection.client() as client:
                plan = self._plan(client, typed)
        except RegistryError as exc:
            raise _fail(f"refreshing retention for '{typed.repositories}'", exc) from exc
        return ReadResult(
            id_, {**props, "pendingDeletions": plan.pending, "blockedTags": list(plan.blocked), "keptTags": list(plan.kept)}
        )


# --- GarbageCollection ------------------------------------------------------------------------


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


class GarbageCollectionProvider(MaintenanceProvider):
    """Runs garbage collection when the deletions it depends on change (``trigger``)."""

    props_type = GarbageCollectionProps
    replace_keys = frozenset({"dockerHost", "containerName"})
    compared_outputs = ()
    # Inputs whose change means "collect again"; the others only update stored values.
    _rerun_keys = ("trigger", "mode", "deleteUntagged")

    def validate(self, props: GarbageCollectionProps) -> list[str]:
        if props.mode not in docker_exec.GC_MODES:
            return [f"garbage collection mode must be one of {', '.join(docker_exec.GC_MODES)}, not '{props.mode}'"]
        return []

    @staticmethod
    def _collect(props: GarbageCollectionProps) -> dict[str, Any]:
        what = f"garbage collection ({props.mode}) of container '{props.container_name}'"
        try:
            with props.connection.client() as client, docker_exec.RegistryContainer(
                props.docker_host, props.container_name
            ) as target:
                wait_until_serving(client)
                untagged_deleted: list[str] = []

                def delete_untagged() -> None:
                    # Registry 2.8's own --delete-untagged would also take the platform manifests
                    # of tagged indexes; list its candidates, spare those, delete the rest by API.
                    listed = docker_exec.parse_untagged(target.run_gc(dry_run=True, delete_untagged=True))
                    snaps = {repo: snapshot(client, repo) for repo in listed}
                    doomed = untagged_to_delete(listed, snaps)
                    jobs = [(repo, digest) for repo, digests in doomed.items() for digest in digests]
                    if props.mode != "dry-run":
                        client.map(lambda job: client.delete(*job), jobs)
                    untagged_deleted.extend(f"{repo}@{digest}" for repo, digest in jobs)

                def check_readonly() -> None:
                    # Only the read-only stand-by serves now; it has the registry's environment.
                    if not client.writes_refused(READONLY_PROBE_REPOSITORY):
                        raise MaintenanceError(
                            "the registry still accepts pushes while only the read-only stand-by should "
                            "serve (is REGISTRY_STORAGE_MAINTENANCE_READONLY set in its environment?); "
                            "not collecting"
                        )

                report = docker_exec.garbage_collect(
                    target, mode=props.mode, probe=client.ping, check_readonly=check_readonly,
                    prepare=delete_untagged if props.delete_untagged else None,
                )
        except (RegistryError, docker_exec.DockerExecError, MaintenanceError, ValueError) as exc:
            raise _fail(what, exc) from exc
        return {
            "bytesBefore": report.bytes_before,
            "bytesAfter": report.bytes_after,
            "blobsRemoved": report.blobs_removed,
            "blobsEligible": report.blobs_eligible,
            "manifestsEligible": report.manifests_eligible,
            "untaggedDeleted": untagged_deleted,
            "durationSeconds": round(report.duration_seconds, 3),
            "writesRefusedSeconds": round(report.writes_refused_seconds, 3),
            "readsUnavailableSeconds": round(report.reads_unavailable_seconds, 3),
            "timeline": {k: round(v, 3) for k, v in report.timeline.items()},
        }

    @staticmethod
    def _id(props: GarbageCollectionProps) -> str:
        return stable_id("gc", props.docker_host, props.container_name)

    def create(self, props: dict[str, Any]) -> CreateResult:
        typed = GarbageCollectionProps.from_dict(props)
        return CreateResult(self._id(typed), {**typed.to_dict(), **self._collect(typed)})

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        typed = GarbageCollectionProps.from_dict(news)
        rerun = bool(self.changed_keys(olds, news, self._rerun_keys))
        results = self._collect(typed) if rerun else {k: v for k, v in olds.items() if k not in typed.keys()}
        return UpdateResult({**typed.to_dict(), **results})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Refresh: a collection is an event, not a state; its recorded figures stay as they were."""
        return ReadResult(id_, dict(props))


# --- the resources ----------------------------------------------------------------------------

_SECRET_OUTPUTS = ["password"]


def _secret_opts(opts: Optional[pulumi.ResourceOptions]) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=_SECRET_OUTPUTS))


def _connection_inputs(registry_url, ca_pem, username, password) -> dict[str, Any]:
    return {
        "registryUrl": registry_url,
        "caPem": ca_pem,
        "username": username,
        "password": pulumi.Output.secret(password),
    }


class ImageDeletion(pulumi.dynamic.Resource, module="registry", name="ImageDeletion"):
    """Deletes the tags/digests of one deletion rule (see :class:`ImageDeletionProvider`)."""

    pendingDeletions: pulumi.Output[list]
    deletedDigests: pulumi.Output[list]
    deletedTags: pulumi.Output[list]
    deletionRuns: pulumi.Output[int]
    alreadyGone: pulumi.Output[list]

    def __init__(self, name: str, *, registry_url, ca_pem, username, password, rule, opts=None):
        props = {
            **_connection_inputs(registry_url, ca_pem, username, password),
            "repository": rule.repository,
            "tags": list(rule.tags),
            "digests": list(rule.digests),
            "allowSharedDigest": bool(rule.allow_shared_digest),
            "pendingDeletions": None,
            "deletedDigests": None,
            "deletedTags": None,
            "deletionRuns": None,
            "alreadyGone": None,
        }
        super().__init__(ImageDeletionProvider(), name, props, _secret_opts(opts))


class RetentionPolicy(pulumi.dynamic.Resource, module="registry", name="RetentionPolicy"):
    """Applies one retention rule (see :class:`RetentionProvider`)."""

    pendingDeletions: pulumi.Output[list]
    deletedTags: pulumi.Output[list]
    deletedDigests: pulumi.Output[list]
    blockedTags: pulumi.Output[list]
    keptTags: pulumi.Output[list]
    deletionRuns: pulumi.Output[int]

    def __init__(self, name: str, *, registry_url, ca_pem, username, password, rule, exclude=(), dry_run=False, opts=None):
        props = {
            **_connection_inputs(registry_url, ca_pem, username, password),
            "repositories": rule.repositories,
            "excludeRepositories": list(exclude),
            "keepLast": rule.keep_last,
            "keepPatterns": list(rule.keep_patterns),
            "keepYoungerThanHours": rule.keep_younger_than_hours,
            "dryRun": bool(dry_run),
            "pendingDeletions": None,
            "deletedTags": None,
            "deletedDigests": None,
            "blockedTags": None,
            "keptTags": None,
            "deletionRuns": None,
        }
        super().__init__(RetentionProvider(), name, props, _secret_opts(opts))


class GarbageCollection(pulumi.dynamic.Resource, module="registry", name="GarbageCollection"):
    """Collects garbage after the deletions; runs again when ``trigger`` changes."""

    bytesBefore: pulumi.Output[int]
    bytesAfter: pulumi.Output[int]
    blobsRemoved: pulumi.Output[int]
    durationSeconds: pulumi.Output[float]
    writesRefusedSeconds: pulumi.Output[float]
    readsUnavailableSeconds: pulumi.Output[float]
    untaggedDeleted: pulumi.Output[list]

    def __init__(self, name: str, *, registry_url, ca_pem, username, password, docker_host, container_name,
                 gc, trigger, opts=None):
        props = {
            **_connection_inputs(registry_url, ca_pem, username, password),
            "dockerHost": docker_host,
            "containerName": container_name,
            "mode": gc.mode,
            "deleteUntagged": bool(gc.delete_untagged),
            "trigger": trigger,
            **{key: None for key in (
                "bytesBefore", "bytesAfter", "blobsRemoved", "blobsEligible", "manifestsEligible", "untaggedDeleted",
                "durationSeconds", "writesRefusedSeconds", "readsUnavailableSeconds", "timeline",
            )},
        }
        super().__init__(GarbageCollectionProvider(), name, props, _secret_opts(opts))


# --- the component ----------------------------------------------------------------------------


@dataclass
class MaintenanceArgs:
    settings: MaintenanceSettings
    registry_url: pulumi.Input[str]
    ca_pem: pulumi.Input[str]
    username: pulumi.Input[str]
    password: pulumi.Input[str]
    docker_host: str
    container_name: pulumi.Input[str]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "all"


def _rule_hash(rule: Any) -> str:
    return hashlib.sha256(repr(rule).encode()).hexdigest()[:8]


class Maintenance(pulumi.ComponentResource):
    """Deletions, retention and garbage collection for one registry.

    Resource names derive from each rule's content, not its position, so reordering rules
    changes nothing. Retention rules apply in order: a repository is governed by the first
    rule whose pattern matches it. Garbage collection depends on every deletion and
    retention resource and runs when what they deleted changes.
    """

    deletions: list[ImageDeletion]
    retention: list[RetentionPolicy]
    gc: Optional[GarbageCollection]
    pending_deletions: pulumi.Output[list]
    deleted_tags: pulumi.Output[list]
    gc_bytes_before: pulumi.Output[Optional[int]]
    gc_bytes_after: pulumi.Output[Optional[int]]
    gc_blobs_removed: pulumi.Output[Optional[int]]
    gc_duration_seconds: pulumi.Output[Optional[float]]
    gc_writes_refused_seconds: pulumi.Output[Optional[float]]

    def __init__(self, name: str, args: MaintenanceArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:maintenance:Maintenance", name, None, opts)
        settings = args.settings
        connection = dict(registry_url=args.registry_url, ca_pem=args.ca_pem, username=args.username,
                          password=args.password)
        # Children do not inherit the component's depends_on; they need the registry (and its
        # proxy) running before they can ask it anything.
        upstream = _as_list(opts.depends_on) if opts is not None else []
        child = pulumi.ResourceOptions(parent=self, depends_on=upstream)
        self.deletions = [
            ImageDeletion(f"{name}-delete-{_slug(rule.repository)}-{_rule_hash(rule)}", rule=rule, **connection,
                          opts=child)
            for rule in settings.deletions
        ]
        self.retention = [
            RetentionPolicy(
                f"{name}-retain-{_slug(rule.repositories)}-{_rule_hash(rule)}", rule=rule,
                exclude=[earlier.repositories for earlier in settings.retention[:i]],
                dry_run=settings.retention_dry_run, **connection,
                # Deletion rules first: retention then sees what they left.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*upstream, *self.deletions]),
            )
            for i, rule in enumerate(settings.retention)
        ]
        removers: list[Any] = [*self.deletions, *self.retention]
        self.gc = None
        if settings.gc.enabled:
            trigger = pulumi.Output.all(*[[r.id, r.deletedDigests, r.deletionRuns] for r in removers]).apply(
                lambda values: hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()
            )
            self.gc = GarbageCollection(
                f"{name}-gc", **connection, docker_host=args.docker_host, container_name=args.container_name,
                gc=settings.gc, trigger=trigger,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*upstream, *removers]),
            )
        self.pending_deletions = pulumi.Output.all(*[r.pendingDeletions for r in removers]).apply(
            lambda lists: sorted({entry for entries in lists for entry in (entries or [])})
        )
        self.deleted_tags = pulumi.Output.all(*[r.deletedTags for r in removers]).apply(
            lambda lists: sorted({entry for entries in lists for entry in (entries or [])})
        )
        none = pulumi.Output.from_input(None)
        self.gc_bytes_before = self.gc.bytesBefore if self.gc else none
        self.gc_bytes_after = self.gc.bytesAfter if self.gc else none
        self.gc_blobs_removed = self.gc.blobsRemoved if self.gc else none
        self.gc_duration_seconds = self.gc.durationSeconds if self.gc else none
        self.gc_writes_refused_seconds = self.gc.writesRefusedSeconds if self.gc else none
        self.register_outputs(
            {
                "pending_deletions": self.pending_deletions,
                "deleted_tags": self.deleted_tags,
                "gc_bytes_before": self.gc_bytes_before,
                "gc_bytes_after": self.gc_bytes_after,
                "gc_blobs_removed": self.gc_blobs_removed,
                "gc_duration_seconds": self.gc_duration_seconds,
                "gc_writes_refused_seconds": self.gc_writes_refused_seconds,
            }
        )
