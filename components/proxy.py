"""The nginx container: TLS, basic auth and the public port in front of the registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_docker as docker

from components.render.nginx import (
    CERT_PATH,
    CERTIFICATE_METRICS_PATH,
    CONF_PATH,
    CONTAINER_HTTPS_PORT,
    CONTAINER_METRICS_PORT,
    HEALTH_PORT,
    HTPASSWD_PATH,
    KEY_PATH,
    METRICS_HTPASSWD_PATH,
    MetricsRoutes,
    NginxOptions,
    render_nginx_conf,
)
from components.render.registry_config import SOCKET_DIR
from components.registry import RESTART_POLICY, wget_healthcheck


@dataclass
class ProxyArgs:
    prefix: str
    image: str
    server_names: Sequence[str]
    https_port: int
    bind_address: str
    network_name: pulumi.Input[str]
    # The volume holding the registry's socket (Registry.socket_volume_name).
    socket_volume_name: pulumi.Input[str]
    cert_pem: pulumi.Input[str]
    private_key_pem: pulumi.Input[str]
    htpasswd: pulumi.Input[str]
    # Token mode: the token service (host:port) behind /token, rate-limited per client address;
    # no basic auth on /v2/ (the registry checks tokens).
    token_upstream: Optional[str] = None
    token_rate_per_second: int = 5
    token_burst: int = 20
    metrics: Optional["ProxyMetrics"] = None


@dataclass
class ProxyMetrics:
    """The metrics listener (components/metrics.py): host port, routes and its two files."""

    port: int
    routes: MetricsRoutes
    htpasswd: pulumi.Input[str]
    certificate_gauges: pulumi.Input[str]


class Proxy(pulumi.ComponentResource):
    """nginx serving the registry over TLS with basic auth on every /v2/ path."""

    container_name: pulumi.Output[str]
    nginx_conf: pulumi.Output[str]

    def __init__(self, name: str, args: ProxyArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:proxy:Proxy", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        conf = render_nginx_conf(
            NginxOptions(server_names=tuple(args.server_names), public_port=args.https_port,
                         auth=args.token_upstream is None, token_upstream=args.token_upstream,
                         token_rate_per_second=args.token_rate_per_second, token_burst=args.token_burst,
                         metrics=args.metrics.routes if args.metrics else None)
        )
        metrics = args.metrics
        image = docker.RemoteImage(f"{name}-image", name=args.image, keep_locally=True, opts=child)
        container = docker.Container(
            f"{name}-container",
            name=f"{args.prefix}-proxy",
            image=image.image_id,
            restart=RESTART_POLICY,
            # nginx finishes requests in flight on SIGQUIT; SIGTERM would cut pushes short.
            stop_signal="SIGQUIT",
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.network_name)],
            ports=[
                docker.ContainerPortArgs(
                    internal=CONTAINER_HTTPS_PORT, external=args.https_port, ip=args.bind_address, protocol="tcp"
                ),
                *([docker.ContainerPortArgs(internal=CONTAINER_METRICS_PORT, external=metrics.port,
                                            ip=args.bind_address, protocol="tcp")] if metrics else []),
            ],
            volumes=[docker.ContainerVolumeArgs(volume_name=args.socket_volume_name, container_path=SOCKET_DIR)],
            # Uploads are part of the container's identity: a new certificate, user list or
            # config replaces the container, so the proxy always serves what the stack says.
            uploads=[
                docker.ContainerUploadArgs(file=CONF_PATH, content=conf),
                docker.ContainerUploadArgs(file=CERT_PATH, content=args.cert_pem),
                # The master (root) reads the key; workers (nobody, group root) read the
                # htpasswd file at request time; nobody else reads either.
                docker.ContainerUploadArgs(file=KEY_PATH, content=args.private_key_pem, permissions="0600"),
            ]
            # Basic mode only: in token mode the token service alone holds the htpasswd.
            + ([docker.ContainerUploadArgs(file=HTPASSWD_PATH, content=args.htpasswd, permissions="0640")]
               if args.token_upstream is None else [])
            + ([docker.ContainerUploadArgs(file=METRICS_HTPASSWD_PATH, content=metrics.htpasswd, permissions="0640"),
                docker.ContainerUploadArgs(file=CERTIFICATE_METRICS_PATH, content=metrics.certificate_gauges,
                                           permissions="0644")]
               if metrics else []),
            healthcheck=wget_healthcheck(f"http://127.0.0.1:{HEALTH_PORT}/healthz"),
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        self.container_name = container.name
        self.nginx_conf = pulumi.Output.from_input(conf)
        self.register_outputs({"container_name": self.container_name, "nginx_conf": self.nginx_conf})
