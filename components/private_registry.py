"""PrivateRegistry: the one top-level component, wiring every part into one graph."""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from components.cache import RedisCache, RedisCacheArgs, storage_wiring

from components.client_trust import ClientTrust, ClientTrustArgs
from components.maintenance import Maintenance, MaintenanceArgs
from components.metrics import Metrics, MetricsArgs, metrics_paths, routes
from components.pki import CertificateAuthority, CertificateAuthorityArgs, ServerCertificate, ServerCertificateArgs
from components.proxy import Proxy, ProxyArgs, ProxyMetrics
from components.registry import Registry, RegistryArgs
from components.render.notifications import notifications_section
from components.render.token_service import registry_token_auth
from components.settings import Settings
from components.settings_scale import redis_enabled
from components.swarm import SwarmRegistry, SwarmRegistryArgs, SwarmTokenArgs, swarm_garbage_collection
from components.token_auth import TokenAuth, TokenAuthArgs, TokenSigner, TokenSignerArgs
from components.users import Htpasswd, HtpasswdArgs


# The stack's outputs (``pulumi stack output NAME``): export name -> PrivateRegistry attribute.
EXPORTS = {
    "registryAddress": "address",
    "caCertificatePem": "ca_certificate_pem",
    "serverCertificateExpiry": "server_certificate_expiry",
    "userNames": "user_names",
    "passwords": "passwords",
    "loginCommand": "login_command",
    "volumeName": "volume_name",
    "pendingDeletions": "pending_deletions",
    "deletedTags": "deleted_tags",
    "garbageCollection": "garbage_collection",
    "metrics": "metrics",
    "metricsPassword": "metrics_password",
}


@dataclass
class PrivateRegistryArgs:
    settings: Settings


