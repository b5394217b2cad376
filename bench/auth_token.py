"""Token authentication against basic auth and auth off, side by side in one run, with the CPU
every request costs next to each ratio.

    .venv/bin/python bench/auth_token.py [--seconds 5] [--rounds 5] [--new-cost 10] [--versions 3,2] [--quick]

Every registry is the one under test (distribution 3.1.2; TEST_REGISTRY_VERSION=2: 2.8.2) and,
with ``--versions 3,2`` (the default), the other one beside it: each version gets its own
stacks (the program's basic-mode stack with its auth-off nginx, the token stand-up, the
program's token-mode stack). Parts 1 and 2 run every version's token variants in the same
rounds, and also report each variant on the first version against the same on the other
(``head across versions``: e.g. token-program on 3.1.2 vs on 2.8.2, and their auth-off
partners); the basic variants, part 0 and part 3 run on the first version only.

0. **Bearer header.** The stand-up's registry, HEAD with one token's claims naming the key by
   ``kid`` (what the service issues) against the signing certificate in ``x5c``: registry CPU
   per request of each key reference.
0b. **Signature algorithm.** The stand-up's registry, HEAD with one token's claims signed by
   its EC P-256 key (ES256, what the program's key signs) against the same claims signed by an
   RSA-2048 key (RS256, which the token service also issues for an RSA key), both named by
   ``kid``; both certificates are in the registry's rootcertbundle. Registry CPU per request
   of each algorithm (part ``algorithm``).
1. **HEAD rate.** Manifest HEAD requests/s (ab, keep-alive, concurrency 8) through:
   ``authoff`` (the program's nginx, auth off); ``basic-5`` and ``basic-<new cost>`` (the
   program's nginx with its htpasswd at that bcrypt cost); ``token`` (nginx without basic auth
   passing a bearer token to a registry configured with ``auth.token``, the token fetched once
   per measurement from the token service); ``token-program`` (the program's own token mode,
   deployed as a second stack, when this checkout's program has it). Goal: token >= 0.9x.
2. **10-layer pull** by a logged-in client (skopeo with an auth file: basic credentials, or the
   token flow for ``token``) against auth off. Goal: token >= 0.9x.
3. **Wrong-password flood** at what checks passwords (nginx's basic auth; the token endpoint)
   while a legitimate logged-in client pulls: its pulls/s with the flood over without. Goal:
   >= 0.8x. The flood is a child process at ``nice -n 19`` sending a fixed rate (``--flood-rate``,
   200/s over 8 keep-alive connections: 40x the program's /token limit), standing for another
   machine; its answers by status and its own CPU are reported, not counted in the CPU figures.
   Against ``token-program`` it comes from a helper container's network namespace straight to
   nginx's container address, so nginx sees it apart from the legitimate client (which reaches
   nginx through docker-proxy); elsewhere from 127.0.0.2.
4. **Profile** (part ``profile``): a CPU profile (pprof, ``--profile-seconds``) of each version's
   token-program registry under token HEADs and of its auth-off partner's registry under
   auth-off HEADs, from the registry's debug listener; saved under results/profiles/ with
   ``go tool pprof -top`` of each in the result.

Every figure is paired with its partner measured right before or after it in the same round
(order alternating); ratios are the median over rounds, printed with their spread (min-max) and
the CPU milliseconds per request (or per pull) of every process on the path, read from their
own counters (containers' cgroups, docker-proxy's and the token service's /proc stat, ab's and
skopeo's rusage), so a ratio moved by other jobs on the machine shows as such.

The token variant needs the token service (``token_service``, ``python -m token_service``, its
documented environment) importable; without it the other variants run and the result says the
token variant was not measured. It is a bench-only stand-up of what token mode deploys: the
service as a host process on loopback (the realm), the registry with ``auth.token``, nginx
rendered with ``auth=False`` and the ``Authorization`` header passed through. Its registry's
``auth.token`` section and trust file are the program's for that version
(components/render/token_service.py): 2.8 the certificates in ``rootcertbundle``; 3 a JWKS
(``render_jwks``: the key under the libtrust id the tokens name; 3 ids a ``rootcertbundle``
key by its JWK thumbprint), holding the RSA key of part 0b too, plus ``rootcertbundle`` for
part 0's x5c tokens, which 3 verifies against it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import http.client
import importlib.util
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import docker
from auth_cost import CONCURRENCY, ab, htpasswd_at
from common import (
    AUTH_MODES,
    LABEL,
    RESULTS_DIR,
    PORT,
    REGISTRY_VERSION,
    MiB,
    STANDIN_NGINX,
    BenchStack,
    CpuMeter,
    Variant,
    fmt_ratio,
    free_port,
    log,
    machine,
    median,
    registry_environment,
    registry_image,
    rotated,
    shown_path,
    versions,
    write_result,
)

from components.render import token_service as rendered_token
from components.render.nginx import CERT_PATH, CONF_PATH, CONTAINER_HTTPS_PORT, KEY_PATH, NginxOptions, render_nginx_conf
from components.render.registry_config import CONFIG_PATH, DATA_DIR, registry_config, serve_command
from components.settings import REGISTRY2_IMAGE
from tests.support.deploy import STANDIN_BUSYBOX
from tests.support.oci import write_image

FLOOD_SOURCE = "127.0.0.2"
# What a wrong password may get: refused, or rate-limited (the program's /token limit).
REFUSED = (401, 403, 429)
STRIP_AUTHORIZATION = '            proxy_set_header Authorization "";\n'


def _proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Meter(CpuMeter):
    """CpuMeter plus long-running host processes (the token service), by pid."""

    def __init__(self, containers: dict, host_ports: tuple = (), pids: dict | None = None):
        super().__init__(containers, host_ports)
        self.pids = pids or {}

    def _snapshot(self) -> dict:
        snap = super()._snapshot()
        for label, pid in self.pids.items():
            snap[label] = _proc_cpu_seconds(pid)
        return snap


def token_service_available() -> bool:
    return importlib.util.find_spec("token_service") is not None


@dataclass
class TokenSide:
    """Token service (host process) + registry with auth.token + nginx passing Authorization."""

    stack: BenchStack
    cost: int
    registry_env: tuple = ()
    port: int = field(default_factory=free_port)
    service_port: int = field(default_factory=free_port)

    def up(self) -> Variant:
        s = self.stack
        self.dir = s.workdir / "token"
        self.dir.mkdir()
        key_pem, cert_pem = _signing_key_and_cert()
        rsa_key_pem, rsa_cert_pem = _signing_key_and_cert("RSA")
        (self.dir / "rsa-key.pem").write_bytes(rsa_key_pem)
        (self.dir / "rsa-cert.pem").write_bytes(rsa_cert_pem)
        (self.dir / "key.pem").write_bytes(key_pem)
        os.chmod(self.dir / "key.pem", 0o600)
        (self.dir / "cert.pem").write_bytes(cert_pem)
        (self.dir / "htpasswd").write_text(htpasswd_at(s, self.cost))
        (self.dir / "policy.json").write_text(json.dumps({"version": 1, "admins": [s.user], "rules": []}))
        self.realm = f"http://127.0.0.1:{self.service_port}/token"
        # The registry's auth section and trust file as the program renders them for this
        # version (components/render/token_service.py): on 2.8 the certificates in
        # rootcertbundle; on 3 a JWKS naming each key by the libtrust id the tokens carry (3 ids
        # a rootcertbundle key by its JWK thumbprint: tokens with that kid get 401 without it).
        # The realm is the stand-up's own service, a host process.
        version = s.registry_version
        self.address = f"localhost:{self.port}"
        self.service = self.address
        self.issuer = rendered_token.issuer(s.prefix)
        auth = rendered_token.registry_token_auth(address=self.address, prefix=s.prefix, registry_version=version)
        auth["token"]["realm"] = self.realm
        trust_path = rendered_token.registry_key_path(version)
        if version >= 3:
            # Both keys (ES256 and the RS256 part's) in one set, each as render_jwks writes it.
            keys = [key for pem in (cert_pem, rsa_cert_pem)
                    for key in json.loads(rendered_token.render_jwks(pem.decode()))["keys"]]
            trust_files = {trust_path: (json.dumps({"keys": keys}, indent=2, sort_keys=True) + "\n", 0o644),
                           # For part 0's x5c tokens only: 3 verifies an x5c chain against
                           # rootcertbundle (a kid token is looked up in the keys by id, as above).
                           rendered_token.REGISTRY_BUNDLE_PATH: ((cert_pem + rsa_cert_pem).decode(), 0o644)}
            auth["token"]["rootcertbundle"] = rendered_token.REGISTRY_BUNDLE_PATH
        else:
            trust_files = {trust_path: ((cert_pem + rsa_cert_pem).decode(), 0o644)}
        env = {**os.environ, "TOKEN_ISSUER": self.issuer, "TOKEN_SERVICE": self.service,
               "TOKEN_KEY_FILE": str(self.dir / "key.pem"), "TOKEN_CERT_FILE": str(self.dir / "cert.pem"),
               "TOKEN_HTPASSWD_FILE": str(self.dir / "htpasswd"), "TOKEN_POLICY_FILE": str(self.dir / "policy.json"),
               "TOKEN_LISTEN": f"127.0.0.1:{self.service_port}", "TOKEN_TTL": "3600"}
        self.log_file = open(self.dir / "service.log", "w")
        self.process = subprocess.Popen([sys.executable, "-m", "token_service"], env=env, cwd=str(ROOT),
                                        stdout=self.log_file, stderr=subprocess.STDOUT)
        registry_name = f"{s.prefix}-tokenreg"
        # Over TCP, like the bench's other comparison registries; its auth-off partner is the
        # program's nginx.conf (auth off) to the TCP registry (``authoff-tcp``), the same hop.
        config = registry_config(http_secret=uuid.uuid4().hex, tcp_addr=f":{PORT}", auth=auth)
        config["http"].pop("debug")
        import yaml

        volume = f"{s.prefix}-token-data"
        s.client.volumes.create(volume, labels=LABEL)
        s.extra_volumes.append(volume)
        self._container(registry_name, s.registry_image, None, PORT, {
            CONFIG_PATH: (yaml.safe_dump(config, sort_keys=False), 0o644), **trust_files},
            volumes={volume: {"bind": DATA_DIR, "mode": "rw"}})
        conf = render_nginx_conf(NginxOptions(auth=False, upstreams=(f"{registry_name}:{PORT}",), backup_upstreams=(),
                                              server_names=("localhost", "127.0.0.1"), public_port=self.port))
        if STRIP_AUTHORIZATION not in conf:
            raise RuntimeError("the rendered nginx.conf no longer strips Authorization as this bench expects")
        conf = conf.replace(STRIP_AUTHORIZATION, "")
        nginx_name = f"{s.prefix}-tokennginx"
        self._container(nginx_name, STANDIN_NGINX, self.port, CONTAINER_HTTPS_PORT, {
            CONF_PATH: (conf, 0o644), CERT_PATH: (s.cert_pem, 0o644), KEY_PATH: (s.key_pem, 0o600)},
            stop_signal="SIGQUIT")
        variant = Variant("token", self.address, tls=True, auth=True, port=self.port,
                          containers={"nginx": nginx_name, "registry": registry_name})
        s.variants["token"] = variant
        s.ports["token"] = self.port
        off_port = free_port()
        off_conf = render_nginx_conf(NginxOptions(auth=False, upstreams=(f"{s.tcp_registry}:{PORT}",),
                                                  backup_upstreams=(), server_names=("localhost", "127.0.0.1"),
                                                  public_port=off_port))
        self._container(f"{s.prefix}-authoff-tcp", STANDIN_NGINX, off_port, CONTAINER_HTTPS_PORT, {
            CONF_PATH: (off_conf, 0o644), CERT_PATH: (s.cert_pem, 0o644), KEY_PATH: (s.key_pem, 0o600)},
            stop_signal="SIGQUIT")
        s.variants["authoff-tcp"] = Variant("authoff-tcp", f"localhost:{off_port}", tls=True, auth=False,
                                            port=off_port, containers={"nginx": f"{s.prefix}-authoff-tcp",
                                                                       "registry": s.tcp_registry})
        s.ports["authoff-tcp"] = off_port
        self._wait()
        s._write_authfile()  # noqa: SLF001 - adds the token variant's address to skopeo's auth file
        return variant

    def _container(self, name, image, host_port, internal, files, volumes=None, stop_signal=None) -> None:
        s = self.stack
        api = s.client.api
        bindings = {internal: ("127.0.0.1", host_port)} if host_port else None
        registry = image == s.registry_image
        created = api.create_container(
            image=image, name=name, ports=[internal] if host_port else None, labels=LABEL, stop_signal=stop_signal,
            # As the program runs a registry: `registry serve CONFIG_PATH`, its environment.
            entrypoint=serve_command(CONFIG_PATH) if registry else None,
            environment=registry_environment(s.registry_version, self.registry_env) if registry else None,
            host_config=api.create_host_config(port_bindings=bindings, binds=volumes or None),
            networking_config=api.create_networking_config({s.network: api.create_endpoint_config()}))
        s.extra_containers.append(name)
        from common import _tar

        api.put_archive(created["Id"], "/", _tar(files))
        api.start(created["Id"])

    def _wait(self, timeout: float = 60) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(self.realm.replace("/token", "/healthz"), timeout=2).status_code == 200 and \
                        requests.get(f"https://{self.stack.variants['token'].address}/v2/", timeout=2,
                                     verify=self.stack.ca_file).status_code == 401:
                    return
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"token side not ready: {(self.dir / 'service.log').read_text()[-2000:]}")
            time.sleep(0.3)

    def token(self, scope: str) -> str:
        import requests

        reply = requests.get(self.realm, params={"service": self.service, "scope": scope},
                             auth=(self.stack.user, self.stack.password), timeout=60)
        reply.raise_for_status()
        return reply.json()["token"]

    def x5c_token(self, token: str) -> str:
        """``token``'s claims signed again by the same key with the signing certificate in an
        ``x5c`` header instead of ``kid`` (what the service issued before): the registry then
        verifies that chain against its rootcertbundle on every request."""
        import jwt
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        cert = x509.load_pem_x509_certificate((self.dir / "cert.pem").read_bytes())
        key = serialization.load_pem_private_key((self.dir / "key.pem").read_bytes(), password=None)
        claims = jwt.decode(token, options={"verify_signature": False})
        x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        return jwt.encode(claims, key, algorithm="ES256", headers={"x5c": x5c})

    def rs256_token(self, token: str) -> str:
        """``token``'s claims signed again by the stand-up's RSA-2048 key (RS256), named by its
        ``kid`` (the libtrust id the registry looks it up by)."""
        import jwt
        from cryptography.hazmat.primitives import serialization

        from token_service.tokens import libtrust_key_id

        key = serialization.load_pem_private_key((self.dir / "rsa-key.pem").read_bytes(), password=None)
        claims = jwt.decode(token, options={"verify_signature": False})
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": libtrust_key_id(key.public_key())})

    def pids(self) -> dict:
        return {"token service": self.process.pid}

    def down(self) -> None:
        if getattr(self, "process", None) is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if getattr(self, "log_file", None):
            self.log_file.close()


class ProgramToken:
    """The program's own token mode (``auth.mode: token``) as a second stack: its nginx (``/token``
    rate-limited per client address), token service container and registry, exactly as
    declared (tests/support/deploy.py); the bench's user and password."""

    role = {"proxy-container": "nginx", "registry-container": "registry", "token-container": "token service"}

    def __init__(self, stack: BenchStack):
        self.stack = stack

    def up(self) -> Variant:
        from tests.support.deploy import live_stack

        s = self.stack
        tmp = s.workdir / "program-token"
        tmp.mkdir()
        images = {"images": {"registry": REGISTRY2_IMAGE}} if s.registry_version == 2 else {}
        self._context = live_stack(tmp, f"{s.prefix}-tok", {s.user: s.password}, auth={"mode": "token"}, **images)
        self.live = self._context.__enter__()
        containers = {}
        for spec in self.live.deployment.containers():
            role = next((r for suffix, r in self.role.items() if spec.name.endswith(suffix)), spec.name)
            containers[role] = spec.plain_inputs["name"]
        variant = Variant("token-program", self.live.address, tls=True, auth=True, port=self.live.port,
                          containers=containers, cert_dir=self.live.cert_dir)
        s.variants[variant.name] = variant
        s.ports[variant.name] = self.live.port
        s._write_authfile()  # noqa: SLF001 - adds this stack's address to skopeo's auth file
        self.realm = f"https://{self.live.address}/token"
        self.flooder = None
        return variant

    def flood_namespace(self) -> tuple[int, str]:
        """(pid whose network namespace the flood enters, nginx's address on the stack network):
        a helper container on the stack's network, made on first use (it lives 15 minutes)."""
        from tests.support.client_netns import ClientAddresses, container_address

        network = f"{self.live.config['namePrefix']}-net"
        if self.flooder is None:
            self.flooder = ClientAddresses(self.live.deployment.client, network, 1, prefix=f"{self.stack.prefix}-flood")
        proxy = container_address(self.live.deployment.client, f"{self.live.config['namePrefix']}-proxy", network)
        return self.flooder.pids[0], proxy

    def token(self, scope: str) -> str:
        import requests

        reply = requests.get(self.realm, params={"service": self.live.address, "scope": scope},
                             auth=(self.stack.user, self.stack.password), verify=str(self.live.ca_file), timeout=60)
        reply.raise_for_status()
        return reply.json()["token"]

    def flood_target(self, repository: str) -> str:
        return f"{self.realm}?service={self.live.address}&scope=repository:{repository}:pull"

    def down(self) -> None:
        if getattr(self, "flooder", None) is not None:
            self.flooder.remove()
        if getattr(self, "_context", None) is not None:
            self._context.__exit__(None, None, None)
            self._context = None


