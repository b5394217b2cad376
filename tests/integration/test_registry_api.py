"""registry_api against a real registry: distribution 2.8.2 (stand-in image) behind the
project's own nginx TLS + bcrypt basic-auth proxy config, images pushed with skopeo.

The module also holds the ``registry_stack`` fixture the maintenance integration tests use.
"""

from __future__ import annotations

import base64
import hashlib
import datetime
import io
import ipaddress
import json
import secrets
import socket
import subprocess
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components import registry_api
from components.registry_api import (
    RegistryAuthError,
    RegistryClient,
    RegistryDeletionDisabledError,
    RegistryInputError,
    RegistryNotFoundError,
    RegistryTLSError,
    RegistryUnreachableError,
)
from components.render.htpasswd import bcrypt_salt, render_htpasswd
from components.render.nginx import CERT_PATH, CONF_PATH, HTPASSWD_PATH, KEY_PATH, NginxOptions, render_nginx_conf
from components.registry import REGISTRY_USER, RESTART_POLICY, SOCKET_VOLUME_DRIVER_OPTS
from components.render.registry_config import CONFIG_PATH, DATA_DIR, SOCKET_DIR, registry_config, serve_command
from tests.support import oci

REGISTRY_IMAGE = "private-registry-standin/registry:2.8.2"
NGINX_IMAGE = "private-registry-standin/nginx:1.22.1"
DOCKER_HOST = "unix:///var/run/docker.sock"
USERNAME = "maint"
# '@' and ':' on purpose: they break naive URL and header handling.
PASSWORD_PREFIX = "Pw@:"

