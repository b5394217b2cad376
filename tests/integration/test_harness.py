"""The test harness itself works: stand-in images, OCI layouts, the no-skips policy.

Everything here runs real software: the stand-in images on the Docker engine, Debian's
`docker-registry` (distribution 2.8.2) on a loopback port, skopeo 1.9, and pytest itself.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import docker
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import oci
from tests.support.ports import free_port as _free_port
from tests.support.waiting import http_status, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTRY_IMAGE = "private-registry-standin/registry:2.8.2"
NGINX_IMAGE = "private-registry-standin/nginx:1.22.1"
BUSYBOX_IMAGE = "private-registry-standin/busybox:test"
MANIFEST_ACCEPT = ", ".join(
    [
        oci.MEDIA_TYPE_INDEX,
        oci.MEDIA_TYPE_MANIFEST,
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_client():
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture
def run_container(docker_client):
    """Start containers (detached, labelled) and remove them and their volumes afterwards."""
    started = []

    def run(image: str, **kwargs):
        container = docker_client.containers.run(
            image, detach=True, labels={"private-registry.test": "harness"}, **kwargs
        )
        started.append(container)
        return container

    yield run
    for container in reversed(started):
        container.remove(force=True, v=True)


@pytest.fixture
def network(docker_client):
    """A user-defined bridge network: Docker's DNS resolves container names and aliases."""
    net = docker_client.networks.create(f"harness-{uuid.uuid4().hex[:8]}", driver="bridge")
    yield net
    net.reload()
    for container in net.containers:
        net.disconnect(container, force=True)
    net.remove()


@pytest.fixture
def local_registry(tmp_path):
    """Debian's docker-registry serving plain HTTP on a loopback port; yields 127.0.0.1:PORT."""
    port = _free_port()
    config = tmp_path / "registry-config.yml"
    config.write_text(
        textwrap.dedent(
            f"""\
            version: 0.1
            log:
              level: warn
            storage:
              filesystem:
                rootdirectory: {tmp_path / "registry-data"}
              delete:
                enabled: true
            http:
              addr: 127.0.0.1:{port}
            """
        )
    )
    log = (tmp_path / "registry.log").open("wb")
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
    host = f"127.0.0.1:{port}"

    try:
        wait_for(lambda: http_status(f"http://{host}/v2/", timeout=1) == 200, interval=0.1,
                 what="docker-registry on " + host, process=process, log=tmp_path / "registry.log")
        yield host
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _skopeo(*args: str) -> bytes:
    result = subprocess.run(["skopeo", *args], capture_output=True, timeout=120)
    assert result.returncode == 0, f"skopeo {' '.join(args)} failed: {result.stderr.decode()}"
    return result.stdout


def _push(layout: Path, tag: str, destination: str, *extra: str) -> None:
    _skopeo("copy", "--quiet", "--dest-tls-verify=false", *extra, f"oci:{layout}:{tag}", f"docker://{destination}")


def _raw_manifest(reference: str) -> bytes:
    return _skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{reference}")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _wget_status(container, url: str) -> str:
    """HTTP status of a GET made with busybox wget inside ``container``, or the error text."""
    exit_code, output = container.exec_run(["wget", "-S", "-O", "/dev/null", url])
    statuses = [line.split()[1] for line in output.decode().splitlines() if line.strip().startswith("HTTP/")]
    return statuses[-1] if statuses else f"no HTTP answer (exit {exit_code}): {output.decode().strip()}"


# --- stand-in images ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "entrypoint", "cmd"),
    [
        (REGISTRY_IMAGE, ["/bin/registry"], ["serve", "/etc/docker/registry/config.yml"]),
        (
            NGINX_IMAGE,
            ["/usr/sbin/nginx", "-p", "/etc/nginx/", "-c", "/etc/nginx/nginx.conf", "-g", "daemon off;"],
            None,
        ),
        (BUSYBOX_IMAGE, None, ["sh"]),
    ],
)
def test_standin_image_has_the_official_entrypoint(docker_client, image, entrypoint, cmd):
    """Each stand-in image exists and starts its program the way the official image does."""
    config = docker_client.images.get(image).attrs["Config"]
    assert config["Entrypoint"] == entrypoint
    assert config["Cmd"] == cmd


