"""The rendered nginx.conf and config.yml, with the program's certificates and htpasswd, run by
the real software: Debian's nginx in front of Debian's docker-registry (distribution 2.8.2), on
loopback ports, checked with requests, curl, openssl and skopeo.

Everything served comes from a `run_program` run (the mocks make real keys and certificates from
exactly the inputs the program hands pulumi-tls). Only what ties the files to a container is
rewritten: file paths (the sockets included) into a scratch folder, the listen ports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import pytest
import requests
import yaml

from components.render.nginx import CERT_PATH, CONF_PATH, CONTAINER_HTTPS_PORT, HEALTH_PORT, HTPASSWD_PATH, KEY_PATH
from components.render.registry_config import CONFIG_PATH, REGISTRY_SOCKET, STANDBY_SOCKET, UMASK
from tests.support import oci
from tests.support.go_tools import registry_binary
from tests.support.program import run_program
from tests.support.ports import free_port
from tests.support.waiting import listening, wait_for

USER = "alice"
PASSWORD = "p@ss:w0rd@with:colons-0123"  # '@' and ':' are allowed; the tutorial forbade '@'
ALGORITHMS = ["ECDSA-P256", "RSA-2048", "ED25519"]
API_HEADER = "Docker-Distribution-Api-Version"


def uploads(run, container_name: str) -> dict[str, str]:
    (container,) = [r for r in run.monitor.registered if r.name == container_name]
    return {u["file"]: u["content"] for u in container.plain_inputs["uploads"]}


def localize_nginx_conf(conf: str, root: Path, https_port: int, health_port: int) -> str:
    """The rendered config with container paths (the sockets') moved under ``root`` and loopback ports."""
    replacements = {
        CERT_PATH: str(root / "server.crt"),
        KEY_PATH: str(root / "server.key"),
        HTPASSWD_PATH: str(root / "htpasswd"),
        "pid /tmp/nginx.pid;": f"pid {root}/nginx.pid;",
        f"listen {CONTAINER_HTTPS_PORT} ssl": f"listen 127.0.0.1:{https_port} ssl",
        f"server unix:{REGISTRY_SOCKET} ": f"server unix:{root}/registry.sock ",
        f"server unix:{STANDBY_SOCKET} ": f"server unix:{root}/standby.sock ",
        f"listen 127.0.0.1:{HEALTH_PORT};": f"listen 127.0.0.1:{health_port};",
    }
    for old, new in replacements.items():
        assert old in conf, f"rendered nginx.conf no longer has {old!r}"
        conf = conf.replace(old, new)
    conf = re.sub(r"(_temp_path) /tmp/", rf"\1 {root}/", conf)
    assert "/etc/nginx" not in conf and "/tmp/nginx" not in conf
    return conf


class Served:
    """nginx (TLS, auth) in front of docker-registry, from one program run's files."""

    def __init__(self, algorithm: str):
        self.algorithm = algorithm
        # nginx workers run as 'nobody' and read the htpasswd per request: a world-readable folder
        # (pytest's tmp_path sits under a 0700 folder).
        self.root = Path(tempfile.mkdtemp(prefix="render-real-", dir="/tmp"))
        self.root.chmod(0o755)
        self.processes: list[subprocess.Popen] = []
        self.port, health_port, debug_port = free_port(), free_port(), free_port()
        # The published port is in the config (the Host the registry sees, redirects).
        self.run = run_program(
            {"users": {USER: PASSWORD}, "hosts": ["localhost"], "ips": ["127.0.0.1"], "httpsPort": self.port,
             "certificate": {"keyAlgorithm": algorithm}, "auth": {"mode": "basic"}},  # nginx's own auth
            secret_keys=["users"],
        )
        proxy_files = uploads(self.run, "registry-proxy-container")
        registry_files = uploads(self.run, "registry-registry-container")
        self.ca = self.root / "ca.pem"
        self.ca.write_text(self.run.exports["caCertificatePem"])
        self.cert = self.root / "server.crt"
        self.cert.write_text(proxy_files[CERT_PATH])
        key = self.root / "server.key"
        key.write_text(proxy_files[KEY_PATH])
        key.chmod(0o600)
        htpasswd = self.root / "htpasswd"
        htpasswd.write_text(proxy_files[HTPASSWD_PATH])
        htpasswd.chmod(0o644)
        self.nginx_conf = self.root / "nginx.conf"
        self.nginx_conf.write_text(
            localize_nginx_conf(proxy_files[CONF_PATH], self.root, self.port, health_port))
        config = yaml.safe_load(registry_files[CONFIG_PATH])
        config["storage"]["filesystem"]["rootdirectory"] = str(self.root / "data")
        config["http"]["addr"] = str(self.root / "registry.sock")
        config["http"]["debug"]["addr"] = f"127.0.0.1:{debug_port}"
        (self.root / "config.yml").write_text(yaml.safe_dump(config))
        self.debug_port = debug_port

    def start(self) -> None:
        # As in its container: the entrypoint's umask makes the socket rw for root's group
        # only, where nginx's workers are (nobody, group root).
        self._spawn(["docker-registry", "serve", str(self.root / "config.yml")], "registry.log", self.debug_port,
                    umask=int(UMASK, 8))
        self._spawn(["nginx", "-p", str(self.root), "-c", str(self.nginx_conf), "-g", "daemon off;"], "nginx.log",
                    self.port)

    def _spawn(self, argv: list[str], log_name: str, port: int, umask: int = 0o022) -> None:
        log = self.root / log_name
        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       preexec_fn=lambda: os.umask(umask))
        self.processes.append(process)
        wait_for(lambda: listening(port), timeout=15, interval=0.05, what=f"port {port} listening", process=process,
                 log=log)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, path: str, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{path}"

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url(path), verify=str(self.ca), timeout=10, **kwargs)


