"""The distribution registry's ``config.yml``, as text."""

from __future__ import annotations

from typing import Optional

import yaml

DATA_DIR = "/var/lib/registry"
CONFIG_PATH = "/etc/docker/registry/config.yml"
PORT = 5000


def registry_config(
    *, http_secret: str, log_level: str = "info", readonly: bool = False,
    storage: Optional[dict] = None, redis: Optional[dict] = None, redirect: bool = False,
) -> dict:
    """The registry configuration as a dict (see :func:`render_registry_config`).

    ``storage``: the storage driver entry (e.g. ``{"s3": {...}}``) instead of the filesystem;
    redirects stay off unless ``redirect`` (clients may not reach the object store). ``redis``: the top-level
    ``redis`` section; the blob descriptor cache then lives there, shared by every replica.
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
            "addr": f":{PORT}",
            # Shared secret that signs upload state; a fixed one keeps uploads valid across restarts.
            "secret": http_secret,
            "headers": {"X-Content-Type-Options": ["nosniff"]},
            # On SIGTERM (container stop or replacement) finish requests in flight first.
            "draintimeout": "30s",
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
    return config


def render_registry_config(
    *, http_secret: str, log_level: str = "info", readonly: bool = False,
    storage: Optional[dict] = None, redis: Optional[dict] = None, redirect: bool = False,
) -> str:
    """``config.yml`` text for ``registry serve``."""
    return yaml.safe_dump(
        registry_config(
            http_secret=http_secret, log_level=log_level, readonly=readonly, storage=storage, redis=redis,
            redirect=redirect,
        ),
        sort_keys=False,
    )
