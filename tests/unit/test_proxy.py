"""The nginx proxy container: the rendered config, certificate, key and htpasswd uploaded
(key and htpasswd secret), the HTTPS port on the bind address, graceful stop, replace-in-place."""

from __future__ import annotations

import pulumi

from components.proxy import Proxy, ProxyArgs
from components.render.nginx import CERT_PATH, CONF_PATH, HEALTH_PORT, HTPASSWD_PATH, KEY_PATH, NginxOptions, render_nginx_conf
from components.render.registry_config import SOCKET_DIR
from components.settings import DEFAULT_NGINX_IMAGE
from tests.support.engine import is_secret
from tests.support.program import use_mocks

CERT = "-----BEGIN CERTIFICATE-----\ncert\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nserver-key-material\n-----END PRIVATE KEY-----\n"
HTPASSWD = "alice:$2y$05$abcdefghijklmnopqrstuuL1Qv9nJx0z8d9e7f6g5h4i3j2k1l0m.\n"


def build(**overrides):
    monitor = use_mocks()
    args = dict(prefix="registry-dev", image=DEFAULT_NGINX_IMAGE, server_names=("localhost", "127.0.0.1"),
                https_port=5443, bind_address="127.0.0.1", network_name="registry-dev-net",
                socket_volume_name="registry-dev-socket", cert_pem=CERT, private_key_pem=pulumi.Output.secret(KEY),
                htpasswd=pulumi.Output.secret(HTPASSWD))
    args.update(overrides)
    found = {}

    @pulumi.runtime.test
    def run():
        proxy = Proxy("px", ProxyArgs(**args))
        return pulumi.Output.all(proxy.container_name, proxy.nginx_conf).apply(lambda v: found.update(name=v[0], conf=v[1]))

    run()
    component = monitor.one("registry:proxy:Proxy")
    kids = {r.type.split(":")[-1]: r for r in monitor.registered if r.parent == component.urn}
    return monitor, kids, found


def uploads_by_path(container) -> dict:
    return {u["file"]: u for u in container.plain_inputs["uploads"]}


def test_children_and_container_spec():
    """Image and container named f'{name}-...'; fixed container name; digest-pinned image;
    SIGQUIT (nginx finishes requests in flight); restart policy; joins the registry network;
    mounts the registry's socket volume; healthcheck on the loopback health listener;
    delete-before-replace."""
    _, kids, found = build()
    assert {k: r.name for k, r in kids.items()} == {"RemoteImage": "px-image", "Container": "px-container"}
    assert kids["RemoteImage"].plain_inputs == {"name": DEFAULT_NGINX_IMAGE, "keepLocally": True}
    spec = kids["Container"].plain_inputs
    assert spec["name"] == found["name"] == "registry-dev-proxy"
    assert spec["image"] == kids["RemoteImage"].plain_outputs["imageId"]
    assert spec["stopSignal"] == "SIGQUIT" and spec["restart"] == "unless-stopped"
    assert spec["networksAdvanced"] == [{"name": "registry-dev-net"}]
    assert spec["volumes"] == [{"volumeName": "registry-dev-socket", "containerPath": SOCKET_DIR}]
    assert f"http://127.0.0.1:{HEALTH_PORT}/healthz" in spec["healthcheck"]["tests"]
    assert kids["Container"].delete_before_replace is True


def test_https_port_is_published_on_the_bind_address():
    """Container port 443 is published as httpsPort on bindAddress, TCP."""
    _, kids, _ = build()
    assert kids["Container"].plain_inputs["ports"] == [{"internal": 443, "external": 5443, "ip": "127.0.0.1", "protocol": "tcp"}]
    _, kids, _ = build(https_port=443, bind_address="0.0.0.0")
    assert kids["Container"].plain_inputs["ports"][0]["external"] == 443
    assert kids["Container"].plain_inputs["ports"][0]["ip"] == "0.0.0.0"


def test_uploads_hold_config_certificate_key_and_htpasswd():
    """The rendered nginx.conf (with every server name and the published port), the certificate,
    the key (0600: the master reads it) and the htpasswd (0640: workers, in group root, read
    it; no other user) are uploaded where the config points."""
    _, kids, found = build()
    uploads = uploads_by_path(kids["Container"])
    assert set(uploads) == {CONF_PATH, CERT_PATH, KEY_PATH, HTPASSWD_PATH}
    expected_conf = render_nginx_conf(NginxOptions(server_names=("localhost", "127.0.0.1"), public_port=5443))
    assert uploads[CONF_PATH]["content"] == expected_conf == found["conf"]
    assert uploads[CERT_PATH]["content"] == CERT
    assert (uploads[KEY_PATH]["content"], uploads[KEY_PATH]["permissions"]) == (KEY, "0600")
    assert (uploads[HTPASSWD_PATH]["content"], uploads[HTPASSWD_PATH]["permissions"]) == (HTPASSWD, "0640")


def test_key_and_htpasswd_uploads_are_secret_and_absent_from_state():
    """A secret key or htpasswd makes the uploads property secret, in inputs and stored outputs,
    so neither appears in the state."""
    monitor, kids, _ = build()
    container = kids["Container"]
    assert is_secret(container.inputs["uploads"]) and is_secret(container.outputs["uploads"])
    state = monitor.state_text()
    assert "server-key-material" not in state
    assert "abcdefghijklmnopqrstuuL1Qv9nJx0z8d9e7f6g5h4i3j2k1l0m" not in state


def test_plain_uploads_would_be_visible_in_state():
    """Control for the test above: with a non-secret key and htpasswd, the same search finds them,
    so the absence above is due to secrecy, not to how state is searched."""
    monitor, kids, _ = build(private_key_pem=KEY, htpasswd=HTPASSWD)
    assert not is_secret(kids["Container"].inputs["uploads"])
    state = monitor.state_text()
    assert "server-key-material" in state
    assert "abcdefghijklmnopqrstuuL1Qv9nJx0z8d9e7f6g5h4i3j2k1l0m" in state


def test_a_new_certificate_or_htpasswd_changes_the_container_inputs():
    """Uploads are part of the container: new cert or users means a new container (served at once)."""
    base = build()[1]["Container"].plain_inputs
    assert build(cert_pem=CERT.replace("cert", "renewed"))[1]["Container"].plain_inputs != base
    assert build(htpasswd=pulumi.Output.secret(HTPASSWD + "bob:x\n"))[1]["Container"].plain_inputs != base
    assert build()[1]["Container"].plain_inputs == base
