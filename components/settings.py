"""Stack settings: read once from Pulumi config into typed, validated objects.

This is the only module that touches ``pulumi.Config``. Everything else receives a
:class:`Settings`. Validation happens here, before any resource is declared, so a bad value
fails ``pulumi preview`` with a message that names the setting and says how to fix it.

Config keys live in the project namespace (``private-registry:<key>``) and are camelCase.
Unknown keys are refused, so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from dataclasses import field
from typing import Any, Literal, Optional

import pulumi
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic.dataclasses import dataclass

from components.settings_scale import (
    DEFAULT_REDIS_IMAGE,
    FIXES as _SCALE_FIXES,
    SECRET_PATHS as _SCALE_SECRET_PATHS,
    RedisSettings,
    StorageSettings,
    SwarmSettings,
    check_scale,
)

PROJECT = "private-registry"

DEFAULT_REGISTRY_IMAGE = (
    "docker.io/library/registry:2.8.3"
    "@sha256:a3d8aaa63ed8681a604f1dea0aa03f100d5895b6a58ace528858a7b332415373"
)
DEFAULT_NGINX_IMAGE = (
    "docker.io/library/nginx:1.28-alpine"
    "@sha256:a8b39bd9cf0f83869a2162827a0caf6137ddf759d50a171451b335cecc87d236"
)

# bcrypt cost 5: nginx checks the password on every request, blocking its event loop; see
# the README's "Why bcrypt cost 5 and 32-character passwords" for what this costs an attacker.
DEFAULT_BCRYPT_ROUNDS = 5

_CONFIG = ConfigDict(
    alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
)

_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
# Docker image reference: [registry/]path[:tag][@sha256:<64 hex>] (distribution's grammar, simplified).
_IMAGE_REF = re.compile(
    r"^(?:[a-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([hdw])$")


class SettingsError(ValueError):
    """Raised when stack settings are invalid; the message lists every problem and its fix."""


def _check_dns_name(name: str) -> str:
    lowered = name.lower().rstrip(".")
    if not lowered or len(lowered) > 253 or not all(_DNS_LABEL.match(label) for label in lowered.split(".")):
        raise ValueError(
            f"'{name}' is not a valid DNS host name (letters, digits, '-' and '.', labels of 1-63 characters); "
            "put IP addresses under 'ips' instead"
        )
    return lowered


def _parse_duration_hours(value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        hours = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if not match:
            raise ValueError("must be a duration like '36h', '30d' or '2w'")
        hours = float(match.group(1)) * {"h": 1, "d": 24, "w": 168}[match.group(2)]
    if hours <= 0:
        raise ValueError("must be a positive duration like '30d'")
    return hours


def _check_own_ca(cert_pem: str, key_pem: str) -> None:
    """A brought CA must be a CA certificate whose key is the one given (never echo the key)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError as exc:
        raise ValueError("caCertificatePem: is not a PEM certificate (-----BEGIN CERTIFICATE-----)") from exc
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError("caCertificatePem: is not a CA certificate (basicConstraints CA:TRUE): it cannot sign")
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        # The parser's message could quote the key material: keep only a fixed text.
        raise ValueError("caPrivateKeyPem: is not an unencrypted PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, public) != cert.public_key().public_bytes(
        serialization.Encoding.PEM, public
    ):
        raise ValueError("caPrivateKeyPem: is not the private key of caCertificatePem: give the matching pair")


@dataclass(config=_CONFIG)
class CertificateSettings:
    """Key algorithm and lifetimes of the CA and server certificates."""

    key_algorithm: Literal["ECDSA-P256", "ECDSA-P384", "RSA-2048", "RSA-3072", "RSA-4096", "ED25519"] = "ECDSA-P256"
    validity_hours: int = Field(default=2160, gt=0)
    ca_validity_hours: int = Field(default=87600, gt=0)
    renew_before_hours: int = Field(default=720, ge=0)
    organization: str = "Private Registry"

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
    """Container images, pinned by tag and digest by default."""

    registry: str = DEFAULT_REGISTRY_IMAGE
    nginx: str = DEFAULT_NGINX_IMAGE
    redis: str = DEFAULT_REDIS_IMAGE

    @field_validator("registry", "nginx", "redis")
    @classmethod
    def _reference(cls, value: str) -> str:
        if not _IMAGE_REF.match(value):
            raise ValueError("is not an image reference like 'registry:2.8.3@sha256:<digest>'")
        return value


