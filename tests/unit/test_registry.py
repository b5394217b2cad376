"""The registry side: private network, data volume (kept on destroy by default), digest-pinned
image, and the registry container with its config uploaded as a secret."""

from __future__ import annotations

import pulumi
import yaml

import pytest

from components.registry import REGISTRY_USER, RESTART_POLICY, SOCKET_VOLUME_DRIVER_OPTS, Registry, RegistryArgs
from components.render.registry_config import CONFIG_PATH, DATA_DIR, HEALTH_URL, REGISTRY_SOCKET, SOCKET_DIR, serve_command
from components.settings import DEFAULT_REGISTRY_IMAGE
from tests.support.engine import contains_secret, is_secret
from tests.support.program import use_mocks

REGISTRY_TYPE = "registry:registry:Registry"


def build(**overrides):
    monitor = use_mocks()
    args = RegistryArgs(prefix="registry-dev", image=DEFAULT_REGISTRY_IMAGE, volume_name="registry-dev-data", **overrides)
    found: dict = {}

    @pulumi.runtime.test
    def run():
        registry = Registry("reg", args)

        async def gather(_):
            for name in ("network_name", "volume_name", "container_name", "upstream"):
                found[name] = await getattr(registry, name).future()

        return pulumi.Output.from_input(None).apply(gather)

    run()
    return monitor, found


def children(monitor):
    component = monitor.one(REGISTRY_TYPE)
    return component, {r.type.split(":")[-1]: r for r in monitor.registered if r.parent == component.urn}


def test_children_are_named_after_the_component_and_parented_to_it():
    """Network, data and socket volumes, image, http secret and container, named f'{name}-...'."""
    monitor, found = build()
    component = monitor.one(REGISTRY_TYPE)
    kids = {r.name: r for r in monitor.registered if r.parent == component.urn}
    assert sorted(kids) == ["reg-container", "reg-data", "reg-http-secret", "reg-image", "reg-network", "reg-socket"]
    assert kids["reg-network"].plain_inputs["name"] == "registry-dev-net"
    assert kids["reg-data"].plain_inputs == {"name": "registry-dev-data"}
    assert found == {"network_name": "registry-dev-net", "volume_name": "registry-dev-data",
                     "container_name": "registry-dev-registry", "upstream": f"unix:{REGISTRY_SOCKET}"}


def test_socket_volume_is_a_small_tmpfs_only_root_may_enter():
    """The socket volume: tmpfs (nothing on disk), its directory mode 0710 root:root, so only
    root and the socket group (nginx's workers) reach the socket, on the host as inside."""
    monitor, _ = build()
    (sockets,) = [r for r in monitor.registered if r.name == "reg-socket"]
    assert sockets.plain_inputs["name"] == "registry-dev-socket"
    assert sockets.plain_inputs["driverOpts"] == SOCKET_VOLUME_DRIVER_OPTS
    assert SOCKET_VOLUME_DRIVER_OPTS["type"] == "tmpfs"
    assert "mode=0710,uid=0,gid=0," in SOCKET_VOLUME_DRIVER_OPTS["o"]


def test_a_registry_host_port_is_refused_at_preview():
    """There is no plain-HTTP port to publish: registryHostPort is refused by settings, naming it."""
    from components.settings import SettingsError, parse_settings

    with pytest.raises(SettingsError, match="registryHostPort: the registry listens only on a Unix socket"):
        parse_settings({"registryHostPort": 5999}, stack="dev")


def test_volume_is_retained_on_destroy_by_default_and_not_when_asked():
    """keepOnDestroy (default) retains the volume and its images; false lets destroy delete it.
    The volume is never delete-before-replace, unlike the containers."""
    def data(monitor):
        return next(r for r in monitor.registered if r.name == "reg-data")

    kept = data(build()[0])
    dropped = data(build(keep_volume_on_destroy=False)[0])
    assert (kept.retain_on_delete, dropped.retain_on_delete) == (True, False)
    assert not kept.delete_before_replace


def test_image_is_pinned_by_digest_and_kept_locally():
    """The remote image is the configured tag@sha256 reference; the container runs that image."""
    monitor, _ = build()
    kids = children(monitor)[1]
    image = kids["RemoteImage"]
    assert image.plain_inputs == {"name": DEFAULT_REGISTRY_IMAGE, "keepLocally": True}
    assert "@sha256:" in image.plain_inputs["name"]
    assert kids["Container"].plain_inputs["image"] == image.plain_outputs["imageId"]
    assert image.urn in kids["Container"].dependencies


def test_container_spec():
    """Fixed name, restart policy, root with the umask entrypoint, the data and socket volumes,
    no network alias and no host port, healthcheck on the loopback debug listener, the Go
    runtime environment (GOGC=400; distribution 3's tracing off) and delete-before-replace (the
    fixed name must be free first)."""
    monitor, _ = build()
    kids = children(monitor)[1]
    container = kids["Container"]
    spec = container.plain_inputs
    assert spec["name"] == "registry-dev-registry"
    assert spec["restart"] == RESTART_POLICY == "unless-stopped"
    assert spec["networksAdvanced"] == [{"name": "registry-dev-net"}]
    assert spec["volumes"] == [{"volumeName": "registry-dev-data", "containerPath": DATA_DIR},
                               {"volumeName": "registry-dev-socket", "containerPath": SOCKET_DIR}]
    assert spec["user"] == REGISTRY_USER and spec["entrypoints"] == serve_command(CONFIG_PATH)
    assert "ports" not in spec
    assert spec["healthcheck"]["tests"][:2] == ["CMD", "wget"]
    assert HEALTH_URL in spec["healthcheck"]["tests"] and HEALTH_URL.startswith("http://127.0.0.1:")
    assert container.delete_before_replace is True
    assert spec["stopTimeout"] == 30  # as long as the registry's http.draintimeout
    assert spec["envs"] == ["GOGC=400", "OTEL_TRACES_EXPORTER=none"]
    assert {kids["Network"].urn, kids["RandomPassword"].urn} <= set(container.dependencies)


def test_config_is_uploaded_as_a_secret_with_the_http_secret():
    """config.yml (with deletion on and the generated http secret) is uploaded; the upload is
    secret in inputs and in the state the engine writes."""
    monitor, _ = build()
    kids = children(monitor)[1]
    container = kids["Container"]
    assert contains_secret(container.inputs["uploads"]) and is_secret(container.outputs["uploads"])
    (upload,) = container.plain_inputs["uploads"]
    assert upload["file"] == CONFIG_PATH and upload["permissions"] == "0600"  # root reads it, nobody else
    config = yaml.safe_load(upload["content"])
    http_secret = kids["RandomPassword"].plain_outputs["result"]
    assert len(http_secret) == 32 and config["http"]["secret"] == http_secret
    assert config["storage"]["delete"]["enabled"] is True
    assert config["storage"]["filesystem"]["rootdirectory"] == DATA_DIR
    assert http_secret not in monitor.state_text()
