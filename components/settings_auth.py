"""Settings of authentication and access control (config key ``auth``), validated.

``auth.mode``: ``token`` (default) runs the token service (token_service/) and makes the
registry enforce signed tokens (distribution's ``auth.token``); ``basic`` keeps nginx's
Basic auth on every request, where every user holds every right.

Access rules (token mode only), see token_service/access.py for the semantics::

    auth:
      groups: {nodes: [node-a, node-b]}
      admins: [alice]                     # every right everywhere, and the catalog
      rules:
        - repositories: ["ci/**"]
          push: [ci]                      # push includes pull
        - repositories: ["**"]
          pull: ["@nodes"]
      anonymousPull: ["public/**"]
      catalog: [auditor]

With no ``rules`` every user holds every right and may list the catalog (the behaviour of
basic mode); once ``rules`` is set only what rules, ``admins`` and ``catalog`` grant is allowed.
Principals are user names from ``users`` (or the generated default user), ``@group`` or ``*``
(every user). :meth:`AuthSettings.policy_document` is the token service's policy file.
"""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, ConfigDict, Field, StrictInt, StrictStr
from pydantic.alias_generators import to_camel
from pydantic.dataclasses import dataclass

from components.grammar import GROUP_PREFIX, is_access_glob, is_user_name

# bcrypt cost in token mode: the password is checked once per login (docker) or once per
# token lifetime per client (credential cache), not on every request; see the README.
TOKEN_BCRYPT_ROUNDS = 11
EVERYONE = "*"

# As components/settings.py: config is read by the camelCase key only, strict types.
_CONFIG = ConfigDict(
    alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid", frozen=True
)


def _shown(value: str) -> str:
    """A configured value as a message shows it: quoted, control characters escaped."""
    return repr(value)[:80]


# Each name and glob is checked on its own, so a refusal names its index (auth.rules[0].pull[1]).
def _principal(value: str) -> str:
    name = value[len(GROUP_PREFIX):] if value.startswith(GROUP_PREFIX) else value
    if value != EVERYONE and not is_user_name(name):
        raise ValueError(
            f"{_shown(value)} is not a user name, '@group' or '*' (user and group names: letters, digits, '_', '.', "
            "'+', '-', and '@' after the first character)"
        )
    return value


def _glob(value: str) -> str:
    if not is_access_glob(value):
        raise ValueError(
            f"{_shown(value)} is not a repository glob: lowercase name segments separated by '/', "
            "'*' inside a segment, '**' as a whole segment (e.g. 'team/**', 'app-*')"
        )
    return value


def _group_name(value: str) -> str:
    if value.startswith(GROUP_PREFIX):
        raise ValueError(f"group name {_shown(value)} starts with '@': name the group without it "
                         "(rules then refer to it as '@name')")
    if not is_user_name(value):
        raise ValueError(f"group name {_shown(value)} must be letters, digits, '_', '.', '+', '-', "
                         "and '@' after the first character")
    return value


def _member(value: str) -> str:
    if value.startswith(GROUP_PREFIX):
        raise ValueError(f"{_shown(value)} is a group reference, and groups hold users only: "
                         "list that group's users instead")
    if not is_user_name(value):
        raise ValueError(f"{_shown(value)} is not a user name")
    return value


Principal = Annotated[StrictStr, AfterValidator(_principal)]
Glob = Annotated[StrictStr, AfterValidator(_glob)]


@dataclass(config=_CONFIG)
class AccessRule:
    """Who may pull, push and delete the repositories matching ``repositories``."""

    repositories: tuple[Glob, ...] = Field(min_length=1)
    pull: tuple[Principal, ...] = ()
    push: tuple[Principal, ...] = ()
    delete: tuple[Principal, ...] = ()


@dataclass(config=_CONFIG)
class AuthSettings:
    """Authentication mode, token lifetime, the token endpoint's rate limit and access rules."""

    mode: Literal["token", "basic"] = "token"
    token_lifetime_seconds: StrictInt = Field(default=300, ge=60, le=3600)
    # Token requests that may carry a password (Basic GET, POST), per second per client address
    # (nginx limit_req, 429 over it), and the burst allowed.
    rate_limit_per_second: StrictInt = Field(default=5, ge=1, le=1000)
    rate_limit_burst: StrictInt = Field(default=20, ge=0, le=10000)
    # Failed password checks the token service allows a client address per minute, and how many
    # it may save up; over them it answers 429 without checking (token_service/throttle.py).
    failed_logins_per_minute: StrictInt = Field(default=12, ge=1, le=6000)
    failed_login_burst: StrictInt = Field(default=3, ge=1, le=1000)
    groups: dict[Annotated[StrictStr, AfterValidator(_group_name)],
                 tuple[Annotated[StrictStr, AfterValidator(_member)], ...]] = field(default_factory=dict)
    admins: tuple[Principal, ...] = ()
    rules: Optional[tuple[AccessRule, ...]] = None
    anonymous_pull: tuple[Glob, ...] = ()
    catalog: tuple[Principal, ...] = ()

    @property
    def token(self) -> bool:
        return self.mode == "token"

    @property
    def open(self) -> bool:
        """No rules: every user holds every right."""
        return self.rules is None

    def check(self, user_names: tuple[str, ...], users_configured: bool = True) -> None:
        """Cross-checks with the users; ValueError('auth...: ...') names the setting and the fix.

        Names are checked against the users only when ``users`` is configured: a stack file
        (like the prod example) names its users in rules before their passwords are set as
        secrets; until then a rule naming them grants nothing.
        """
        restricted = self.rules is not None or self.admins or self.anonymous_pull or self.catalog or self.groups
        if not self.token and restricted:
            raise ValueError(
                "auth: access rules (rules, admins, anonymousPull, catalog, groups) need auth.mode token; "
                "basic auth gives every user every right: remove them or set auth.mode to token"
            )
        known = set(user_names)
        places = [("admins", self.admins), ("catalog", self.catalog)]
        for i, rule in enumerate(self.rules or ()):
            places += [(f"rules[{i}].{a}", getattr(rule, a)) for a in ("pull", "push", "delete")]
        for place, principals in places:
            for principal in principals:
                if principal.startswith(GROUP_PREFIX) and principal[1:] not in self.groups:
                    raise ValueError(f"auth: {place}: group '{principal[1:]}' is not defined; add it under auth.groups")
                if users_configured and principal != EVERYONE and not principal.startswith(GROUP_PREFIX) and principal not in known:
                    raise ValueError(f"auth: {place}: '{principal}' is not a user; add it under users or remove it")
        for group, members in self.groups.items():
            for member in members:
                if users_configured and member not in known:
                    raise ValueError(f"auth: groups.{group}: '{member}' is not a user; add it under users or remove it")

    def policy_document(self) -> dict:
        """The token service's policy (token_service/access.py format), as plain data."""
        if self.rules is None:
            rules = [{"repositories": ["**"], "pull": [EVERYONE], "push": [EVERYONE], "delete": [EVERYONE]}]
            catalog = [EVERYONE]
        else:
            rules = [
                {"repositories": list(r.repositories), "pull": list(r.pull), "push": list(r.push),
                 "delete": list(r.delete)}
                for r in self.rules
            ]
            catalog = list(self.catalog)
        return {
            "version": 1,
            "groups": {g: list(m) for g, m in sorted(self.groups.items())},
            "admins": list(self.admins),
            "rules": rules,
            "anonymous_pull": list(self.anonymous_pull),
            "catalog": catalog,
        }
