"""The registry side: private network, data volume (kept on destroy by default), digest-pinned
image, and the registry container with its config uploaded as a secret."""

from __future__ import annotations

import pulumi
import yaml

from components.registry import NETWORK_ALIAS, RESTART_POLICY, Registry, RegistryArgs
from components.render.registry_config import CONFIG_PATH, DATA_DIR, PORT
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
    """Network, volume, image, http secret and container: one each, named f'{name}-...'."""
    monitor, found = build()
    component, kids = children(monitor)
    assert {k: r.name for k, r in kids.items()} == {
        "Network": "reg-network", "Volume": "reg-data", "RemoteImage": "reg-image",
        "RandomPassword": "reg-http-secret", "Container": "reg-container"}
    assert kids["Network"].plain_inputs["name"] == "registry-dev-net"
    assert kids["Volume"].plain_inputs == {"name": "registry-dev-data"}
    assert found == {"network_name": "registry-dev-net", "volume_name": "registry-dev-data",
                     "container_name": "registry-dev-registry", "upstream": f"{NETWORK_ALIAS}:{PORT}"}


def test_volume_is_retained_on_destroy_by_default_and_not_when_asked():
    """keepOnDestroy (default) retains the volume and its images; false lets destroy delete it.
    The volume is never delete-before-replace, unlike the containers."""
    kept = children(build()[0])[1]["Volume"]
    dropped = children(build(keep_volume_on_destroy=False)[0])[1]["Volume"]
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
    """Fixed name, restart policy, network alias 'registry', the volume at the data path, no
    host port, healthcheck, and delete-before-replace (the fixed name must be free first)."""
    monitor, _ = build()
    kids = children(monitor)[1]
    container = kids["Container"]
    spec = container.plain_inputs
    assert spec["name"] == "registry-dev-registry"
    assert spec["restart"] == RESTART_POLICY == "unless-stopped"
    assert spec["networksAdvanced"] == [{"name": "registry-dev-net", "aliases": [NETWORK_ALIAS]}]
    assert spec["volumes"] == [{"volumeName": "registry-dev-data", "containerPath": DATA_DIR}]
    assert "ports" not in spec
    assert spec["healthcheck"]["tests"][:2] == ["CMD", "wget"]
    assert f"http://127.0.0.1:{PORT}/" in spec["healthcheck"]["tests"]
    assert container.delete_before_replace is True
    assert spec["stopTimeout"] == 30  # as long as the registry's http.draintimeout
    assert {kids["Volume"].urn, kids["Network"].urn, kids["RandomPassword"].urn} <= set(container.dependencies)


def test_config_is_uploaded_as_a_secret_with_the_http_secret():
    """config.yml (with deletion on and the generated http secret) is uploaded; the upload is
    secret in inputs and in the state the engine writes."""
    monitor, _ = build()
    kids = children(monitor)[1]
    container = kids["Container"]
    assert contains_secret(container.inputs["uploads"]) and is_secret(container.outputs["uploads"])
    (upload,) = container.plain_inputs["uploads"]
    assert upload["file"] == CONFIG_PATH
    config = yaml.safe_load(upload["content"])
    http_secret = kids["RandomPassword"].plain_outputs["result"]
    assert len(http_secret) == 32 and config["http"]["secret"] == http_secret
    assert config["storage"]["delete"]["enabled"] is True
    assert config["storage"]["filesystem"]["rootdirectory"] == DATA_DIR
    assert http_secret not in monitor.state_text()


def test_host_port_publishes_plain_http_on_loopback_only():
    """registryHostPort (debugging) publishes the registry port on 127.0.0.1, never 0.0.0.0."""
    container = children(build(host_port=5999)[0])[1]["Container"]
    assert container.plain_inputs["ports"] == [{"internal": PORT, "external": 5999, "ip": "127.0.0.1"}]