# --- the stack -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pki() -> tuple[str, bytes, bytes]:
    """(CA PEM, server cert PEM, server key PEM) with SAN localhost and 127.0.0.1."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "maintenance test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return (
        ca.public_bytes(serialization.Encoding.PEM).decode(),
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, data in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class RegistryStack:
    """A registry container behind an nginx proxy container, reachable at ``url``."""

    docker: docker.DockerClient
    url: str
    host: str
    ca_pem: str
    username: str
    password: str
    registry_name: str
    proxy_name: str
    volume_name: str
    cert_dir: Path
    work: Path
    docker_host: str = DOCKER_HOST

    def client(self, **overrides) -> RegistryClient:
        kwargs = {"username": self.username, "password": self.password, "ca_pem": self.ca_pem, **overrides}
        return RegistryClient(self.url, **kwargs)

    def skopeo(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["skopeo", *args], capture_output=True, timeout=timeout, check=check)

    def push(self, layout: Path, tag: str, repository: str, dest_tag: str | None = None, *, multi: bool = False):
        extra = ["--all"] if multi else []
        self.skopeo(
            "copy", "-q", *extra, "--dest-cert-dir", str(self.cert_dir),
            "--dest-creds", f"{self.username}:{self.password}",
            f"oci:{layout}:{tag}", f"docker://{self.host}/{repository}:{dest_tag or tag}",
        )

    def pull(self, repository: str, tag: str, *, check: bool = True) -> subprocess.CompletedProcess:
        """A real pull with skopeo into a fresh OCI layout: skopeo verifies every digest."""
        target = self.work / f"pull-{uuid.uuid4().hex[:8]}"
        try:
            return self.skopeo(
                "copy", "-q", "--src-cert-dir", str(self.cert_dir), "--src-creds", f"{self.username}:{self.password}",
                f"docker://{self.host}/{repository}:{tag}", f"oci:{target}:{tag}", check=check,
            )
        finally:
            subprocess.run(["rm", "-rf", str(target)], check=False)

    def registry_container(self):
        return self.docker.containers.get(self.registry_name)

    def volume_bytes(self) -> int:
        """Measured independently of docker_exec: ``du`` from a throwaway container on the volume."""
        out = self.docker.containers.run(
            REGISTRY_IMAGE, entrypoint=["du", "-sb", "/data"], command=[], remove=True,
            volumes={self.volume_name: {"bind": "/data", "mode": "ro"}}, network_mode="none",
        )
        return int(out.split()[0])


def _wait_ready(url: str, ca_file: Path, auth: tuple[str, str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = requests.get(f"{url}/v2/", verify=str(ca_file), auth=auth, timeout=2).status_code
            if last == 200:
                return
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"registry stack at {url} not ready after {timeout}s: {last}")


def start_stack(
    client: docker.DockerClient, work: Path, *, delete_enabled: bool = True, nginx_workers: str = "1"
) -> tuple[RegistryStack, list]:
    """Start network, volume, registry and proxy; returns the stack and what to clean up.

    One nginx worker by default: tests run many stacks side by side on small machines.
    """
    cleanup: list = []
    prefix = f"maint-{uuid.uuid4().hex[:8]}"
    try:
        network = client.networks.create(f"{prefix}-net", driver="bridge")
        cleanup.append(network)
        volume = client.volumes.create(f"{prefix}-data")
        cleanup.append(volume)
        sockets = client.volumes.create(f"{prefix}-socket", driver="local", driver_opts=SOCKET_VOLUME_DRIVER_OPTS)
        cleanup.append(sockets)
        config = registry_config(http_secret=secrets.token_hex(16))
        config["storage"]["delete"]["enabled"] = delete_enabled
        # As the program deploys it: the registry serves on a Unix socket in a volume shared
        # with nginx only; a garbage collection's stand-by serves on a second one there.
        registry = client.containers.create(
            REGISTRY_IMAGE, name=f"{prefix}-registry", network=network.name, user=REGISTRY_USER,
            entrypoint=serve_command(CONFIG_PATH),
            volumes={volume.name: {"bind": DATA_DIR, "mode": "rw"}, sockets.name: {"bind": SOCKET_DIR, "mode": "rw"}},
            labels={"private-registry.test": "maintenance"}, restart_policy={"Name": RESTART_POLICY},
        )
        cleanup.append(registry)
        registry.put_archive("/", _tar({CONFIG_PATH: yaml.safe_dump(config).encode()}))
        registry.start()

        ca_pem, cert_pem, key_pem = _pki()
        password = PASSWORD_PREFIX + secrets.token_urlsafe(12)
        salt = bcrypt_salt(base64.b64encode(secrets.token_bytes(16)).decode())
        htpasswd = render_htpasswd({USERNAME: (password, salt)}, rounds=5)
        port = free_port()
        conf = render_nginx_conf(NginxOptions(worker_processes=nginx_workers, public_port=port))
        proxy = client.containers.create(
            NGINX_IMAGE, name=f"{prefix}-proxy", network=network.name, stop_signal="SIGQUIT",
            volumes={sockets.name: {"bind": SOCKET_DIR, "mode": "rw"}},
            ports={"443/tcp": ("127.0.0.1", port)}, labels={"private-registry.test": "maintenance"},
        )
        cleanup.append(proxy)
        proxy.put_archive(
            "/", _tar({CONF_PATH: conf.encode(), CERT_PATH: cert_pem, KEY_PATH: key_pem, HTPASSWD_PATH: htpasswd.encode()})
        )
        proxy.start()

        cert_dir = work / "certs"
        cert_dir.mkdir(parents=True, exist_ok=True)
        (cert_dir / "ca.crt").write_text(ca_pem)
        url = f"https://localhost:{port}"
        _wait_ready(url, cert_dir / "ca.crt", (USERNAME, password))
        stack = RegistryStack(
            docker=client, url=url, host=f"localhost:{port}", ca_pem=ca_pem, username=USERNAME, password=password,
            registry_name=registry.name, proxy_name=proxy.name, volume_name=volume.name, cert_dir=cert_dir, work=work,
        )
        return stack, cleanup
    except BaseException:
        teardown(cleanup)
        raise


def teardown(cleanup: list) -> None:
    """Remove containers, then the volume and network, whatever state they are in."""
    for item in reversed(cleanup):
        try:
            if isinstance(item, docker.models.containers.Container):
                item.remove(force=True, v=True)
            else:
                item.remove()
        except docker.errors.NotFound:
            pass


@pytest.fixture(scope="session")
def docker_client():
    client = docker.DockerClient(base_url=DOCKER_HOST)
    yield client
    client.close()


@pytest.fixture
def registry_stack(docker_client, tmp_path):
    stack, cleanup = start_stack(docker_client, tmp_path)
    try:
        yield stack
    finally:
        teardown(cleanup)


@pytest.fixture(scope="module")
def shared_stack(docker_client, tmp_path_factory):
    """One stack for tests that change nothing in it (errors, probes)."""
    stack, cleanup = start_stack(docker_client, tmp_path_factory.mktemp("shared-stack"))
    try:
        yield stack
    finally:
        teardown(cleanup)


@pytest.fixture
def images(tmp_path):
    """An OCI layout with images to push: single-platform ones sharing a base layer, and an index."""
    layout = tmp_path / "layout"
    base = oci.random_bytes(64 * 1024, seed="base")
    digests = {
        "one": oci.write_image(layout, "one", [base, oci.random_bytes(32 * 1024, seed="one")], seed="one"),
        "two": oci.write_image(layout, "two", [base, oci.random_bytes(32 * 1024, seed="two")], seed="two"),
        "three": oci.write_image(layout, "three", [base, oci.random_bytes(32 * 1024, seed="three")], seed="three"),
        "multi": oci.write_index(
            layout, "multi", [("amd64", [base, 16 * 1024]), ("arm64", [base, 16 * 1024])], seed="multi"
        ),
    }
    return layout, digests


def set_created(layout: Path, tag: str, created: str | dict[str, str]) -> str:
    """Rewrite the build time (config ``created``) of ``tag`` in an OCI layout; returns the new digest.

    ``tests.support.oci`` writes every image as built in 1970; retention needs other times.
    For an index, ``created`` maps architecture to time and each platform image is rewritten.
    """

    def write(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        oci.blob_path(layout, digest).write_bytes(data)
        return digest

    def rewrite_image(descriptor: dict, stamp: str) -> dict:
        manifest = json.loads(oci.read_blob(layout, descriptor["digest"]))
        config = json.loads(oci.read_blob(layout, manifest["config"]["digest"]))
        config["created"] = stamp
        config_bytes = json.dumps(config).encode()
        manifest["config"] = {**manifest["config"], "digest": write(config_bytes), "size": len(config_bytes)}
        manifest_bytes = json.dumps(manifest).encode()
        return {**descriptor, "digest": write(manifest_bytes), "size": len(manifest_bytes)}

    index_file = layout / "index.json"
    top = json.loads(index_file.read_text())
    entry = next(m for m in top["manifests"] if m.get("annotations", {}).get(oci.REF_NAME) == tag)
    if entry["mediaType"] == oci.MEDIA_TYPE_INDEX:
        index = json.loads(oci.read_blob(layout, entry["digest"]))
        index["manifests"] = [rewrite_image(child, created[child["platform"]["architecture"]])
                              for child in index["manifests"]]
        index_bytes = json.dumps(index).encode()
        new_entry = {**entry, "digest": write(index_bytes), "size": len(index_bytes)}
    else:
        new_entry = rewrite_image(entry, created)
    top["manifests"] = [new_entry if m is entry else m for m in top["manifests"]]
    index_file.write_text(json.dumps(top))
    return new_entry["digest"]


# --- tests ------------------------------------------------------------------------------------


def test_tags_digests_and_index_contents_match_what_was_pushed(registry_stack, images):
    """Through the proxy: tags listed, digests resolved with the full Accept list equal the
    layout's own, and an OCI index is recognised with its platform manifests."""
    layout, digests = images
    registry_stack.push(layout, "one", "team/app")
    registry_stack.push(layout, "one", "team/app", "latest")
    registry_stack.push(layout, "multi", "team/app", multi=True)
    with registry_stack.client() as client:
        assert client.catalog() == ["team/app"]
        assert client.tags("team/app") == ["latest", "multi", "one"]
        assert client.digests("team/app", ["one", "latest", "multi"]) == {
            "one": digests["one"], "latest": digests["one"], "multi": digests["multi"]}
        assert client.tags_sharing("team/app", digests["one"]) == ["latest", "one"]
        assert client.describe("team/app", "multi").is_index
        manifest = client.manifest("team/app", "multi")
        assert sorted(manifest.children) == sorted(oci.index_children(layout, digests["multi"]).values())


