"""The registry's S3 and Redis sections and Redis's config, as rendered."""

from __future__ import annotations

import pytest
import yaml

from components.render.registry_config import render_registry_config
from components.render.storage import redis_cache, render_redis_conf, s3_storage
from components.settings_scale import S3Settings


def test_s3_section_and_redirects_off():
    """The s3 driver gets endpoint, path style, secure and the keys; the filesystem entry is gone
    and redirects are disabled unless asked for."""
    s3 = S3Settings(bucket="images", endpoint="https://s3.example.com:9000", path_style=True,
                    root_directory="/registry", access_key="AK0", secret_key="SK0")
    section = s3_storage(s3, access_key="AK0", secret_key="SK0")
    config = yaml.safe_load(render_registry_config(http_secret="x", storage=section))
    assert "filesystem" not in config["storage"]
    assert config["storage"]["s3"] == {
        "region": "us-east-1", "bucket": "images", "secure": True, "v4auth": True, "chunksize": 10 << 20,
        "forcepathstyle": True, "regionendpoint": "https://s3.example.com:9000", "rootdirectory": "/registry",
        "accesskey": "AK0", "secretkey": "SK0",
    }
    assert config["storage"]["redirect"] == {"disable": True}
    assert config["storage"]["delete"] == {"enabled": True}
    with_redirect = yaml.safe_load(render_registry_config(http_secret="x", storage=section, redirect=True))
    assert "redirect" not in with_redirect["storage"]


def test_without_keys_no_credentials_rendered():
    """With neither key the driver uses the host's IAM role: no accesskey/secretkey entries."""
    section = s3_storage(S3Settings(bucket="images"), access_key=None, secret_key=None)
    assert "accesskey" not in section["s3"] and section["s3"]["secure"] is True


def test_redis_section_switches_cache():
    """With a Redis section the blob descriptor cache is redis and the section is top level:
    distribution 3's go-redis keys (``addrs``, a list; the pool as maxidleconns/maxactiveconns/
    connmaxidletime), distribution 2.8's ``addr`` and ``pool``; an address without a port is refused."""
    config = yaml.safe_load(render_registry_config(
        http_secret="x", redis=redis_cache(address="redis:6379", password="pw", registry_version=3)))
    assert config["storage"]["cache"] == {"blobdescriptor": "redis"}
    assert config["redis"]["addrs"] == ["redis:6379"] and config["redis"]["password"] == "pw"
    assert (config["redis"]["maxidleconns"], config["redis"]["maxactiveconns"]) == (16, 64)
    assert "addr" not in config["redis"] and "pool" not in config["redis"]
    assert config["storage"]["filesystem"] == {"rootdirectory": "/var/lib/registry"}
    old = redis_cache(address="redis:6379", password="pw", registry_version=2)
    assert old["addr"] == "redis:6379" and old["pool"]["maxactive"] == 64 and "addrs" not in old
    with pytest.raises(ValueError):
        redis_cache(address="redis", password=None, registry_version=3)


def test_redis_conf_is_a_cache_with_password():
    """Redis's own config: password, allkeys-lru at the limit, no persistence; a password that
    redis.conf would read differently is refused."""
    text = render_redis_conf(password="abcDEF123", max_memory_mib=64)
    lines = text.splitlines()
    assert 'requirepass "abcDEF123"' in lines and "maxmemory 64mb" in lines
    assert "maxmemory-policy allkeys-lru" in lines and 'save ""' in lines and "appendonly no" in lines
    for bad in ('a"b', "a b", "a\nport 1", ""):
        with pytest.raises(ValueError):
            render_redis_conf(password=bad, max_memory_mib=64)