def _signing_key_and_cert(algorithm: str = "EC") -> tuple[bytes, bytes]:
    """A self-signed signing certificate and its key (PEM): EC P-256, or RSA-2048."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1()) if algorithm == "EC" else rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench token signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2)).sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            cert.public_bytes(serialization.Encoding.PEM))


ROOT = Path(__file__).resolve().parents[1]


# ---- the benchmark's pieces ---------------------------------------------------------------
@dataclass
class Bench:
    stack: BenchStack
    costs: list[int]
    token: TokenSide | None
    program: ProgramToken | None = None
    # The basic-auth variants run on the registry under test only (nginx's bcrypt is the same
    # whatever the registry behind it).
    basic: bool = True

    @property
    def version(self) -> str:
        """The registry's version as its stand-in image is tagged (``3.1.2``, ``2.8.2``)."""
        return self.stack.registry_image.rsplit(":", 1)[1]

    def variants(self) -> list[str]:
        return (([f"basic-{c}" for c in self.costs] if self.basic else []) + (["token"] if self.token else [])
                + (["token-program"] if self.program else []))

    def partner(self, name: str) -> str:
        """The auth-off variant on the same path (the token stand-up reaches its registry over TCP)."""
        return "authoff-tcp" if name == "token" else "authoff"

    def issuer(self, name: str):
        return self.program if name == "token-program" else self.token

    def select(self, name: str) -> tuple[Variant, Meter, str | None]:
        """Make ``name`` current (htpasswd cost for basic-N); its variant, a fresh meter, and the
        Authorization header value to send (None: none)."""
        s = self.stack
        if name in ("authoff", "authoff-tcp"):
            v = s.variants[name]
            return v, Meter(v.containers, (v.port,)), None
        if name.startswith("basic-"):
            s.set_htpasswd(htpasswd_at(s, int(name.split("-")[1])))
            time.sleep(0.2)
            v = s.variants["ours"]
            return v, Meter(v.containers, (v.port,)), s.basic_auth_header()
        if name == "token-program":
            v = s.variants[name]
            return v, Meter(v.containers, (v.port,)), None
        v = s.variants["token"]
        return v, Meter(v.containers, (v.port,), self.token.pids()), None

    def head(self, name: str, seconds: float, path: str, repository: str) -> dict:
        variant, meter, authorization = self.select(name)
        if name in ("token", "token-program"):
            authorization = "Bearer " + self.issuer(name).token(f"repository:{repository}:pull")
        with meter:
            figures = ab(self.stack.url(variant, path), seconds, authorization)
        return {"rate": figures["rps"], "n": figures["requests"],
                "cpu": {k: 1000 * v / figures["requests"] for k, v in meter.seconds.items()}}

    def pull(self, name: str, repository: str) -> dict:
        variant, meter, _ = self.select(name)
        with meter:
            seconds = self.stack.pull(variant, repository, "v1")
        return {"rate": 1 / seconds, "n": 1, "cpu": {k: 1000 * v for k, v in meter.seconds.items()}}


