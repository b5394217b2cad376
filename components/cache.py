"""The Redis blob-descriptor cache the registry's replicas share, and the registry's storage wiring.

:class:`RedisCache` runs the program's own Redis container on the registry's network (a cache
only: no persistence, ``allkeys-lru`` at its memory limit, a generated password).
:func:`storage_wiring` turns the storage and cache settings into what the registry container
carries: the config sections (secret), the S3 endpoint's CA file and the environment that
makes the registry trust it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker

from components.registry import RESTART_POLICY
from components.render.storage import (
    REDIS_CONF_PATH,
    REDIS_PORT,
    S3_CA_ENV,
    S3_CA_PATH,
    redis_cache,
    render_redis_conf,
    s3_storage,
)
from components.settings_scale import RedisSettings, StorageSettings

REDIS_ALIAS = "redis"


@dataclass
class RedisCacheArgs:
    prefix: str
    image: str
    network_name: pulumi.Input[str]
    password: pulumi.Input[str]
    max_memory_mib: int = 256


class RedisCache(pulumi.ComponentResource):
    """A Redis container reachable as ``redis:6379`` on the registry's network, with ``password``."""

    address: pulumi.Output[str]
    password: pulumi.Output[str]
    container_name: pulumi.Output[str]

    def __init__(self, name: str, args: RedisCacheArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:cache:RedisCache", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        conf = pulumi.Output.secret(
            pulumi.Output.from_input(args.password).apply(lambda p: render_redis_conf(password=p, max_memory_mib=args.max_memory_mib))
        )
        image = docker.RemoteImage(f"{name}-image", name=args.image, keep_locally=True, opts=child)
        container = docker.Container(
            f"{name}-container",
            name=f"{args.prefix}-redis",
            image=image.image_id,
            restart=RESTART_POLICY,
            command=["redis-server", REDIS_CONF_PATH],
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.network_name, aliases=[REDIS_ALIAS])],
            uploads=[docker.ContainerUploadArgs(file=REDIS_CONF_PATH, content=conf, permissions="0644")],
            # redis-cli exits 0 whenever the server answers (NOAUTH included): a liveness check
            # that never puts the password on a command line.
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=["CMD", "redis-cli", "ping"], interval="10s", timeout="5s", retries=3, start_period="5s"
            ),
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        self.address = pulumi.Output.from_input(f"{REDIS_ALIAS}:{REDIS_PORT}")
        self.password = pulumi.Output.secret(args.password)
        self.container_name = container.name
        self.register_outputs(
            {"address": self.address, "password": self.password, "container_name": self.container_name}
        )


@dataclass
class StorageWiring:
    """What the registry carries for its storage and cache settings."""

    storage: Optional[pulumi.Output[dict]]  # secret: may hold the S3 keys
    redis: Optional[pulumi.Output[dict]]  # secret: holds the Redis password
    redirect: bool
    uploads: list  # (path, content) of files the registry needs
    envs: list[str]


def storage_wiring(
    storage: StorageSettings,
    redis: RedisSettings,
    *,
    use_redis: bool,
    registry_version: int,
    redis_address: Optional[pulumi.Input[str]] = None,
    redis_password: Optional[pulumi.Input[str]] = None,
) -> StorageWiring:
    """Config sections, files and environment for ``storage`` and, when ``use_redis``, the cache.

    ``redis_address``/``redis_password``: of the program's own Redis; an external one comes
    from the settings. The registry's environment never holds AWS_CA_BUNDLE (distribution's
    AWS SDK panics on some values); a CA for the endpoint goes in through SSL_CERT_DIR.
    """
    storage_out = None
    uploads: list = []
    envs: list[str] = []
    redirect = False
    if storage.driver == "s3" and storage.s3 is not None:
        s3 = storage.s3
        section = s3_storage(
            s3,
            access_key=s3.access_key.get_secret_value() if s3.access_key else None,
            secret_key=s3.secret_key.get_secret_value() if s3.secret_key else None,
        )
        storage_out = pulumi.Output.secret(section)
        redirect = s3.redirect
        if s3.ca_certificate_pem:
            uploads.append((S3_CA_PATH, s3.ca_certificate_pem))
            envs.append(S3_CA_ENV)
    redis_out = None
    if use_redis:
        if redis.external:
            address: pulumi.Input[str] = redis.address
            password: pulumi.Input = redis.password.get_secret_value() if redis.password else None
        else:
            address, password = redis_address, redis_password
        redis_out = pulumi.Output.secret(
            pulumi.Output.all(address, password).apply(
                lambda values: redis_cache(address=values[0], password=values[1], db=redis.db,
                                           registry_version=registry_version)
            )
        )
    return StorageWiring(storage=storage_out, redis=redis_out, redirect=redirect, uploads=uploads, envs=envs)
