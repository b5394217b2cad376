"""Stack settings: read once from Pulumi config into typed, validated objects.

This is the only module that touches ``pulumi.Config``. Everything else receives a
:class:`Settings`. Validation happens here, before any resource is declared, so a bad value
fails ``pulumi preview`` with a message that names the setting and says how to fix it.

Config keys live in the project namespace (``private-registry:<key>``) and are camelCase.
Unknown keys are refused, so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import field
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Optional

import pulumi
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.dataclasses import dataclass

from components import grammar
from components.own_ca import check_own_ca
from components.settings_scale import (
    DEFAULT_REDIS_IMAGE,
    FIXES as _SCALE_FIXES,
    SECRET_PATHS as _SCALE_SECRET_PATHS,
    RedisSettings,
    StorageSettings,
    SwarmSettings,
    check_scale,
)
from components.settings_auth import TOKEN_BCRYPT_ROUNDS, AuthSettings
from components.metrics import MetricsSettings
from components.settings_notify import FIXES as _NOTIFY_FIXES, NotificationEndpoint, check_notifications

PROJECT = "private-registry"

# Distribution 3, the current line (the official image's multi-platform index digest).
DEFAULT_REGISTRY_IMAGE = (
    "docker.io/library/registry:3.1.2"
    "@sha256:ddf754342cfc8acc51a56d5d0ab6af06826461864460636d8bd5c546dab2a7b8"
)
# Distribution 2.8, the default before; still supported for stacks that pin it.
REGISTRY2_IMAGE = (
    "docker.io/library/registry:2.8.3"
    "@sha256:a3d8aaa63ed8681a604f1dea0aa03f100d5895b6a58ace528858a7b332415373"
)
REGISTRY_VERSIONS = (2, 3)
# A tag that names its major version: 3, 3.1, 3.1.2, v3.1.2-alpine, 2.8.3...
_VERSIONED_TAG = re.compile(r"v?(?P<major>[0-9]+)(?:[.-][A-Za-z0-9_.-]*)?")
DEFAULT_NGINX_IMAGE = (
    "docker.io/library/nginx:1.28-alpine"
    "@sha256:a8b39bd9cf0f83869a2162827a0caf6137ddf759d50a171451b335cecc87d236"
)

# bcrypt cost 5: nginx checks the password on every request, blocking its event loop; see
# the README's "Why bcrypt cost 5 and 32-character passwords" for what this costs an attacker.
DEFAULT_BCRYPT_ROUNDS = 5

# Config is read by the camelCase key only (parse_settings validates by alias alone); Python
# code may still construct the objects by field name.
_CONFIG = ConfigDict(
    alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid", frozen=True
)

# X.509 upper bounds (RFC 5280): commonName and organizationName hold at most 64 characters,
# and no certificate date lies past 9999-12-31.
X509_NAME_MAX = 64
_CA_CN_SUFFIX = " CA"
_LAST_DATE = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
# A hundred years: longer lifetimes or ages are typos, and timedelta arithmetic stays in range.
HOURS_MAX = 876_000
# A user name starting with '@' would read as a group reference in access rules ('@group').
_GROUP_LIKE_USER = (
    "user name {name} starts with '@', which access rules (auth.rules, auth.admins, auth.catalog) read as "
    "a group reference ('@group'): rename the user so it starts with a letter, digit, '_', '.', '+' or '-' "
    "('@' may follow later, as in 'ops@example.com'), and give a group's rights through auth.groups"
)


class SettingsError(ValueError):
    """Raised when stack settings are invalid; the message lists every problem and its fix."""


def _shown(value: object) -> str:
    """A configured value as an error message may show it: quoted, control characters escaped."""
    return repr(value)[:80]


def _check_dns_name(name: str) -> str:
    lowered = name.lower()
    lowered = lowered[:-1] if lowered.endswith(".") else lowered
    if not name.isascii() or not grammar.is_dns_name(lowered):
        if grammar.parse_ip(name) is not None:
            raise ValueError(f"{_shown(name)} is an IP address: list it under 'ips', where it goes into the certificate as one")
        raise ValueError(
            f"{_shown(name)} is not a valid DNS host name (ASCII letters, digits, '-' and '.', labels of 1-63 "
            "characters, not all digits); put IP addresses under 'ips' instead"
        )
    return lowered


def _check_ip(value: str, what: str) -> str:
    """The canonical text of an IP address setting (grammar.parse_ip), or a refusal saying
    what to write instead: the address without its zone id, or without brackets."""
    ip = grammar.parse_ip(value)
    if ip is not None:
        return ip
    if isinstance(value, str) and "%" in value:
        bare = grammar.parse_ip(value.split("%", 1)[0])
        instead = f": write {bare!r}" if bare else ": write the address alone"
        raise ValueError(
            f"{_shown(value)} carries a zone id ('%...'), which names a network interface of one host and means "
            f"nothing to clients or in a certificate{instead}"
        )
    if isinstance(value, str) and value.startswith("[") and value.endswith("]") and grammar.parse_ip(value[1:-1]):
        raise ValueError(f"{_shown(value)} is in brackets: write the IPv6 address without them "
                         f"({grammar.parse_ip(value[1:-1])!r}); the program adds them where a reader needs them")
    raise ValueError(f"{_shown(value)} is not an IPv4 or IPv6 address; {what}")


def _parse_duration_hours(value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("must be a duration like '36h', '30d' or '2w', not true/false")
    if isinstance(value, (int, float)):
        hours = float(value)
        if not math.isfinite(hours):
            raise ValueError("must be a finite duration like '30d'")
    elif isinstance(value, str):
        parsed = grammar.parse_duration_hours(value)
        if parsed is None:
            raise ValueError("must be a duration like '36h', '30d' or '2w'")
        hours = parsed
    else:
        raise ValueError("must be a duration like '36h', '30d' or '2w'")
    if hours <= 0:
        raise ValueError("must be a positive duration like '30d'")
    if hours > HOURS_MAX:
        raise ValueError(f"must be at most {HOURS_MAX} hours (100 years), e.g. '30d'")
    return hours


def _check_text(value: str, what: str, max_length: int) -> str:
    if not value or len(value) > max_length or grammar.has_control_character(value) or not value.isprintable():
        raise ValueError(f"must be 1 to {max_length} printable characters, without control characters ({what})")
    return value


def _ssh_option(option: str) -> str:
    return _check_text(option, "each one an ssh argument", 1024)


def _tag(tag: str) -> str:
    if not grammar.is_tag(tag):
        raise ValueError(f"{_shown(tag)} is not a valid tag (letters, digits, '_', '.', '-'; at most 128)")
    return tag


def _digest(digest: str) -> str:
    if not grammar.is_digest(digest):
        raise ValueError(f"{_shown(digest)} is not of the form sha256:<64 lowercase hex>")
    return digest


def _keep_pattern(pattern: str) -> str:
    try:
        grammar.compile_tag_pattern(pattern)
    except grammar.PatternError as exc:
        raise ValueError(f"keepPatterns entry {_shown(pattern)} is not a valid regular expression: {exc}") from None
    return pattern


def _user_name(name: str) -> str:
    if name.startswith(grammar.GROUP_PREFIX):
        raise ValueError(_GROUP_LIKE_USER.format(name=_shown(name)))
    if not grammar.is_user_name(name):
        raise ValueError(
            f"user name {_shown(name)} is not allowed: ASCII letters, digits, '_', '.', '@' (not first), '+', '-', "
            "1 to 64 characters; no ':', spaces, quotes, '#' or control characters "
            "(htpasswd and HTTP Basic auth split on ':', and a line starting with '#' is a comment)"
        )
    return name


# In a validator's message, stands for the setting's path (users.alice), which _format_error
# puts in; a NUL, so no configured value shown in a message (repr escapes it) can be taken for it.
_HERE = "\x00here\x00"


def _password(password: SecretStr) -> SecretStr:
    # The error's path names the user (users.<name>); the message never shows the password.
    secret = password.get_secret_value()
    if not secret:
        raise ValueError(f"the password is empty: set one with `pulumi config set --secret --path '{_HERE}' <password>`")
    if len(secret.encode("utf-8", "surrogatepass")) > 72:
        raise ValueError("the password is longer than 72 bytes, which bcrypt would silently truncate: "
                         "use at most 72 bytes")
    if grammar.has_control_character(secret) or any(0xD800 <= ord(c) <= 0xDFFF for c in secret):
        raise ValueError("the password contains a line break, NUL or other control character (HTTP Basic auth "
                         "and `docker login` cannot carry it): remove it")
    return password


@dataclass(config=_CONFIG)
class CertificateSettings:
    """Key algorithm and lifetimes of the CA and server certificates."""

    key_algorithm: Literal["ECDSA-P256", "ECDSA-P384", "RSA-2048", "RSA-3072", "RSA-4096", "ED25519"] = "ECDSA-P256"
    validity_hours: StrictInt = Field(default=2160, gt=0, le=HOURS_MAX)
    ca_validity_hours: StrictInt = Field(default=87600, gt=0, le=HOURS_MAX)
    renew_before_hours: StrictInt = Field(default=720, ge=0, le=HOURS_MAX)
    organization: StrictStr = "Private Registry"

    @field_validator("organization")
    @classmethod
    def _organization(cls, value: str) -> str:
        # The CA's common name is "<organization> CA", and X.509 bounds it to 64 characters.
        return _check_text(value, "the CA's common name is '<organization> CA', at most 64", X509_NAME_MAX - len(_CA_CN_SUFFIX))

    @model_validator(mode="after")
    def _windows_fit(self) -> "CertificateSettings":
        if self.renew_before_hours >= self.validity_hours:
            raise ValueError(
                "renewBeforeHours: must be smaller than certificate.validityHours, "
                "or the certificate would be renewed on every run"
            )
        if self.ca_validity_hours < self.validity_hours:
            raise ValueError(
                "caValidityHours: must be at least certificate.validityHours: "
                "a server certificate cannot outlive the CA that signs it"
            )
        return self

    @property
    def rotation_period_hours(self) -> int:
        return self.validity_hours - self.renew_before_hours


@dataclass(config=_CONFIG)
class ImageSettings:
    """Container images, pinned by digest (every host runs the same bytes)."""

    registry: StrictStr = DEFAULT_REGISTRY_IMAGE
    nginx: StrictStr = DEFAULT_NGINX_IMAGE
    redis: StrictStr = DEFAULT_REDIS_IMAGE
    # Distribution's major version (2 or 3) when the registry image's tag does not say it.
    registry_version: Optional[Literal[2, 3]] = None

    @field_validator("registry", "nginx", "redis")
    @classmethod
    def _reference(cls, value: str) -> str:
        if not grammar.is_image_reference(value):
            raise ValueError("is not an image reference like 'registry:2.8.3@sha256:<digest>'")
        if not grammar.is_pinned_image_reference(value):
            raise ValueError(
                "is not pinned by digest (a tag can move to other bytes): append '@sha256:<digest>', "
                "like 'registry:2.8.3@sha256:<digest>'"
            )
        return value

    @model_validator(mode="after")
    def _version_known(self) -> "ImageSettings":
        tagged = _tag_major(self.registry)
        if self.registry_version is not None and tagged in REGISTRY_VERSIONS and tagged != self.registry_version:
            raise ValueError(
                f"registryVersion: {self.registry_version} contradicts the registry image's tag, which names "
                f"distribution {tagged}: remove images.registryVersion or set it to {tagged}"
            )
        if self.registry_version is None and tagged not in REGISTRY_VERSIONS:
            tag = grammar.parse_image_reference(self.registry).tag
            named = f"its tag {tag!r} does not say" if tag else "it has no tag to say"
            raise ValueError(
                f"registry: {named} whether it is distribution 2 or 3 (their configs differ): set "
                "images.registryVersion to 2 or 3, or use a tag like 'registry:3.1.2@sha256:<digest>'"
            )
        return self

    @property
    def registry_major(self) -> int:
        """Distribution's major version, 2 or 3: ``registryVersion``, else the image's tag."""
        return self.registry_version if self.registry_version is not None else _tag_major(self.registry)


def _tag_major(reference: str) -> Optional[int]:
    """The major version an image reference's tag names (``3.1.2`` -> 3), or None."""
    parsed = grammar.parse_image_reference(reference)
    match = _VERSIONED_TAG.fullmatch(parsed.tag or "") if parsed else None
    return int(match["major"]) if match else None