@dataclass(config=_CONFIG)
class VolumeSettings:
    """The data volume that holds every image; it survives container replacement."""

    name: Optional[str] = None
    keep_on_destroy: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _DOCKER_NAME.match(value):
            raise ValueError("must start with a letter or digit and hold only letters, digits, '_', '.' and '-'")
        return value


@dataclass(config=_CONFIG)
class DockerSettings:
    """Where the containers run: the local engine or a remote one over SSH."""

    host: str = "unix:///var/run/docker.sock"
    ssh_opts: tuple[str, ...] = ()

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not re.match(r"^(unix:///\S+|tcp://[\w.-]+:\d+|ssh://([\w.-]+@)?[\w.-]+(:\d+)?)$", value):
            raise ValueError("must be 'unix:///var/run/docker.sock', 'tcp://HOST:PORT' or 'ssh://USER@HOST'")
        return value


@dataclass(config=_CONFIG)
class TrustTarget:
    """A client host whose trust stores get the registry's CA."""

    name: str
    host: str = "local"
    user: Optional[str] = None
    port: int = Field(default=22, ge=1, le=65535)
    private_key: Optional[SecretStr] = None
    password: Optional[SecretStr] = None
    kinds: tuple[Literal["docker", "containerd", "podman", "system"], ...] = ("docker",)
    sudo: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _DOCKER_NAME.match(value):
            raise ValueError("must hold only letters, digits, '_', '.' and '-'")
        return value

    @model_validator(mode="after")
    def _remote_needs_user(self) -> "TrustTarget":
        if not self.kinds:
            raise ValueError("kinds: name at least one of docker, containerd, podman, system")
        if self.host != "local" and not self.user:
            raise ValueError(f"user: target '{self.name}' is remote ({self.host}): set 'user' for the SSH login")
        return self

    @property
    def is_local(self) -> bool:
        return self.host == "local"


@dataclass(config=_CONFIG)
class DeletionRule:
    """Tags or digests to delete from one repository (config: maintenance.deletions[])."""

    repository: str
    tags: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    allow_shared_digest: bool = False

    @model_validator(mode="after")
    def _valid(self) -> "DeletionRule":
        if not _REPOSITORY.match(self.repository):
            raise ValueError(f"repository '{self.repository}' is not a valid repository name (lowercase, e.g. 'team/app')")
        for tag in self.tags:
            if not _TAG.match(tag):
                raise ValueError(f"tag '{tag}' is not a valid tag (letters, digits, '_', '.', '-'; at most 128)")
        for digest in self.digests:
            if not _DIGEST.match(digest):
                raise ValueError(f"digest '{digest}' is not of the form sha256:<64 lowercase hex>")
        if not self.tags and not self.digests:
            raise ValueError(f"rule for '{self.repository}' names no tags and no digests")
        return self