def bearer_header(bench: Bench, rounds: int, seconds: float, path: str, repository: str,
                  other_kind: str = "x5c") -> dict:
    """One registry (the stand-up's), one token's claims, two bearer headers: the service's
    token (ES256, ``kid``) against ``other_kind``: ``x5c`` (the certificate in the header) or
    ``rs256`` (the claims signed by an RSA-2048 key, ``kid``); HEAD/s and CPU per request,
    paired per round, order alternating."""
    token = bench.token.token(f"repository:{repository}:pull")
    other = bench.token.x5c_token(token) if other_kind == "x5c" else bench.token.rs256_token(token)
    kinds = ("kid", other_kind)
    headers = {"kid": "Bearer " + token, other_kind: "Bearer " + other}
    variant = bench.stack.variants["token"]
    for kind in headers:  # warm-up, not counted: the registry's first requests of each kind
        ab(bench.stack.url(variant, path), 1, headers[kind])
    pairs = []
    for r in range(rounds):
        figures = {}
        for kind in (kinds if r % 2 == 0 else kinds[::-1]):
            variant, meter, _ = bench.select("token")
            with meter:
                result = ab(bench.stack.url(variant, path), seconds, headers[kind])
            figures[kind] = {"rate": result["rps"], "n": result["requests"],
                             "cpu": {k: 1000 * v / result["requests"] for k, v in meter.seconds.items()}}
        pairs.append((figures["kid"], figures[other_kind]))
        log(f"bearer round {r + 1}/{rounds} ES256 kid {figures['kid']['rate']:8.2f} req/s vs {other_kind}"
            f" {figures[other_kind]['rate']:8.2f}  registry CPU/req {figures['kid']['cpu']['registry']:.3f} vs"
            f" {figures[other_kind]['cpu']['registry']:.3f} ms")
    return summarize(pairs, "req/s", "kid", other_kind)


