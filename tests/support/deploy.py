"""Apply what the program declares to the real Docker engine, the way pulumi-docker would.

The one way tests stand up a registry: :func:`live_stack` runs the program (``__main__.py``
under the engine-like mocks) and deploys what it declares; :func:`registry_stack` is the same,
seen as the registry API tests and benchmarks use it (:class:`RegistryStack`: URL, CA,
credentials, skopeo push and pull, container names).

A :class:`ProgramRun` holds every docker network, volume and container exactly as the program
registered them (image, uploads, mounts, ports, network aliases, environment, healthcheck,
restart policy, stop signal, user, volume driver options). :class:`Deployment` creates them with the Docker SDK. Images
cannot be pulled here, so each pinned image reference is swapped for a stand-in built from
Debian's binaries (scripts/build-standin-images.sh); everything else is taken as declared.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import docker
import yaml

from components.registry_api import RegistryClient
from components.render.registry_config import CONFIG_PATH
from components.settings import DEFAULT_NGINX_IMAGE, DEFAULT_REGISTRY_IMAGE, REGISTRY2_IMAGE
from tests.support.engine import Registered
from tests.support.ports import free_port
from tests.support.program import REGISTRY_VERSION, ProgramRun, run_program
from tests.support.tarballs import tar_bytes
from tests.support.waiting import http_status, wait_for

__all__ = ["Deployment", "LiveStack", "RegistryStack", "docker_cli", "free_port", "live_stack", "registry_stack",
           "upload_content", "wait_https"]

STANDIN_REGISTRY3 = "private-registry-standin/registry:3.1.2"
STANDIN_REGISTRY2 = "private-registry-standin/registry:2.8.2"
# The registry under test (TEST_REGISTRY_VERSION, tests/support/program.py).
STANDIN_REGISTRY = STANDIN_REGISTRY3 if REGISTRY_VERSION == 3 else STANDIN_REGISTRY2
STANDIN_NGINX = "private-registry-standin/nginx:1.22.1"
STANDIN_BUSYBOX = "private-registry-standin/busybox:test"
STANDIN_PYTHON = "private-registry-standin/python:3.12-slim"
STANDINS = {DEFAULT_REGISTRY_IMAGE: STANDIN_REGISTRY3, REGISTRY2_IMAGE: STANDIN_REGISTRY2,
            DEFAULT_NGINX_IMAGE: STANDIN_NGINX}

NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"
CONTAINER = "docker:index/container:Container"
IMAGE = "docker:index/remoteImage:RemoteImage"


def _nanoseconds(duration: Optional[str]) -> Optional[int]:
    if not duration:
        return None
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    if not match:
        raise ValueError(f"unsupported duration {duration!r}")
    scale = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}[match.group(2)]
    return int(match.group(1)) * scale


def _uploads_tar(uploads: list[dict]) -> bytes:
    return tar_bytes({
        u["file"]: (u["content"], int(u.get("permissions") or ("0755" if u.get("executable") else "0644"), 8))
        for u in uploads
    })


@dataclass
class Deployment:
    """Networks, volumes and containers of one program run, created on the local engine."""

    run: ProgramRun
    client: docker.DockerClient = field(default_factory=docker.from_env)
    standins: dict = field(default_factory=lambda: dict(STANDINS))
    created_networks: list = field(default_factory=list)
    created_volumes: list = field(default_factory=list)
    created_containers: list = field(default_factory=list)
    built_images: list = field(default_factory=list)

    def containers(self) -> list[Registered]:
        return self.run.monitor.by_type(CONTAINER)

    def container(self, suffix: str) -> Registered:
        """The declared container whose resource name ends with ``suffix`` (e.g. 'proxy-container')."""
        return next(r for r in self.containers() if r.name.endswith(suffix))

    def _image_for(self, container: Registered) -> str:
        reference = container.plain_inputs["image"]
        images = {r.plain_outputs.get("imageId"): r for r in self.run.monitor.by_type(IMAGE)}
        image = images.get(reference)
        if image is not None and image.plain_inputs.get("build"):
            built = build_declared_image(image.plain_inputs)
            if built not in self.built_images:
                self.built_images.append(built)
            return built
        reference = image.plain_inputs["name"] if image is not None else reference
        if reference not in self.standins:
            raise KeyError(f"no stand-in image for {reference!r}; pass standins={{...}}")
        return self.standins[reference]

    # ---- create ------------------------------------------------------------------------
    def up(self, wait_healthy: bool = True, timeout: float = 60) -> "Deployment":
        existing_networks = {n.name for n in self.client.networks.list()}
        for net in self.run.monitor.by_type(NETWORK):
            name = net.plain_inputs["name"]
            if name not in existing_networks:
                self.client.networks.create(name, driver=net.plain_inputs.get("driver") or "bridge")
                self.created_networks.append(name)
        existing_volumes = {v.name for v in self.client.volumes.list()}
        for vol in self.run.monitor.by_type(VOLUME):
            name = vol.plain_inputs["name"]
            if name not in existing_volumes:
                self.client.volumes.create(name, driver=vol.plain_inputs.get("driver") or "local",
                                           driver_opts=vol.plain_inputs.get("driverOpts") or None)
                self.created_volumes.append(name)
        for spec in self.containers():
            self.create_container(spec)
        if wait_healthy:
            self.wait_healthy(timeout)
        return self

    def create_container(self, spec: Registered):
        """Create and start one container exactly as declared (uploads before start, as pulumi-docker does)."""
        i = spec.plain_inputs
        api = self.client.api
        networks = i.get("networksAdvanced") or []
        networking = None
        if networks:
            first = networks[0]
            networking = api.create_networking_config(
                {first["name"]: api.create_endpoint_config(aliases=first.get("aliases") or None)}
            )
        ports = []
        bindings = {}
        for port in i.get("ports") or []:
            # Numbers arrive as floats over the wire (protobuf Struct); Docker wants integers.
            protocol = port.get("protocol") or "tcp"
            key = f"{int(port['internal'])}/{protocol}"
            ports.append((int(port["internal"]), protocol))
            external = int(port["external"]) if port.get("external") is not None else None
            bindings[key] = (port.get("ip") or "0.0.0.0", external)
        mounts = [
            docker.types.Mount(target=v["containerPath"], source=v["volumeName"], type="volume",
                               read_only=bool(v.get("readOnly")))
            for v in i.get("volumes") or []
            if v.get("volumeName")
        ]
        health = i.get("healthcheck")
        healthcheck = None
        if health:
            healthcheck = {
                "test": health["tests"],
                "interval": _nanoseconds(health.get("interval")),
                "timeout": _nanoseconds(health.get("timeout")),
                "retries": int(health["retries"]) if health.get("retries") is not None else None,
                "start_period": _nanoseconds(health.get("startPeriod")),
            }
        restart = i.get("restart") or "no"
        host_config = api.create_host_config(
            port_bindings=bindings or None,
            mounts=mounts or None,
            restart_policy={"Name": restart} if restart != "no" else None,
        )
        created = api.create_container(
            image=self._image_for(spec),
            name=i["name"],
            ports=ports or None,
            environment=i.get("envs") or None,
            user=i.get("user") or None,
            command=i.get("command") or None,
            entrypoint=i.get("entrypoints") or None,
            host_config=host_config,
            networking_config=networking,
            healthcheck=healthcheck,
            stop_signal=i.get("stopSignal"),
            stop_timeout=int(i["stopTimeout"]) if i.get("stopTimeout") is not None else None,
            labels={"private-registry.test": "1"},
        )
        container_id = created["Id"]
        self.created_containers.append(i["name"])
        for extra in networks[1:]:
            api.connect_container_to_network(container_id, extra["name"], aliases=extra.get("aliases") or None)
        if i.get("uploads"):
            api.put_archive(container_id, "/", _uploads_tar(i["uploads"]))
        api.start(container_id)
        return container_id

    def wait_healthy(self, timeout: float = 60) -> None:
        """Until every container is healthy (running, for one without a health check), all
        within ``timeout`` seconds."""
        def status(name: str) -> str:
            state = self.client.api.inspect_container(name)["State"]
            return (state.get("Health") or {}).get("Status", "healthy" if state["Running"] else "down")

        deadline = time.monotonic() + timeout
        for spec in self.containers():
            name = spec.plain_inputs["name"]
            wait_for(lambda: status(name) == "healthy", max(0.0, deadline - time.monotonic()), interval=0.25,
                     what=f"container {name} healthy",
                     log=lambda: f"{status(name)}; logs:\n" + self.client.api.logs(name, tail=30).decode(errors="replace"))

    # ---- replace / remove --------------------------------------------------------------
    def remove_containers(self) -> None:
        for name in list(self.created_containers):
            try:
                self.client.api.remove_container(name, force=True)
            except docker.errors.NotFound:
                pass
            self.created_containers.remove(name)

    def replace(self, new_run: ProgramRun, wait_healthy: bool = True) -> "Deployment":
        """What ``pulumi up`` does to containers whose inputs changed: delete, then create anew
        (delete_before_replace); networks and volumes stay."""
        self.remove_containers()
        self.run = new_run
        for spec in self.containers():
            self.create_container(spec)
        if wait_healthy:
            self.wait_healthy()
        return self

    def down(self, remove_volumes: bool = True) -> None:
        self.remove_containers()
        for name in self.created_networks:
            try:
                self.client.networks.get(name).remove()
            except docker.errors.NotFound:
                pass
        self.created_networks.clear()
        if remove_volumes:
            for name in self.created_volumes:
                try:
                    self.client.volumes.get(name).remove(force=True)
                except docker.errors.NotFound:
                    pass
            self.created_volumes.clear()
        for name in self.built_images:
            docker_cli("rmi", name, check=False)
        self.built_images.clear()


def upload_content(spec: Registered, path: str) -> str:
    """The content the program uploads to ``path`` in a declared container."""
    return next(u["content"] for u in spec.plain_inputs["uploads"] if u["file"] == path)


def wait_https(url: str, ca_file: str, timeout: float = 30) -> None:
    """Until ``url`` answers over TLS verified by ``ca_file`` (any status)."""
    wait_for(lambda: http_status(url, verify=ca_file) is not None, timeout, interval=0.2, what=f"{url} answering")


# Base images of images the program builds, mapped to their stand-ins (build argument BASE).
BUILD_BASE_STANDINS = {"BASE": STANDIN_PYTHON}


def build_declared_image(inputs: dict) -> str:
    """Build a declared ``RemoteImage`` with a ``build`` (as the provider would on the Docker
    host), on the stand-in base image; once per name. Returns the image name."""
    name = inputs["name"]
    if docker_cli("image", "inspect", name, check=False).returncode != 0:
        build = inputs["build"]
        # A relative context is relative to the project root, Pulumi's working directory.
        context = Path(__file__).resolve().parents[2] / build["context"]
        args = [f"--build-arg={k}={v}" for k, v in BUILD_BASE_STANDINS.items()]
        docker_cli("build", "-q", *args, "-t", name, "-f", str(context / build.get("dockerfile", "Dockerfile")),
                   str(context))
    return name


def docker_cli(*args: str, input: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the docker CLI (whichever is first on PATH; both talk to the local engine)."""
    return subprocess.run(["docker", *args], input=input, capture_output=True, text=True, check=check, timeout=300)


