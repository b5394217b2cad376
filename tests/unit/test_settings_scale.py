"""Storage, Redis and Swarm settings: validated at preview with the setting's name and the fix,
secrets refused in plain text and never echoed."""

from __future__ import annotations

import pytest

from components.settings import SettingsError, parse_settings
from components.settings_scale import redis_enabled

S3 = {"driver": "s3", "s3": {"bucket": "images", "endpoint": "http://s3:8333", "pathStyle": True,
                             "accessKey": "AKID0123", "secretKey": "Secret/Key+0123="}}


def parse(raw: dict, secret_keys=("storage", "redis")):
    return parse_settings(raw, stack="dev", secret_keys=set(secret_keys))


def problems(raw: dict, secret_keys=("storage", "redis")) -> str:
    with pytest.raises(SettingsError) as caught:
        parse(raw, secret_keys)
    return str(caught.value)


def test_defaults_are_todays_single_host():
    """Without the new keys: filesystem storage, no Redis, no Swarm."""
    s = parse({})
    assert s.storage.driver == "filesystem" and s.storage.s3 is None
    assert not s.swarm.enabled and not redis_enabled(s.redis, s.swarm)


def test_s3_settings_parsed():
    """An S3 bucket with endpoint, path style and keys parses; redirects stay off by default."""
    s = parse({"storage": S3})
    assert s.storage.s3.bucket == "images" and s.storage.s3.path_style and not s.storage.s3.redirect
    assert s.storage.s3.access_key.get_secret_value() == "AKID0123" and not s.storage.s3.secure


@pytest.mark.parametrize(
    "s3, where",
    [
        ({"bucket": "Bad_Bucket"}, "storage.s3.bucket"),
        ({"bucket": "192.168.1.1"}, "storage.s3.bucket"),
        ({"bucket": "ok-bucket", "endpoint": "ftp://s3"}, "storage.s3.endpoint"),
        ({"bucket": "ok-bucket", "endpoint": "http://user@s3:1"}, "storage.s3.endpoint"),
        ({"bucket": "ok-bucket", "endpoint": "http://s3/path"}, "storage.s3.endpoint"),
        ({"bucket": "ok-bucket", "region": "US EAST"}, "storage.s3.region"),
        ({"bucket": "ok-bucket", "rootDirectory": "/a/../b"}, "storage.s3.rootDirectory"),
        ({"bucket": "ok-bucket", "rootDirectory": "relative"}, "storage.s3.rootDirectory"),
        ({"bucket": "ok-bucket", "chunkSizeMib": 1}, "storage.s3.chunkSizeMib"),
        ({"bucket": "ok-bucket", "accessKey": "AK"}, "storage.s3.secretKey"),
        ({"bucket": "ok-bucket", "caCertificatePem": "not a pem", "endpoint": "https://s3"}, "storage.s3.caCertificatePem"),
        ({"bucket": "ok-bucket", "unknown": 1}, "storage.s3.unknown"),
    ],
)
def test_bad_s3_settings_refused_with_name(s3, where):
    """Each bad S3 value fails with the setting's full name."""
    assert f"private-registry:{where}:" in problems({"storage": {"driver": "s3", "s3": s3}})


def test_driver_and_section_must_agree():
    """driver s3 without storage.s3, or storage.s3 under filesystem, is refused."""
    assert "storage.s3: driver is s3" in problems({"storage": {"driver": "s3"}})
    assert "storage.driver:" in problems({"storage": {"driver": "filesystem", "s3": {"bucket": "images"}}})
    assert "storage.driver:" in problems({"storage": {"driver": "nfs"}})


def test_keys_and_password_must_be_secrets_and_are_never_echoed():
    """S3 keys and the Redis password in plain text are refused; a bad secret value is never
    echoed in the message."""
    text = problems({"storage": S3, "redis": {"address": "r:6379", "password": "pw-value-1"}}, secret_keys=())
    assert "storage.s3.accessKey: holds the S3 access key in plain text" in text
    assert "storage.s3.secretKey" in text and "redis.password: holds the Redis password" in text
    bad = {**S3, "s3": {**S3["s3"], "secretKey": "has space\nsecret-XYZ"}}
    text = problems({"storage": bad})
    assert "storage.s3.secretKey" in text and "secret-XYZ" not in text


def test_redis_settings():
    """An external Redis needs HOST:PORT; a password only goes with an external address; the
    cache is on by default with more than one Swarm replica, off with one host."""
    assert "redis.address:" in problems({"redis": {"address": "no-port"}})
    assert "redis.password:" in problems({"redis": {"password": "pw-0123456789"}})
    s = parse({"redis": {"address": "cache.internal:6379", "password": "pw-0123456789"}})
    assert redis_enabled(s.redis, s.swarm)
    s = parse({"swarm": {"enabled": True, "replicas": 3}, "storage": S3})
    assert redis_enabled(s.redis, s.swarm)


def test_swarm_needs_s3_and_shared_cache():
    """Swarm mode on filesystem storage is refused (a volume lives on one node), as is turning
    the shared cache off with more than one replica; replicas are 1-32."""
    assert "storage.driver: Swarm mode needs storage.driver s3" in problems({"swarm": {"enabled": True}})
    text = problems({"swarm": {"enabled": True, "replicas": 2}, "storage": S3, "redis": {"enabled": False}})
    assert "redis.enabled: more than one replica" in text
    assert "swarm.replicas" in problems({"swarm": {"enabled": True, "replicas": 0}, "storage": S3})


def test_single_host_gc_with_redis_refused():
    """On one host, garbage collection with the Redis cache is refused (the collection there
    does not flush it); in Swarm mode, or without collection, it is accepted."""
    deletions = {"deletions": [{"repository": "team/app", "tags": ["old"]}]}
    text = problems({"redis": {"enabled": True}, "maintenance": deletions})
    assert "redis.enabled: garbage collection on one host" in text
    parse({"redis": {"enabled": True}, "maintenance": {**deletions, "gc": {"enabled": False}}})
    parse({"swarm": {"enabled": True}, "storage": S3, "maintenance": deletions})


@pytest.mark.parametrize("mode", ["token", "basic"])
def test_swarm_accepted_in_both_auth_modes_with_the_same_refusals(mode):
    """Swarm mode runs token auth (the default, with or without access rules) and basic auth;
    in either mode the Swarm refusals still name their setting: filesystem storage,
    deleteUntagged, more than one replica without the Redis cache."""
    auth = {"mode": mode}
    assert parse({"swarm": {"enabled": True}, "storage": S3, "auth": auth}).auth.token is (mode == "token")
    if mode == "token":
        rules = {**auth, "admins": ["admin"], "rules": [{"repositories": ["**"], "pull": ["*"]}]}
        assert parse({"swarm": {"enabled": True}, "storage": S3, "auth": rules}).swarm.enabled
    assert "storage.driver: Swarm mode needs storage.driver s3" in problems({"swarm": {"enabled": True}, "auth": auth})
    untagged = {"deletions": [{"repository": "team/app", "tags": ["old"]}], "gc": {"deleteUntagged": True}}
    assert "maintenance.gc.deleteUntagged" in problems(
        {"swarm": {"enabled": True}, "storage": S3, "auth": auth, "maintenance": untagged})
    assert "redis.enabled: more than one replica" in problems(
        {"swarm": {"enabled": True, "replicas": 2}, "storage": S3, "redis": {"enabled": False}, "auth": auth})