def test_created_is_the_config_build_time_and_an_index_takes_its_newest_child(registry_stack, images):
    """Build time is read from the image config through the API; an index's is its newest platform image's."""
    layout, _ = images
    set_created(layout, "one", "2024-05-01T12:00:00.5Z")
    set_created(layout, "multi", {"amd64": "2024-01-01T00:00:00Z", "arm64": "2024-02-03T04:05:06Z"})
    registry_stack.push(layout, "one", "app")
    registry_stack.push(layout, "multi", "app", multi=True)
    with registry_stack.client() as client:
        assert client.created("app", "one") == datetime.datetime(2024, 5, 1, 12, 0, 0, 500000, datetime.timezone.utc)
        assert client.created("app", "multi") == datetime.datetime(2024, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc)


def test_delete_by_digest_removes_every_tag_on_it_and_twice_is_already_gone(registry_stack, images):
    """Registry 2.8 semantics the providers rely on: DELETE by digest drops all its tags; a
    second DELETE is 404, reported as already gone; other tags are untouched."""
    layout, digests = images
    for tag in ("one", "two"):
        registry_stack.push(layout, tag, "app")
    registry_stack.push(layout, "one", "app", "latest")
    with registry_stack.client() as client:
        assert client.delete("app", digests["one"]) is True
        assert client.delete("app", digests["one"]) is False
        assert client.tags("app") == ["two"]
        with pytest.raises(RegistryNotFoundError):
            client.resolve("app", "latest")
    assert registry_stack.pull("app", "two").returncode == 0