@dataclass
class LiveStack:
    """A stack deployed on the local engine for a test module."""

    run: ProgramRun
    deployment: Deployment
    config: dict
    address: str  # host:port as clients write it
    port: int
    cert_dir: Path  # holds only ca.crt, as skopeo's --cert-dir wants
    ca_file: Path


@contextmanager
def live_stack(tmp: Path, prefix: str, users: dict, *, wait_healthy: bool = True, secret_keys: tuple[str, ...] = (),
               **settings) -> Iterator[LiveStack]:
    """Run the program for a stack on a free loopback port (own names, own volume), deploy it,
    wait for HTTPS; remove containers, network and volume afterwards, even on failure.

    ``wait_healthy=False`` waits for HTTPS only, not for Docker's first healthcheck (10 s).
    ``secret_keys``: settings stored as secrets besides ``users`` (``notifications``, say)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    port = free_port()
    config = {
        "httpsPort": port,
        "bindAddress": "127.0.0.1",
        "namePrefix": name,
        "volume": {"name": f"{name}-data"},
        "users": users,
        **settings,
    }
    run = run_program(config, secret_keys=["users", *secret_keys])
    deployment = Deployment(run)
    cert_dir = tmp / "certs"
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca_file = cert_dir / "ca.crt"
    ca_file.write_text(run.exports["caCertificatePem"])
    try:
        deployment.up(wait_healthy=wait_healthy)
        address = run.exports["registryAddress"]
        wait_https(f"https://{address}/healthz", str(ca_file))
        yield LiveStack(run, deployment, config, address, port, cert_dir, ca_file)
    finally:
        deployment.down(remove_volumes=True)


# --- the registry as API tests use it ----------------------------------------------------------

DOCKER_HOST = "unix:///var/run/docker.sock"
USERNAME = "maint"
# '@' and ':' on purpose: they break naive URL and header handling.
PASSWORD_PREFIX = "Pw@:"


@dataclass
class RegistryStack:
    """A deployed stack's registry, reachable at ``url`` through its proxy."""

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

    def push(self, layout: Path, tag: str, repository: str, dest_tag: str | None = None, *, multi: bool = False,
             format: str | None = None):
        extra = (["--all"] if multi else []) + (["--format", format] if format else [])
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
            STANDIN_BUSYBOX, entrypoint=["du", "-sb", "/data"], command=[], remove=True,
            volumes={self.volume_name: {"bind": "/data", "mode": "ro"}}, network_mode="none",
        )
        return int(out.split()[0])