def test_registry_standin_answers_v2_from_another_container(run_container, network):
    """The registry stand-in serves GET /v2/ = 200 to a container on the same network, by alias,
    and its declared healthcheck command (busybox wget on 127.0.0.1:5000) succeeds."""
    registry = run_container(REGISTRY_IMAGE, network=network.name, networking_config={
        network.name: docker.types.EndpointConfig("1.41", aliases=["registry"])})
    client = run_container(BUSYBOX_IMAGE, command=["sleep", "300"], network=network.name)

    wait_for(lambda: _wget_status(client, "http://registry:5000/v2/") == "200", what="registry /v2/")
    health = registry.exec_run(["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:5000/"])
    assert health.exit_code == 0, health.output.decode()


def test_registry_standin_stores_under_var_lib_registry(run_container, tmp_path):
    """A push to the registry stand-in lands in /var/lib/registry, the official image's volume."""
    registry = run_container(REGISTRY_IMAGE, ports={"5000/tcp": ("127.0.0.1", None)})
    registry.reload()
    host = f"127.0.0.1:{registry.ports['5000/tcp'][0]['HostPort']}"
    wait_for(lambda: http_status(f"http://{host}/v2/", timeout=1) == 200, interval=0.1, what="published registry port")
    digest = oci.write_image(tmp_path / "layout", "v1", [b"stored"], seed="store")

    _push(tmp_path / "layout", "v1", f"{host}/harness/stored:v1")

    exit_code, output = registry.exec_run(
        ["ls", "/var/lib/registry/docker/registry/v2/repositories/harness/stored/_manifests/revisions/sha256"]
    )
    assert exit_code == 0, output.decode()
    assert output.decode().split() == [digest.removeprefix("sha256:")]


def test_nginx_standin_proxies_to_registry_by_alias(run_container, network, tmp_path):
    """The nginx stand-in starts with a mounted config, resolves its upstream `registry` through
    Docker's DNS, proxies /v2/ to it, and runs its workers as nobody."""
    registry = run_container(REGISTRY_IMAGE, network=network.name, networking_config={
        network.name: docker.types.EndpointConfig("1.41", aliases=["registry"])})
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        textwrap.dedent(
            """\
            events {}
            http {
                server {
                    listen 80;
                    location = /healthz { return 200 "ok\\n"; }
                    location / { proxy_pass http://registry:5000; }
                }
            }
            """
        )
    )
    proxy = run_container(
        NGINX_IMAGE,
        network=network.name,
        networking_config={network.name: docker.types.EndpointConfig("1.41", aliases=["proxy"])},
        volumes={str(conf): {"bind": "/etc/nginx/nginx.conf", "mode": "ro"}},
    )
    client = run_container(BUSYBOX_IMAGE, command=["sleep", "300"], network=network.name)

    wait_for(lambda: _wget_status(client, "http://proxy/healthz") == "200", what="nginx /healthz")
    assert _wget_status(client, "http://proxy/v2/") == "200"
    assert _wget_status(registry, "http://proxy/healthz") == "200"
    workers = [p for p in proxy.top(ps_args="-o pid,user,args")["Processes"] if "worker process" in p[2]]
    assert workers and {p[1] for p in workers} == {"nobody"}, proxy.top(ps_args="-o pid,user,args")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = time.time()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.fromtimestamp(now - 60, datetime.timezone.utc))
        .not_valid_after(datetime.datetime.fromtimestamp(now + 3600, datetime.timezone.utc))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "server.crt", tmp_path / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def test_nginx_standin_serves_tls_with_bcrypt_basic_auth(run_container, tmp_path):
    """The nginx stand-in has what the program's proxy needs: TLS (libssl) and basic auth
    checked against a bcrypt htpasswd line (libcrypt), on a port published to loopback."""
    # Workers run as nobody and read htpasswd and content per request: pytest's tmp_path is
    # 0700, so the mounted directory must be opened up.
    site = tmp_path / "site"
    site.mkdir(mode=0o755)
    site.chmod(0o755)
    cert, key = _self_signed(site)
    password = uuid.uuid4().hex
    htpasswd = subprocess.run(
        ["htpasswd", "-niB", "-C", "5", "harness"], input=password.encode(), capture_output=True, check=True
    ).stdout
    (site / "htpasswd").write_bytes(htpasswd)
    (site / "index.html").write_text("authorized\n")
    (tmp_path / "nginx.conf").write_text(
        textwrap.dedent(
            """\
            events {}
            http {
                server {
                    listen 443 ssl;
                    ssl_certificate /etc/nginx/site/server.crt;
                    ssl_certificate_key /etc/nginx/site/server.key;
                    auth_basic "harness";
                    auth_basic_user_file /etc/nginx/site/htpasswd;
                    # Not `return`: it answers in the rewrite phase, before auth_basic runs.
                    location / { root /etc/nginx/site; }
                }
            }
            """
        )
    )
    proxy = run_container(
        NGINX_IMAGE,
        ports={"443/tcp": ("127.0.0.1", None)},
        volumes={
            str(tmp_path / "nginx.conf"): {"bind": "/etc/nginx/nginx.conf", "mode": "ro"},
            str(site): {"bind": "/etc/nginx/site", "mode": "ro"},
        },
    )
    proxy.reload()
    url = f"https://localhost:{proxy.ports['443/tcp'][0]['HostPort']}/"

    def answered():
        try:
            return requests.get(url, verify=str(cert), timeout=2)
        except requests.ConnectionError:
            return None

    anonymous = wait_for(answered, what="nginx TLS port")
    assert anonymous.status_code == 401
    assert requests.get(url, verify=str(cert), auth=("harness", "wrong"), timeout=5).status_code == 401
    authorized = requests.get(url, verify=str(cert), auth=("harness", password), timeout=5)
    assert (authorized.status_code, authorized.text) == (200, "authorized\n")


