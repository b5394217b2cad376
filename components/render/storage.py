"""The registry's storage and cache sections for S3 and Redis, and Redis's own config, as data/text.

Pure functions: settings and secret values in, dicts (for the YAML the registry config renderer
writes with a library) or validated text out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from components import grammar

if TYPE_CHECKING:  # the dynamic providers import the paths below: no settings (pydantic) at run time
    from components.settings_scale import S3Settings

# Where an S3 endpoint's CA goes in the registry container; Go reads every file in each
# directory of SSL_CERT_DIR, so the system's roots stay trusted next to it.
S3_CA_DIR = "/etc/docker/registry/s3-ca"
S3_CA_PATH = f"{S3_CA_DIR}/ca.crt"
S3_CA_ENV = f"SSL_CERT_DIR=/etc/ssl/certs:{S3_CA_DIR}"

REDIS_PORT = 6379
REDIS_CONF_PATH = "/usr/local/etc/redis/redis.conf"


def s3_storage(s3: S3Settings, *, access_key: Optional[str], secret_key: Optional[str]) -> dict:
    """distribution 2.8's ``storage`` driver entry ``{"s3": {...}}`` for the bucket."""
    params: dict = {
        "region": s3.region,
        "bucket": s3.bucket,
        "secure": s3.secure,
        "v4auth": True,
        "chunksize": s3.chunk_size_mib * 1024 * 1024,
        "forcepathstyle": s3.path_style,
    }
    if s3.endpoint:
        params["regionendpoint"] = s3.endpoint
    if s3.root_directory:
        params["rootdirectory"] = s3.root_directory
    if access_key is not None and secret_key is not None:
        params["accesskey"] = access_key
        params["secretkey"] = secret_key
    return {"s3": params}


def redis_cache(*, address: str, password: Optional[str], db: int = 0, registry_version: int) -> dict:
    """distribution's top-level ``redis`` section (the blob descriptor cache's server) for
    distribution ``registry_version``: 2.8's ``addr`` and ``pool``, or 3's go-redis options
    (``addrs``, a list, and the pool's ``maxidleconns``/``maxactiveconns``/``connmaxidletime``;
    3 ignores 2.8's keys without a word)."""
    if grammar.parse_host_port(address) is None:
        raise ValueError(f"redis address {address!r} is not HOST:PORT")
    timeouts = {"dialtimeout": "1s", "readtimeout": "1s", "writetimeout": "1s"}
    if registry_version >= 3:
        section: dict = {"addrs": [address], "db": db, **timeouts,
                         "maxidleconns": 16, "maxactiveconns": 64, "connmaxidletime": "300s"}
    else:
        section = {"addr": address, "db": db, **timeouts,
                   "pool": {"maxidle": 16, "maxactive": 64, "idletimeout": "300s"}}
    if password:
        section["password"] = password
    return section


def render_redis_conf(*, password: str, max_memory_mib: int) -> str:
    """``redis.conf`` for the program's own Redis: a cache only (no persistence), evicting least
    recently used keys at the memory limit, password required."""
    if not grammar.is_credential(password):
        raise ValueError("the Redis password holds characters redis.conf would read differently")
    if not isinstance(max_memory_mib, int) or max_memory_mib < 1:
        raise ValueError("max_memory_mib must be a positive integer")
    return "\n".join(
        [
            f"port {REDIS_PORT}",
            "bind 0.0.0.0",
            "protected-mode no",
            f'requirepass "{password}"',
            f"maxmemory {max_memory_mib}mb",
            "maxmemory-policy allkeys-lru",
            'save ""',
            "appendonly no",
            "",
        ]
    )