def result_key(bench: Bench, name: str, primary: Bench) -> str:
    """A variant's key in the result: its name on the registry under test, ``name @2.8.2`` on another."""
    return name if bench is primary else f"{name} @{bench.version}"


def paired(benches: list[Bench], rounds: int, measure, label: str, unit: str) -> tuple[dict, dict]:
    """Every variant of every bench (one per registry version, the registry under test first)
    against its auth-off partner on the same version, in every round: the pair measured back
    to back, its order alternating, the pairs' order rotated per round (common.rotated).

    Returns (ratio to auth off per variant, keyed by :func:`result_key`; the same variant on
    each other version against the first, from the same rounds: variant and partner)."""
    primary = benches[0]
    items = [(bench, name) for bench in benches for name in bench.variants()]
    series: dict = {(id(b), n): [] for b, n in items}
    for r in range(rounds):
        for i, (bench, name) in enumerate(rotated(items, r)):
            first_off = (r + i) % 2 == 0
            off = measure(bench, bench.partner(name)) if first_off else None
            on = measure(bench, name)
            off = off or measure(bench, bench.partner(name))
            series[(id(bench), name)].append((on, off))
            log(f"{label} round {r + 1}/{rounds} {bench.version:6s} {name:13s} {on['rate']:8.2f} {unit} vs auth off"
                f" {off['rate']:8.2f}  {fmt_ratio(on['rate'] / off['rate'])}  CPU/{unit.split('/')[0]}"
                f" {on['cpu']['total']:.2f} ms vs {off['cpu']['total']:.2f} ms")
    ratios = {result_key(b, n, primary): summarize(series[(id(b), n)], unit) for b, n in items}
    across = {}
    for other in benches[1:]:
        for name in primary.variants():
            if name not in other.variants():
                continue
            mine, theirs = series[(id(primary), name)], series[(id(other), name)]
            for which, pick in ((name, 0), (primary.partner(name), 1)):
                key = f"{which} {primary.version} vs {other.version}"
                if key in across:
                    continue  # one auth-off partner serves several variants: its first pairing
                across[key] = summarize([(a[pick], b[pick]) for a, b in zip(mine, theirs)], unit,
                                        f"on {primary.version}", f"on {other.version}")
    return ratios, across


def cpu_line(cpu: dict) -> str:
    """CPU ms per unit by process, the total last."""
    return ", ".join(f"{k} {v:.3f}" for k, v in cpu.items() if k != "total") + f" = {cpu['total']:.3f} ms"


