"""The registry side: private network, data and socket volumes and the ``registry:2`` container.

The registry serves plain HTTP on a Unix socket only, in a volume (a small tmpfs, mode 0710,
root's) that only the registry and nginx containers mount: no TCP port of the registry is
reachable by anyone, local users of the Docker host included (components/render/registry_config.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from components.render.registry_config import (
    CONFIG_PATH,
    DATA_DIR,
    HEALTH_URL,
    REGISTRY_SOCKET,
    runtime_env,
    SOCKET_DIR,
    SOCKET_GROUP_ID,
    registry_name,
    render_registry_config,
    serve_command,
)
from components.render.token_service import registry_key_path, registry_key_text

RESTART_POLICY = "unless-stopped"
# The registry runs as root (the official image's user; the data volume is root's).
REGISTRY_USER = "0:0"
# tmpfs: nothing on disk, no stale socket survives the host; only root and the socket group
# may enter the directory, on the host as in the containers.
SOCKET_VOLUME_DRIVER_OPTS = {
    "type": "tmpfs",
    "device": "tmpfs",
    "o": f"mode=0710,uid=0,gid={SOCKET_GROUP_ID},size=64k",
}


def wget_healthcheck(url: str) -> docker.ContainerHealthcheckArgs:
    """A healthcheck with the busybox ``wget`` both images carry (the official images are Alpine)."""
    return docker.ContainerHealthcheckArgs(
        tests=["CMD", "wget", "-q", "-O", "/dev/null", url],
        interval="10s",
        timeout="5s",
        retries=3,
        start_period="5s",
    )


@dataclass
class RegistryArgs:
    prefix: str
    image: str
    volume_name: str
    keep_volume_on_destroy: bool = True
    # Storage driver entry (e.g. {"s3": {...}}) instead of the volume, and the Redis cache
    # section (see components.render.registry_config); secret values may be inside.
    storage: Optional[pulumi.Input[dict]] = None
    redis: Optional[pulumi.Input[dict]] = None
    redirect: bool = False
    extra_uploads: Sequence[docker.ContainerUploadArgs] = ()
    envs: Sequence[str] = ()
    # Token mode: the config's ``auth`` section and the token signing certificate it trusts
    # (uploaded as components/render/token_service.registry_key_file renders it).
    auth: Optional[dict] = None
    token_cert_pem: Optional[pulumi.Input[str]] = None
    # Distribution's major version (2 or 3): the environment and the key file differ.
    registry_version: int = 3
    # Prometheus metrics on the debug listener, reachable on the network (components/metrics.py).
    metrics: bool = False
    # The config's ``notifications`` section (components/render/notifications.py); secret.
    notifications: Optional[pulumi.Input[dict]] = None


class Registry(pulumi.ComponentResource):
    """Network, volumes and registry container; the registry is reachable only through its socket."""

    network_name: pulumi.Output[str]
    volume_name: pulumi.Output[str]
    socket_volume_name: pulumi.Output[str]
    container_name: pulumi.Output[str]
    container_id: pulumi.Output[str]
    upstream: pulumi.Output[str]

    def __init__(self, name: str, args: RegistryArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:registry:Registry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        network = docker.Network(f"{name}-network", name=f"{args.prefix}-net", opts=child)
        # The volume outlives containers: it is never replaced with them, and by default a
        # `pulumi destroy` leaves it (and the images in it) on the host.
        volume = docker.Volume(
            f"{name}-data",
            name=args.volume_name,
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=args.keep_volume_on_destroy),
        )
        sockets = docker.Volume(
            f"{name}-socket",
            name=f"{args.prefix}-socket",
            driver="local",
            driver_opts=SOCKET_VOLUME_DRIVER_OPTS,
            opts=child,
        )
        image = docker.RemoteImage(f"{name}-image", name=args.image, keep_locally=True, opts=child)
        http_secret = random.RandomPassword(f"{name}-http-secret", length=32, special=False, opts=child)
        config = pulumi.Output.secret(
            pulumi.Output.all(http_secret.result, args.storage, args.redis, args.notifications).apply(
                lambda values: render_registry_config(
                    http_secret=values[0], storage=values[1], redis=values[2], redirect=args.redirect,
                    auth=args.auth, metrics=args.metrics, notifications=values[3],
                )
            )
        )
        uploads = [docker.ContainerUploadArgs(file=CONFIG_PATH, content=config, permissions="0600")]
        if args.token_cert_pem is not None:
            key_text = pulumi.Output.from_input(args.token_cert_pem).apply(
                lambda pem: registry_key_text(pem, args.registry_version))
            uploads.append(docker.ContainerUploadArgs(file=registry_key_path(args.registry_version),
                                                      content=key_text, permissions="0644"))
        container = docker.Container(
            f"{name}-container",
            name=registry_name(args.prefix),
            image=image.image_id,
            restart=RESTART_POLICY,
            user=REGISTRY_USER,
            entrypoints=serve_command(CONFIG_PATH),
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.name)],
            # With object storage the data volume stays declared (a migration's source) but unmounted.
            volumes=[
                *([docker.ContainerVolumeArgs(volume_name=volume.name, container_path=DATA_DIR)]
                  if args.storage is None else []),
                docker.ContainerVolumeArgs(volume_name=sockets.name, container_path=SOCKET_DIR),
            ],
            # Holds the HTTP secret: readable by the registry (root) only.
            uploads=[*uploads, *args.extra_uploads],
            envs=[*runtime_env(args.registry_version), *args.envs],
            healthcheck=wget_healthcheck(HEALTH_URL),
            # Matches http.draintimeout: a stop lets requests in flight finish (an idle registry
            # still stops at once).
            stop_timeout=30,
            # The name is fixed, so the old container must go before its replacement starts.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        self.network_name = network.name
        self.volume_name = volume.name
        self.socket_volume_name = sockets.name
        self.container_name = container.name
        self.container_id = container.id
        self.upstream = pulumi.Output.from_input(f"unix:{REGISTRY_SOCKET}")
        self.register_outputs(
            {
                "network_name": self.network_name,
                "volume_name": self.volume_name,
                "socket_volume_name": self.socket_volume_name,
                "container_name": self.container_name,
                "container_id": self.container_id,
                "upstream": self.upstream,
            }
        )
