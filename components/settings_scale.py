"""Settings for outgrowing one host: object storage, the shared Redis cache and Swarm mode.

Typed, validated models that :mod:`components.settings` composes into its ``Settings``
(config keys ``storage``, ``redis`` and ``swarm``). Values are checked with the project's one
grammar (:mod:`components.grammar`); :func:`check_scale` holds the checks across them.
"""

from __future__ import annotations

from typing import Literal, Optional

from cryptography import x509
from pydantic import ConfigDict, Field, SecretStr, StrictBool, StrictInt, StrictStr, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic.dataclasses import dataclass

from components import grammar

_CONFIG = ConfigDict(alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid", frozen=True)

DEFAULT_REDIS_IMAGE = (
    "docker.io/library/redis:7.4-alpine"
    "@sha256:ff02b58f971e7d7d156a1267e283fcbbeee91773b6aa36c49dac28ecfe28eadf"
)

# Settings that hold secrets, by config key: (path inside the value, what it is).
SECRET_PATHS = {
    "storage": ((("s3", "accessKey"), "the S3 access key"), (("s3", "secretKey"), "the S3 secret key")),
    "redis": ((("password",), "the Redis password"),),
}

FIXES = {
    "storage.driver": "use filesystem (a Docker volume on the host, the default) or s3",
    "storage.s3.endpoint": "use http(s)://HOST[:PORT] of the S3 API, e.g. https://s3.example.com, or leave it unset for AWS",
    "storage.s3.bucket": "use 3-63 lowercase letters, digits, '.' and '-', e.g. registry-images",
    "storage.s3.region": "use a region name like us-east-1",
    "storage.s3.rootDirectory": "use a key prefix like /registry ('/'-separated, no '..')",
    "storage.s3.chunkSizeMib": "use at least 5 (S3's smallest multipart part), e.g. 10",
    "storage.s3.caCertificatePem": "paste the PEM certificates of the CA that signs the S3 endpoint's certificate",
    "redis.address": "use HOST:PORT of a Redis server, e.g. redis.internal:6379, or leave it unset for a Redis container",
    "redis.db": "use a database number between 0 and 15",
    "redis.maxMemoryMib": "use 16 or more MiB",
    "swarm.replicas": "use between 1 and 32 registry replicas",
}


def _check_credential(value: Optional[SecretStr], what: str) -> Optional[SecretStr]:
    # Never echo the value: it is a secret.
    if value is not None and not grammar.is_credential(value.get_secret_value()):
        raise ValueError(f"{what} must be 1-256 letters, digits or _.~+/=@:,- characters")
    return value


@dataclass(config=_CONFIG)
class S3Settings:
    """An S3-compatible bucket that holds every image (distribution's ``s3`` storage driver)."""

    bucket: StrictStr
    region: StrictStr = "us-east-1"
    # http(s)://host[:port] of an S3-compatible store; unset: AWS's endpoint for the region.
    endpoint: Optional[StrictStr] = None
    # Path-style URLs (http://host/bucket/key), which most S3-compatible stores need.
    path_style: StrictBool = False
    root_directory: Optional[StrictStr] = None
    # CA certificate(s) that sign the endpoint's TLS certificate, when not a public CA.
    ca_certificate_pem: Optional[StrictStr] = None
    access_key: Optional[SecretStr] = None
    secret_key: Optional[SecretStr] = None
    # Redirect blob downloads to the object store; off: clients may not reach it.
    redirect: StrictBool = False
    chunk_size_mib: StrictInt = Field(default=10, ge=5, le=5120)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not grammar.is_s3_bucket(value):
            raise ValueError("is not an S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not grammar.is_s3_region(value):
            raise ValueError("is not a region name like us-east-1")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and grammar.parse_endpoint(value) is None:
            raise ValueError("is not an http(s)://HOST[:PORT] URL")
        return value.rstrip("/") if value else value

    @field_validator("root_directory")
    @classmethod
    def _root(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not grammar.is_object_path(value):
            raise ValueError("is not a key prefix like /registry")
        return value

    @field_validator("ca_certificate_pem")
    @classmethod
    def _ca(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        try:
            certificates = x509.load_pem_x509_certificates(value.encode())
        except ValueError:
            raise ValueError("is not PEM certificates (-----BEGIN CERTIFICATE-----)") from None
        if not certificates:
            raise ValueError("holds no certificate")
        return value

    @field_validator("access_key")
    @classmethod
    def _access(cls, value: Optional[SecretStr]) -> Optional[SecretStr]:
        return _check_credential(value, "the access key")

    @field_validator("secret_key")
    @classmethod
    def _secret(cls, value: Optional[SecretStr]) -> Optional[SecretStr]:
        return _check_credential(value, "the secret key")

    @model_validator(mode="after")
    def _keys_together(self) -> "S3Settings":
        if (self.access_key is None) != (self.secret_key is None):
            missing = "secretKey" if self.secret_key is None else "accessKey"
            raise ValueError(
                f"{missing}: accessKey and secretKey go together: set both, or neither to use the host's IAM role"
            )
        if self.ca_certificate_pem is not None and not (self.endpoint or "").startswith("https://"):
            raise ValueError("caCertificatePem: is only used with an https:// endpoint: set endpoint to https://...")
        return self

    @property
    def secure(self) -> bool:
        return self.endpoint is None or self.endpoint.startswith("https://")


@dataclass(config=_CONFIG)
class StorageSettings:
    """Where the registry keeps blobs and manifests (config: storage)."""

    driver: Literal["filesystem", "s3"] = "filesystem"
    s3: Optional[S3Settings] = None

    @model_validator(mode="after")
    def _driver_matches(self) -> "StorageSettings":
        if self.driver == "s3" and self.s3 is None:
            raise ValueError("s3: driver is s3: set storage.s3.bucket (and endpoint, keys) for the bucket")
        if self.driver == "filesystem" and self.s3 is not None:
            raise ValueError("driver: storage.s3 is set but driver is filesystem: set driver to s3, or remove storage.s3")
        return self


@dataclass(config=_CONFIG)
class RedisSettings:
    """The Redis blob-descriptor cache every replica shares (config: redis).

    ``enabled`` unset means: on whenever there is more than one replica. Without ``address``
    the program runs a Redis container (password generated); with it, an external server.
    """

    enabled: Optional[StrictBool] = None
    address: Optional[StrictStr] = None
    password: Optional[SecretStr] = None
    db: StrictInt = Field(default=0, ge=0, le=15)
    max_memory_mib: StrictInt = Field(default=256, ge=16, le=1 << 20)

    @field_validator("address")
    @classmethod
    def _address(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and grammar.parse_host_port(value) is None:
            raise ValueError("is not HOST:PORT")
        return value

    @field_validator("password")
    @classmethod
    def _password(cls, value: Optional[SecretStr]) -> Optional[SecretStr]:
        return _check_credential(value, "the password")

    @model_validator(mode="after")
    def _password_for_external(self) -> "RedisSettings":
        if self.password is not None and self.address is None:
            raise ValueError(
                "password: is only for an external Redis (redis.address); the program's own Redis gets a generated one"
            )
        return self

    @property
    def external(self) -> bool:
        return self.address is not None


@dataclass(config=_CONFIG)
class SwarmSettings:
    """Swarm mode: the registry as a replicated service on an existing swarm (config: swarm).

    ``docker.host`` must be a manager of that swarm; joining nodes stays the operator's job.
    """

    enabled: StrictBool = False
    replicas: StrictInt = Field(default=2, ge=1, le=32)


def redis_enabled(redis: RedisSettings, swarm: SwarmSettings) -> bool:
    """Whether the registry uses the Redis cache: as set, or on with more than one replica."""
    if redis.enabled is not None:
        return redis.enabled
    return redis.external or (swarm.enabled and swarm.replicas > 1)


def check_scale(
    storage: StorageSettings, redis: RedisSettings, swarm: SwarmSettings, delete_untagged: bool = False,
    runs_gc: bool = False,
) -> None:
    """Checks across storage, cache and Swarm settings; raises ValueError naming the setting."""
    if runs_gc and not swarm.enabled and redis_enabled(redis, swarm):
        raise ValueError(
            "redis.enabled: garbage collection on one host restarts the registry but does not empty the "
            "Redis cache, which would then describe deleted blobs: use the Redis cache in Swarm mode (its "
            "collection flushes it), or set maintenance.gc.enabled to false"
        )
    if swarm.enabled and delete_untagged:
        raise ValueError(
            "maintenance.gc.deleteUntagged: is not supported in Swarm mode (garbage collection there "
            "removes what deletions and retention left unreferenced): set it false"
        )
    if swarm.enabled and storage.driver != "s3":
        raise ValueError(
            "storage.driver: Swarm mode needs storage.driver s3: a filesystem volume lives on one node, "
            "and every replica must see the same images"
        )
    if swarm.enabled and swarm.replicas > 1 and redis.enabled is False:
        raise ValueError(
            "redis.enabled: more than one replica needs the shared Redis cache (an in-memory cache per "
            "replica serves stale descriptors after deletions): remove redis.enabled or set it true"
        )
    if redis.enabled is False and redis.address is not None:
        raise ValueError("redis.address: is set but redis.enabled is false: remove one of them")