def summarize(pairs: list, unit: str, with_: str = "with auth", partner: str = "auth off") -> dict:
    """Median figures of (measurement, partner) pairs, the ratio's spread, CPU ms per unit by process."""
    ratios = [on["rate"] / off["rate"] for on, off in pairs]
    cpu_on = {k: round(median(on["cpu"][k] for on, _ in pairs), 3) for k in pairs[0][0]["cpu"]}
    cpu_off = {k: round(median(off["cpu"][k] for _, off in pairs), 3) for k in pairs[0][1]["cpu"]}
    return {
        f"{unit} {with_}": round(median(on["rate"] for on, _ in pairs), 2),
        f"{unit} {partner}": round(median(off["rate"] for _, off in pairs), 2),
        "ratio": round(median(ratios), 3),
        "spread": [round(min(ratios), 3), round(max(ratios), 3)],
        "ratios": [round(x, 3) for x in ratios],
        f"{partner} rates": [round(off["rate"], 2) for _, off in pairs],
        "CPU ms": cpu_on,
        f"CPU ms {partner}": cpu_off,
        "CPU ms, per round": [round(on["cpu"]["total"], 3) for on, _ in pairs],
        f"CPU ms {partner}, per round": [round(off["cpu"]["total"], 3) for _, off in pairs],
        # The ratio a machine doing nothing else would show: CPU per unit of work, off / on.
        "CPU-bound ratio": round(cpu_off["total"] / cpu_on["total"], 3),
    }


# ---- the flood ------------------------------------------------------------------------------
@dataclass
class FloodSpec:
    """Where and how hard the flood hits. ``connect`` (host, port) and ``host_header`` override
    the URL's (a flood from a helper's namespace reaches nginx's container address directly);
    ``netns_pid``: the process whose network namespace the flood's threads enter; else they bind
    ``source``. ``rate``: requests/s over all connections (the flood stands for another machine:
    its own CPU on this one is bounded by the rate and by ``nice``)."""

    url: str
    seconds: float
    connections: int
    rate: float
    authorization: str
    ca_file: str
    source: str = FLOOD_SOURCE
    netns_pid: int = 0
    connect: tuple = ()
    host_header: str = ""