# --- OCI layouts against the real registry -----------------------------------------------------


def test_write_image_is_pushed_with_the_computed_digest(local_registry, tmp_path):
    """An image from oci.write_image is accepted by distribution 2.8.2 via skopeo, unchanged:
    the registry serves the manifest under the digest write_image returned."""
    layout = tmp_path / "layout"
    digest = oci.write_image(layout, "v1", [b"first layer", 4096, 2 * 2**20], seed="push")

    _push(layout, "v1", f"{local_registry}/harness/image:v1")

    assert _sha256(_raw_manifest(f"{local_registry}/harness/image:v1")) == digest
    head = requests.head(
        f"http://{local_registry}/v2/harness/image/manifests/v1", headers={"Accept": MANIFEST_ACCEPT}, timeout=5
    )
    assert head.status_code == 200
    assert head.headers["Docker-Content-Digest"] == digest
    assert head.headers["Content-Type"] == oci.MEDIA_TYPE_MANIFEST


def test_config_diff_ids_are_the_uncompressed_layer_digests(tmp_path):
    """The config's rootfs.diff_ids are the sha256 of each gunzipped layer, in order, and the
    layer descriptors give each blob's true digest and size."""
    layout = tmp_path / "layout"
    manifest = json.loads(oci.read_blob(layout, oci.write_image(layout, "v1", [b"a", 1000, b"b"], seed=3)))
    config = json.loads(oci.read_blob(layout, manifest["config"]["digest"]))
    blobs = [oci.read_blob(layout, layer["digest"]) for layer in manifest["layers"]]

    assert [_sha256(blob) for blob in blobs] == [layer["digest"] for layer in manifest["layers"]]
    assert [len(blob) for blob in blobs] == [layer["size"] for layer in manifest["layers"]]
    assert config["rootfs"]["diff_ids"] == [_sha256(gzip.decompress(blob)) for blob in blobs]
    assert (config["architecture"], config["os"]) == ("amd64", "linux")


def test_write_image_is_deterministic_per_seed(tmp_path):
    """Same layers and seed give the same digest in another layout; another seed changes the
    random layers and so the digest."""
    first = oci.write_image(tmp_path / "a", "v1", [b"x", 5000], seed=7)
    again = oci.write_image(tmp_path / "b", "v1", [b"x", 5000], seed=7)
    other = oci.write_image(tmp_path / "c", "v1", [b"x", 5000], seed=8)

    assert first == again
    assert other != first


def test_images_passing_the_same_bytes_share_a_layer(local_registry, tmp_path):
    """Two images given the same layer bytes reference the same blob in the registry, and both
    tags of one layout push and resolve."""
    layout = tmp_path / "layout"
    shared = oci.random_bytes(300_000, seed="shared")
    one = oci.write_image(layout, "one", [shared, 1000], seed=1)
    two = oci.write_image(layout, "two", [shared, 2000], seed=2)

    for tag in ("one", "two"):
        _push(layout, tag, f"{local_registry}/harness/shared:{tag}")

    manifests = {tag: _raw_manifest(f"{local_registry}/harness/shared:{tag}") for tag in ("one", "two")}
    assert {tag: _sha256(raw) for tag, raw in manifests.items()} == {"one": one, "two": two}
    layers = {tag: [layer["digest"] for layer in json.loads(raw)["layers"]] for tag, raw in manifests.items()}
    assert layers["one"][0] == layers["two"][0]
    assert layers["one"][1] != layers["two"][1]


