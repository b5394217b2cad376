"""Image deletion, retention and garbage collection as resources of the stack.

:class:`Maintenance` builds, from the stack's ``maintenance`` settings, one
:class:`ImageDeletion` per deletion rule, one :class:`RetentionPolicy` per retention rule and
one :class:`GarbageCollection` after them. The work happens in the dynamic providers of
:mod:`components.maintenance_providers`; what a rule deletes is decided in
:mod:`components.maintenance_plan`.

Previews show what will go: each deletion and retention resource computes, in ``check``, the
``pendingDeletions`` it would make now by asking the registry, so the preview's diff lists
them; an unchanged stack over an unchanged registry previews with no changes. The list is what
the registry held at preview time, and when the registry cannot be asked (first deployment,
credentials changing in the same update) the preview cannot list the tags.

**State contract.** Resource names come from :func:`rule_hash`, a canonical hash of the rule's
fields that leaves out fields at their default, so adding a defaulted setting renames nothing.
Names of stacks deployed when names hashed ``repr(rule)`` are kept through aliases. The
provider classes are re-exported here because stacks deployed before the split hold providers
pickled as ``components.maintenance.<Class>`` (see :mod:`components.maintenance_providers`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import pulumi
import pulumi.dynamic

# Import paths of providers pickled in existing stacks' state: keep these names here.
from components.maintenance_providers import (  # noqa: F401 - re-exported for the state contract
    GarbageCollectionProvider,
    ImageDeletionProvider,
    MaintenanceError,
    RetentionProvider,
)

if TYPE_CHECKING:
    from components.settings import MaintenanceSettings

_SECRET_OUTPUTS = ["password"]


def _options(opts: Optional[pulumi.ResourceOptions]) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=_SECRET_OUTPUTS))


def _props(connection: dict[str, Any], inputs: dict[str, Any], outputs: tuple[str, ...]) -> dict[str, Any]:
    """Connection inputs (the password secret), the rule's inputs, and computed outputs."""
    return {
        "registryUrl": connection["registry_url"],
        "caPem": connection["ca_pem"],
        "username": connection["username"],
        "password": pulumi.Output.secret(connection["password"]),
        **inputs,
        **{key: None for key in outputs},
    }


class ImageDeletion(pulumi.dynamic.Resource, module="registry", name="ImageDeletion"):
    """Deletes the tags/digests of one deletion rule (see :class:`ImageDeletionProvider`)."""

    pendingDeletions: pulumi.Output[list]
    deletedDigests: pulumi.Output[list]
    deletedTags: pulumi.Output[list]
    deletionRuns: pulumi.Output[int]
    alreadyGone: pulumi.Output[list]

    def __init__(self, name: str, *, rule: Any, delete_by_tag: bool = False, opts=None, **connection: Any):
        inputs = {"repository": rule.repository, "tags": list(rule.tags), "digests": list(rule.digests),
                  "allowSharedDigest": bool(rule.allow_shared_digest),
                  # Only when set: the inputs of every rule deleting by digest stay as they were.
                  **({"deleteByTag": True} if delete_by_tag else {})}
        outputs = ("pendingDeletions", "deletedDigests", "deletedTags", "deletionRuns", "alreadyGone")
        super().__init__(ImageDeletionProvider(), name, _props(connection, inputs, outputs), _options(opts))


class RetentionPolicy(pulumi.dynamic.Resource, module="registry", name="RetentionPolicy"):
    """Applies one retention rule (see :class:`RetentionProvider`)."""

    pendingDeletions: pulumi.Output[list]
    deletedTags: pulumi.Output[list]
    deletedDigests: pulumi.Output[list]
    blockedTags: pulumi.Output[list]
    keptTags: pulumi.Output[list]
    orphanedArtifacts: pulumi.Output[list]
    deletionRuns: pulumi.Output[int]

    def __init__(self, name: str, *, rule: Any, exclude=(), dry_run=False, opts=None, **connection: Any):
        inputs = {"repositories": rule.repositories, "excludeRepositories": list(exclude),
                  "keepLast": rule.keep_last, "keepPatterns": list(rule.keep_patterns),
                  "keepYoungerThanHours": rule.keep_younger_than_hours, "dryRun": bool(dry_run),
                  # Only when set: the inputs of rules that leave orphans alone stay as they were.
                  **({"deleteOrphans": True} if rule.delete_orphans else {})}
        outputs = ("pendingDeletions", "deletedTags", "deletedDigests", "blockedTags", "keptTags",
                   "orphanedArtifacts", "deletionRuns")
        super().__init__(RetentionProvider(), name, _props(connection, inputs, outputs), _options(opts))