class PrivateRegistry(pulumi.ComponentResource):
    """A TLS, password-protected registry on one Docker host, plus client trust and maintenance."""

    address: pulumi.Output[str]
    ca_certificate_pem: pulumi.Output[str]
    server_certificate_expiry: pulumi.Output[str]
    user_names: pulumi.Output[list]
    passwords: pulumi.Output[dict]
    login_command: pulumi.Output[str]
    volume_name: pulumi.Output[str]
    pending_deletions: pulumi.Output[list]
    deleted_tags: pulumi.Output[list]
    garbage_collection: pulumi.Output[Optional[dict]]
    metrics: pulumi.Output[Optional[dict]]
    metrics_password: pulumi.Output[Optional[str]]

    def __init__(self, name: str, args: PrivateRegistryArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:index:PrivateRegistry", name, None, opts)
        s = args.settings
        docker_provider = docker.Provider(
            f"{name}-docker", host=s.docker.host, ssh_opts=list(s.docker.ssh_opts) or None,
            opts=pulumi.ResourceOptions(parent=self),
        )
        on_docker = pulumi.ResourceOptions(parent=self, providers={"docker": docker_provider})
        child = pulumi.ResourceOptions(parent=self)

        ca = CertificateAuthority(
            f"{name}-ca",
            CertificateAuthorityArgs(
                certificate=s.certificate,
                ca_cert_pem=s.ca_certificate_pem,
                ca_private_key_pem=(
                    pulumi.Output.secret(s.ca_private_key_pem.get_secret_value()) if s.ca_private_key_pem else None
                ),
            ),
            opts=child,
        )
        server_cert = ServerCertificate(
            f"{name}-server",
            ServerCertificateArgs(
                certificate=s.certificate,
                dns_names=s.hosts,
                ip_addresses=s.ips,
                ca_cert_pem=ca.cert_pem,
                ca_private_key_pem=ca.private_key_pem,
                now=s.now,
            ),
            opts=child,
        )
        metrics = Metrics(
            f"{name}-metrics",
            MetricsArgs(settings=s.metrics, certificate_expiry=server_cert.expiry,
                        renew_before_hours=s.certificate.renew_before_hours, bcrypt_rounds=s.bcrypt_cost),
            opts=child,
        ) if s.metrics.enabled else None
        users = Htpasswd(
            f"{name}-users",
            HtpasswdArgs(
                passwords={u: pulumi.Output.secret(p.get_secret_value()) for u, p in s.users.items()},
                default_user=s.default_user,
                generated_password_length=s.generated_password_length,
                bcrypt_rounds=s.bcrypt_cost,
            ),
            opts=child,
        )
        token = s.auth.token
        signer = (
            TokenSigner(f"{name}-token-signer", TokenSignerArgs(prefix=s.prefix, certificate=s.certificate, now=s.now),
                        opts=child)
            if token else None
        )
        use_redis = redis_enabled(s.redis, s.swarm)
        own_redis_password = (
            random.RandomPassword(f"{name}-redis-password", length=32, special=False, opts=child)
            if use_redis and not s.redis.external
            else None
        )
        wiring = storage_wiring(
            s.storage, s.redis, use_redis=use_redis, registry_version=s.images.registry_major,
            redis_address="redis:6379",
            redis_password=own_redis_password.result if own_redis_password else None,
        )
        # Webhook endpoints: header values are secrets, so the section is one from the start.
        notifications = (pulumi.Output.secret(notifications_section(s.notifications))
                         if s.notifications else None)
        if s.swarm.enabled:
            swarm = SwarmRegistry(
                f"{name}-swarm",
                SwarmRegistryArgs(
                    prefix=s.prefix,
                    registry_image=s.images.registry,
                    registry_version=s.images.registry_major,
                    nginx_image=s.images.nginx,
                    redis_image=s.images.redis,
                    replicas=s.swarm.replicas,
                    https_port=s.https_port,
                    server_names=s.hosts + s.ips,
                    cert_pem=server_cert.cert_pem,
                    private_key_pem=server_cert.private_key_pem,
                    htpasswd=users.content,
                    storage=wiring.storage,
                    redis=wiring.redis,
                    redirect=wiring.redirect,
                    uploads=wiring.uploads,
                    envs=wiring.envs,
                    own_redis_password=own_redis_password.result if own_redis_password else None,
                    redis_max_memory_mib=s.redis.max_memory_mib,
                    redis_password=(
                        own_redis_password.result if own_redis_password
                        else pulumi.Output.secret(s.redis.password.get_secret_value())
                        if use_redis and s.redis.password else None
                    ),
                    token=SwarmTokenArgs(
                        address=s.address, cert_pem=signer.cert_pem, private_key_pem=signer.private_key_pem,
                    ) if signer else None,
                    auth=s.auth,
                    notifications=notifications,
                ),
                opts=on_docker,
            )
            front, registry_container, volume_name = swarm, None, pulumi.Output.from_input(None)
        else:
            registry = Registry(
                f"{name}-registry",
                RegistryArgs(
                    prefix=s.prefix,
                    image=s.images.registry,
                    volume_name=s.volume_name,
                    keep_volume_on_destroy=s.volume.keep_on_destroy,
                    storage=wiring.storage,
                    redis=wiring.redis,
                    redirect=wiring.redirect,
                    extra_uploads=[docker.ContainerUploadArgs(file=path, content=text) for path, text in wiring.uploads],
                    envs=wiring.envs,
                    auth=registry_token_auth(address=s.address, prefix=s.prefix,
                                             registry_version=s.images.registry_major) if token else None,
                    token_cert_pem=signer.cert_pem if signer else None,
                    registry_version=s.images.registry_major,
                    metrics=metrics is not None,
                    notifications=notifications,
                ),
                opts=on_docker,
            )
            token_auth = None
            if signer:
                token_auth = TokenAuth(
                    f"{name}-token",
                    TokenAuthArgs(prefix=s.prefix, address=s.address, auth=s.auth, network_name=registry.network_name,
                                  cert_pem=signer.cert_pem, private_key_pem=signer.private_key_pem,
                                  htpasswd=users.content),
                    opts=on_docker,
                )
            if own_redis_password is not None:
                RedisCache(
                    f"{name}-redis",
                    RedisCacheArgs(
                        prefix=s.prefix,
                        image=s.images.redis,
                        network_name=registry.network_name,
                        password=own_redis_password.result,
                        max_memory_mib=s.redis.max_memory_mib,
                    ),
                    opts=on_docker,
                )
            proxy = Proxy(
                f"{name}-proxy",
                ProxyArgs(
                    prefix=s.prefix,
                    image=s.images.nginx,
                    server_names=s.hosts + s.ips,
                    https_port=s.https_port,
                    bind_address=s.bind_address,
                    network_name=registry.network_name,
                    socket_volume_name=registry.socket_volume_name,
                    cert_pem=server_cert.cert_pem,
                    private_key_pem=server_cert.private_key_pem,
                    htpasswd=users.content,
                    token_upstream=token_auth.upstream_address if token_auth else None,
                    token_rate_per_second=s.auth.rate_limit_per_second,
                    token_burst=s.auth.rate_limit_burst,
                    metrics=ProxyMetrics(port=s.metrics.port, routes=routes(s.prefix, token_mode=bool(token)),
                                         htpasswd=metrics.htpasswd, certificate_gauges=metrics.certificate_gauges)
                    if metrics else None,
                ),
                opts=pulumi.ResourceOptions(parent=self, providers={"docker": docker_provider},
                                            depends_on=[registry] + ([token_auth] if token_auth else [])),
            )
            front, registry_container, volume_name = proxy, registry.container_name, registry.volume_name
        for target in s.trust:
            ClientTrust(
                f"{name}-trust-{target.name}",
                ClientTrustArgs(target=target, address=s.address, ca_cert_pem=ca.cert_pem),
                opts=child,
            )

        first_user = s.user_names[0]
        maintenance = None
        swarm_gc = None
        if s.maintenance.deletions or s.maintenance.retention:
            # Runs where `pulumi up` runs, against the registry through the proxy, as the first user.
            # In Swarm mode, garbage collection is SwarmGarbageCollection (across the replicas).
            registry_url = f"https://{s.address}"
            password = pulumi.Output.secret(users.passwords.apply(lambda p: p[first_user]))
            maintenance = Maintenance(
                f"{name}-maintenance",
                MaintenanceArgs(
                    settings=(
                        dataclasses.replace(s.maintenance, gc=dataclasses.replace(s.maintenance.gc, enabled=False))
                        if s.swarm.enabled else s.maintenance
                    ),
                    registry_url=registry_url,
                    ca_pem=ca.cert_pem,
                    username=first_user,
                    password=password,
                    docker_host=s.docker.host,
                    container_name=registry_container,
                    registry_version=s.images.registry_major,
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[front]),
            )
            if s.swarm.enabled and s.maintenance.gc.enabled:
                swarm_gc = swarm_garbage_collection(
                    f"{name}-swarm-gc", s, maintenance, swarm,
                    registry_url=registry_url, ca_pem=ca.cert_pem, username=first_user, password=password,
                    use_redis=use_redis, opts=pulumi.ResourceOptions(parent=self, depends_on=[swarm]),
                )
        self.address = pulumi.Output.from_input(s.address)
        self.ca_certificate_pem = ca.cert_pem
        self.server_certificate_expiry = server_cert.expiry
        self.user_names = users.user_names
        self.passwords = users.passwords
        # The password reaches docker on stdin, never on a command line or in shell history.
        self.login_command = pulumi.Output.from_input(
            f"pulumi stack output passwords --show-secrets | jq -r {shlex.quote(f'.[{json.dumps(first_user)}]')} | "
            f"docker login {shlex.quote(s.address)} --username {shlex.quote(first_user)} --password-stdin"
        )
        self.volume_name = volume_name
        self.metrics = pulumi.Output.from_input({
            "urls": [f"https://{s.metrics_address}{path}" for path in metrics_paths(bool(token))],
            "username": s.metrics.username,
        } if metrics else None)
        self.metrics_password = metrics.password if metrics else pulumi.Output.from_input(None)
        empty = pulumi.Output.from_input([])
        self.pending_deletions = maintenance.pending_deletions if maintenance else empty
        self.deleted_tags = maintenance.deleted_tags if maintenance else empty
        self.garbage_collection = (
            pulumi.Output.all(
                bytes_before=maintenance.gc_bytes_before,
                bytes_after=maintenance.gc_bytes_after,
                blobs_removed=maintenance.gc_blobs_removed,
                duration_seconds=maintenance.gc_duration_seconds,
                writes_refused_seconds=maintenance.gc_writes_refused_seconds,
            )
            if maintenance and maintenance.gc
            else pulumi.Output.all(
                blobs_eligible=swarm_gc.blobsEligible,
                manifests_eligible=swarm_gc.manifestsEligible,
                duration_seconds=swarm_gc.durationSeconds,
                writes_refused_seconds=swarm_gc.writesRefusedSeconds,
            )
            if swarm_gc
            else pulumi.Output.from_input(None)
        )
        self.register_outputs(
            {
                "address": self.address,
                "ca_certificate_pem": self.ca_certificate_pem,
                "server_certificate_expiry": self.server_certificate_expiry,
                "user_names": self.user_names,
                "passwords": self.passwords,
                "login_command": self.login_command,
                "volume_name": self.volume_name,
                "pending_deletions": self.pending_deletions,
                "deleted_tags": self.deleted_tags,
                "garbage_collection": self.garbage_collection,
                "metrics": self.metrics,
                "metrics_password": self.metrics_password,
            }
        )