def test_multi_arch_index_pushes_and_its_children_resolve(local_registry, tmp_path):
    """A write_index image index pushes with `skopeo copy --all`; the registry serves the index
    under the computed digest, each child manifest by digest, and per-platform configs."""
    layout = tmp_path / "layout"
    index_digest = oci.write_index(layout, "multi", [("amd64", [b"amd", 1000]), ("arm64", [b"arm", 2000])], seed=4)
    children = oci.index_children(layout, index_digest)
    repo = f"{local_registry}/harness/multi"

    _push(layout, "multi", f"{repo}:v1", "--all")

    raw_index = _raw_manifest(f"{repo}:v1")
    assert _sha256(raw_index) == index_digest
    assert json.loads(raw_index)["mediaType"] == oci.MEDIA_TYPE_INDEX
    assert set(children) == {"linux/amd64", "linux/arm64"}
    for platform, child in children.items():
        assert _sha256(_raw_manifest(f"{repo}@{child}")) == child
        architecture = platform.split("/")[1]
        inspected = json.loads(
            _skopeo("inspect", "--tls-verify=false", "--override-arch", architecture, f"docker://{repo}:v1")
        )
        assert inspected["Architecture"] == architecture


# --- the no-skips plugin --------------------------------------------------------------------


def _run_pytest(tmp_path: Path, test_source: str, **env: str) -> subprocess.CompletedProcess:
    """Run pytest with the no-skips plugin on one test file, isolated from this repo's config."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(test_source))
    base_env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "CI": "", "REQUIRE_NO_SKIPS": ""}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.support.no_skips", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        env={**base_env, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


SKIPPING_TESTS = """
    import pytest

    def test_runs():
        pass

    @pytest.mark.skip(reason="tool missing")
    def test_skipped():
        pass

    @pytest.mark.xfail(reason="known bug")
    def test_xfail():
        assert False
"""


@pytest.mark.parametrize("env", [{"CI": "true"}, {"REQUIRE_NO_SKIPS": "1"}])
def test_no_skips_policy_fails_a_run_with_skips_and_xfails(tmp_path, env):
    """With CI=true or REQUIRE_NO_SKIPS=1, a skipped and an xfail test turn a passing run into a
    failure (exit 1), and the summary names both with their reasons."""
    result = _run_pytest(tmp_path, SKIPPING_TESTS, **env)

    assert result.returncode == 1, result.stdout
    assert "2 test(s) skipped or marked xfail" in result.stdout
    assert "SKIPPED test_sample.py::test_skipped: tool missing" in result.stdout
    assert "XFAIL test_sample.py::test_xfail: known bug" in result.stdout


def test_no_skips_policy_is_off_outside_ci(tmp_path):
    """Without CI=true or REQUIRE_NO_SKIPS=1, skips and xfails leave the exit status at 0."""
    result = _run_pytest(tmp_path, SKIPPING_TESTS, CI="false")

    assert result.returncode == 0, result.stdout
    assert "no-skips policy" not in result.stdout


def test_no_skips_policy_fails_module_level_skips(tmp_path):
    """A module skipped at collection (e.g. a missing import) also fails the run."""
    source = 'import pytest\npytest.skip("no tool", allow_module_level=True)\n'
    result = _run_pytest(tmp_path, source, CI="true")

    assert result.returncode == 1, result.stdout
    assert "SKIPPED (collection) test_sample.py: no tool" in result.stdout


def test_no_skips_policy_fails_when_no_tests_are_collected(tmp_path):
    """An empty run is a failure with a clear message, not a silent exit 5."""
    result = _run_pytest(tmp_path, "# no tests here\n", CI="true")

    assert result.returncode == 1, result.stdout
    assert "no tests were collected" in result.stdout


def test_no_skips_policy_passes_a_clean_run(tmp_path):
    """A run where every test passes keeps exit status 0 under the policy."""
    result = _run_pytest(tmp_path, "def test_ok():\n    pass\n", CI="true")

    assert result.returncode == 0, result.stdout