@pytest.fixture(scope="module", params=ALGORITHMS)
def served(request):
    """One running nginx + registry pair per key algorithm, torn down after the module's tests."""
    stack = Served(request.param)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def api_headers(response: requests.Response) -> list[str]:
    """Every Docker-Distribution-Api-Version header line as sent (duplicates not merged)."""
    return response.raw.headers.getlist(API_HEADER)


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *args],
                          capture_output=True, text=True, timeout=30)


def test_rendered_nginx_conf_passes_nginx_t(served):
    """`nginx -t` accepts the rendered configuration with the program's certificate and key."""
    result = subprocess.run(["nginx", "-t", "-p", str(served.root), "-c", str(served.nginx_conf)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


def test_v2_without_or_with_wrong_credentials_is_401_with_the_api_header_once(served):
    """No credentials, a wrong password, an unknown user: 401, a Basic challenge, the API version
    header exactly once, HSTS."""
    for auth in (None, (USER, PASSWORD + "x"), (USER, PASSWORD.split(":")[0]), ("mallory", PASSWORD)):
        response = served.get("/v2/", auth=auth)
        assert response.status_code == 401, auth
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
        assert api_headers(response) == ["registry/2.0"]
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_v2_with_the_right_password_is_200_with_the_api_header_once(served):
    """The configured password (with '@' and ':') opens /v2/; the registry's own API header is
    passed through once, not duplicated by nginx."""
    response = served.get("/v2/", auth=(USER, PASSWORD))
    assert response.status_code == 200
    assert api_headers(response) == ["registry/2.0"]
    assert served.get("/v2/_catalog", auth=(USER, PASSWORD)).status_code == 200


def test_health_is_served_without_credentials(served):
    """/healthz answers 200 without credentials (it proxies the registry root)."""
    assert served.get("/healthz").status_code == 200
    assert served.get("/").status_code == 404


def test_tls_verifies_for_the_host_name_and_the_ip_but_no_other_name(served):
    """The served chain verifies against the exported CA as `localhost` and as 127.0.0.1 (both
    in subjectAltName); another name resolving to the same address is refused (curl exit 60)."""
    for host in ("localhost", "127.0.0.1"):
        assert requests.get(served.url("/healthz", host), verify=str(served.ca), timeout=10).status_code == 200
        assert curl("--cacert", str(served.ca), served.url("/healthz", host)).stdout == "200"
    wrong = curl("--cacert", str(served.ca), "--resolve", f"other.example:{served.port}:127.0.0.1",
                 served.url("/healthz", "other.example"))
    assert wrong.returncode == 60, (wrong.returncode, wrong.stderr)


def test_tls_1_2_and_1_3_both_connect(served):
    """Clients limited to TLS 1.2 and to TLS 1.3 both connect, for every key type. (Refusal of
    TLS 1.0/1.1 is not provable here: Debian's OpenSSL policy refuses them on both ends anyway;
    test_render_nginx checks ssl_protocols.)"""
    for version in ("1.2", "1.3"):
        result = curl("--cacert", str(served.ca), f"--tlsv{version}", "--tls-max", version, served.url("/healthz"))
        assert result.stdout == "200", (version, result.stderr)


def test_openssl_verifies_the_server_certificate_with_server_auth_and_every_name(served):
    """`openssl verify -purpose sslserver` passes; the certificate carries serverAuth and every
    configured name; its key type is the configured algorithm."""
    result = subprocess.run(["openssl", "verify", "-purpose", "sslserver", "-CAfile", str(served.ca), str(served.cert)],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result.stdout + result.stderr
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(served.cert)],
                          capture_output=True, text=True, check=True).stdout
    assert "TLS Web Server Authentication" in text
    assert re.search(r"DNS:localhost, IP Address:127\.0\.0\.1\b", text), text
    expected_key = {"ECDSA-P256": "id-ecPublicKey", "RSA-2048": "rsaEncryption", "ED25519": "ED25519"}[served.algorithm]
    assert f"Public Key Algorithm: {expected_key}" in text


def test_htpasswd_verifies_with_apache_htpasswd(served):
    """Apache's own `htpasswd -v` accepts the program's line for the password and rejects another."""
    path = str(served.root / "htpasswd")
    assert subprocess.run(["htpasswd", "-vb", path, USER, PASSWORD], capture_output=True).returncode == 0
    assert subprocess.run(["htpasswd", "-vb", path, USER, PASSWORD + "!"], capture_output=True).returncode != 0


def test_skopeo_pushes_and_pulls_through_the_proxy(served, tmp_path):
    """A real image goes in and out through TLS and basic auth; the registry stores it under the
    digest written, and the pulled copy has the same digest. Wrong credentials cannot push."""
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    shutil.copy(served.ca, cert_dir / "ca.crt")  # only ca.crt: a *.key there is taken as a client key
    layout = tmp_path / "layout"
    digest = oci.write_image(layout, "v1", [b"hello from the render test", 64 * 1024], seed=served.algorithm)
    target = f"docker://localhost:{served.port}/render/real:v1"
    creds = f"{USER}:{PASSWORD}"

    denied = subprocess.run(["skopeo", "copy", "--dest-cert-dir", str(cert_dir), "--dest-creds", f"{USER}:wrong",
                             f"oci:{layout}:v1", target], capture_output=True, text=True, timeout=60)
    assert denied.returncode != 0
    assert "unauthorized" in denied.stderr.lower() or "401" in denied.stderr, denied.stderr

    subprocess.run(["skopeo", "copy", "--dest-cert-dir", str(cert_dir), "--dest-creds", creds, f"oci:{layout}:v1", target],
                   check=True, capture_output=True, timeout=60)
    inspected = json.loads(subprocess.run(["skopeo", "inspect", "--cert-dir", str(cert_dir), "--creds", creds, target],
                                          check=True, capture_output=True, text=True, timeout=60).stdout)
    assert inspected["Digest"] == digest

    pulled = tmp_path / "pulled"
    subprocess.run(["skopeo", "copy", "--src-cert-dir", str(cert_dir), "--src-creds", creds, target, f"oci:{pulled}:v1"],
                   check=True, capture_output=True, timeout=60)
    index = json.loads((pulled / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [digest]
    assert served.get("/v2/render/real/tags/list", auth=(USER, PASSWORD)).json() == {"name": "render/real", "tags": ["v1"]}


# --- the Redis section each distribution reads --------------------------------------------------

def _serve_with_redis(binary: str, section: dict, root: Path, redis_port: int) -> tuple[Optional[int], str]:
    """(exit status or None if still serving after the health endpoint answered, log) of
    ``binary serve`` with the program's config, its cache on Redis, ``section`` as ``redis``."""
    from components.render.registry_config import registry_config

    port = free_port()
    config = registry_config(http_secret="s" * 32, tcp_addr=f"127.0.0.1:{port}", redis=section)
    config["storage"]["filesystem"]["rootdirectory"] = str(root / "data")
    config["http"]["debug"]["addr"] = f"127.0.0.1:{free_port()}"
    (root / "config.yml").write_text(yaml.safe_dump(config))
    log = root / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env={"PATH": os.environ["PATH"], "OTEL_TRACES_EXPORTER": "none"})
    try:
        wait_for(lambda: process.poll() is not None or listening(port), timeout=15, interval=0.05,
                 what=f"{binary} serving or gone", log=log)
        if process.poll() is None:
            assert requests.get(f"http://127.0.0.1:{port}/v2/", timeout=5).status_code == 200
        return process.poll(), log.read_text(errors="replace")
    finally:
        process.kill()
        process.wait()


def test_each_distribution_reads_only_its_own_redis_section(tmp_path):
    """Against a real redis-server: distribution 3.1.2 serves with the section the program
    renders for it (its log names the Redis cache) and stops at start with 2.8's (its keys go
    unread, "redis configuration required"); Debian's 2.8.2 serves with 2.8's."""
    from components.render.storage import redis_cache

    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listening(redis_port), timeout=15, interval=0.05, what="redis-server listening", process=redis)
        address = f"127.0.0.1:{redis_port}"
        registry3 = registry_binary(3)
        results = {}
        for name, binary, version in (("3 with 3's", registry3, 3), ("3 with 2.8's", registry3, 2),
                                      ("2.8 with 2.8's", "docker-registry", 2)):
            root = tmp_path / name.replace(" ", "-").replace("'", "")
            root.mkdir()
            results[name] = _serve_with_redis(binary, redis_cache(address=address, password=None,
                                                                  registry_version=version), root, redis_port)
    finally:
        redis.kill()
        redis.wait()
    assert results["3 with 3's"][0] is None and "redis not configured" not in results["3 with 3's"][1]
    assert "using redis blob descriptor cache" in results["3 with 3's"][1], results["3 with 3's"][1][-2000:]
    status, log = results["3 with 2.8's"]
    assert status not in (None, 0) and "redis not configured" in log
    assert "redis configuration required to use for layerinfo cache" in log
    assert results["2.8 with 2.8's"][0] is None, results["2.8 with 2.8's"][1][-2000:]
