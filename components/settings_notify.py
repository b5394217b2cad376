"""Notification settings: webhook endpoints the registry posts its events to (config: notifications[]).

Typed, validated models that :mod:`components.settings` composes into its ``Settings``. Each
entry becomes one of distribution's ``notifications.endpoints`` (rendered by
components/render/notifications.py): the registry POSTs an envelope of events (push, pull,
delete, mount of manifests and blobs) to ``url`` with the configured headers. Header values
(typically ``Authorization``) are secrets: the whole ``notifications`` key must be stored with
``--secret`` when any header is set.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, SecretStr, StrictInt, StrictStr, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic.dataclasses import dataclass

from components import grammar
from components.render.notifications import ACTIONS, HEADER_VALUE_MAX, RESERVED_HEADERS

_CONFIG = ConfigDict(alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid", frozen=True)

# One list of actions, the renderer's (Literal of a tuple: of its items).
Action = Literal[ACTIONS]

FIXES = {
    "notifications.url": "use http(s)://HOST[:PORT][/PATH] of the receiver, e.g. http://hooks.internal:8080/events",
    "notifications.name": "use letters, digits, '_', '.' and '-', starting with a letter or digit, e.g. audit",
    "notifications.timeoutSeconds": "use a whole number of seconds between 1 and 60 (default 5)",
    "notifications.threshold": "use a whole number of failures between 1 and 100 (default 10)",
    "notifications.backoffSeconds": "use a whole number of seconds between 1 and 3600 (default 1)",
    "notifications.ignore.actions": "use push, pull, delete or mount",
}


def _media_type(value: str) -> str:
    if not grammar.is_media_type(value):
        raise ValueError(
            "must be a media type like application/vnd.oci.image.manifest.v1+json "
            "(letters, digits, '.', '_', '+', '-' on each side of one '/')"
        )
    return value


def _header_name(name: str) -> str:
    if not grammar.is_header_name(name):
        raise ValueError(
            f"header name {name[:64]!r} is not a header name: letters, digits and '-', starting with a "
            "letter or digit, at most 64"
        )
    if name.lower() in RESERVED_HEADERS:
        raise ValueError(f"header {name} is set by the registry or its HTTP client: remove it")
    return name


def _header_value(secret: SecretStr) -> SecretStr:
    text = secret.get_secret_value()
    # Never echo the value: it is a secret.
    if (not text or len(text) > HEADER_VALUE_MAX or grammar.has_control_character(text)
            or not text.isascii() or text != text.strip()):
        raise ValueError(
            f"must be 1 to {HEADER_VALUE_MAX} printable ASCII characters, "
            "without line breaks or other control characters and without white space around it"
        )
    return secret


@dataclass(config=_CONFIG)
class NotificationIgnore:
    """Events an endpoint is not sent (config: notifications[].ignore)."""

    actions: tuple[Action, ...] = ()
    media_types: tuple[Annotated[StrictStr, AfterValidator(_media_type)], ...] = ()

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("lists an action twice: list each once")
        if set(value) == set(ACTIONS):
            raise ValueError("ignores every action, so the endpoint would receive nothing: remove the endpoint instead")
        return value



@dataclass(config=_CONFIG)
class NotificationEndpoint:
    """One webhook receiver of the registry's events (config: notifications[])."""

    name: StrictStr
    url: StrictStr
    # Header name -> value, sent with every POST; values are secrets (e.g. an Authorization token).
    headers: dict[Annotated[StrictStr, AfterValidator(_header_name)],
                  Annotated[SecretStr, AfterValidator(_header_value)]] = Field(default_factory=dict)
    timeout_seconds: StrictInt = Field(default=5, ge=1, le=60)
    # Failures in a row before the registry backs off for backoffSeconds between tries.
    threshold: StrictInt = Field(default=10, ge=1, le=100)
    backoff_seconds: StrictInt = Field(default=1, ge=1, le=3600)
    ignore: NotificationIgnore = Field(default_factory=NotificationIgnore)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not grammar.is_docker_name(value) or len(value) > 64:
            raise ValueError("must hold only letters, digits, '_', '.' and '-', starting with a letter or digit; at most 64")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if grammar.parse_http_url(value) is None:
            raise ValueError(
                "is not an http(s)://HOST[:PORT][/PATH][?QUERY] URL (a DNS name or IP address; path and query of "
                "letters, digits and . _ ~ + = - /; no user:password@: put credentials in headers, which are secrets)"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        seen: set[str] = set()
        for name in value:
            if name.lower() in seen:
                raise ValueError(f"header {name} is listed twice (header names ignore case): list it once")
            seen.add(name.lower())
        return value


def check_notifications(endpoints: tuple[NotificationEndpoint, ...]) -> list[str]:
    """Checks across the endpoints; each problem as 'notifications[i].field: message'."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for index, endpoint in enumerate(endpoints):
        if endpoint.name in seen:
            problems.append(
                f"notifications[{index}].name: {endpoint.name!r} is also the name of notifications[{seen[endpoint.name]}] "
                "(the registry tells endpoints apart by name): rename one of them"
            )
        seen.setdefault(endpoint.name, index)
    return problems
