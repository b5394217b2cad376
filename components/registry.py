"""The registry side: private network, data volume and the ``registry:2`` container."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from components.render.registry_config import CONFIG_PATH, DATA_DIR, PORT, render_registry_config

NETWORK_ALIAS = "registry"
RESTART_POLICY = "unless-stopped"


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
    # Publish the registry's plain-HTTP port on the Docker host's loopback (debugging only).
    host_port: Optional[int] = None
    # Storage driver entry (e.g. {"s3": {...}}) instead of the volume, and the Redis cache
    # section (see components.render.registry_config); secret values may be inside.
    storage: Optional[pulumi.Input[dict]] = None
    redis: Optional[pulumi.Input[dict]] = None
    redirect: bool = False
    extra_uploads: Sequence[docker.ContainerUploadArgs] = ()
    envs: Sequence[str] = ()


class Registry(pulumi.ComponentResource):
    """Network, volume and registry container; the registry is reachable only on the network."""

    network_name: pulumi.Output[str]
    volume_name: pulumi.Output[str]
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
        image = docker.RemoteImage(f"{name}-image", name=args.image, keep_locally=True, opts=child)
        http_secret = random.RandomPassword(f"{name}-http-secret", length=32, special=False, opts=child)
        config = pulumi.Output.secret(
            pulumi.Output.all(http_secret.result, args.storage, args.redis).apply(
                lambda values: render_registry_config(
                    http_secret=values[0], storage=values[1], redis=values[2], redirect=args.redirect
                )
            )
        )
        container = docker.Container(
            f"{name}-container",
            name=f"{args.prefix}-registry",
            image=image.image_id,
            restart=RESTART_POLICY,
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.name, aliases=[NETWORK_ALIAS])],
            # With object storage the volume stays declared (a migration's source) but unmounted.
            volumes=(
                [docker.ContainerVolumeArgs(volume_name=volume.name, container_path=DATA_DIR)]
                if args.storage is None
                else None
            ),
            uploads=[docker.ContainerUploadArgs(file=CONFIG_PATH, content=config), *args.extra_uploads],
            envs=list(args.envs) or None,
            ports=(
                [docker.ContainerPortArgs(internal=PORT, external=args.host_port, ip="127.0.0.1")]
                if args.host_port
                else None
            ),
            healthcheck=wget_healthcheck(f"http://127.0.0.1:{PORT}/"),
            # Matches http.draintimeout: a stop lets requests in flight finish (an idle registry
            # still stops at once).
            stop_timeout=30,
            # The name is fixed, so the old container must go before its replacement starts.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        self.network_name = network.name
        self.volume_name = volume.name
        self.container_name = container.name
        self.container_id = container.id
        self.upstream = pulumi.Output.from_input(f"{NETWORK_ALIAS}:{PORT}")
        self.register_outputs(
            {
                "network_name": self.network_name,
                "volume_name": self.volume_name,
                "container_name": self.container_name,
                "container_id": self.container_id,
                "upstream": self.upstream,
            }
        )
