"""The distribution registry's ``config.yml`` and the command that serves it.

The registry listens on a Unix socket only (``http.net: unix``), in a directory that exists only
in a volume shared by the registry and nginx containers (:data:`SOCKET_DIR`): no TCP listener of
the registry is reachable from the Docker host or its networks. Its health is served by the
``debug`` listener on the container's own loopback (:data:`DEBUG_ADDR`), for the container
healthcheck; that listener is unreachable from outside the container.
"""

from __future__ import annotations

from typing import Optional

import yaml

DATA_DIR = "/var/lib/registry"
CONFIG_PATH = "/etc/docker/registry/config.yml"
REGISTRY_BIN = "/bin/registry"
SOCKET_DIR = "/run/registry-socket"
REGISTRY_SOCKET = f"{SOCKET_DIR}/registry.sock"
# The read-only stand-by that serves reads while garbage collection runs (components/docker_exec.py).
STANDBY_SOCKET = f"{SOCKET_DIR}/standby.sock"
DEBUG_PORT = 5001
DEBUG_ADDR = f"127.0.0.1:{DEBUG_PORT}"
HEALTH_URL = f"http://{DEBUG_ADDR}/debug/health"
# With metrics on (components/metrics.py): the debug listener on every address of the container.
METRICS_DEBUG_ADDR = f"0.0.0.0:{DEBUG_PORT}"
# The group nginx's workers run as (components/render/nginx.py): the only group, besides the
# registry's root, that may connect to the socket.
SOCKET_GROUP_ID = 0
# New files get no permissions for others: the socket is rwx for owner and group (root), and
# so are the data files; nothing in the volumes is readable by other users.
UMASK = "0007"
# The Go runtime's settings for every registry process (replicas, stand-by, GC): GOGC=400
# lets the heap grow to five times the live heap (a few MB) between collections instead of
# twice, which cuts the registry's CPU per request by about a third (bench/README.md, "Why
# the auth-off baseline moved").
RUNTIME_ENV = ("GOGC=400",)
# Distribution 3 otherwise exports OpenTelemetry traces to localhost:4318 and logs each failure.
RUNTIME_ENV_3 = ("OTEL_TRACES_EXPORTER=none",)


def registry_name(prefix: str) -> str:
    """The registry's container (one host) or service (Swarm) name, resolvable on its network."""
    return f"{prefix}-registry"


def runtime_env(registry_version: int) -> tuple[str, ...]:
    """The environment of every registry process of distribution ``registry_version``."""
    return RUNTIME_ENV + (RUNTIME_ENV_3 if registry_version >= 3 else ())


def serve_command(config_path: str = CONFIG_PATH) -> list[str]:
    """The container's entrypoint: ``registry serve CONFIG`` under :data:`UMASK`.

    Distribution creates its socket with the process umask; Docker has no umask setting, so a
    constant shell line sets it and ``exec``s the registry (the path is an argument, not code).
    """
    return ["/bin/sh", "-c", f'umask {UMASK} && exec {REGISTRY_BIN} serve "$0"', config_path]


def registry_config(
    *, http_secret: str, log_level: str = "info", readonly: bool = False, socket: str = REGISTRY_SOCKET,
    storage: Optional[dict] = None, redis: Optional[dict] = None, redirect: bool = False,
    tcp_addr: Optional[str] = None, auth: Optional[dict] = None, metrics: bool = False,
    notifications: Optional[dict] = None,
) -> dict:
    """The registry configuration as a dict (see :func:`render_registry_config`).

    ``storage``: the storage driver entry (e.g. ``{"s3": {...}}``) instead of the filesystem;
    redirects stay off unless ``redirect`` (clients may not reach the object store). ``redis``:
    the top-level ``redis`` section; the blob descriptor cache then lives there, shared by every
    replica. ``tcp_addr`` (Swarm mode, where nginx runs on other nodes): listen on TCP there
    instead of the Unix socket. ``auth``: the ``auth`` section, e.g. token auth from
    components/render/token_service.py. ``metrics``: the debug listener serves Prometheus
    metrics at ``/metrics`` and listens on every address (:data:`METRICS_DEBUG_ADDR`: the
    stack's private network, where nginx's metrics server reaches it; components/metrics.py).
    ``notifications``: the ``notifications`` section
    (webhook endpoints, components/render/notifications.py); it holds header secrets.
    """
    config = {
        "version": 0.1,
        "log": {"level": log_level, "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": DATA_DIR},
            # Deletion is what makes the maintenance resources possible; the tutorial enables it too.
            "delete": {"enabled": True},
            # In-memory descriptor cache as the tutorial has it: garbage collection therefore always
            # restarts the registry afterwards (a stale cache serves corrupt answers after GC).
            "cache": {"blobdescriptor": "inmemory"},
            "maintenance": {
                "uploadpurging": {"enabled": True, "age": "168h", "interval": "24h", "dryrun": False},
                "readonly": {"enabled": readonly},
            },
        },
        "http": {
            "net": "unix",
            "addr": socket,
            # Shared secret that signs upload state; a fixed one keeps uploads valid across restarts.
            "secret": http_secret,
            "headers": {"X-Content-Type-Options": ["nosniff"]},
            # On SIGTERM (container stop or replacement) finish requests in flight first.
            "draintimeout": "30s",
            # Health (/debug/health) for the container healthcheck, on the container's loopback.
            "debug": {"addr": DEBUG_ADDR},
        },
        "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
    }
    if storage is not None:
        section = config["storage"]
        del section["filesystem"]
        config["storage"] = {**storage, **section}
        if not redirect:
            config["storage"]["redirect"] = {"disable": True}
    if redis is not None:
        config["storage"]["cache"] = {"blobdescriptor": "redis"}
        config["redis"] = redis
    if tcp_addr is not None:
        del config["http"]["net"]
        config["http"]["addr"] = tcp_addr
    if auth:
        config["auth"] = auth
    if metrics:
        config["http"]["debug"] = {"addr": METRICS_DEBUG_ADDR, "prometheus": {"enabled": True, "path": "/metrics"}}
    if notifications:
        config["notifications"] = notifications
    return config


def render_registry_config(
    *, http_secret: str, log_level: str = "info", readonly: bool = False,
    storage: Optional[dict] = None, redis: Optional[dict] = None, redirect: bool = False,
    tcp_addr: Optional[str] = None, auth: Optional[dict] = None, metrics: bool = False,
    notifications: Optional[dict] = None,
) -> str:
    """``config.yml`` text for ``registry serve``."""
    return yaml.safe_dump(
        registry_config(
            http_secret=http_secret, log_level=log_level, readonly=readonly, storage=storage, redis=redis,
            redirect=redirect, tcp_addr=tcp_addr, auth=auth, metrics=metrics, notifications=notifications,
        ),
        sort_keys=False,
    )