def _wait_ready(url: str, ca_file: Path, auth: tuple[str, str], timeout: float = 30.0) -> None:
    def status() -> object:
        return http_status(f"{url}/v2/", verify=str(ca_file), auth=auth)

    wait_for(lambda: status() == 200, timeout, interval=0.1, what=f"registry stack at {url} ready",
             log=lambda: f"GET /v2/: {status()}")


def _disable_deletion(deployment: Deployment, name: str) -> None:
    """Rewrite the registry's config with ``storage.delete.enabled: false`` and restart it."""
    config = yaml.safe_load(upload_content(deployment.container("registry-container"), CONFIG_PATH))
    config["storage"]["delete"]["enabled"] = False
    api = deployment.client.api
    api.put_archive(name, "/", tar_bytes({CONFIG_PATH: yaml.safe_dump(config)}))
    api.restart(name, timeout=30)


@contextmanager
def registry_stack(work: Path, *, prefix: str = "maint", delete_enabled: bool = True,
                   **settings) -> Iterator[RegistryStack]:
    """The program's registry and proxy deployed (:func:`live_stack`) with one user, as a
    :class:`RegistryStack`; ``delete_enabled=False`` turns the registry's deletion off; other
    keyword arguments are further stack settings (``images={...}``, say)."""
    password = PASSWORD_PREFIX + secrets.token_urlsafe(12)
    # Basic mode: callers send the password with every request (token mode: tests/integration/test_token_*.py).
    with live_stack(work, prefix, {USERNAME: password}, wait_healthy=False, auth={"mode": "basic"}, **settings) as live:
        registry_name = live.deployment.container("registry-container").plain_inputs["name"]
        if not delete_enabled:
            _disable_deletion(live.deployment, registry_name)
        url = f"https://{live.address}"
        _wait_ready(url, live.ca_file, (USERNAME, password))
        yield RegistryStack(
            docker=live.deployment.client, url=url, host=live.address, ca_pem=live.ca_file.read_text(),
            username=USERNAME, password=password, registry_name=registry_name,
            proxy_name=live.deployment.container("proxy-container").plain_inputs["name"],
            volume_name=live.config["volume"]["name"], cert_dir=live.cert_dir, work=work,
        )