@dataclass(config=_CONFIG)
class VolumeSettings:
    """The data volume that holds every image; it survives container replacement."""

    name: Optional[StrictStr] = None
    keep_on_destroy: StrictBool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: Optional[str]) -> Optional[str]:
        # Docker's volume names need at least two characters.
        if value is not None and (not grammar.is_docker_name(value) or len(value) < 2):
            raise ValueError(
                "must start with a letter or digit and hold only letters, digits, '_', '.' and '-' (2 to 128)"
            )
        return value


@dataclass(config=_CONFIG)
class DockerSettings:
    """Where the containers run: the local engine or a remote one over SSH."""

    host: StrictStr = "unix:///var/run/docker.sock"
    ssh_opts: tuple[Annotated[StrictStr, AfterValidator(_ssh_option)], ...] = ()

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        hostname = value.split("://", 1)[-1].rsplit("@", 1)[-1].split(":", 1)[0]
        if not grammar.is_docker_host(value) or (
            not value.startswith("unix:") and (len(hostname) > 253 or any(len(label) > 63 for label in hostname.split(".")))
        ):
            raise ValueError(
                "must be 'unix:///var/run/docker.sock', 'tcp://HOST:PORT' or 'ssh://USER@HOST' (port 1-65535, "
                "DNS labels of at most 63 characters)"
            )
        return value

    @model_validator(mode="after")
    def _ssh_opts_need_ssh(self) -> "DockerSettings":
        if self.ssh_opts and not self.host.startswith("ssh://"):
            raise ValueError("sshOpts: only apply to an ssh:// docker.host: remove them")
        return self


