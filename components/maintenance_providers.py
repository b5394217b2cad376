"""The dynamic providers behind ImageDeletion, RetentionPolicy and GarbageCollection.

**State contract.** Pulumi stores every dynamic resource's provider in the stack's state as
``dill.dumps(provider)`` (property ``__provider``). These classes are defined in an importable
module, so dill pickles them *by reference*: the state holds this module's import path and the
class name, nothing else (no code, no attributes, no credentials). Every ``refresh``,
``update`` and ``destroy`` of an existing stack imports them again by that path, in the
provider host the engine starts (``python -u -m pulumi.dynamic``, cwd = project root; or any
cwd when the project is installed as a package, see ``pyproject.toml``). Hence:

* ``components.maintenance_providers.ImageDeletionProvider``, ``.RetentionProvider`` and
  ``.GarbageCollectionProvider`` are part of the state contract: never rename or move them.
* Stacks deployed before this module existed hold ``components.maintenance.<Class>``;
  :mod:`components.maintenance` re-exports the three classes under those names for them.
* This module imports no settings, pydantic or Pulumi program code: only the SDK, the
  registry client, Docker exec and the grammar, so unpickling works in a bare provider host.
* A provider keeps no state on itself: credentials travel as secret inputs in ``props``.

``tests/integration/test_engine_protocol.py`` unpickles both paths in a fresh provider host
from another cwd.

**The protocol, as every provider here keeps it.**

* Props enter through :func:`components.maintenance_plan.from_wire` and
  :meth:`~components.maintenance_plan.Props.from_dict`: unknowns and Struct floats are dealt
  with there, nowhere else.
* ``check`` (runs in ``pulumi preview``) validates, fills defaults in, and, when every input is
  known, asks the registry what the rule would delete now (``pendingDeletions``), so the
  preview's diff lists those tags. With an unknown input (first deployment, or the address,
  user, password or CA changing) it asks nothing and fails nothing.
* ``diff`` compares exactly the props' keys plus ``compared_outputs``; equal values mean no
  changes. A change to a key in ``replace_keys`` replaces the resource; an unknown counts as
  a change.
* ``create``/``update``/``read`` open one connection (:meth:`MaintenanceProvider._connected`);
  errors become :class:`MaintenanceError` naming the resource, raised ``from`` the registry
  or Docker error (whose message names registry, repository and tag, never the password).
* ``delete`` does nothing: a deleted image cannot be brought back, so removing a rule from
  the stack only stops enforcing it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar, TypeVar

from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from components import docker_exec, grammar, registry_api
from components.maintenance_plan import (
    ConnectionProps,
    DeletionPlan,
    GarbageCollectionProps,
    ImageDeletionProps,
    Props,
    PropsError,
    RetentionPlan,
    RepoSnapshot,
    RetentionProps,
    from_wire,
    has_unknown,
    plan_deletion,
    plan_retention,
    plan_untag,
    protected_manifests,
    repository_matches,
    snapshot,
    untagged_to_delete,
)
from components.registry_api import RegistryClient, RegistryError, RegistryNotFoundError, SharedDigestError

# How long create/update wait for a registry that is not serving yet (just started by the same
# `pulumi up`: nginx answers 502 until the registry listens). The environment variable lets a
# test bound the wait in a provider host it starts.
READY_TIMEOUT_SECONDS = float(os.environ.get("PRIVATE_REGISTRY_READY_TIMEOUT_SECONDS", "60"))
READONLY_PROBE_REPOSITORY = "private-registry-maintenance/readonly-probe"

T = TypeVar("T")


class MaintenanceError(Exception):
    """A maintenance resource could not do its work; the message says which and why."""


def stable_id(kind: str, *parts: Any) -> str:
    """A deterministic resource id: the same rule on the same registry always gets the same id."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return f"{kind}-{digest[:24]}"


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


def deletion_record(previous: Mapping[str, Any], digests: list[str], tags: list[str], *,
                    deleted: bool | None = None) -> dict[str, Any]:
    """Outputs about the last run that deleted something; a run that deleted nothing keeps them.

    ``deletionRuns`` counts such runs, so garbage collection (triggered by these outputs) runs
    again even when a re-pushed image is deleted under the same digest as before. A run
    deleted something if it deleted a digest, unless ``deleted`` says (tags removed by tag).
    """
    runs = int(previous.get("deletionRuns") or 0)
    if not (bool(digests) if deleted is None else deleted):
        return {
            "deletedDigests": list(previous.get("deletedDigests") or []),
            "deletedTags": list(previous.get("deletedTags") or []),
            "deletionRuns": runs,
        }
    return {"deletedDigests": sorted(digests), "deletedTags": sorted(tags), "deletionRuns": runs + 1}