@dataclass(config=_CONFIG)
class RetentionRule:
    """Keep rules for repositories matching a pattern; every other tag is deleted."""

    repositories: str
    keep_last: Optional[int] = Field(default=None, ge=0)
    keep_patterns: tuple[str, ...] = ()
    keep_younger_than_hours: Optional[float] = Field(default=None, alias="keepYoungerThan")

    @field_validator("keep_younger_than_hours", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Optional[float]:
        return _parse_duration_hours(value)

    @field_validator("keep_patterns")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"keepPatterns entry '{pattern}' is not a valid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _keeps_something(self) -> "RetentionRule":
        if self.keep_last is None and not self.keep_patterns and self.keep_younger_than_hours is None:
            raise ValueError(
                f"retention rule for '{self.repositories}' keeps nothing: set keepLast, keepPatterns or "
                "keepYoungerThan (a rule that deletes every tag is refused)"
            )
        return self


@dataclass(config=_CONFIG)
class GcSettings:
    """Garbage collection after deletions (config: maintenance.gc)."""

    enabled: bool = True
    mode: Literal["readonly", "stop", "dry-run"] = "readonly"
    delete_untagged: bool = False


@dataclass(config=_CONFIG)
class MaintenanceSettings:
    """Deletions, retention and garbage collection (config: maintenance)."""

    deletions: tuple[DeletionRule, ...] = ()
    retention: tuple[RetentionRule, ...] = ()
    retention_dry_run: bool = False
    gc: GcSettings = field(default_factory=GcSettings)


@dataclass(config=_CONFIG)
class Settings:
    """Every stack setting, validated. Field names map to camelCase config keys."""

    stack: str
    now: float
    hosts: tuple[str, ...] = ("localhost",)
    ips: tuple[str, ...] = ("127.0.0.1",)
    https_port: int = Field(default=443, ge=1, le=65535)
    bind_address: str = "0.0.0.0"
    users: dict[str, SecretStr] = field(default_factory=dict)
    default_user: str = "admin"
    min_password_length: int = Field(default=16, ge=1, le=72)
    generated_password_length: int = Field(default=32, ge=16, le=72)
    bcrypt_rounds: int = Field(default=DEFAULT_BCRYPT_ROUNDS, ge=4, le=17)
    certificate: CertificateSettings = field(default_factory=CertificateSettings)
    ca_certificate_pem: Optional[str] = None
    ca_private_key_pem: Optional[SecretStr] = None
    images: ImageSettings = field(default_factory=ImageSettings)
    volume: VolumeSettings = field(default_factory=VolumeSettings)
    docker: DockerSettings = field(default_factory=DockerSettings)
    name_prefix: Optional[str] = None
    registry_host_port: Optional[int] = Field(default=None, ge=1, le=65535)
    trust: tuple[TrustTarget, ...] = ()
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    swarm: SwarmSettings = field(default_factory=SwarmSettings)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_dns_name(name) for name in value)

    @field_validator("ips")
    @classmethod
    def _ips(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for ip in value:
            try:
                out.append(str(ipaddress.ip_address(ip)))
            except ValueError as exc:
                raise ValueError(f"'{ip}' is not an IPv4 or IPv6 address") from exc
        return tuple(out)

    @field_validator("bind_address")
    @classmethod
    def _bind(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError as exc:
            raise ValueError("must be an IP address of the Docker host, e.g. 0.0.0.0 or 127.0.0.1") from exc

    @field_validator("users")
    @classmethod
    def _users(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, password in value.items():
            if not name or ":" in name or any(c.isspace() or ord(c) < 32 for c in name) or len(name) > 255:
                raise ValueError(
                    f"user name '{name}' is not allowed: no ':', spaces or control characters "
                    "(htpasswd and HTTP Basic auth split on ':')"
                )
            secret = password.get_secret_value()
            if not secret:
                raise ValueError(f"password of user '{name}' is empty: set one with "
                                 f"`pulumi config set --secret --path 'users.{name}' <password>`")
            if len(secret.encode()) > 72:
                raise ValueError(f"password of user '{name}' is longer than 72 bytes, which bcrypt would "
                                 "silently truncate: use at most 72 bytes")
            if "\n" in secret or "\r" in secret:
                raise ValueError(f"password of user '{name}' contains a line break: remove it")
        return value

    @field_validator("default_user")
    @classmethod
    def _default_user(cls, value: str) -> str:
        if not value or ":" in value or any(c.isspace() for c in value):
            raise ValueError("must be a user name without ':' or spaces")
        return value

    @field_validator("name_prefix")
    @classmethod
    def _prefix(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _DOCKER_NAME.match(value):
            raise ValueError("must hold only letters, digits, '_', '.' and '-'")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> "Settings":
        if not self.hosts and not self.ips:
            raise ValueError("hosts: hosts and ips are both empty: the certificate needs at least one name")
        short = [n for n, p in self.users.items() if len(p.get_secret_value()) < self.min_password_length]
        if short:
            raise ValueError(
                f"users: password of {', '.join(repr(n) for n in short)} is shorter than minPasswordLength "
                f"({self.min_password_length}): use a longer one, or lower minPasswordLength knowingly"
            )
        if (self.ca_certificate_pem is None) != (self.ca_private_key_pem is None):
            raise ValueError(
                f"{'caPrivateKeyPem' if self.ca_private_key_pem is None else 'caCertificatePem'}: "
                "caCertificatePem and caPrivateKeyPem go together: set both (bring your own CA) or neither"
            )
        if self.ca_certificate_pem is not None and self.ca_private_key_pem is not None:
            _check_own_ca(self.ca_certificate_pem, self.ca_private_key_pem.get_secret_value())
        names = [t.name for t in self.trust]
        if len(set(names)) != len(names):
            raise ValueError("trust: target names must be unique; rename one of them")
        check_scale(self.storage, self.redis, self.swarm, self.maintenance.gc.delete_untagged)
        return self

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
        host = self.primary_host
        if ":" in host:
            host = f"[{host}]"
        return host if self.https_port == 443 else f"{host}:{self.https_port}"

    @property
    def user_names(self) -> tuple[str, ...]:
        return tuple(self.users) or (self.default_user,)


# Settings whose values must be stored as Pulumi secrets, with what is secret in them.
_SECRET_KEYS = {
    "users": "passwords",
    "caPrivateKeyPem": "the CA private key",
}
_FIX = {
    "httpsPort": "use a TCP port between 1 and 65535, e.g. 443",
    "registryHostPort": "use a TCP port between 1 and 65535, or leave it unset",
    "bcryptRounds": "use a bcrypt cost between 4 and 17 (default 5)",
    "certificate.keyAlgorithm": "use one of ECDSA-P256, ECDSA-P384, RSA-2048, RSA-3072, RSA-4096, ED25519",
    "certificate.validityHours": "use a positive number of hours, e.g. 2160 (90 days)",
    "certificate.caValidityHours": "use a positive number of hours, e.g. 87600 (10 years)",
    "certificate.renewBeforeHours": "use zero or more hours, e.g. 720 (30 days)",
    "trust.kinds": "use docker, containerd, podman or system",
    "maintenance.gc.mode": "use readonly (default), stop or dry-run",
    "ips": "list IPv4 or IPv6 addresses, e.g. [127.0.0.1]; put names under 'hosts'",
    "bindAddress": "use an address of the Docker host, e.g. 0.0.0.0 (all) or 127.0.0.1 (this host only)",
    **_SCALE_FIXES,
}


def _location(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("function-after", "function-before") or str(item).startswith("function-"):
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _format_error(err: dict, secret_keys: set[str]) -> str:
    where = _location(err["loc"])
    # Never echo the input: it may be a password. pydantic puts it under 'input'.
    message = err["msg"].removeprefix("Value error, ")
    # Checks across fields name the field they blame first ("users: ..."): make it the path.
    blamed = re.match(r"^([A-Za-z][\w.]*): (.*)$", message, re.S)
    if blamed:
        where = f"{where}.{blamed.group(1)}" if where else blamed.group(1)
        message = blamed.group(2)
    fix_key = re.sub(r"\[\d+\]", "", where)
    fix = _FIX.get(fix_key)
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        message = "is not a known setting (typo?); see the README's settings table"
    if err["type"] == "missing":
        message = "is required"
    text = f"{PROJECT}:{where}: {message}" if where else f"{PROJECT}: {message}"
    return f"{text}; fix: {fix}" if fix and fix not in text else text


_ADAPTER = TypeAdapter(Settings)


def parse_settings(raw: dict[str, Any], *, stack: str, secret_keys: set[str] = frozenset(), now: float | None = None) -> Settings:
    """Validate raw config values (key -> value, keys without the project prefix).

    Raises SettingsError listing every problem, with the setting's name and the fix; no
    message ever contains a configured value of a secret setting.
    """
    problems: list[str] = []
    for key, what in _SECRET_KEYS.items():
        if raw.get(key) and key not in secret_keys:
            problems.append(
                f"{PROJECT}:{key}: holds {what} in plain text; fix: store it as a secret, "
                f"e.g. `pulumi config set --secret --path '{key}...'`"
            )
    for index, target in enumerate(raw.get("trust") or []):
        if isinstance(target, dict) and (target.get("privateKey") or target.get("password")) and "trust" not in secret_keys:
            problems.append(
                f"{PROJECT}:trust[{index}]: holds SSH credentials in plain text; fix: "
                f"`pulumi config set --secret --path 'trust[{index}].privateKey' ...`"
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
        settings = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems.extend(_format_error(err, secret_keys) for err in exc.errors(include_input=False))
        settings = None
    if problems:
        raise SettingsError("invalid stack settings:\n  - " + "\n  - ".join(problems))
    return settings


def _decode(value: Any) -> Any:
    # Pulumi hands every config value over as a string; objects and lists arrive as JSON.
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def load_settings(now: float | None = None) -> Settings:
    """Read this stack's config (the one place that does) and validate it."""
    from pulumi.runtime import config as runtime_config

    prefix = f"{PROJECT}:"
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    config = pulumi.Config(PROJECT)
    raw = {k[len(prefix):]: _decode(config.get(k[len(prefix):])) for k in keys if k.startswith(prefix)}
    secret_keys = {k[len(prefix):] for k in keys if k.startswith(prefix) and pulumi.runtime.is_config_secret(k)}
    return parse_settings(raw, stack=pulumi.get_stack(), secret_keys=secret_keys, now=now)