TrustKind = Literal["docker", "containerd", "podman", "system"]


@dataclass(config=_CONFIG)
class TrustTarget:
    """A client host whose trust stores get the registry's CA."""

    name: StrictStr
    host: StrictStr = "local"
    user: Optional[StrictStr] = None
    port: StrictInt = Field(default=22, ge=1, le=65535)
    private_key: Optional[SecretStr] = None
    password: Optional[SecretStr] = None
    kinds: tuple[TrustKind, ...] = ("docker",)
    sudo: StrictBool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not grammar.is_docker_name(value):
            raise ValueError("must hold only letters, digits, '_', '.' and '-', starting with a letter or digit")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if value == "local":
            return value
        ip = grammar.parse_ip(value)
        if ip is not None:
            return ip
        lowered = value.lower()
        if not value.isascii() or not grammar.is_dns_name(lowered):
            raise ValueError("must be 'local', a DNS host name or an IP address (no zone id)")
        return lowered

    @field_validator("user")
    @classmethod
    def _user(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not grammar.is_ssh_user(value):
            raise ValueError("must be a login name (a letter or '_', then letters, digits, '_', '.', '-'; at most 32)")
        return value

    @field_validator("private_key", "password")
    @classmethod
    def _credential(cls, value: Optional[SecretStr]) -> Optional[SecretStr]:
        if value is not None and "\x00" in value.get_secret_value():
            raise ValueError("holds a NUL character: give the key or password as it is")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "TrustTarget":
        if not self.kinds:
            raise ValueError("kinds: name at least one of docker, containerd, podman, system")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError("kinds: lists a kind twice: name each kind once")
        if self.is_local:
            given = [key for key, value in (("user", self.user), ("privateKey", self.private_key),
                                            ("password", self.password)) if value is not None]
            if given:
                raise ValueError(
                    f"{given[0]}: target '{self.name}' is local: {', '.join(given)} would be ignored; remove "
                    "them, or set 'host' to the client's address"
                )
        elif not self.user:
            raise ValueError(f"user: target '{self.name}' is remote ({self.host}): set 'user' for the SSH login")
        return self

    @property
    def is_local(self) -> bool:
        return self.host == "local"


@dataclass(config=_CONFIG)
class DeletionRule:
    """Tags or digests to delete from one repository (config: maintenance.deletions[])."""

    repository: StrictStr
    tags: tuple[Annotated[StrictStr, AfterValidator(_tag)], ...] = ()
    digests: tuple[Annotated[StrictStr, AfterValidator(_digest)], ...] = ()
    allow_shared_digest: StrictBool = False

    @model_validator(mode="after")
    def _valid(self) -> "DeletionRule":
        if not grammar.is_repository(self.repository):
            raise ValueError(
                f"repository: {_shown(self.repository)} is not a valid repository name (lowercase path "
                "components like 'team/app', at most 255 characters)"
            )
        if not self.tags and not self.digests:
            raise ValueError(f"rule for {_shown(self.repository)} names no tags and no digests")
        return self


@dataclass(config=_CONFIG)
class RetentionRule:
    """Keep rules for repositories matching a glob; every other tag is deleted."""

    repositories: StrictStr
    keep_last: Optional[StrictInt] = Field(default=None, ge=1, le=100_000)
    keep_patterns: tuple[Annotated[StrictStr, AfterValidator(_keep_pattern)], ...] = ()
    keep_younger_than_hours: Optional[float] = Field(default=None, alias="keepYoungerThan")
    # Signatures, attestations and SBOMs whose image is gone: deleted (true) or listed (false).
    delete_orphans: StrictBool = False

    @field_validator("repositories")
    @classmethod
    def _glob(cls, value: str) -> str:
        if not grammar.is_repository_glob(value):
            raise ValueError(
                "must be a glob over repository names, like 'team/*' (lowercase letters, digits, '.', '_', '/', "
                "'-', '*', '?'; 1 to 255 characters)"
            )
        return value

    @field_validator("keep_younger_than_hours", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Optional[float]:
        return _parse_duration_hours(value)

    @model_validator(mode="after")
    def _keeps_something(self) -> "RetentionRule":
        if self.keep_last is None and not self.keep_patterns and self.keep_younger_than_hours is None:
            raise ValueError(
                f"retention rule for {_shown(self.repositories)} keeps nothing: set keepLast, keepPatterns or "
                "keepYoungerThan (a rule that deletes every tag is refused)"
            )
        return self


@dataclass(config=_CONFIG)
class GcSettings:
    """Garbage collection after deletions (config: maintenance.gc)."""

    enabled: StrictBool = True
    mode: Literal["readonly", "stop", "dry-run"] = "readonly"
    delete_untagged: StrictBool = False


@dataclass(config=_CONFIG)
class MaintenanceSettings:
    """Deletions, retention and garbage collection (config: maintenance)."""

    deletions: tuple[DeletionRule, ...] = ()
    retention: tuple[RetentionRule, ...] = ()
    retention_dry_run: StrictBool = False
    gc: GcSettings = field(default_factory=GcSettings)

    @property
    def runs_gc(self) -> bool:
        """Whether a garbage collection (which connects to the Docker engine itself) is declared."""
        return bool(self.deletions or self.retention) and self.gc.enabled


@dataclass(config=_CONFIG)
class Settings:
    """Every stack setting, validated. Field names map to camelCase config keys."""

    stack: StrictStr
    now: float
    # Each name and address is checked on its own, so a refusal names its index (hosts[1]).
    hosts: tuple[Annotated[StrictStr, AfterValidator(lambda name: _check_dns_name(name))], ...] = ("localhost",)
    ips: tuple[Annotated[StrictStr, AfterValidator(lambda ip: _check_ip(ip, "put names under 'hosts'"))], ...] = (
        "127.0.0.1",)
    https_port: StrictInt = Field(default=443, ge=1, le=65535)
    bind_address: StrictStr = "0.0.0.0"
    users: dict[Annotated[StrictStr, AfterValidator(_user_name)], Annotated[SecretStr, AfterValidator(_password)]] = (
        field(default_factory=dict))
    default_user: StrictStr = "admin"
    min_password_length: StrictInt = Field(default=16, ge=1, le=72)
    generated_password_length: StrictInt = Field(default=32, ge=16, le=72)
    bcrypt_rounds: Optional[StrictInt] = Field(default=None, ge=4, le=17)  # None: see bcrypt_cost
    certificate: CertificateSettings = field(default_factory=CertificateSettings)
    ca_certificate_pem: Optional[StrictStr] = None
    ca_private_key_pem: Optional[SecretStr] = None
    images: ImageSettings = field(default_factory=ImageSettings)
    volume: VolumeSettings = field(default_factory=VolumeSettings)
    docker: DockerSettings = field(default_factory=DockerSettings)
    name_prefix: Optional[StrictStr] = None
    registry_host_port: Optional[StrictInt] = Field(default=None, ge=1, le=65535)
    trust: tuple[TrustTarget, ...] = ()
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    swarm: SwarmSettings = field(default_factory=SwarmSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    notifications: tuple[NotificationEndpoint, ...] = ()

    @field_validator("now")
    @classmethod
    def _now(cls, value: float) -> float:
        if not math.isfinite(value) or not 0 <= value < _LAST_DATE.timestamp():
            raise ValueError("the clock is not a time between 1970 and 9999")
        return value

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("lists a name twice: list each once")
        return value

    @field_validator("ips")
    @classmethod
    def _ips(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        ips = value
        if len(set(ips)) != len(ips):
            raise ValueError("lists an address twice: list each once")
        return ips

    @field_validator("bind_address")
    @classmethod
    def _bind(cls, value: str) -> str:
        return _check_ip(value, "it must be an IP address of the Docker host, e.g. 0.0.0.0 or 127.0.0.1")

    @field_validator("default_user")
    @classmethod
    def _default_user(cls, value: str) -> str:
        if value.startswith(grammar.GROUP_PREFIX):
            raise ValueError(_GROUP_LIKE_USER.format(name=_shown(value)))
        if not grammar.is_user_name(value):
            raise ValueError("must be a user name without ':', spaces, quotes, '#' or control characters "
                             "(ASCII letters, digits, '_', '.', '@' (not first), '+', '-')")
        return value

    @field_validator("name_prefix")
    @classmethod
    def _prefix(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and (not grammar.is_docker_name(value) or len(value) > 64):
            raise ValueError("must hold only letters, digits, '_', '.' and '-', starting with a letter or digit; at most 64")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> "Settings":
        problems = self._problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _problems(self) -> list[str]:
        """Checks across settings; each problem as 'setting.path: message'."""
        problems: list[str] = []
        if not self.hosts and not self.ips:
            problems.append("hosts: hosts and ips are both empty: the certificate needs at least one name")
        elif len(self.primary_host) > X509_NAME_MAX:
            problems.append(
                f"hosts[0]: the first name becomes the certificate's common name, which holds at most "
                f"{X509_NAME_MAX} characters: put a shorter name first"
            )
        for name, password in self.users.items():
            if len(password.get_secret_value()) < self.min_password_length:
                problems.append(
                    f"users.{name}: the password is shorter than minPasswordLength ({self.min_password_length}): "
                    "use a longer one, or lower minPasswordLength knowingly"
                )
        if self.registry_host_port is not None:
            problems.append(
                "registryHostPort: the registry listens only on a Unix socket shared with nginx, so there is "
                "no plain-HTTP port to publish: unset registryHostPort"
            )
        hours_left = (_LAST_DATE - datetime.fromtimestamp(self.now, timezone.utc)).total_seconds() / 3600
        if self.certificate.ca_validity_hours > hours_left:
            problems.append("certificate.caValidityHours: would end after the year 9999 (X.509's last date): use fewer hours")
        if (self.ca_certificate_pem is None) != (self.ca_private_key_pem is None):
            problems.append(
                f"{'caPrivateKeyPem' if self.ca_private_key_pem is None else 'caCertificatePem'}: "
                "caCertificatePem and caPrivateKeyPem go together: set both (bring your own CA) or neither"
            )
        elif self.ca_certificate_pem is not None and self.ca_private_key_pem is not None:
            try:
                canonical = check_own_ca(self.ca_certificate_pem, self.ca_private_key_pem.get_secret_value(),
                                         self.now, self.certificate.validity_hours)
                object.__setattr__(self, "ca_certificate_pem", canonical)
            except ValueError as exc:
                problems.append(str(exc))
        try:
            self.auth.check(self.user_names, users_configured=bool(self.users))
        except ValueError as exc:
            problems.append(str(exc))
        names = [t.name for t in self.trust]
        if len(set(names)) != len(names):
            problems.append("trust: target names must be unique; rename one of them")
        seen: dict[tuple, str] = {}
        for index, target in enumerate(self.trust):
            where = ("local",) if target.is_local else (target.host, target.port)
            if where in seen:
                problems.append(
                    f"trust[{index}].host: target '{target.name}' installs on the same host as '{seen[where]}' "
                    "(one manifest per host and registry): merge their kinds into one target"
                )
            seen.setdefault(where, target.name)
        try:
            check_scale(
                self.storage, self.redis, self.swarm, self.maintenance.gc.delete_untagged, self.maintenance.runs_gc
            )
        except ValueError as exc:
            problems.append(str(exc))
        if self.metrics.enabled and self.swarm.enabled:
            problems.append(
                "metrics.enabled: not supported in Swarm mode yet (each replica counts for itself and the proxy "
                "reaches one at a time); set metrics.enabled to false or run on one host"
            )
        if self.metrics.enabled and self.metrics.port == self.https_port:
            problems.append(f"metrics.port: {self.metrics.port} is the registry's httpsPort; choose another port")
        problems.extend(check_notifications(self.notifications))
        if self.docker.ssh_opts and self.maintenance.runs_gc:
            problems.append(
                "docker.sshOpts: garbage collection connects to the Docker engine without them: put the options "
                "in ~/.ssh/config for that host (both connections read it), or set maintenance.gc.enabled to false"
            )
        return problems

    # Derived values: one place, so every component agrees on them.
    @property
    def prefix(self) -> str:
        return self.name_prefix or f"registry-{self.stack}"

    @property
    def volume_name(self) -> str:
        return self.volume.name or f"{self.prefix}-data"

    @property
    def primary_host(self) -> str:
        return self.hosts[0] if self.hosts else self.ips[0]

    @property
    def address(self) -> str:
        """host:port as clients write it; the port is omitted for 443, as Docker does."""
        host = grammar.url_host(self.primary_host)
        return host if self.https_port == 443 else f"{host}:{self.https_port}"

    @property
    def metrics_address(self) -> str:
        """host:port of the metrics listener (components/metrics.py), as Prometheus writes it."""
        host = self.primary_host
        return f"[{host}]:{self.metrics.port}" if ":" in host else f"{host}:{self.metrics.port}"

    @property
    def user_names(self) -> tuple[str, ...]:
        return tuple(self.users) or (self.default_user,)

    @property
    def bcrypt_cost(self) -> int:
        """bcryptRounds, or the mode's default: 5 with basic auth (checked per request), 11 with tokens."""
        default = TOKEN_BCRYPT_ROUNDS if self.auth.token else DEFAULT_BCRYPT_ROUNDS
        return self.bcrypt_rounds if self.bcrypt_rounds is not None else default


# Settings whose values must be stored as Pulumi secrets, with what is secret in them.
_SECRET_KEYS = {
    "users": "passwords",
    "caPrivateKeyPem": "the CA private key",
}
_FIX = {
    "httpsPort": "use a TCP port between 1 and 65535, e.g. 443",
    "registryHostPort": "leave it unset (the registry has no plain-HTTP port)",
    "bcryptRounds": "use a bcrypt cost between 4 and 17 (default 11 in token mode, 5 in basic mode)",
    "auth.mode": "use token (default) or basic",
    "minPasswordLength": "use a whole number between 1 and 72 (default 16)",
    "generatedPasswordLength": "use a whole number between 16 and 72 (default 32)",
    "certificate.keyAlgorithm": "use one of ECDSA-P256, ECDSA-P384, RSA-2048, RSA-3072, RSA-4096, ED25519",
    "certificate.validityHours": "use a positive whole number of hours, e.g. 2160 (90 days)",
    "certificate.caValidityHours": "use a positive whole number of hours, e.g. 87600 (10 years)",
    "certificate.renewBeforeHours": "use zero or more whole hours, e.g. 720 (30 days)",
    "trust.kinds": "use docker, containerd, podman or system",
    "trust.port": "use the client's SSH port, 1-65535 (default 22)",
    "maintenance.gc.mode": "use readonly (default), stop or dry-run",
    "maintenance.retention.keepLast": "use a whole number of tags to keep, 1 or more, or leave it unset",
    "maintenance.retention.keepYoungerThan": "use a duration like '36h', '30d' or '2w', or leave it unset",
    "ips": "list IPv4 or IPv6 addresses, e.g. [127.0.0.1]; put names under 'hosts'",
    "bindAddress": "use an address of the Docker host, e.g. 0.0.0.0 (all) or 127.0.0.1 (this host only)",
    "caCertificatePem": "paste the CA certificate's PEM text, one -----BEGIN CERTIFICATE----- block",
    "caPrivateKeyPem": "paste the CA's unencrypted PEM private key, as a secret",
    **_SCALE_FIXES,
    **_NOTIFY_FIXES,
}
# pydantic's own words for a wrong type, made to say what the README promises.
_TYPE_MESSAGES = {
    "int_type": "must be a whole number (not text, true/false or a fraction)",
    "int_from_float": "must be a whole number (not text, true/false or a fraction)",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "tuple_type": "must be a list",
    "dict_type": "must be a map of names to values",
    "dataclass_type": "must be a map of settings (keys as in the README's settings table)",
}
# The fix for a wrong type, where a setting has none of its own in _FIX.
_TYPE_FIXES = {
    "int_type": "write a whole number, without quotes",
    "int_from_float": "write a whole number, without quotes",
    "bool_type": "write true or false, without quotes",
    "string_type": "write text (in JSON, in double quotes)",
    "tuple_type": "write a list, e.g. [\"a\", \"b\"]",
    "dict_type": "write a map, e.g. {\"name\": \"value\"}",
    "dataclass_type": "write a map of its settings, e.g. {\"key\": \"value\"}",
    "literal_error": "use one of the values named",
    "missing": "set it (see the README's settings table)",
    "extra_forbidden": "remove it or correct its spelling",
    "unexpected_keyword_argument": "remove it or correct its spelling",
}


def _part(item: object) -> str:
    text = str(item)
    # A key the user wrote (a typo, a user name) is shown escaped if it is not plain text.
    return text if text.isprintable() and text.isascii() else _shown(text)


def _location(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif str(item).startswith("function-") or item == "[key]":
            # A map key's own error: the path to the entry (users.<name>) names it.
            continue
        else:
            parts.append(("." if parts else "") + _part(item))
    return "".join(parts)


def _format_error(err: dict) -> list[str]:
    where = _location(err["loc"])
    # Never echo the input: it may be a password. pydantic puts it under 'input'.
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] in _TYPE_MESSAGES:
        message = _TYPE_MESSAGES[err["type"]]
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        message = "is not a known setting (typo? keys are camelCase); see the README's settings table"
    if err["type"] == "missing":
        message = "is required"
    message = message.replace(_HERE, where)
    out = []
    for line in message.split("\n"):
        here = where
        # Checks across fields name the field they blame first ("users: ..."): make it the path.
        # (A user's entry, users.<name>, holds the user name grammar's '@', '+' and '-' too.)
        blamed = re.match(r"^([A-Za-z][\w.\[\]@+-]*): (.*)$", line, re.S)
        if blamed:
            here = f"{where}.{blamed.group(1)}" if where else blamed.group(1)
            line = blamed.group(2)
        fix = _FIX.get(re.sub(r"\[\d+\]", "", here)) or (_TYPE_FIXES.get(err["type"]) if here == where else None)
        text = f"{PROJECT}:{here}: {line}" if here else f"{PROJECT}: {line}"
        out.append(f"{text}; fix: {fix}" if fix and fix not in text else text)
    return out


_ADAPTER = TypeAdapter(Settings)


def parse_settings(raw: dict[str, Any], *, stack: str, secret_keys: set[str] = frozenset(), now: float | None = None) -> Settings:
    """Validate raw config values (camelCase key -> value, keys without the project prefix).

    Raises SettingsError listing every problem, with the setting's name and the fix; no
    message ever contains a configured value of a secret setting. Types are strict: a number
    where a number is promised (no text, no true/false, no NaN), true/false for switches.
    """
    if not isinstance(raw, dict):
        raise SettingsError(f"invalid stack settings:\n  - {PROJECT}: the config must be a map of keys to values")
    problems: list[str] = []
    for key, value in raw.items():
        problems.extend(_repeated_keys(value, _part(key)))
    for key, what in _SECRET_KEYS.items():
        if raw.get(key) and key not in secret_keys:
            problems.append(
                f"{PROJECT}:{key}: holds {what} in plain text; fix: store it as a secret, "
                f"e.g. `pulumi config set --secret --path '{key}...'`"
            )
    targets = raw.get("trust")
    for index, target in enumerate(targets if isinstance(targets, list) else []):
        if isinstance(target, dict) and (target.get("privateKey") or target.get("password")) and "trust" not in secret_keys:
            problems.append(
                f"{PROJECT}:trust[{index}]: holds SSH credentials in plain text; fix: "
                f"`pulumi config set --secret --path 'trust[{index}].privateKey' ...`"
            )
    endpoints = raw.get("notifications")
    for index, endpoint in enumerate(endpoints if isinstance(endpoints, list) else []):
        if isinstance(endpoint, dict) and endpoint.get("headers") and "notifications" not in secret_keys:
            problems.append(
                f"{PROJECT}:notifications[{index}].headers: holds header values (tokens, keys) in plain text; fix: "
                f"`pulumi config set --secret --path 'notifications[{index}].headers.<Name>' ...`"
            )
    for key, paths in _SCALE_SECRET_PATHS.items():
        for path, what in paths:
            value = raw.get(key)
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            if value and key not in secret_keys:
                problems.append(
                    f"{PROJECT}:{key}.{'.'.join(path)}: holds {what} in plain text; fix: "
                    f"`pulumi config set --secret --path '{key}.{'.'.join(path)}' ...`"
                )
    data = dict(raw, stack=stack, now=time.time() if now is None else now)
    try:
        settings = _ADAPTER.validate_python(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        for err in exc.errors(include_input=False, include_url=False):
            problems.extend(_format_error(err))
        settings = None
    if problems:
        raise SettingsError("invalid stack settings:\n  - " + "\n  - ".join(problems))
    return settings


# Top-level settings Pulumi hands over as text although they are numbers.
_WHOLE_NUMBER_KEYS = frozenset(
    {"httpsPort", "registryHostPort", "minPasswordLength", "generatedPasswordLength", "bcryptRounds"}
)


def _constant(name: str) -> float:
    """NaN and Infinity in JSON text, as the floats they name: no setting takes one, so each is
    refused where it stands, naming its own path (refusing the whole text named only its key)."""
    return float(name)


class _RepeatedKeys(dict):
    """A JSON object that named some key more than once (``repeated``, in order): json.loads
    would keep the last value silently; parse_settings refuses it, naming the keys."""

    repeated: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> dict:
    counts: dict[str, int] = {}
    for key, _ in pairs:
        counts[key] = counts.get(key, 0) + 1
    repeated = tuple(key for key, count in counts.items() if count > 1)
    if not repeated:
        return dict(pairs)
    value = _RepeatedKeys(pairs)
    value.repeated = repeated
    return value


def _repeated_keys(value: Any, where: str) -> list[str]:
    """Every object in ``value`` (decoded from JSON text) that names a key twice, as problems
    'path: key'; never a value (it may be a password)."""
    problems: list[str] = []
    if isinstance(value, dict):
        for key in getattr(value, "repeated", ()):
            problems.append(
                f"{PROJECT}:{where}: names {_shown(key)} more than once (its JSON text would keep only the last "
                f"value, silently); fix: give each key once"
            )
        for key, item in value.items():
            problems.extend(_repeated_keys(item, f"{where}.{_part(key)}"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems.extend(_repeated_keys(item, f"{where}[{index}]"))
    return problems


def _decode(key: str, value: Any) -> Any:
    """Pulumi hands every config value over as a string; objects and lists arrive as JSON (NaN
    and Infinity refused), whole-number keys as decimal digits. Anything else stays text and
    is refused by the strict types if text is not what the key takes."""
    if not isinstance(value, str):
        return value
    if value[:1] in ("{", "["):
        try:
            return json.loads(value, parse_constant=_constant, object_pairs_hook=_object)
        except ValueError:
            return value
    if key in _WHOLE_NUMBER_KEYS and value.isascii() and value.isdigit() and len(value) <= 10:
        return int(value)
    return value


def load_settings(now: float | None = None) -> Settings:
    """Read this stack's config (the one place that does) and validate it."""
    from pulumi.runtime import config as runtime_config

    prefix = f"{PROJECT}:"
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    config = pulumi.Config(PROJECT)
    raw = {k[len(prefix):]: _decode(k[len(prefix):], config.get(k[len(prefix):])) for k in keys if k.startswith(prefix)}
    secret_keys = {k[len(prefix):] for k in keys if k.startswith(prefix) and pulumi.runtime.is_config_secret(k)}
    return parse_settings(raw, stack=pulumi.get_stack(), secret_keys=secret_keys, now=now)