def test_wrong_password_is_an_auth_error_that_does_not_contain_it(shared_stack):
    """Wrong credentials: an auth error naming registry and status, containing neither password."""
    wrong = "Wr0ng@:" + secrets.token_hex(4)
    with shared_stack.client(password=wrong) as client, pytest.raises(RegistryAuthError) as caught:
        client.tags("app")
    assert wrong not in str(caught.value) and shared_stack.password not in str(caught.value)
    assert "401" in str(caught.value) and shared_stack.url in str(caught.value)


def test_another_ca_is_a_tls_error(shared_stack):
    """A CA that did not sign the proxy's certificate gives a TLS error with OpenSSL's reason."""
    other_ca, _, _ = _pki()
    with shared_stack.client(ca_pem=other_ca) as client, pytest.raises(RegistryTLSError) as caught:
        client.ping()
    assert "certificate verify failed" in str(caught.value)


def test_a_closed_port_is_unreachable():
    """Nothing listening: an unreachable error, not a hang or a generic failure."""
    with RegistryClient(f"https://localhost:{free_port()}", username="u", password="p", ca_pem=None) as client:
        with pytest.raises(RegistryUnreachableError, match="unreachable"):
            client.tags("app")


def test_unknown_repository_and_malformed_tag(shared_stack):
    """An unknown repository is NAME_UNKNOWN from the registry; a malformed tag is refused locally."""
    with shared_stack.client() as client:
        with pytest.raises(RegistryNotFoundError, match="NAME_UNKNOWN") as caught:
            client.tags("no/such-repo")
        assert caught.value.code == "NAME_UNKNOWN"
        with pytest.raises(RegistryInputError, match="not a valid tag"):
            client.resolve("app", "bad tag")


def test_deletion_disabled_is_reported_as_such(docker_client, tmp_path, images):
    """A registry with storage.delete.enabled: false answers 405; the error says how to fix it."""
    stack, cleanup = start_stack(docker_client, tmp_path, delete_enabled=False)
    try:
        layout, digests = images
        stack.push(layout, "one", "app")
        with stack.client() as client, pytest.raises(RegistryDeletionDisabledError, match="storage.delete.enabled"):
            client.delete("app", digests["one"])
    finally:
        teardown(cleanup)


def test_writes_refused_is_false_on_a_writable_registry(shared_stack):
    """The read-only probe reports a normal registry as writable (and cancels its upload)."""
    with shared_stack.client() as client:
        assert client.writes_refused("probe/repo") is False
