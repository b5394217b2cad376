"""The registry's config.yml: deletion on, writable, data under the volume, a fixed http secret."""

from __future__ import annotations

import yaml

from components.render.registry_config import (
    CONFIG_PATH,
    DATA_DIR,
    DEBUG_ADDR,
    REGISTRY_SOCKET,
    SOCKET_DIR,
    registry_config,
    render_registry_config,
    serve_command,
)

SECRET = "s3cret-http-value-0123456789abcd"


def load(**kwargs) -> dict:
    return yaml.safe_load(render_registry_config(http_secret=SECRET, **kwargs))


def test_text_is_yaml_of_the_dict_and_deterministic():
    """The text parses back to exactly registry_config(); same inputs give the same text."""
    assert load() == registry_config(http_secret=SECRET)
    assert render_registry_config(http_secret=SECRET) == render_registry_config(http_secret=SECRET)


def test_deletion_enabled_and_writable_by_default():
    """Deletion on (tutorial and maintenance need it) and maintenance.readonly off."""
    config = load()
    assert config["storage"]["delete"] == {"enabled": True}
    assert config["storage"]["maintenance"]["readonly"] == {"enabled": False}


def test_readonly_mode_for_garbage_collection():
    """readonly=True sets storage.maintenance.readonly.enabled (pulls keep working during GC)."""
    assert load(readonly=True)["storage"]["maintenance"]["readonly"] == {"enabled": True}


def test_data_lives_in_the_volume_path():
    """Filesystem storage rooted where the data volume is mounted."""
    assert DATA_DIR == "/var/lib/registry"
    assert load()["storage"]["filesystem"] == {"rootdirectory": DATA_DIR}
    assert CONFIG_PATH == "/etc/docker/registry/config.yml"


def test_listens_on_its_unix_socket_only_with_the_given_secret():
    """The registry serves on a Unix socket in the socket volume, no TCP address; its health on
    the container's loopback only. The http secret signs upload state: fixed (from state), so
    uploads survive a restart."""
    config = load()
    assert (config["http"]["net"], config["http"]["addr"]) == ("unix", REGISTRY_SOCKET)
    assert REGISTRY_SOCKET.startswith(SOCKET_DIR + "/")
    assert config["http"]["debug"] == {"addr": DEBUG_ADDR} and DEBUG_ADDR.startswith("127.0.0.1:")
    assert config["http"]["secret"] == SECRET
    assert yaml.safe_load(render_registry_config(http_secret="other"))["http"]["secret"] == "other"


def test_everything_the_tutorial_sets():
    """inmemory blob descriptor cache, nosniff header, storage health check, version 0.1."""
    config = load()
    assert config["version"] == 0.1
    assert config["storage"]["cache"] == {"blobdescriptor": "inmemory"}
    assert config["http"]["headers"]["X-Content-Type-Options"] == ["nosniff"]
    assert config["health"]["storagedriver"]["enabled"] is True


def test_log_level_is_configurable():
    """log.level follows the argument (default info)."""
    assert load()["log"]["level"] == "info"
    assert load(log_level="debug")["log"]["level"] == "debug"


def test_stops_gracefully():
    """On SIGTERM the registry drains requests in flight (up to 30 s) instead of cutting them."""
    assert load()["http"]["draintimeout"] == "30s"


def test_serve_command_sets_a_umask_and_passes_the_config_path_as_data():
    """The entrypoint sets umask 0007 (socket and data: no access for others) and execs the
    registry; the config path is an argument to the constant shell line, never part of it."""
    argv = serve_command("/x/it's config.yml")
    assert argv[:2] == ["/bin/sh", "-c"]
    assert argv[2] == 'umask 0007 && exec /bin/registry serve "$0"'
    assert argv[3] == "/x/it's config.yml"