class MaintenanceProvider(ResourceProvider):
    """The Pulumi protocol for this module's providers; subclasses fill in the hooks."""

    props_type: ClassVar[type[Props]]
    replace_keys: ClassVar[frozenset[str]] = frozenset()
    compared_outputs: ClassVar[tuple[str, ...]] = ("pendingDeletions",)

    # --- hooks
    def validate(self, props: Any) -> list[str]:
        """Problems with the (fully known) input, as messages; none means valid."""
        return []

    def what(self, props: Any) -> str:
        """The resource, as error messages name it."""
        raise NotImplementedError

    def resource_id(self, props: Any) -> str:
        raise NotImplementedError

    def preview(self, client: RegistryClient, props: Any) -> dict[str, Any]:
        """Computed inputs for the preview, from the registry."""
        return {}

    def apply(self, client: RegistryClient, props: Any, previous: Mapping[str, Any]) -> dict[str, Any]:
        """Do the work (create, or update with the previous outputs); returns computed outputs."""
        raise NotImplementedError

    def refresh(self, client: RegistryClient, props: Any) -> dict[str, Any]:
        """Outputs that refresh recomputes from the registry."""
        return self.preview(client, props)

    # --- the one connection block
    def _connected(self, props: ConnectionProps, action: str, work: Callable[[RegistryClient], T],
                   *, wait: bool = True) -> T:
        try:
            with props.client() as client:
                if wait:
                    wait_until_serving(client)
                return work(client)
        except (RegistryError, docker_exec.DockerExecError, MaintenanceError, ValueError) as exc:
            raise MaintenanceError(f"{action}{self.what(props)}: {exc}") from exc

    def _typed(self, props: Mapping[str, Any]) -> Any:
        return self.props_type.from_dict(from_wire(props))

    # --- the Pulumi protocol
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        checked = {k: v for k, v in from_wire(news).items() if k not in self.compared_outputs}
        if has_unknown({k: checked.get(k) for k in self.props_type.keys()}):
            return CheckResult(checked, [])
        try:
            typed = self.props_type.from_dict(checked)
        except (PropsError, TypeError) as exc:
            return CheckResult(checked, [CheckFailure("", f"invalid input: {exc}")])
        failures = [CheckFailure("", message) for message in self.validate(typed)]
        # Canonical form (defaults filled in, numbers typed), so equal rules compare equal in diff.
        checked.update(typed.to_dict())
        if not failures:
            try:
                with typed.client() as client:
                    checked.update(self.preview(client, typed))
            except (RegistryNotFoundError, SharedDigestError, registry_api.RegistryInputError) as exc:
                # Wrong input, or a refusal create would make too: say so at preview time.
                failures.append(CheckFailure("", str(exc)))
            except RegistryError:
                pass  # not reachable yet (first deployment) or credentials changing: no list
        return CheckResult(checked, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        olds, news = from_wire(olds), from_wire(news)
        keys = [*self.props_type.keys(), *(k for k in self.compared_outputs if k in news)]
        changed = self.changed_keys(olds, news, keys)
        return DiffResult(
            changes=bool(changed),
            replaces=[k for k in changed if k in self.replace_keys],
            stables=[k for k in keys if k not in changed],
            delete_before_replace=False,
        )

    def create(self, props: dict[str, Any]) -> CreateResult:
        typed = self._typed(props)
        outs = self._connected(typed, "", lambda client: self.apply(client, typed, {}))
        return CreateResult(self.resource_id(typed), {**typed.to_dict(), **outs})

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        typed, previous = self._typed(news), from_wire(olds)
        outs = self._connected(typed, "", lambda client: self.apply(client, typed, previous))
        return UpdateResult({**typed.to_dict(), **outs})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        typed, stored = self._typed(props), from_wire(props)
        outs = self._connected(typed, "refreshing ", lambda client: self.refresh(client, typed), wait=False)
        return ReadResult(id_, {**stored, **outs})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None

    @classmethod
    def changed_keys(cls, olds: Mapping[str, Any], news: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
        """Keys whose value differs (a missing optional input equals its default; unknown differs)."""
        defaults = cls.props_type.defaults()

        def value(props: Mapping[str, Any], key: str) -> Any:
            found = props[key] if props.get(key) is not None else defaults.get(key)
            return list(found) if isinstance(found, tuple) else found

        return [k for k in keys if has_unknown(news.get(k)) or value(olds, k) != value(news, k)]


# --- ImageDeletion ----------------------------------------------------------------------------


class ImageDeletionProvider(MaintenanceProvider):
    """Deletes one rule's tags or digests from one repository. See :func:`plan_deletion`."""

    props_type = ImageDeletionProps
    replace_keys = frozenset({"registryUrl", "repository", "tags", "digests", "allowSharedDigest"})

    def validate(self, props: ImageDeletionProps) -> list[str]:
        url = props.registry_url
        problems = []
        try:
            registry_api.validate_repository(url, props.repository)
            for tag in props.tags:
                registry_api.validate_tag(url, props.repository, tag)
            for digest in props.digests:
                registry_api.validate_digest(url, props.repository, digest)
        except registry_api.RegistryInputError as exc:
            problems.append(str(exc))
        if not props.tags and not props.digests:
            problems.append(f"deletion rule for '{props.repository}' names no tags and no digests")
        return problems

    def what(self, props: ImageDeletionProps) -> str:
        return f"image deletion in '{props.repository}'"

    def resource_id(self, props: ImageDeletionProps) -> str:
        return stable_id(
            "deletion", props.registry_url, props.repository, sorted(props.tags), sorted(props.digests),
            props.allow_shared_digest,
        )

    @staticmethod
    def plan(client: RegistryClient, props: ImageDeletionProps) -> DeletionPlan:
        if props.delete_by_tag and not props.digests:
            # One request for the tag list; no HEAD per tag (see plan_untag).
            try:
                present = client.tags(props.repository)
            except RegistryNotFoundError:
                present = []
            return plan_untag(props, present)
        snap = snapshot(client, props.repository)
        loose = [d for d in props.digests if d not in snap.tags.values()]
        return plan_deletion(props, snap, present_digests(client, props.repository, loose))

    def preview(self, client: RegistryClient, props: ImageDeletionProps) -> dict[str, Any]:
        return {"pendingDeletions": self.plan(client, props).pending}

    def apply(self, client: RegistryClient, props: ImageDeletionProps, previous: Mapping[str, Any]) -> dict[str, Any]:
        plan = self.plan(client, props)
        if plan.untag:
            results = client.map(lambda tag: client.untag(props.repository, tag), plan.untag)
            untagged = [tag for tag, ok in zip(plan.untag, results) if ok]
            return {
                "pendingDeletions": [],
                **deletion_record(previous, [], untagged, deleted=bool(untagged)),
                "alreadyGone": [*plan.already_gone, *(tag for tag, ok in zip(plan.untag, results) if not ok)],
            }
        removed = client.map(lambda digest: client.delete(props.repository, digest), plan.digests)
        deleted = [d for d, ok in zip(plan.digests, removed) if ok]
        return {
            # Every planned digest is gone now (deleted, or by someone else meanwhile); a tag
            # pushed again since the plan shows in the next preview or refresh.
            "pendingDeletions": [],
            **deletion_record(previous, deleted, list(plan.tags_removed) if deleted else []),
            "alreadyGone": list(plan.already_gone),
        }


# --- RetentionPolicy --------------------------------------------------------------------------


def present_digests(client: RegistryClient, repository: str, digests: Sequence[str]) -> list[str]:
    """Those of ``digests`` that exist in ``repository`` (a ``HEAD`` each, in parallel)."""
    def exists(digest: str) -> bool:
        try:
            client.resolve(repository, digest)
            return True
        except RegistryNotFoundError:
            return False

    return [d for d, ok in zip(digests, client.map(exists, digests)) if ok]


def with_present_subjects(client: RegistryClient, snap: RepoSnapshot) -> RepoSnapshot:
    """``snap`` with ``present`` filled: which subjects of its attachment tags that no tag
    reaches still exist untagged (a ``HEAD`` each), so only a subject truly gone makes an orphan."""
    reached = protected_manifests(snap)
    subjects = sorted({found.subject for tag in snap.tags
                       if (found := grammar.parse_attachment_tag(tag)) and found.subject not in reached})
    return dataclasses.replace(snap, present=frozenset(present_digests(client, snap.repository, subjects)))


class RetentionProvider(MaintenanceProvider):
    """Applies one retention rule to the repositories it governs. See :func:`plan_retention`."""

    props_type = RetentionProps
    replace_keys = frozenset({"registryUrl", "repositories"})

    def validate(self, props: RetentionProps) -> list[str]:
        problems = []
        for pattern in props.keep_patterns:
            try:
                grammar.compile_tag_pattern(pattern)
            except grammar.PatternError as exc:
                problems.append(f"keepPatterns entry '{pattern}' {exc}")
        if props.keep_last is not None and props.keep_last < 0:
            problems.append("keepLast must be 0 or more")
        if props.keep_last is None and not props.keep_patterns and props.keep_younger_than_hours is None:
            problems.append(f"retention rule for '{props.repositories}' keeps nothing (set keepLast, keepPatterns or keepYoungerThan)")
        return problems

    def what(self, props: RetentionProps) -> str:
        return f"retention for '{props.repositories}'"

    def resource_id(self, props: RetentionProps) -> str:
        return stable_id("retention", props.registry_url, props.repositories)

    @staticmethod
    def plan(client: RegistryClient, props: RetentionProps) -> RetentionPlan:
        repositories = [repo for repo in client.catalog() if repository_matches(props, repo)]
        snaps = []
        for repo in repositories:
            try:
                snaps.append(with_present_subjects(client, snapshot(client, repo, with_created=True)))
            except RegistryNotFoundError as exc:
                if exc.code != "NAME_UNKNOWN":
                    raise
        return plan_retention(props, snaps, datetime.now(timezone.utc))

    @staticmethod
    def _outputs(plan: RetentionPlan, pending: list[str]) -> dict[str, Any]:
        return {"pendingDeletions": pending, "blockedTags": list(plan.blocked), "keptTags": list(plan.kept),
                "orphanedArtifacts": list(plan.orphans)}

    def preview(self, client: RegistryClient, props: RetentionProps) -> dict[str, Any]:
        return {"pendingDeletions": self.plan(client, props).pending}

    def refresh(self, client: RegistryClient, props: RetentionProps) -> dict[str, Any]:
        plan = self.plan(client, props)
        return self._outputs(plan, plan.pending)

    def apply(self, client: RegistryClient, props: RetentionProps, previous: Mapping[str, Any]) -> dict[str, Any]:
        plan = self.plan(client, props)
        if props.dry_run:
            return {**self._outputs(plan, plan.pending), **deletion_record(previous, [], [])}
        jobs = plan.jobs()
        results = client.map(lambda job: client.delete(*job), jobs)
        deleted = [f"{repo}@{digest}" for (repo, digest), ok in zip(jobs, results) if ok]
        # Kept and blocked tags are what stays; every planned digest is gone now.
        return {**self._outputs(plan, []), **deletion_record(previous, deleted, plan.pending)}


# --- GarbageCollection ------------------------------------------------------------------------


class GarbageCollectionProvider(MaintenanceProvider):
    """Runs garbage collection when the deletions it depends on change (``trigger``)."""

    props_type = GarbageCollectionProps
    replace_keys = frozenset({"dockerHost", "containerName"})
    compared_outputs = ()
    # Inputs whose change means "collect again"; the others only update stored values.
    rerun_keys = ("trigger", "mode", "deleteUntagged")

    def validate(self, props: GarbageCollectionProps) -> list[str]:
        if props.mode not in docker_exec.GC_MODES:
            return [f"garbage collection mode must be one of {', '.join(docker_exec.GC_MODES)}, not '{props.mode}'"]
        return []

    def what(self, props: GarbageCollectionProps) -> str:
        return f"garbage collection ({props.mode}) of container '{props.container_name}'"

    def resource_id(self, props: GarbageCollectionProps) -> str:
        return stable_id("gc", props.docker_host, props.container_name)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """A collection is an event, not a state: refresh keeps its recorded figures, asks nothing."""
        return ReadResult(id_, from_wire(props))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        olds, news = from_wire(olds), from_wire(news)
        if self.changed_keys(olds, news, self.rerun_keys):
            return super().update(id_, olds, news)
        typed = self._typed(news)
        return UpdateResult({**{k: v for k, v in olds.items() if k not in typed.keys()}, **typed.to_dict()})

    def apply(self, client: RegistryClient, props: GarbageCollectionProps, previous: Mapping[str, Any]) -> dict[str, Any]:
        return self.collect(client, props)

    @staticmethod
    def collect(client: RegistryClient, props: GarbageCollectionProps) -> dict[str, Any]:
        with docker_exec.RegistryContainer(props.docker_host, props.container_name) as target:
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
