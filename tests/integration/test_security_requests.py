"""Hostile requests against the deployed stack: each class an outside attacker tried is refused
or inert, on the program's own nginx and registry containers on the real engine.

One stack is deployed for the module, with three helper containers on its network whose
network namespaces test threads enter (tests/support/client_netns.py): nginx sees them as
three client addresses of their own, apart from loopback clients (which arrive through
Docker's userland proxy). Every request is bounded in count and time.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from components.render.nginx import CERT_PATH, HTPASSWD_PATH, KEY_PATH
from components.render.registry_config import CONFIG_PATH, REGISTRY_SOCKET
from tests.support import oci
from tests.support import requests_fuzz as fuzz
from tests.support.client_netns import ClientAddresses, container_address, inside
from tests.support.deploy import live_stack

USER = "alice"
PASSWORD = "Requests-t3st:pass@word-8e1d"
MiB = 1024 * 1024
ATTACKER, BYSTANDER, SPARE = 0, 1, 2
FLOOD_CONNECTIONS = 16
ROUNDS = 3


@dataclass
class Stack:
    address: str  # host:port as clients write it
    port: int
    prefix: str
    network: str
    cert_dir: Path
    ca_file: Path
    proxy_address: str
    clients: ClientAddresses
    docker: docker.DockerClient
    socket_volume: str
    layout: Path

    @property
    def proxy(self) -> str:
        return f"{self.prefix}-proxy"

    @property
    def registry(self) -> str:
        return f"{self.prefix}-registry"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def send(self, raw: bytes, *, via: int | None = None, methods=("GET",)) -> list[fuzz.Response]:
        """Raw bytes over one TLS connection: on loopback, or from helper ``via``'s address."""
        probe = fuzz.Probe("test", raw, tuple((m, "/") for m in methods))
        if via is None:
            return fuzz.send(probe, ("127.0.0.1", self.port), self.context(), "localhost")
        with inside(self.clients.pids[via]):
            return fuzz.send(probe, (self.proxy_address, 443), self.context(), "localhost")

    def request(self, method: str, path: str, headers=(), body: bytes = b"", *, auth: bool = False,
                via: int | None = None) -> fuzz.Response:
        named = {name.lower() for name, _ in headers}
        all_headers = [*([("Host", self.address)] if "host" not in named else []), ("Connection", "close"), *headers]
        if auth:
            all_headers.append(("Authorization", fuzz.basic(USER, PASSWORD)))
        if body:
            all_headers.append(("Content-Length", str(len(body))))
        return self.send(fuzz.request_bytes(method, path, all_headers, body), via=via, methods=(method,))[0]

    def logs(self, container: str, since: float) -> str:
        return self.docker.api.logs(container, since=int(since), stdout=True, stderr=True).decode(errors="replace")

    def size_rw(self, container: str) -> int:
        url = self.docker.api._url("/containers/{0}/json", container)  # noqa: SLF001 - the SDK has no size flag
        return int(self.docker.api._result(self.docker.api._get(url, params={"size": 1}), True).get("SizeRw") or 0)  # noqa: SLF001

    def skopeo(self, *args: str) -> float:
        start = time.monotonic()
        result = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stderr
        return time.monotonic() - start

    def push_pull(self, tag: str, destination: Path) -> float:
        """Seconds for one push and one pull of the module's image, as a user would."""
        creds = f"{USER}:{PASSWORD}"
        seconds = self.skopeo("copy", "-q", "--dest-cert-dir", str(self.cert_dir), "--dest-creds", creds,
                              f"oci:{self.layout}:v1", f"docker://{self.address}/bystander/app:{tag}")
        return seconds + self.skopeo("copy", "-q", "--src-cert-dir", str(self.cert_dir), "--src-creds", creds,
                                     f"docker://{self.address}/bystander/app:{tag}", f"dir:{destination}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    tmp = tmp_path_factory.mktemp("requests")
    # Basic mode: these attacks target nginx's password check (token mode: tests/integration/test_token_*.py).
    with live_stack(tmp, "sec-req", {USER: PASSWORD}, auth={"mode": "basic"}) as live:
        prefix = live.config["namePrefix"]
        network = f"{prefix}-net"
        client = live.deployment.client
        clients = ClientAddresses(client, network, 3)
        layout = tmp / "oci"
        oci.write_image(layout, "v1", [MiB, 2 * MiB], seed="bystander")
        try:
            yield Stack(live.address, live.port, prefix, network, live.cert_dir, live.ca_file,
                        container_address(client, f"{prefix}-proxy", network), clients, client,
                        f"{prefix}-socket", layout)
        finally:
            clients.remove()


# --- 1. bodies where none belong --------------------------------------------------------------


def _stream_body(stack: Stack, head: bytes, body_bytes: int, chunk: int = 256 * 1024) -> tuple[int, int]:
    """Send ``head`` then up to ``body_bytes`` of body until nginx stops reading; returns
    (status of the answer, bytes of body nginx let through before it answered or closed)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as plain:
        with stack.context().wrap_socket(plain, server_hostname="localhost") as tls:
            tls.sendall(head)
            tls.settimeout(0.05)
            answer = b""
            while sent < body_bytes:
                try:
                    answer += tls.recv(4096)
                    if answer:
                        break
                except (TimeoutError, ssl.SSLWantReadError, socket.timeout):
                    pass
                except (ConnectionError, ssl.SSLError):
                    break
                try:
                    tls.settimeout(10)
                    tls.sendall(b"x" * chunk)
                    sent += chunk
                    tls.settimeout(0.05)
                except (ConnectionError, ssl.SSLError, TimeoutError, socket.timeout):
                    break
            tls.settimeout(10)
            try:
                while b"\r\n" not in answer:
                    data = tls.recv(4096)
                    if not data:
                        break
                    answer += data
            except (ConnectionError, ssl.SSLError, TimeoutError, socket.timeout):
                pass
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else -1
    return status, sent


def test_unauthenticated_bodies_are_refused_without_touching_the_disk(stack):
    """A 200 MiB POST /healthz (the attack that filled the disk) is refused with 413 after its
    headers, a chunked one with 405, a 200 MiB upload without credentials with 401: nginx
    reads at most a few MiB of the 600 MiB offered and writes nothing to the container's
    writable layer (less than 1 MiB growth, temp folders empty)."""
    before = stack.size_rw(stack.proxy)
    host = stack.address
    cases = {
        "POST /healthz, Content-Length 200 MiB": (
            f"POST /healthz HTTP/1.1\r\nHost: {host}\r\nContent-Length: {200 * MiB}\r\n\r\n", {413}),
        "POST /healthz, chunked": (
            f"POST /healthz HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n{200 * MiB:x}\r\n", {405}),
        "POST blob upload without credentials, 200 MiB": (
            f"POST /v2/a/blobs/uploads/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: {200 * MiB}\r\n\r\n", {401}),
    }
    through = {}
    for label, (head, statuses) in cases.items():
        status, sent = _stream_body(stack, head.encode(), 200 * MiB)
        through[label] = sent
        assert status in statuses, (label, status)
        assert sent <= 16 * MiB, (label, sent)
    spooled = subprocess.run(["docker", "exec", stack.proxy, "find", "/tmp", "-type", "f", "-path", "*nginx-*"],
                             capture_output=True, text=True, timeout=30).stdout.split()
    growth = stack.size_rw(stack.proxy) - before
    print(f"\nbodies: bytes nginx let through before refusing {through}; writable layer grew {growth} bytes")
    assert spooled == [] and growth < MiB


def test_healthz_takes_get_and_head_without_a_body_only(stack):
    """/healthz: GET and HEAD 200; every other method 405; a GET with a body (or announcing one
    it never sends: the slow-body attack) 400 at once, without waiting for it."""
    assert stack.request("GET", "/healthz").status == 200
    assert stack.request("HEAD", "/healthz").status == 200
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        assert stack.request(method, "/healthz").status == 405, method
    assert stack.request("GET", "/healthz", body=b"12345").status == 400
    start = time.monotonic()
    head = f"GET /healthz HTTP/1.1\r\nHost: {stack.address}\r\nContent-Length: 100\r\n\r\n".encode()
    status, _ = _stream_body(stack, head, 0)
    assert status == 400 and time.monotonic() - start < 3
    chunked = f"GET /healthz HTTP/1.1\r\nHost: {stack.address}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert stack.send(chunked.encode())[0].status == 400


def test_a_stalled_request_head_is_dropped_within_the_header_timeout(stack):
    """A client that sends half a request head and stalls is disconnected after nginx's 10 s
    client_header_timeout, not held indefinitely."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as plain:
        with stack.context().wrap_socket(plain, server_hostname="localhost") as tls:
            tls.sendall(f"GET /healthz HTTP/1.1\r\nHost: {stack.address}\r\n".encode())
            try:
                while tls.recv(4096):
                    pass
            except (ConnectionError, ssl.SSLError):
                pass
    held = time.monotonic() - start
    print(f"\nstalled head dropped after {held:.1f}s")
    assert 9 <= held <= 20


# --- 2. nothing but nginx reaches the registry -----------------------------------------------


def _listening_tcp(container: str) -> list[str]:
    text = subprocess.run(["docker", "exec", container, "cat", "/proc/net/tcp", "/proc/net/tcp6"],
                          capture_output=True, text=True, timeout=30, check=True).stdout
    return [line.split()[1] for line in text.splitlines()[1:] if len(line.split()) > 3 and line.split()[3] == "0A"]


def test_the_registry_has_no_tcp_listener_anyone_else_can_reach(stack):
    """The registry container's only TCP listener is its health/debug one on 127.0.0.1:5001
    (besides Docker's own DNS resolver on 127.0.0.11); from another container on its network,
    its address refuses port 5000 (the old plain-HTTP API that served the catalog to anyone)."""
    listeners = _listening_tcp(stack.registry)
    assert "0100007F:1389" in listeners
    assert [a for a in listeners if a != "0100007F:1389" and not a.startswith("0B00007F:")] == []
    registry_ip = container_address(stack.docker, stack.registry, stack.network)
    with inside(stack.clients.pids[SPARE]):
        for port in (5000, 5001):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((registry_ip, port), timeout=5).close()


def test_the_socket_is_reachable_by_root_only_on_the_host(stack):
    """On the Docker host the socket volume (a tmpfs) is mode 0710 root:root and the socket
    0770 root:root: an unprivileged local user cannot list the catalog or start an upload
    through it (curl is refused), while root can (the control shows the socket does serve)."""
    mountpoint = Path(stack.docker.volumes.get(stack.socket_volume).attrs["Mountpoint"])
    sock = mountpoint / Path(REGISTRY_SOCKET).name
    folder, entry = os.stat(mountpoint), os.stat(sock)
    assert (oct(folder.st_mode & 0o7777), folder.st_uid, folder.st_gid) == ("0o710", 0, 0)
    assert (oct(entry.st_mode & 0o777), entry.st_uid, entry.st_gid) == ("0o770", 0, 0)
    curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--unix-socket", str(sock)]
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    for args in (["http://registry/v2/_catalog"], ["-X", "POST", "http://registry/v2/x/blobs/uploads/"]):
        denied = subprocess.run([*nobody, *curl, *args], capture_output=True, text=True, timeout=30)
        assert denied.returncode == 7 and denied.stdout == "000", (args, denied.returncode, denied.stdout)
    allowed = subprocess.run([*curl, "http://registry/v2/_catalog"], capture_output=True, text=True, timeout=30)
    assert allowed.stdout == "200"


# --- 3. password guessing --------------------------------------------------------------------


def _flood(stack: Stack, active: threading.Event, stop: threading.Event, results: list) -> None:
    """One connection of the attacker: while ``active``, wrong-password GETs back to back,
    keep-alive, each answer awaited (as password-guessing tools do)."""
    wrong = fuzz.basic(USER, "not-the-password-0")
    request = fuzz.request_bytes("GET", "/v2/_catalog", [("Host", stack.address), ("Authorization", wrong)])
    with inside(stack.clients.pids[ATTACKER]):
        while not stop.is_set():
            try:
                with socket.create_connection((stack.proxy_address, 443), timeout=60) as plain:
                    with stack.context().wrap_socket(plain, server_hostname="localhost") as tls:
                        reader = tls.makefile("rb")
                        while not stop.is_set():
                            if not active.is_set():
                                time.sleep(0.05)
                                continue
                            tls.sendall(request)
                            status = int(reader.readline().split()[1])
                            length = 0
                            while (line := reader.readline()) not in (b"\r\n", b""):
                                if line.lower().startswith(b"content-length:"):
                                    length = int(line.split(b":")[1])
                            reader.read(length)
                            results.append((time.monotonic(), status))
            except (OSError, ValueError, IndexError):
                if not stop.is_set():
                    time.sleep(0.1)


def test_a_wrong_password_flood_is_slowed_while_other_clients_keep_their_rate(stack, tmp_path):
    """One address floods wrong passwords on 16 keep-alive connections, in rounds alternating
    with quiet ones; in every round a push + pull of a 3 MiB image runs from another address.
    The flood's answers come at the failed-login rate (5/s per address, never a 200), the
    bystander keeps at least 0.8x its quiet rate, and a third address's first wrong password
    is answered at once (the limit is per address)."""
    stack.push_pull("warm-up", tmp_path / "warm-up")
    active, stop, results = threading.Event(), threading.Event(), []
    threads = [threading.Thread(target=_flood, args=(stack, active, stop, results), daemon=True)
               for _ in range(FLOOD_CONNECTIONS)]
    for thread in threads:
        thread.start()
    quiet, flooded, flood_seconds, others = [], [], 0.0, []
    try:
        for i in range(ROUNDS):
            quiet.append(stack.push_pull(f"quiet-{i}", tmp_path / f"quiet-{i}"))
            active.set()
            started = time.monotonic()
            time.sleep(1)
            flooded.append(stack.push_pull(f"flood-{i}", tmp_path / f"flood-{i}"))
            first = time.monotonic()
            wrong = [("Authorization", fuzz.basic(USER, "wrong-too"))]
            others.append((stack.request("GET", "/v2/_catalog", wrong, via=SPARE).status, time.monotonic() - first))
            active.clear()
            flood_seconds += time.monotonic() - started
            # The attacker's queued guesses drain (16 at 5/s) before the next quiet round.
            time.sleep(FLOOD_CONNECTIONS / 5 + 1)
    finally:
        stop.set()
        active.set()
        for thread in threads:
            thread.join(timeout=90)
    statuses = {status for _, status in results}
    ratio = statistics.median(quiet) / statistics.median(flooded)
    rate = len(results) / (flood_seconds + ROUNDS * (FLOOD_CONNECTIONS / 5 + 1))
    print(f"\nflood: {len(results)} wrong-password answers ({rate:.1f}/s over the flood rounds and their drain, "
          f"statuses {statuses}); bystander push+pull {statistics.median(quiet):.2f}s quiet, "
          f"{statistics.median(flooded):.2f}s flooded ({ratio:.2f}x); another address's first wrong password "
          f"answered in {max(seconds for _, seconds in others):.2f}s at most")
    assert statuses <= {401} and results
    assert rate <= 5 * 1.2
    assert ratio >= 0.8
    assert all(status == 401 and seconds < 1.0 for status, seconds in others), others


# --- 4. headers the registry must not believe ------------------------------------------------


def test_client_forwarding_headers_do_not_reach_the_registry(stack):
    """An upload started with Forwarded, X-Forwarded-Host/-Proto/-For and X-Real-IP of the
    client's choosing gets a Location on the stack's own https address; the registry's log
    names the client's real address, never the forged one; an unknown Host gets 421 from
    nginx, HTTP/1.0 without Host too; /v2 redirects keeping the published port."""
    since = time.time() - 1
    forged = [("Forwarded", "for=203.0.113.66;host=evil.example;proto=http"), ("X-Forwarded-Host", "evil.example"),
              ("X-Forwarded-Proto", "http"), ("X-Forwarded-For", "203.0.113.66"), ("X-Real-IP", "203.0.113.66"),
              ("X-Forwarded-Port", "80")]
    upload = stack.request("POST", "/v2/headers/app/blobs/uploads/", forged, auth=True, via=BYSTANDER)
    assert upload.status == 202
    (location,) = upload.header("Location")
    assert location.startswith(f"https://{stack.address}/v2/headers/app/blobs/uploads/"), location
    time.sleep(1)
    registry_log = stack.logs(stack.registry, since)
    assert "203.0.113.66" not in registry_log and "evil.example" not in registry_log
    assert stack.clients.addresses[BYSTANDER] in registry_log
    assert stack.request("GET", "/v2/", [("Host", "evil.example")], auth=True).status == 421
    raw = stack.send(b"GET /v2/ HTTP/1.0\r\n\r\n")[0]
    assert raw.status == 421 and not raw.header("Docker-Distribution-Api-Version")
    redirect = stack.request("GET", "/v2")
    assert redirect.status == 301 and redirect.header("Location") == [f"https://{stack.address}/v2/"]


# --- 5. logs ---------------------------------------------------------------------------------


def test_a_newline_in_a_user_name_cannot_forge_a_log_line(stack):
    """A failed login as "x<newline>FORGED ..." leaves no line starting with FORGED in nginx's
    output; its access-log line is JSON with the user name escaped, as every line is."""
    since = time.time() - 1
    user = "x\nFORGED 2026/01/01 [emerg] 1#1 injected"
    raw = fuzz.request_bytes("GET", "/v2/_catalog", [("Host", stack.address), ("Connection", "close"),
                                                      ("Authorization", fuzz.basic(user, "pw"))])
    assert stack.send(raw, via=SPARE)[0].status == 401
    time.sleep(1)
    lines = stack.logs(stack.proxy, since).splitlines()
    assert not [line for line in lines if "FORGED" in line and not line.startswith("{")]
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(entry["remote_user"] == user for entry in entries), lines
    assert all(line.startswith("{") for line in lines), lines


# --- 6. oversized manifests, long names, readable secrets ------------------------------------


def test_an_oversized_manifest_gets_413_and_long_names_400(stack):
    """A 20 MiB manifest PUT is refused with 413 (not the registry's mid-stream reset, 502); a
    7,700-character repository name gets 400 NAME_INVALID from nginx, with or without
    credentials, and so do the lengths the registry answers 500 to (238 characters in one
    component, 246 in two); one character less still reaches the registry (404: unknown)."""
    manifest = b"{" + b" " * (20 * MiB) + b"}"
    headers = [("Content-Type", "application/vnd.oci.image.manifest.v1+json")]
    assert stack.request("PUT", "/v2/big/app/manifests/v1", headers, manifest, auth=True).status == 413
    for auth in (True, False):
        answer = stack.request("GET", f"/v2/{'a' * 7700}/tags/list", auth=auth)
        assert answer.status == 400 and b"NAME_INVALID" in answer.body
    for name, status in (("a" * 238, 400), ("a" * 237, 404), ("ab/" + "a" * 243, 400), ("ab/" + "a" * 242, 404)):
        assert stack.request("GET", f"/v2/{name}/tags/list", auth=True).status == status, len(name)


def _stat(container: str, path: str) -> str:
    return subprocess.run(["docker", "exec", container, "stat", "-c", "%a %u %g", path], capture_output=True,
                          text=True, timeout=30, check=True).stdout.strip()


def test_secret_files_are_readable_only_by_the_process_that_needs_them(stack):
    """The registry's config.yml (the HTTP secret) is 0600 root's; nginx's key 0600 and htpasswd
    0640 root:root, read by the workers, which run as nobody in group root; any other user in
    either container is refused."""
    assert _stat(stack.registry, CONFIG_PATH) == "600 0 0"
    assert _stat(stack.proxy, KEY_PATH) == "600 0 0"
    assert _stat(stack.proxy, HTPASSWD_PATH) == "640 0 0"
    assert _stat(stack.proxy, CERT_PATH).startswith("644 ")
    for container, path in ((stack.registry, CONFIG_PATH), (stack.proxy, HTPASSWD_PATH), (stack.proxy, KEY_PATH)):
        denied = subprocess.run(["docker", "exec", "-u", "65534:65534", container, "cat", path],
                                capture_output=True, text=True, timeout=30)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, (container, path)
    workers = subprocess.run(["docker", "top", stack.proxy, "-o", "pid,uid,gid,args"], capture_output=True,
                             text=True, timeout=30, check=True).stdout.splitlines()[1:]
    worker_ids = {tuple(line.split()[1:3]) for line in workers if "worker process" in line}
    assert worker_ids == {("65534", "0")}, workers
