"""Access rules: who may pull, push or delete which repositories, and list the catalog.

Pure evaluation over a policy document (JSON, written by the Pulumi program with a library;
see ``components/render/token_policy.py``). Standard library only: the token service's image
ships this module.

Policy document (``version`` 1)::

    {
      "version": 1,
      "groups": {"ops": ["alice"], "nodes": ["node"]},
      "admins": ["@ops"],
      "rules": [
        {"repositories": ["ci/**"], "pull": [], "push": ["ci"], "delete": []},
        {"repositories": ["**"], "pull": ["@nodes"], "push": [], "delete": []}
      ],
      "anonymous_pull": ["public/**"],
      "catalog": ["@ops"]
    }

Principals: a user name, ``@group``, or ``*`` (every authenticated user), kept apart by kind
(:class:`Principals`): ``@name`` is only ever the group ``name``, never a user, and the
authenticated user is matched only against user principals and group members. A user name
outside the user grammar (``token_service/names.py``: one starting with ``@`` among them, which
the program refuses at preview) is no user at all and holds what anonymous clients hold, so a
user literally named ``@ops`` never gets group ``ops``'s rights. Rights are the union over
every rule whose glob matches; admins hold every right on every repository and the catalog.
``push`` includes ``pull``: distribution checks pull as well as push on every write (POST,
PUT, PATCH), so a push right without pull could not push. ``delete`` stands alone
(DELETE needs only it). Anonymous clients hold pull on ``anonymous_pull`` globs and nothing
else; every logged-in user holds that pull too, on top of its own rights: anyone may pull
there, and a client that ran ``docker login`` sends its credentials on every pull.

Repository globs, matched against the whole name, segment by segment (``/`` separates):
``**`` as a whole segment matches one or more segments; ``*`` inside a segment matches any
characters except ``/``; every other character matches itself. ``team/**`` matches
``team/app`` and ``team/a/b``, not ``team``; ``**`` matches every repository. Only names of
the repository grammar (``token_service/names.py``, which ``components/grammar.py`` re-exports)
are matched at all: a name with an empty segment (``team/``, ``a//b``), ``..``, a tag or any
other character outside the grammar matches no glob and holds no right.

Scopes (distribution's token spec): ``repository[(class)]:NAME:ACTIONS`` and
``registry:catalog:*``. A grant is the requested actions intersected with the rights held; a
requested ``*`` on a repository is answered with the rights held, never with ``*``. A scope
the service cannot grant (malformed, or naming something outside the grammar) is left out of
the token's ``access``, as the spec has it for any scope not held: the request still gets a
token for the others, never a 4xx for the whole request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

from token_service.names import GROUP_PREFIX, is_repository, is_user_name

ACTIONS = ("pull", "push", "delete")
EVERYONE = "*"
SCOPE_MAX = 512  # characters in one scope; longer ones are ignored
SCOPES_MAX = 32  # scopes in one request; the rest are ignored
NAME_MAX = 255
# The spec's resourcetype: a lowercase word, optionally a (deprecated, ignored) class in brackets.
RESOURCE_TYPE_RE = re.compile(r"(?P<type>[a-z0-9]+)(?:\([a-z0-9]+\))?")


class PolicyError(ValueError):
    """The policy document is not of the shape described in the module docstring."""


def _segment_match(pattern: str, text: str) -> bool:
    """``*`` matches any run of characters (the caller never passes ``/``); linear-time greedy."""
    p = t = 0
    star = -1
    mark = 0
    while t < len(text):
        if p < len(pattern) and pattern[p] != "*" and pattern[p] == text[t]:
            p += 1
            t += 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark = p, t
            p += 1
        elif star >= 0:
            p = star + 1
            mark += 1
            t = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def glob_match(glob: str, name: str) -> bool:
    """Whether repository ``name`` matches ``glob`` (see the module docstring). A name outside
    the repository grammar (an empty segment among them) matches nothing."""
    if not is_repository(name):
        return False
    gsegs = glob.split("/")
    nsegs = name.split("/")
    # reach[j]: the glob's first i segments can match the name's first j segments.
    reach = [True] + [False] * len(nsegs)
    for gseg in gsegs:
        nxt = [False] * (len(nsegs) + 1)
        if gseg == "**":
            for j in range(len(nsegs)):
                if reach[j]:
                    for k in range(j + 1, len(nsegs) + 1):
                        nxt[k] = True
                    break  # every later j' > j gives a subset of these
        else:
            for j in range(len(nsegs)):
                if reach[j] and _segment_match(gseg, nsegs[j]):
                    nxt[j + 1] = True
        reach = nxt
        if not any(reach):
            return False
    return reach[len(nsegs)]


@dataclass(frozen=True)
class Scope:
    """One requested resource: ``type`` (repository or registry), ``name`` and actions."""

    type: str
    name: str
    actions: tuple[str, ...]


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Scopes from ``scope`` parameters (each may hold several, space-separated).

    Malformed entries are dropped (no grant for them), never an error: a token request with an
    odd scope still gets a token for the scopes that parse. A resource class
    (``repository(plugin):...``) is dropped from the type, as distribution ignores it. A
    ``repository`` scope whose name is outside the repository grammar (``a/../b``, ``team/``,
    ``app:latest``, upper case, over 255 characters) and a ``registry`` scope for anything but
    ``catalog`` are dropped too: a token never names them.
    """
    scopes: list[Scope] = []
    for value in values:
        for item in value.split(" "):
            if len(scopes) >= SCOPES_MAX:
                return scopes
            if not item or len(item) > SCOPE_MAX or not item.isascii() or not item.isprintable():
                continue
            rtype, sep1, rest = item.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not (sep1 and sep2 and rtype and name and actions):
                continue
            typed = RESOURCE_TYPE_RE.fullmatch(rtype)
            if typed is None:
                continue
            rtype = typed["type"]
            if len(name) > NAME_MAX or not _grantable(rtype, name):
                continue
            wanted = tuple(dict.fromkeys(a for a in actions.split(",") if a))
            scopes.append(Scope(rtype, name, wanted))
    return scopes