class GarbageCollection(pulumi.dynamic.Resource, module="registry", name="GarbageCollection"):
    """Collects garbage after the deletions; runs again when ``trigger`` changes."""

    bytesBefore: pulumi.Output[int]
    bytesAfter: pulumi.Output[int]
    blobsRemoved: pulumi.Output[int]
    durationSeconds: pulumi.Output[float]
    writesRefusedSeconds: pulumi.Output[float]
    readsUnavailableSeconds: pulumi.Output[float]
    untaggedDeleted: pulumi.Output[list]

    def __init__(self, name: str, *, docker_host, container_name, gc, trigger, opts=None, **connection: Any):
        inputs = {"dockerHost": docker_host, "containerName": container_name, "mode": gc.mode,
                  "deleteUntagged": bool(gc.delete_untagged), "trigger": trigger}
        outputs = ("bytesBefore", "bytesAfter", "blobsRemoved", "blobsEligible", "manifestsEligible", "untaggedDeleted",
                   "durationSeconds", "writesRefusedSeconds", "readsUnavailableSeconds", "timeline")
        super().__init__(GarbageCollectionProvider(), name, _props(connection, inputs, outputs), _options(opts))


# --- the component ----------------------------------------------------------------------------


@dataclass
class MaintenanceArgs:
    settings: "MaintenanceSettings"
    registry_url: pulumi.Input[str]
    ca_pem: pulumi.Input[str]
    username: pulumi.Input[str]
    password: pulumi.Input[str]
    docker_host: str
    container_name: pulumi.Input[str]
    # The registry's major version (ImageSettings.registry_major): 3 can delete by tag.
    registry_version: int = 2


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "all"


def _default(f: dataclasses.Field) -> Any:
    """A field's default; ``MISSING`` for a required one (a pydantic ``Field(default=...)`` too)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    # pydantic dataclasses keep a Field(...) as the default; its own default is the value.
    return getattr(f.default, "default", f.default)


def _canonical(value: Any) -> Any:
    """Plain JSON-able data: a dataclass as ``{field: value}`` without fields at their default."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _canonical(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if _default(f) is dataclasses.MISSING or getattr(value, f.name) != _default(f)
        }
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def rule_hash(rule: Any) -> str:
    """8 hex digits of SHA-256 over the rule's fields as sorted JSON, fields at their default left out.

    The same rule always hashes the same, whatever its class's ``repr`` and whatever defaulted
    fields are added to it later.
    """
    text = json.dumps(_canonical(rule), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def legacy_rule_hash(rule: Any) -> str:
    """The hash names were made of before :func:`rule_hash` (``repr``), kept for aliases."""
    return hashlib.sha256(repr(rule).encode()).hexdigest()[:8]


def _named(parent: str, kind: str, subject: str, rule: Any) -> tuple[str, list[pulumi.Alias]]:
    """A child's name from its rule, and an alias to the name ``repr`` hashing gave it."""
    name = f"{parent}-{kind}-{_slug(subject)}-{rule_hash(rule)}"
    legacy = f"{parent}-{kind}-{_slug(subject)}-{legacy_rule_hash(rule)}"
    return name, ([pulumi.Alias(name=legacy)] if legacy != name else [])


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _merged(lists: list[Optional[list]]) -> list:
    return sorted({entry for entries in lists for entry in (entries or [])})


def deletes_by_tag(settings: "MaintenanceSettings", registry_version: int) -> bool:
    """Whether deletion rules remove their tags by tag: on distribution 3 (2.8 deletes only by
    digest), when the collection that follows them removes untagged manifests (deleteUntagged,
    readonly or stop mode). Then a tag costs one request and another tag on the same manifest
    stays; the manifest goes with the collection, as a digest deletion would have taken it.
    Otherwise a manifest whose tags went would stay, pullable by digest, so they go by digest."""
    gc = settings.gc
    return registry_version >= 3 and gc.enabled and gc.delete_untagged and gc.mode != "dry-run"


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

        def child(depends_on: list, aliases: list) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, depends_on=[*upstream, *depends_on], aliases=aliases)

        self.deletions = []
        by_tag = deletes_by_tag(settings, args.registry_version)
        for rule in settings.deletions:
            child_name, aliases = _named(name, "delete", rule.repository, rule)
            self.deletions.append(ImageDeletion(child_name, **connection, rule=rule, delete_by_tag=by_tag,
                                                opts=child([], aliases)))
        self.retention = []
        for i, rule in enumerate(settings.retention):
            child_name, aliases = _named(name, "retain", rule.repositories, rule)
            self.retention.append(RetentionPolicy(
                child_name, **connection, rule=rule,
                exclude=[earlier.repositories for earlier in settings.retention[:i]],
                dry_run=settings.retention_dry_run,
                # Deletion rules first: retention then sees what they left.
                opts=child(self.deletions, aliases),
            ))
        removers: list[Any] = [*self.deletions, *self.retention]
        self.gc = None
        if settings.gc.enabled:
            trigger = pulumi.Output.all(*[[r.id, r.deletedDigests, r.deletionRuns] for r in removers]).apply(
                # Unchanged formula: a different trigger text would collect again on every stack.
                lambda values: hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()
            )
            self.gc = GarbageCollection(
                f"{name}-gc", **connection, docker_host=args.docker_host,
                container_name=args.container_name, gc=settings.gc, trigger=trigger, opts=child(removers, []),
            )
        self.pending_deletions = pulumi.Output.all(*[r.pendingDeletions for r in removers]).apply(_merged)
        self.deleted_tags = pulumi.Output.all(*[r.deletedTags for r in removers]).apply(_merged)
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