def flood(spec: FloodSpec) -> dict:
    """Requests with a wrong password, ``spec.connections`` keep-alive connections, each paced to
    ``rate / connections`` a second (a slow answer is not made up for). Returns counts by
    status, the rate sent, and this process's CPU seconds."""
    from urllib.parse import urlsplit

    parts = urlsplit(spec.url)
    host, port = spec.connect or (parts.hostname, parts.port)
    context = None
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=spec.ca_file)
        context.check_hostname = bool(not spec.connect)  # by address: the CA is still checked
    headers = {"Authorization": spec.authorization, **({"Host": spec.host_header} if spec.host_header else {})}
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    statuses: dict[int, int] = {}
    errors = [0]
    lock = threading.Lock()
    interval = spec.connections / spec.rate
    cpu_start = time.process_time()
    began = time.monotonic()
    stop = began + spec.seconds

    def worker() -> None:
        if spec.netns_pid:
            from tests.support.client_netns import enter

            enter(spec.netns_pid)
        source = None if spec.netns_pid else (spec.source, 0)
        due = time.monotonic()
        while time.monotonic() < stop:
            if context:
                conn = http.client.HTTPSConnection(host, port, context=context, timeout=30, source_address=source)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=30, source_address=source)
            try:
                while time.monotonic() < stop:
                    due = max(due + interval, time.monotonic() - interval)
                    time.sleep(max(0.0, due - time.monotonic()))
                    conn.request("GET", target, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    with lock:
                        statuses[response.status] = statuses.get(response.status, 0) + 1
            except (OSError, http.client.HTTPException):
                with lock:
                    errors[0] += 1
                time.sleep(interval)
            finally:
                conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(spec.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    return {"statuses": statuses, "connection errors": errors[0],
            "requests/s sent": round(sum(statuses.values()) / elapsed, 1),
            "flooder CPU s": round(time.process_time() - cpu_start, 2)}


def start_flood(spec: FloodSpec) -> subprocess.Popen:
    """The flood as a child process at the lowest priority (``nice -n 19``); read it with
    :func:`finish_flood` after the meter stopped (its CPU is then not counted as the client's)."""
    return subprocess.Popen(["nice", "-n", "19", sys.executable, __file__, "--flood-child",
                             json.dumps(spec.__dict__)], stdout=subprocess.PIPE, text=True, cwd=str(ROOT))


def finish_flood(process: subprocess.Popen) -> dict:
    out, _ = process.communicate(timeout=120)
    if process.returncode != 0:
        raise RuntimeError(f"the flood process failed ({process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def flood_spec(bench: Bench, name: str, repository: str, seconds: float, connections: int, rate: float) -> FloodSpec:
    """The flood aimed at what checks passwords for ``name``: the token endpoint (the program's
    from a helper container's network namespace, so nginx sees the flood's own address and the
    legitimate client's, docker-proxy's, apart; the stand-up's service from 127.0.0.2), or
    nginx's basic auth (from 127.0.0.2 through docker-proxy: one address with the client)."""
    s = bench.stack
    wrong = "Basic " + base64.b64encode(f"{s.user}:not-the-password-{uuid.uuid4().hex}".encode()).decode()
    common = {"seconds": seconds, "connections": connections, "rate": rate, "authorization": wrong}
    if name == "token":
        return FloodSpec(f"{bench.token.realm}?service={bench.token.service}&scope=repository:{repository}:pull",
                         ca_file=s.ca_file, **common)
    if name == "token-program":
        pid, proxy = bench.program.flood_namespace()
        return FloodSpec(bench.program.flood_target(repository), ca_file=str(bench.program.live.ca_file),
                         netns_pid=pid, connect=(proxy, CONTAINER_HTTPS_PORT),
                         host_header=bench.program.live.address, **common)
    return FloodSpec(s.url(s.variants["ours"], "/v2/"), ca_file=s.ca_file, **common)


def flood_benchmark(bench: Bench, rounds: int, seconds: float, connections: int, rate: float,
                    repository: str) -> dict:
    """A logged-in client pulls back to back for ``seconds``, alone and under a paced
    wrong-password flood (:func:`flood_spec`); pulls/s flood over alone."""
    s = bench.stack
    results = {}
    for name in bench.variants():
        pairs = []
        for r in range(rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            figures = {}
            for with_flood in order:
                variant, meter, _ = bench.select(name)
                flooder = start_flood(flood_spec(bench, name, repository, seconds, connections, rate)) \
                    if with_flood else None
                pulls, failed, errors, start = 0, 0, [], time.monotonic()
                with meter:
                    while time.monotonic() - start < seconds:
                        try:
                            s.pull(variant, repository, "v1")
                            pulls += 1
                        except RuntimeError as exc:  # a refused pull counts as none, and is reported
                            failed += 1
                            errors.append(str(exc)[-300:])
                elapsed = time.monotonic() - start
                box = finish_flood(flooder) if flooder else {}
                figures[with_flood] = {"rate": pulls / elapsed, "pulls": pulls, "failed pulls": failed,
                                       "errors": errors[:3],
                                       "cpu": {k: 1000 * v / max(pulls, 1) for k, v in meter.seconds.items()},
                                       "flood": box}
            on, off = figures[True], figures[False]
            statuses = {int(k): n for k, n in on["flood"].get("statuses", {}).items()}
            on["flood"]["statuses"] = statuses
            refused = sum(n for status, n in statuses.items() if status in REFUSED)
            other = {st: n for st, n in statuses.items() if st not in REFUSED}
            if other:
                raise RuntimeError(f"the flood got answers other than {REFUSED}: {other}")
            if off["failed pulls"]:
                raise RuntimeError(f"{name}: pulls failed with no flood: {off['errors']}")
            pairs.append((on, off))
            log(f"flood round {r + 1}/{rounds} {name:13s} pulls/s {on['rate']:.2f} under flood vs {off['rate']:.2f}"
                f" alone  {fmt_ratio(on['rate'] / max(off['rate'], 1e-9))}  {on['failed pulls']} failed pulls;"
                f" flood sent {on['flood'].get('requests/s sent')}/s: {dict(sorted(statuses.items()))}"
                f" ({refused / seconds:.0f} refused/s), {on['flood'].get('connection errors', 0)} connection errors,"
                f" flooder CPU {on['flood'].get('flooder CPU s')} s")
        summary = summarize(pairs, "pulls/s", "under flood", "alone")
        summary["flood requests/s sent"] = [on["flood"]["requests/s sent"] for on, _ in pairs]
        summary["flood requests refused per second"] = [
            round(sum(n for st, n in on["flood"]["statuses"].items() if st in REFUSED) / seconds, 1)
            for on, _ in pairs]
        summary["flood statuses"] = [on["flood"]["statuses"] for on, _ in pairs]
        summary["flooder CPU s (not in the CPU figures)"] = [on["flood"]["flooder CPU s"] for on, _ in pairs]
        summary["failed pulls under flood"] = [on["failed pulls"] for on, _ in pairs]
        summary["first errors"] = next((on["errors"] for on, _ in pairs if on["errors"]), [])
        summary["flood target"] = {
            "token": "the stand-up's token service (host process, its own throttle, no nginx) from 127.0.0.2",
            "token-program": "the program's nginx /token from a helper container's address (the client: docker-proxy's)",
        }.get(name, "nginx basic auth (/v2/) from 127.0.0.2 via docker-proxy (one address with the client)")
        results[name] = summary
    return results


GO = os.environ.get("GO") or shutil.which("go") or "/usr/local/go/bin/go"
DEBUG_URL = "http://127.0.0.1:5001/debug/pprof/profile?seconds={seconds}"
PROFILES_DIR = RESULTS_DIR / "profiles"


def pprof_top(profile: Path, *flags: str, nodecount: int = 30) -> list[str]:
    """``go tool pprof -top`` of a saved profile (its lines), or why it could not run."""
    try:
        out = subprocess.run([GO, "tool", "pprof", "-top", f"-nodecount={nodecount}", *flags, str(profile)],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"go tool pprof unavailable: {exc}"]
    return (out.stdout or out.stderr).strip().splitlines()


# Where a registry's CPU goes, as named in its profile (2.8's github.com/docker/distribution
# and 3's github.com/distribution/distribution/v3 alike): cumulative time of the function (its
# callees included; the categories overlap: nested ones are indented), or flat for syscalls.
PROFILE_CATEGORIES = {
    "token check (accessController.Authorized)": r"auth/token\.\(\*accessController\)\.Authorized$",
    "  verify (Token.Verify)": r"auth/token\.\(\*Token\)\.Verify$",
    "    ECDSA P-256 signature (crypto/ecdsa.Verify)": r"^crypto/ecdsa\.Verify$",
    "    key lookup by kid (Token.VerifySigningKey; 2.8: in Verify)": r"auth/token\.\(\*Token\)\.VerifySigningKey$",
    "  parse (token.NewToken)": r"auth/token\.NewToken$",
    "URL builder per request (v2.NewURLBuilder*)": r"api/v2\.NewURLBuilder",
    "  regexp compile": r"^regexp\.compile$",
    "OpenTelemetry span export (stdouttrace JSON to a debug log)": r"batchSpanProcessor\)\.exportSpans$",
    "logging (logrus Entry.log)": r"logrus\.\(\*Entry\)\.log$",
    "logger per request (dcontext.getLogrusLogger)": r"dcontext\.getLogrusLogger$",
    "manifest handler (GetManifest)": r"\(\*manifestHandler\)\.GetManifest$",
    "allocation (runtime.mallocgc)": r"^runtime\.mallocgc$",
    "GC background marking (runtime.gcBgMarkWorker)": r"^runtime\.gcBgMarkWorker$",
    "syscalls (Syscall6, flat)": r"[Ss]yscall6$",
}
_PPROF_LINE = re.compile(r"\s*([\d.]+)((?:m?s)?)\s+[\d.]+%\s+[\d.]+%\s+([\d.]+)((?:m?s)?)\s+[\d.]+%\s+(.*)$")


def _seconds(value: str, unit: str) -> float:
    return float(value) / (1000 if unit == "ms" else 1)


def profile_categories(profile: Path, requests: float) -> dict:
    """:data:`PROFILE_CATEGORIES` of a saved profile: share of all samples and CPU ms per request
    (``requests`` served while it was taken), from ``go tool pprof -top -cum`` with no node
    dropped."""
    out = subprocess.run([GO, "tool", "pprof", "-top", "-cum", "-nodecount=1000000", "-nodefraction=0", str(profile)],
                         capture_output=True, text=True, timeout=120).stdout
    total_match = re.search(r"Total samples = ([\d.]+)(m?s)", out)
    if not total_match:
        return {"error": out[-500:]}
    total = _seconds(*total_match.groups())
    rows = []
    for line in out.splitlines():
        m = _PPROF_LINE.match(line)
        if m:
            rows.append((re.sub(r" \(.*inline\)$", "", m.group(5)), _seconds(m.group(1), m.group(2)),
                         _seconds(m.group(3), m.group(4))))
    figures = {"samples s": round(total, 3), "requests": round(requests),
               "all, ms per request": round(1000 * total / requests, 3)}
    for label, pattern in PROFILE_CATEGORIES.items():
        hits = [row for row in rows if re.search(pattern, row[0])]
        if not hits:
            figures[label] = None
            continue
        seconds = sum(h[1] for h in hits) if "flat" in label else max(h[2] for h in hits)
        figures[label] = {"share %": round(100 * seconds / total, 1), "ms per request": round(1000 * seconds / requests, 3)}
    return figures


def fetch_profile(client, registry: str, seconds: int, labels: dict) -> bytes:
    """``/debug/pprof/profile`` of the registry container, fetched by a busybox helper in its
    network namespace into a file and copied out (its output through the log driver would
    not survive: json-file logs are text)."""
    import io
    import tarfile

    helper = client.containers.create(
        STANDIN_BUSYBOX, entrypoint=["wget", "-q", "-O", "/cpu.pprof", DEBUG_URL.format(seconds=seconds)],
        network_mode=f"container:{registry}", labels=labels)
    try:
        helper.start()
        status = helper.wait(timeout=seconds + 60)
        if status.get("StatusCode") != 0:
            raise RuntimeError(f"profile of {registry} failed: {helper.logs().decode(errors='replace')[-500:]}")
        stream, _ = helper.get_archive("/cpu.pprof")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            return tar.extractfile(tar.getmembers()[0]).read()
    finally:
        helper.remove(force=True)


def profile_registries(benches: list[Bench], seconds: float, path: str, repository: str, out: str) -> dict:
    """A CPU profile of each version's program registries under the HEAD load: the token-program
    stack's registry under token HEADs, and the auth-off partner's registry under auth-off
    HEADs (ab, as in part 1, for ``seconds`` + 2 s around the profile's ``seconds``).

    Both distributions serve net/http/pprof on their debug listener (``http.debug.addr``, which
    the program renders as 127.0.0.1:5001 inside the registry's container for its health check:
    cmd/registry imports net/http/pprof, and 3.1.2's configuration has no setting for it). A
    busybox helper in the registry container's network namespace fetches it. Profiles are saved
    under results/profiles/ and read with ``go tool pprof -top`` (flat and cumulative)."""
    from common import LABEL as labels

    client = docker.from_env()
    PROFILES_DIR.mkdir(parents=True, exist_ok=True)
    results = {}
    for bench in benches:
        for name in ("token-program", "authoff"):
            if name == "token-program" and not bench.program:
                continue
            registry = bench.stack.variants[name].containers["registry"]
            box: dict = {}
            load = threading.Thread(target=lambda: box.update(bench.head(name, seconds + 2, path, repository)))
            load.start()
            time.sleep(1)
            data = fetch_profile(client, registry, int(seconds), labels)
            load.join()
            target = PROFILES_DIR / f"{out}-registry-{bench.version}-{name}.pprof"
            target.write_bytes(data)
            key = f"{name} @{bench.version}"
            results[key] = {
                "profile": shown_path(target), "profile seconds": int(seconds),
                "load": {"req/s": round(box["rate"], 1), "requests": box["n"],
                         "CPU ms per request": {k: round(v, 3) for k, v in box["cpu"].items()}},
                "top (flat)": pprof_top(target),
                "top (cumulative)": pprof_top(target, "-cum", nodecount=45),
                # Requests while the profile ran: ab's rate over the profile's seconds.
                "where the time goes": profile_categories(target, box["rate"] * int(seconds)),
            }
            log(f"profile {key}: {box['rate']:.1f} req/s under profiling, {shown_path(target)}")
            for label, figure in results[key]["where the time goes"].items():
                log(f"    {label:62s} {figure}")
    return results


def recompute_profiles(name: str) -> None:
    """Re-read the profiles a stored result names (results/<name>.json) and write their
    categories into it again (after a change to :data:`PROFILE_CATEGORIES`; nothing measured)."""
    path = ROOT / "bench" / "results" / f"{name}.json"
    result = json.loads(path.read_text())
    for key, prof in result.get("profile", {}).items():
        prof["where the time goes"] = profile_categories(ROOT / prof["profile"],
                                                         prof["load"]["req/s"] * prof["profile seconds"])
        log(f"{key}: {json.dumps(prof['where the time goes'])}")
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    log(f"wrote {shown_path(path)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-cost", type=int, default=10, help="bcrypt cost of token mode's htpasswd")
    parser.add_argument("--pull-layers", type=int, default=10)
    parser.add_argument("--pull-layer-mib", type=int, default=1)
    parser.add_argument("--flood-connections", type=int, default=8)
    parser.add_argument("--flood-seconds", type=float, default=10)
    parser.add_argument("--flood-rate", type=float, default=200,
                        help="wrong-password requests/s of the flood, over all its connections (40x the /token limit)")
    other = 2 if REGISTRY_VERSION == 3 else 3
    parser.add_argument("--versions", default=f"{REGISTRY_VERSION},{other}",
                        help="registry versions, the one under test first (TEST_REGISTRY_VERSION, default 3);"
                             " the others run parts 1 and 2 beside it, in the same rounds")
    parser.add_argument("--profile-seconds", type=float, default=10,
                        help="length of each registry CPU profile (part profile)")
    parser.add_argument("--out", default="auth_token", help="result name in bench/results/")
    parser.add_argument("--flood-child", help=argparse.SUPPRESS)
    parser.add_argument("--registry-gogc", type=int, default=None,
                        help="bench-only variant: run every registry with GOGC=N (registry_gc.py shows why)")
    parser.add_argument("--skip", default="",
                        help="comma list of bearer,algorithm,head,pull,flood,profile,token-program to skip")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--recompute-profiles", metavar="RESULT",
                        help="only re-read the profiles of results/RESULT.json and store their categories again")
    args = parser.parse_args()
    if args.recompute_profiles:
        recompute_profiles(args.recompute_profiles)
        return
    if args.flood_child:
        spec = json.loads(args.flood_child)
        spec["connect"] = tuple(spec["connect"])
        print(json.dumps(flood(FloodSpec(**spec))), flush=True)
        return
    if args.quick:
        args.seconds, args.rounds, args.flood_seconds, args.profile_seconds = 2, 1, 4, 2
    skip = set(filter(None, args.skip.split(",")))
    registry_versions = [int(v) for v in args.versions.split(",") if v]
    if not registry_versions or any(v not in (2, 3) for v in registry_versions) or \
            len(set(registry_versions)) != len(registry_versions):
        parser.error(f"--versions {args.versions}: distinct 2 and/or 3, the one under test first")
    costs = sorted({5, args.new_cost})
    result: dict = {"benchmark": "auth_token", "machine": machine(), "versions": versions(tuple(registry_versions)),
                    "settings": {"seconds": args.seconds, "rounds": args.rounds, "bcrypt costs": costs,
                                 "token htpasswd cost": args.new_cost, "concurrency": CONCURRENCY,
                                 "registry versions": [registry_image(v) for v in registry_versions],
                                 "flood": f"{args.flood_connections} keep-alive connections, {args.flood_rate} requests/s"
                                          " in all, a child process at nice 19"}}
    registry_env = (f"GOGC={args.registry_gogc}",) if args.registry_gogc else ()
    result["settings"]["registry environment added"] = list(registry_env)
    if not token_service_available():
        result["token"] = "not measured: token_service is not importable from this checkout"
        log(result["token"])
    benches: list[Bench] = []
    with contextlib.ExitStack() as cleanup:
        for i, version in enumerate(registry_versions):
            stack = cleanup.enter_context(BenchStack(variants_wanted=("ours", "direct", "authoff"),
                                                     registry_env=registry_env, registry_version=version))
            cleanup.callback(lambda s=stack: s.set_htpasswd(s.htpasswd) if s.deployment else None)
            token = None
            if token_service_available():
                token = TokenSide(stack, args.new_cost, registry_env=registry_env)
                cleanup.callback(token.down)
                token.up()
            program = None
            if AUTH_MODES and "token-program" not in skip:
                program = ProgramToken(stack)
                cleanup.callback(program.down)
                program.up()
            elif i == 0:
                result["token-program"] = "not measured: skipped, or this checkout's program has no token mode"
            benches.append(Bench(stack, costs, token, program, basic=i == 0))
        for bench in benches:
            stack = bench.stack
            small = Path(tempfile.mkdtemp(prefix="small-", dir=stack.workdir))
            write_image(small, "v1", [4096], seed=f"{stack.tag}-small")
            ten = Path(tempfile.mkdtemp(prefix="ten-", dir=stack.workdir))
            write_image(ten, "v1", [args.pull_layer_mib * MiB] * args.pull_layers, seed=f"{stack.tag}-ten")
            for name in ("ours", "token", "token-program"):
                if name in stack.variants:
                    stack.push(small, "v1", stack.variants[name], "bench/small")
                    stack.push(ten, "v1", stack.variants[name], "bench/ten")
        bench = benches[0]
        head_path = "/v2/bench/small/manifests/v1"
        if "bearer" not in skip and bench.token:
            result["bearer header"] = bearer_header(bench, args.rounds, args.seconds, head_path, "bench/small")
        if "algorithm" not in skip and bench.token:
            result["signature algorithm"] = bearer_header(bench, args.rounds, args.seconds, head_path,
                                                          "bench/small", "rs256")
        if "head" not in skip:
            result["head"], result["head across versions"] = paired(
                benches, args.rounds, lambda b, n: b.head(n, args.seconds, head_path, "bench/small"), "HEAD", "req/s")
        if "pull" not in skip:
            result["pull"], result["pull across versions"] = paired(
                benches, args.rounds * 2, lambda b, n: b.pull(n, "bench/ten"), "pull", "pulls/s")
        if "flood" not in skip:
            result["flood"] = flood_benchmark(bench, max(2, args.rounds // 2), args.flood_seconds,
                                              args.flood_connections, args.flood_rate, "bench/ten")
        if "profile" not in skip:
            result["profile"] = profile_registries(benches, args.profile_seconds, head_path, "bench/small", args.out)
    goals = {"head": 0.9, "pull": 0.9, "flood": 0.8}
    result["goals"] = {}
    for part, goal in goals.items():
        if part not in result:
            continue
        for name, figures in result[part].items():
            if part == "flood" or name.split(" @")[0] in ("token", "token-program"):
                result["goals"][f"{part} {name} >= {goal}x"] = figures["ratio"] >= goal
            partner = "alone" if part == "flood" else "auth off"
            log(f"{part:5s} {name:20s} {fmt_ratio(figures['ratio'])} [{fmt_ratio(figures['spread'][0])}-"
                f"{fmt_ratio(figures['spread'][1])}]  CPU ms {figures['CPU ms']['total']:.2f} vs {partner} "
                f"{figures[f'CPU ms {partner}']['total']:.2f} (CPU-bound {fmt_ratio(figures['CPU-bound ratio'])})")
            log(f"      CPU ms by process: {cpu_line(figures['CPU ms'])}")
            log(f"      {partner:8s}         : {cpu_line(figures[f'CPU ms {partner}'])}")
    for part in ("head across versions", "pull across versions"):
        for name, figures in result.get(part, {}).items():
            a, b = [k for k in figures if k.startswith("CPU ms") and not k.endswith("per round")][:2]
            log(f"{part.split()[0]:5s} {name:30s} {fmt_ratio(figures['ratio'])} [{fmt_ratio(figures['spread'][0])}-"
                f"{fmt_ratio(figures['spread'][1])}]  CPU ms {figures[a]['total']:.2f} vs {figures[b]['total']:.2f}"
                f" (CPU-bound {fmt_ratio(figures['CPU-bound ratio'])})")
            log(f"      {a}: {cpu_line(figures[a])}")
            log(f"      {b}: {cpu_line(figures[b])}")
    if "bearer header" in result:
        b = result["bearer header"]
        log(f"bearer kid vs x5c {fmt_ratio(b['ratio'])} [{fmt_ratio(b['spread'][0])}-{fmt_ratio(b['spread'][1])}]"
            f"  registry CPU ms {b['CPU ms']['registry']:.3f} vs {b['CPU ms x5c']['registry']:.3f}")
    if "signature algorithm" in result:
        b = result["signature algorithm"]
        log(f"signature ES256 vs RS256 {fmt_ratio(b['ratio'])} [{fmt_ratio(b['spread'][0])}-"
            f"{fmt_ratio(b['spread'][1])}]  registry CPU ms {b['CPU ms']['registry']:.3f} vs "
            f"{b['CPU ms rs256']['registry']:.3f}")
    # The bench-only GOGC variant is kept apart from the as-deployed result run_all reports.
    result["machine"]["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    write_result(args.out + (f"-gogc{args.registry_gogc}" if args.registry_gogc else ""), result)


if __name__ == "__main__":
    main()
