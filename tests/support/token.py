"""Helpers for token-service tests: a signing key and certificate, htpasswd and policy files,
and the service running on a loopback port (waitress in a thread of the test process)."""

from __future__ import annotations

import datetime
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import bcrypt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from token_service.config import SERVER_OPTIONS, Config, build_app
from tests.support.ports import free_port

ISSUER = "registry-token-test"
SERVICE = "registry.test"


def key_and_cert(kind: str = "ec", days: int = 30) -> tuple[bytes, bytes, object]:
    """(key PEM, self-signed certificate PEM, private key object)."""
    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM), key


def htpasswd(users: dict[str, str], rounds: int = 4) -> str:
    """htpasswd text with ``$2y$`` lines, as the program writes them."""
    lines = []
    for user, password in sorted(users.items()):
        digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode().replace("$2b$", "$2y$", 1)
        lines.append(f"{user}:{digest}")
    return "\n".join(lines) + "\n"


@dataclass
class TokenFiles:
    root: Path
    key: Path
    cert: Path
    htpasswd: Path
    policy: Path
    private_key: object

    def config(self, port: int = 0, ttl: int = 300, failure_burst: int = Config.failure_burst) -> Config:
        return Config(issuer=ISSUER, service=SERVICE, key_file=str(self.key), cert_file=str(self.cert),
                      htpasswd_file=str(self.htpasswd), policy_file=str(self.policy), ttl=ttl,
                      host="127.0.0.1", port=port, failure_burst=failure_burst)

    def write_policy(self, doc: dict) -> None:
        tmp = self.policy.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.policy)

    def write_users(self, users: dict[str, str], rounds: int = 4) -> None:
        tmp = self.htpasswd.with_suffix(".tmp")
        tmp.write_text(htpasswd(users, rounds))
        tmp.replace(self.htpasswd)


def token_files(root: Path, users: dict[str, str], policy: dict, kind: str = "ec") -> TokenFiles:
    root.mkdir(parents=True, exist_ok=True)
    key_pem, cert_pem, key = key_and_cert(kind)
    files = TokenFiles(root, root / "key.pem", root / "cert.pem", root / "htpasswd", root / "policy.json", key)
    files.key.write_bytes(key_pem)
    files.cert.write_bytes(cert_pem)
    files.write_users(users)
    files.write_policy(policy)
    return files


@dataclass
class RunningService:
    url: str  # http://127.0.0.1:PORT/token
    server: object
    thread: threading.Thread
    stopping: threading.Event

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        self.server.close()
        self.server.task_dispatcher.shutdown()


def serve(files: TokenFiles, ttl: int = 300, failure_burst: int = Config.failure_burst) -> RunningService:
    """The token app on a free loopback port, served by waitress in a daemon thread (the
    service's default failure budget unless ``failure_burst`` says otherwise)."""
    import waitress.server

    port = free_port()
    server = waitress.server.create_server(build_app(files.config(port, ttl, failure_burst)), host="127.0.0.1", port=port,
                                           threads=4, **SERVER_OPTIONS)
    stopping = threading.Event()

    def loop() -> None:
        while not stopping.is_set():
            server.asyncore.loop(timeout=0.05, map=server._map, count=1)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/token"
    for _ in range(100):
        try:
            requests.get(url.replace("/token", "/healthz"), timeout=2)
            break
        except requests.ConnectionError:
            threading.Event().wait(0.05)
    return RunningService(url, server, thread, stopping)


def get_token(url: str, scopes: list[str], auth: Optional[tuple[str, str]] = None, **params) -> requests.Response:
    return requests.get(url, params={"service": SERVICE, "scope": scopes, **params}, auth=auth, timeout=30)
