"""Swarm mode: the registry as a replicated service behind nginx on every node of an existing swarm.

The Docker provider talks to a manager of the swarm (``docker.host``); joining nodes stays the
operator's job. Declared here, all on one attachable overlay network whose services resolve by
DNS round robin (``endpoint_mode: dnsrr``; no routing mesh or virtual IPs needed):

* the registry: N replicas on shared object storage with one ``http.secret``, rolling updates
  that start the new task before stopping the old one, health-checked, rolled back on failure;
* Redis (unless an external one is set): the blob descriptor cache the replicas share;
* nginx: one task per node (global mode), the HTTPS port published on each node in host mode;
* in token mode, the token service (components/token_auth.py's image, built on the manager the
  Docker provider talks to, so its one task runs on a manager: placement ``node.role ==
  manager``), reached by nginx's ``/token`` location under the alias ``token``; the registry
  replicas trust its signing certificate (``auth.token``).

Files the tasks read travel as Swarm secrets (registry config, which holds ``http.secret`` and the
S3 keys; Redis's config with its password; the TLS key and certificate; htpasswd) or configs
(nginx.conf, the S3 endpoint's CA); in token mode the signing key and htpasswd are secrets of the
token service, its policy and the signing certificate configs. Swarm secrets and configs cannot
change, so each is named after a hash of its content: a new content is a new object the service
switches to, and the old one is deleted after the switch.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from components.render.nginx import (
    CERT_PATH,
    CONF_PATH,
    CONTAINER_HTTPS_PORT,
    HEALTH_PORT,
    HTPASSWD_PATH,
    KEY_PATH,
    NginxOptions,
    render_nginx_conf,
)
from components.render.registry_config import (
    CONFIG_PATH,
    HEALTH_URL,
    REGISTRY_BIN,
    registry_name,
    render_registry_config,
    runtime_env,
)
from components.render import token_service as ts
from components.render.storage import REDIS_CONF_PATH, REDIS_PORT, render_redis_conf
from components.settings_auth import AuthSettings
from components.token_auth import HEALTH_TEST as TOKEN_HEALTH_TEST
from components.token_auth import token_image

REGISTRY_ALIAS = "registry"
# nginx runs on other nodes than most replicas: the registry listens on TCP on the overlay
# network (reachable only by the stack's services), not on a socket shared through a volume.
PORT = 5000
DOCKER_DNS = "127.0.0.11"
REDIS_ALIAS = "redis"
ROLE_LABEL = "org.private-registry.role"
# The image is built on the engine of docker.host (a manager): only managers have it.
TOKEN_PLACEMENT = ["node.role == manager"]
TOKEN_SERVICE_UID = "65534"  # the image's USER (nobody): the only reader of key and htpasswd
NGINX_SYSCTLS = {
    "net.ipv4.tcp_keepalive_time": "10",
    "net.ipv4.tcp_keepalive_intvl": "3",
    "net.ipv4.tcp_keepalive_probes": "3",
    "net.ipv4.tcp_retries2": "6",
}


def _healthcheck(tests: list[str]) -> docker.ServiceTaskSpecContainerSpecHealthcheckArgs:
    return docker.ServiceTaskSpecContainerSpecHealthcheckArgs(
        tests=tests, interval="5s", timeout="3s", retries=3, start_period="5s"
    )


def content_name(prefix: str, role: str, content: str) -> str:
    """A Swarm secret's or config's name: fixed prefix and role, then a hash of the content."""
    return f"{prefix}-{role}-{hashlib.sha256(content.encode()).hexdigest()[:12]}"


@dataclass
class SwarmTokenArgs:
    """Token mode's inputs: the signer's certificate and key (components/token_auth.TokenSigner)."""

    address: str  # host[:port] as clients write it: realm host and the tokens' audience
    cert_pem: pulumi.Input[str]
    private_key_pem: pulumi.Input[str]  # secret


@dataclass
class SwarmRegistryArgs:
    prefix: str
    registry_image: str
    nginx_image: str
    redis_image: str
    replicas: int
    https_port: int
    server_names: Sequence[str]
    cert_pem: pulumi.Input[str]
    private_key_pem: pulumi.Input[str]
    htpasswd: pulumi.Input[str]
    # From components.cache.storage_wiring: the storage entry (required: shared object storage),
    # the Redis section (None: no shared cache) and the CA file for the S3 endpoint.
    storage: pulumi.Input[dict]
    redis: Optional[pulumi.Input[dict]] = None
    redirect: bool = False
    uploads: list = field(default_factory=list)
    envs: list = field(default_factory=list)
    # Password of the program's own Redis service; None: no Redis service (external or none).
    own_redis_password: Optional[pulumi.Input[str]] = None
    redis_max_memory_mib: int = 256
    # Password of whichever Redis the cache uses (own or external), for the flush after GC.
    redis_password: Optional[pulumi.Input[str]] = None
    # Token mode (None: basic auth at nginx).
    token: Optional[SwarmTokenArgs] = None
    # Distribution's major version (2 or 3): the config, environment and key file differ.
    registry_version: int = 3
    # Token mode's settings: /token rate limits, token lifetime, failed-password budget, rules.
    auth: AuthSettings = field(default_factory=AuthSettings)
    # The config's ``notifications`` section (components/render/notifications.py); secret. Every
    # replica reads the same config, so each sends the events of the requests it serves.
    notifications: Optional[pulumi.Input[dict]] = None


class SwarmRegistry(pulumi.ComponentResource):
    """Registry replicas, shared Redis and nginx on every node, as Swarm services."""

    network_name: pulumi.Output[str]
    registry_service_name: pulumi.Output[str]
    proxy_service_name: pulumi.Output[str]
    redis_service_name: pulumi.Output[Optional[str]]
    nginx_conf: pulumi.Output[str]
    writable_config_secret: pulumi.Output[str]
    readonly_config_secret: pulumi.Output[str]
    redis_auth_secret: pulumi.Output[Optional[str]]
    token_service_name: pulumi.Output[Optional[str]]

    def __init__(self, name: str, args: SwarmRegistryArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:swarm:SwarmRegistry", name, None, opts)
        self._name = name
        self._prefix = args.prefix
        child = pulumi.ResourceOptions(parent=self)
        network = docker.Network(
            f"{name}-network", name=f"{args.prefix}-net", driver="overlay", attachable=True, opts=child
        )
        networks = [docker.ServiceTaskSpecNetworksAdvancedArgs(id=network.id, aliases=None)]

        http_secret = random.RandomPassword(f"{name}-http-secret", length=32, special=False, opts=child)
        token = args.token
        auth = (ts.registry_token_auth(address=token.address, prefix=args.prefix,
                                       registry_version=args.registry_version) if token else None)
        registry_config = pulumi.Output.all(http_secret.result, args.storage, args.redis, args.notifications).apply(
            lambda v: render_registry_config(
                http_secret=v[0], storage=v[1], redis=v[2], redirect=args.redirect, tcp_addr=f":{PORT}", auth=auth,
                notifications=v[3],
            )
        )
        registry_secrets = [self._secret("registry-config", registry_config, CONFIG_PATH, 0o444)]
        # The same config read-only, for garbage collection across replicas (components/swarm_gc.py).
        readonly_config = pulumi.Output.all(http_secret.result, args.storage, args.redis, args.notifications).apply(
            lambda v: render_registry_config(
                http_secret=v[0], storage=v[1], redis=v[2], redirect=args.redirect, readonly=True,
                tcp_addr=f":{PORT}", auth=auth, notifications=v[3],
            )
        )
        readonly_secret = self._secret("registry-config-readonly", readonly_config, CONFIG_PATH, 0o444)
        registry_configs = [self._config(f"file{i}", text, path) for i, (path, text) in enumerate(args.uploads)]
        token_service = None
        if token:
            # One object, mounted by the token service and (2.8's rootcertbundle) the registry;
            # distribution 3 trusts the key from a JWKS of it instead.
            signer_cert = self._config_object("token-cert", token.cert_pem)
            if args.registry_version >= 3:
                jwks = pulumi.Output.from_input(token.cert_pem).apply(
                    lambda pem: ts.registry_key_text(pem, args.registry_version))
                registry_configs.append(self._config("token-jwks", jwks, ts.registry_key_path(args.registry_version)))
            else:
                registry_configs.append(self._mount(signer_cert, ts.REGISTRY_BUNDLE_PATH))
            token_service = self._token_service(args, token, network, signer_cert, child)
        registry = docker.Service(
            f"{name}-registry",
            name=registry_name(args.prefix),
            mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=args.replicas)),
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=args.registry_image,
                    # The config's path stated, not the image's default (registry:3 reads
                    # /etc/distribution/config.yml, registry:2 /etc/docker/registry/config.yml).
                    commands=[REGISTRY_BIN, "serve", CONFIG_PATH],
                    secrets=registry_secrets,
                    configs=registry_configs or None,
                    env=dict(e.split("=", 1) for e in (*runtime_env(args.registry_version), *args.envs)),
                    healthcheck=_healthcheck(["CMD", "wget", "-q", "-O", "/dev/null", HEALTH_URL]),
                    # Matches http.draintimeout: requests in flight finish before the task stops.
                    stop_grace_period="30s",
                    labels=[docker.ServiceTaskSpecContainerSpecLabelArgs(label=ROLE_LABEL, value="registry")],
                ),
                networks_advanceds=[
                    docker.ServiceTaskSpecNetworksAdvancedArgs(id=network.id, aliases=[REGISTRY_ALIAS])
                ],
                restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(condition="any", delay="2s"),
                placement=docker.ServiceTaskSpecPlacementArgs(prefs=["spread=node.id"]),
            ),
            # One replica at a time; the new task runs (and passes its healthcheck) before the
            # old one stops, so the replica count never drops; a failing update rolls back.
            update_config=docker.ServiceUpdateConfigArgs(
                parallelism=1, order="start-first", failure_action="rollback", monitor="10s", delay="2s"
            ),
            rollback_config=docker.ServiceRollbackConfigArgs(parallelism=1, order="start-first", monitor="10s"),
            endpoint_spec=docker.ServiceEndpointSpecArgs(mode="dnsrr"),
            labels=[docker.ServiceLabelArgs(label=ROLE_LABEL, value="registry")],
            opts=child,
        )

        redis_service = None
        redis_auth = None
        if args.redis_password is not None:
            # The password alone, for the cache flush after garbage collection.
            redis_auth = self._secret("redis-auth", args.redis_password, "/run/secrets/redis-auth", 0o400)
        if args.own_redis_password is not None:
            redis_conf = pulumi.Output.from_input(args.own_redis_password).apply(
                lambda p: render_redis_conf(password=p, max_memory_mib=args.redis_max_memory_mib)
            )
            redis_service = docker.Service(
                f"{name}-redis",
                name=f"{args.prefix}-redis",
                mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=1)),
                task_spec=docker.ServiceTaskSpecArgs(
                    container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                        image=args.redis_image,
                        commands=["redis-server", REDIS_CONF_PATH],
                        secrets=[self._secret("redis-config", redis_conf, REDIS_CONF_PATH, 0o444)],
                        healthcheck=_healthcheck(["CMD", "redis-cli", "ping"]),
                    ),
                    networks_advanceds=[
                        docker.ServiceTaskSpecNetworksAdvancedArgs(id=network.id, aliases=[REDIS_ALIAS])
                    ],
                    restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(condition="any", delay="2s"),
                ),
                endpoint_spec=docker.ServiceEndpointSpecArgs(mode="dnsrr"),
                labels=[docker.ServiceLabelArgs(label=ROLE_LABEL, value="redis")],
                opts=child,
            )

        conf = render_nginx_conf(
            NginxOptions(
                upstreams=(f"{REGISTRY_ALIAS}:{PORT}",), backup_upstreams=(), resolver=DOCKER_DNS,
                server_names=tuple(args.server_names), public_port=args.https_port, upstream_keepalive=True,
                # Replicas run on other nodes: a connect that takes longer than 2 s means gone.
                connect_timeout_seconds=2,
                auth=token is None,
                token_upstream=f"{ts.TOKEN_ALIAS}:{ts.TOKEN_PORT}" if token else None,
                token_rate_per_second=args.auth.rate_limit_per_second,
                token_burst=args.auth.rate_limit_burst,
            )
        )
        proxy_secrets = [
            self._secret("tls-cert", args.cert_pem, CERT_PATH, 0o444),
            self._secret("tls-key", args.private_key_pem, KEY_PATH, 0o400),
        ]
        if token is None:
            # nginx workers (group root) read it at request time; others cannot. In token mode
            # only the token service holds it.
            proxy_secrets.append(self._secret("htpasswd", args.htpasswd, HTPASSWD_PATH, 0o440))
        proxy = docker.Service(
            f"{name}-proxy",
            name=f"{args.prefix}-proxy",
            mode=docker.ServiceModeArgs(global_=True),
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=args.nginx_image,
                    configs=[self._config("nginx-conf", conf, CONF_PATH)],
                    secrets=proxy_secrets,
                    healthcheck=_healthcheck(
                        ["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{HEALTH_PORT}/healthz"]
                    ),
                    # nginx finishes requests in flight on SIGQUIT.
                    stop_signal="SIGQUIT",
                    # A replica on another node can vanish without a reset (its task killed, its
                    # node gone): find out within ~20 s, reading (keepalive probes) or writing
                    # (retransmissions), so the client's retry goes to a live replica.
                    sysctl=NGINX_SYSCTLS,
                    stop_grace_period="30s",
                ),
                networks_advanceds=networks,
                restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(condition="any", delay="2s"),
            ),
            # The host port is the node's: the old task must free it before the new one binds it.
            update_config=docker.ServiceUpdateConfigArgs(
                parallelism=1, order="stop-first", failure_action="rollback", monitor="10s"
            ),
            # No routing mesh: each node's own nginx answers on its own address.
            endpoint_spec=docker.ServiceEndpointSpecArgs(
                mode="dnsrr",
                ports=[
                    docker.ServiceEndpointSpecPortArgs(
                        target_port=CONTAINER_HTTPS_PORT, published_port=args.https_port,
                        publish_mode="host", protocol="tcp",
                    )
                ],
            ),
            labels=[docker.ServiceLabelArgs(label=ROLE_LABEL, value="proxy")],
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[registry, *([token_service] if token_service else [])]
            ),
        )
        self.network_name = network.name
        self.registry_service_name = registry.name
        self.proxy_service_name = proxy.name
        self.redis_service_name = redis_service.name if redis_service else pulumi.Output.from_input(None)
        self.nginx_conf = pulumi.Output.from_input(conf)
        self.writable_config_secret = registry_secrets[0].secret_name
        self.readonly_config_secret = readonly_secret.secret_name
        self.redis_auth_secret = redis_auth.secret_name if redis_auth else pulumi.Output.from_input(None)
        self.token_service_name = token_service.name if token_service else pulumi.Output.from_input(None)
        self.register_outputs(
            {
                "network_name": self.network_name,
                "registry_service_name": self.registry_service_name,
                "proxy_service_name": self.proxy_service_name,
                "redis_service_name": self.redis_service_name,
                "nginx_conf": self.nginx_conf,
                "writable_config_secret": self.writable_config_secret,
                "readonly_config_secret": self.readonly_config_secret,
                "redis_auth_secret": self.redis_auth_secret,
                "token_service_name": self.token_service_name,
            }
        )

    def _token_service(self, args: SwarmRegistryArgs, token: SwarmTokenArgs, network: docker.Network,
                       signer_cert: docker.ServiceConfig, child: pulumi.ResourceOptions) -> docker.Service:
        """The token service: one task on a manager (where its image is), start-first updates
        (a new key, password or rule starts the new task before the old one stops), health-checked,
        rolled back on failure; reachable only on the overlay network, as ``token``."""
        image = token_image(f"{self._name}-token-image", args.prefix, child)
        uid = TOKEN_SERVICE_UID
        return docker.Service(
            f"{self._name}-token",
            name=f"{args.prefix}-token",
            mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=1)),
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    # The image id: content-addressed, and Swarm never tries to pull an id.
                    image=image.image_id,
                    env=dict(e.split("=", 1)
                             for e in ts.token_env(address=token.address, prefix=args.prefix, auth=args.auth)),
                    secrets=[
                        self._secret("token-key", token.private_key_pem, ts.KEY_PATH, 0o400, uid),
                        self._secret("token-htpasswd", args.htpasswd, ts.HTPASSWD_PATH, 0o400, uid),
                    ],
                    configs=[
                        self._mount(signer_cert, ts.CERT_PATH),
                        self._config("token-policy", ts.render_policy(args.auth.policy_document()), ts.POLICY_PATH),
                    ],
                    healthcheck=_healthcheck(TOKEN_HEALTH_TEST),
                    stop_grace_period="10s",
                    labels=[docker.ServiceTaskSpecContainerSpecLabelArgs(label=ROLE_LABEL, value="token")],
                ),
                networks_advanceds=[
                    docker.ServiceTaskSpecNetworksAdvancedArgs(id=network.id, aliases=[ts.TOKEN_ALIAS])
                ],
                restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(condition="any", delay="2s"),
                placement=docker.ServiceTaskSpecPlacementArgs(constraints=TOKEN_PLACEMENT),
            ),
            update_config=docker.ServiceUpdateConfigArgs(
                parallelism=1, order="start-first", failure_action="rollback", monitor="10s"
            ),
            rollback_config=docker.ServiceRollbackConfigArgs(parallelism=1, order="start-first", monitor="10s"),
            endpoint_spec=docker.ServiceEndpointSpecArgs(mode="dnsrr"),
            labels=[docker.ServiceLabelArgs(label=ROLE_LABEL, value="token")],
            opts=child,
        )

    def _secret(self, role: str, content: pulumi.Input[str], path: str, mode: int, uid: str = "0"):
        text = pulumi.Output.secret(content)
        secret = docker.Secret(
            f"{self._name}-{role}",
            name=text.apply(lambda t: content_name(self._prefix, role, t)),
            data=text.apply(lambda t: base64.b64encode(t.encode()).decode()),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return docker.ServiceTaskSpecContainerSpecSecretArgs(
            secret_id=secret.id, secret_name=secret.name, file_name=path, file_mode=mode, file_uid=uid, file_gid="0"
        )

    def _config_object(self, role: str, content: pulumi.Input[str]) -> docker.ServiceConfig:
        text = pulumi.Output.from_input(content)
        return docker.ServiceConfig(
            f"{self._name}-{role}",
            name=text.apply(lambda t: content_name(self._prefix, role, t)),
            data=text.apply(lambda t: base64.b64encode(t.encode()).decode()),
            opts=pulumi.ResourceOptions(parent=self),
        )

    @staticmethod
    def _mount(config: docker.ServiceConfig, path: str):
        return docker.ServiceTaskSpecContainerSpecConfigArgs(
            config_id=config.id, config_name=config.name, file_name=path, file_mode=0o444
        )

    def _config(self, role: str, content: str, path: str):
        return self._mount(self._config_object(role, content), path)


def swarm_garbage_collection(name, settings, maintenance, swarm: SwarmRegistry, *, registry_url, ca_pem, username,
                             password, use_redis: bool, opts=None):
    """The SwarmGarbageCollection of a stack: after every deletion and retention resource of
    ``maintenance``, collecting again when what they deleted changes."""
    import json as _json

    from components import grammar
    from components.swarm_gc import SwarmGarbageCollection

    removers = [*maintenance.deletions, *maintenance.retention]
    trigger = pulumi.Output.all(*[[r.id, r.deletedDigests, r.deletionRuns] for r in removers]).apply(
        lambda values: hashlib.sha256(_json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()
    )
    redis = settings.redis
    host, port = (grammar.parse_host_port(redis.address) if redis.external else (REDIS_ALIAS, REDIS_PORT))
    return SwarmGarbageCollection(
        name, registry_url=registry_url, ca_pem=ca_pem, username=username, password=password,
        docker_host=settings.docker.host, service_name=swarm.registry_service_name,
        writable_config_secret=swarm.writable_config_secret, readonly_config_secret=swarm.readonly_config_secret,
        mode=settings.maintenance.gc.mode, trigger=trigger, network_name=swarm.network_name,
        redis_auth_secret=swarm.redis_auth_secret if use_redis else None,
        redis_image=settings.images.redis if use_redis else None,
        redis_host=host if use_redis else None, redis_port=port, redis_db=redis.db,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=removers)),
    )