def _grantable(rtype: str, name: str) -> bool:
    """Whether a scope of type ``rtype`` on ``name`` could be granted at all: a repository of the
    grammar, or the registry's catalog. Other types are kept (and granted nothing)."""
    if rtype == "repository":
        return is_repository(name)
    if rtype == "registry":
        return name == "catalog"
    return True


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(f"{where} must be a list of non-empty strings")
    return list(value)


@dataclass(frozen=True)
class Principals:
    """Principals by kind: ``everyone`` (``*``), user names and group names (``@group`` without
    the ``@``). A value starting with ``@`` is only ever a group."""

    everyone: bool = False
    users: frozenset = frozenset()
    groups: frozenset = frozenset()

    @classmethod
    def parse(cls, values: Iterable[str]) -> "Principals":
        everyone, users, groups = False, set(), set()
        for value in values:
            if value == EVERYONE:
                everyone = True
            elif value.startswith(GROUP_PREFIX):
                groups.add(value[len(GROUP_PREFIX):])
            else:
                users.add(value)
        return cls(everyone, frozenset(users), frozenset(groups))


@dataclass(frozen=True)
class Rule:
    repositories: tuple[str, ...]
    rights: dict = field(hash=False)  # action -> Principals


@dataclass(frozen=True)
class Policy:
    """A parsed policy document; build with :meth:`from_document`."""

    groups: dict = field(hash=False)  # group -> frozenset of users
    admins: Principals
    rules: tuple
    anonymous_pull: tuple
    catalog: Principals

    @classmethod
    def from_document(cls, doc: object) -> "Policy":
        """Parse and check a policy document; PolicyError names the first wrong field."""
        if not isinstance(doc, dict):
            raise PolicyError("the policy must be a JSON object")
        if doc.get("version") != 1:
            raise PolicyError("policy version must be 1")
        known = {"version", "groups", "admins", "rules", "anonymous_pull", "catalog"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise PolicyError(f"unknown policy fields: {', '.join(unknown)}")
        groups_doc = doc.get("groups", {})
        if not isinstance(groups_doc, dict):
            raise PolicyError("groups must be an object of group -> list of users")
        groups = {str(g): frozenset(_strings(users, f"groups.{g}")) for g, users in groups_doc.items()}
        rules = []
        for i, rule in enumerate(_list(doc.get("rules", []), "rules")):
            if not isinstance(rule, dict) or set(rule) - {"repositories", *ACTIONS}:
                raise PolicyError(f"rules[{i}] must be an object with repositories, pull, push, delete")
            globs = tuple(_strings(rule.get("repositories"), f"rules[{i}].repositories"))
            rights = {a: Principals.parse(_strings(rule.get(a, []), f"rules[{i}].{a}")) for a in ACTIONS}
            rules.append(Rule(globs, rights))
        policy = cls(
            groups=groups,
            admins=Principals.parse(_strings(doc.get("admins", []), "admins")),
            rules=tuple(rules),
            anonymous_pull=tuple(_strings(doc.get("anonymous_pull", []), "anonymous_pull")),
            catalog=Principals.parse(_strings(doc.get("catalog", []), "catalog")),
        )
        for principals in policy._principals():
            for group in sorted(principals.groups - set(groups)):
                raise PolicyError(f"group {group!r} is used but not defined in groups")
        return policy

    def _principals(self) -> Iterable[Principals]:
        yield self.admins
        yield self.catalog
        for rule in self.rules:
            yield from rule.rights.values()

    def _holds(self, user: Optional[str], principals: Principals) -> bool:
        """Whether ``user`` is one of ``principals``: only a name of the user grammar is a user."""
        if not is_user_name(user):
            return False
        if principals.everyone or user in principals.users:
            return True
        return any(user in self.groups.get(group, ()) for group in principals.groups)

    def is_admin(self, user: Optional[str]) -> bool:
        return self._holds(user, self.admins)

    def repository_rights(self, user: Optional[str], repository: str) -> frozenset:
        """Actions ``user`` (None: anonymous) holds on ``repository``; none on a name outside
        the repository grammar."""
        if not is_repository(repository):
            return frozenset()
        anonymous = {"pull"} if any(glob_match(g, repository) for g in self.anonymous_pull) else set()
        if not is_user_name(user):  # anonymous, or a name that is no user's (see the module docstring)
            return frozenset(anonymous)
        if self.is_admin(user):
            return frozenset(ACTIONS)
        held = set(anonymous)  # anyone may pull the anonymous globs, logged in or not
        for rule in self.rules:
            if any(glob_match(g, repository) for g in rule.repositories):
                held.update(a for a in ACTIONS if self._holds(user, rule.rights[a]))
        if "push" in held:
            held.add("pull")
        return frozenset(held)

    def catalog_allowed(self, user: Optional[str]) -> bool:
        """Whether ``user`` may list the catalog (anonymous clients never may)."""
        return self.is_admin(user) or self._holds(user, self.catalog)

    def grant(self, user: Optional[str], scopes: Iterable[Scope]) -> list[dict]:
        """The token's ``access`` claim: per scope, the requested actions the user holds."""
        access: dict[tuple[str, str], list[str]] = {}
        for scope in scopes:
            if scope.type == "repository" and is_repository(scope.name):
                held = self.repository_rights(user, scope.name)
                wanted = ACTIONS if "*" in scope.actions else scope.actions
                actions = [a for a in wanted if a in held]
            elif scope.type == "registry" and scope.name == "catalog":
                actions = ["*"] if "*" in scope.actions and self.catalog_allowed(user) else []
            else:
                actions = []
            if actions:
                merged = access.setdefault((scope.type, scope.name), [])
                merged.extend(a for a in actions if a not in merged)
        return [{"type": t, "name": n, "actions": a} for (t, n), a in access.items()]


def _list(value: object, where: str) -> list:
    if not isinstance(value, list):
        raise PolicyError(f"{where} must be a list")
    return value


def open_policy() -> dict:
    """The document for "no rules": every user holds every right and may list the catalog."""
    return {
        "version": 1,
        "groups": {},
        "admins": [],
        "rules": [{"repositories": ["**"], "pull": [EVERYONE], "push": [EVERYONE], "delete": [EVERYONE]}],
        "anonymous_pull": [],
        "catalog": [EVERYONE],
    }
