"""What every benchmark shares: the deployed stack and its side-by-side variants, skopeo and ab
runners, medians, and the record of machine, versions and settings written with each result.

One :class:`BenchStack` is the program's own stack (``run_program`` under the engine-like mocks,
then created on the real engine by ``Deployment``, stand-in images for the pinned ones), plus
containers on the same network that the benchmarks compare against:

* ``ours``     the program's nginx, exactly as rendered, to the registry on its Unix socket;
* ``ours-tcp`` the same nginx.conf with the registry reached over TCP instead (the ``tcp``
               registry below): the hop the socket removes;
* ``direct``   plain HTTP, no proxy, to the ``tcp`` registry: a second registry container on
               the program's data volume serving TCP (published on loopback), since the
               program's own registry has no TCP port;
* ``tutorial`` nginx with the tutorial's ``registry.conf`` (bench/tutorial/) in front of the
               ``tcp`` registry (network alias ``registry``, as the tutorial names it);
* ``native``   a second registry container serving TLS and htpasswd itself (no proxy), with
               the program's certificate and htpasswd file and its own volume;
* ``authoff``  the program's nginx.conf rendered with ``NginxOptions(auth=False)``, in front
               of the same registry.

Secrets (the password, the key) go to containers and to a 0600 skopeo auth file in a private
temporary folder; they are never printed nor put on a command line.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import requests  # noqa: E402

from components.render.nginx import (  # noqa: E402
    CERT_PATH,
    CONF_PATH,
    CONTAINER_HTTPS_PORT,
    HTPASSWD_PATH,
    KEY_PATH,
    NginxOptions,
    render_nginx_conf,
)
from components.render.registry_config import (  # noqa: E402
    CONFIG_PATH,
    DATA_DIR,
    SOCKET_DIR,
    registry_config,
    runtime_env,
    serve_command,
)
from components.settings import DEFAULT_BCRYPT_ROUNDS, REGISTRY2_IMAGE  # noqa: E402
from tests.support.deploy import (  # noqa: E402
    STANDIN_NGINX,
    STANDIN_REGISTRY2,
    STANDIN_REGISTRY3,
    Deployment,
    upload_content,
    wait_https,
)
from tests.support.program import REGISTRY_VERSION, run_program  # noqa: E402
from tests.support.ports import free_port  # noqa: E402,F401

# Whether this checkout's program has auth modes (settings key ``auth``: token or basic).
AUTH_MODES = importlib.util.find_spec("components.settings_auth") is not None

BENCH_DIR = Path(__file__).resolve().parent
# Where results go: bench/results, or BENCH_RESULTS_DIR (run_all.py --quick: a scratch folder,
# so a check that the scripts work keeps no figures).
RESULTS_DIR = Path(os.environ.get("BENCH_RESULTS_DIR") or BENCH_DIR / "results")
TUTORIAL_DIR = BENCH_DIR / "tutorial"
LABEL = {"private-registry.bench": "1"}
USER = "bench"
MiB = 1 << 20
PORT = 5000  # the comparison registries' TCP port


# ---- the registry under test ------------------------------------------------------------------
# Distribution 3 by default (the program's default image); TEST_REGISTRY_VERSION=2 for 2.8, as
# the integration tests (tests/support/program.py). Some parts also run the other one beside it.
def registry_image(version: int) -> str:
    """The stand-in image of distribution ``version`` (2: 2.8.2, 3: 3.1.2)."""
    return STANDIN_REGISTRY3 if version >= 3 else STANDIN_REGISTRY2


def registry_environment(version: int, extra: tuple[str, ...] = ()) -> list[str]:
    """The environment the program gives every registry of ``version`` (GOGC=400; on 3 also
    OTEL_TRACES_EXPORTER=none), with ``extra`` "NAME=value" entries replacing those of the same
    name (Go reads the first of duplicate names, so a later duplicate would not count)."""
    merged: dict[str, str] = {}
    for entry in (*runtime_env(version), *extra):
        name = entry.split("=", 1)[0]
        merged.pop(name, None)
        merged[name] = entry
    return list(merged.values())


def registry_version_of(image: str) -> int:
    return 3 if image == STANDIN_REGISTRY3 else 2


STANDIN_REGISTRY = registry_image(REGISTRY_VERSION)


# ---- numbers ----------------------------------------------------------------------------------
def median(values) -> float:
    return statistics.median(values)


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


def log(message: str) -> None:
    print(message, flush=True)


# ---- CPU accounting ----------------------------------------------------------------------
# Wall-clock time on a shared 2-core machine moves with whatever else runs; CPU seconds spent
# per unit of work by each process on the path hardly do. Both are recorded.
def _cgroup_cpu_seconds(container_id: str) -> Optional[float]:
    v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage")
    if v1.exists():
        return int(v1.read_text()) / 1e9
    for v2 in (Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat"),
               Path(f"/sys/fs/cgroup/docker/{container_id}/cpu.stat")):
        if v2.exists():
            usage = next(line for line in v2.read_text().splitlines() if line.startswith("usage_usec"))
            return int(usage.split()[1]) / 1e6
    return None


def _docker_proxy_cpu_seconds(host_port: int) -> float:
    """CPU of the docker-proxy process that forwards a published loopback port (0 if none)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if not argv or not argv[0].endswith(b"docker-proxy") or str(host_port).encode() not in argv:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            continue
    return total


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds used, while in the ``with`` block, by the named containers, the docker-proxy
    of the given host ports, and this process's finished children (the client)."""

    def __init__(self, containers: dict[str, str], host_ports: tuple[int, ...] = ()):
        client = docker.from_env()
        self.ids = {label: client.api.inspect_container(name)["Id"] for label, name in containers.items()}
        self.host_ports = host_ports
        self.seconds: dict[str, float] = {}

    def _snapshot(self) -> dict[str, float]:
        snap = {label: _cgroup_cpu_seconds(cid) for label, cid in self.ids.items()}
        snap = {label: value for label, value in snap.items() if value is not None}
        snap["docker-proxy"] = sum(_docker_proxy_cpu_seconds(p) for p in self.host_ports)
        snap["client"] = _children_cpu_seconds()
        return snap

    def __enter__(self) -> "CpuMeter":
        self._start = self._snapshot()
        return self

    def __exit__(self, *exc) -> None:
        end = self._snapshot()
        self.seconds = {label: end[label] - self._start[label] for label in end if label in self._start}
        self.seconds["total"] = sum(self.seconds.values())


# ---- machine, versions ------------------------------------------------------------------------
def _first_line(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc.__class__.__name__})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unavailable"


def machine() -> dict:
    """nproc, memory, kernel and CPU model of the machine the figures come from."""
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_kib = 0
    try:
        mem_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                           if line.startswith("MemTotal")))
    except (OSError, StopIteration):
        pass
    return {
        "nproc": os.cpu_count(),
        "memory": f"{mem_kib / (1 << 20):.1f} GiB",
        "kernel": platform.release(),
        "cpu": cpu,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def versions(registry_versions: tuple[int, ...] = (REGISTRY_VERSION,)) -> dict:
    """Versions of the software under test, asked of the binaries themselves. ``registry`` is
    the first of ``registry_versions`` (the registry under test); any other one run beside it
    is ``registry <N>.x``."""
    client = docker.from_env()
    nginx = client.containers.run(STANDIN_NGINX, entrypoint=["/usr/sbin/nginx", "-v"], remove=True,
                                  stderr=True, stdout=True).decode().strip()
    registries = {}
    for i, version in enumerate(registry_versions):
        image = registry_image(version)
        text = client.containers.run(image, entrypoint=["/bin/registry", "--version"], remove=True,
                                     stderr=True, stdout=True).decode().strip()
        registries["registry" if i == 0 else f"registry {version}.x"] = f"{text} ({image})"
    import bcrypt as bcrypt_module

    return {
        "nginx": f"{nginx} ({STANDIN_NGINX})",
        **registries,
        "skopeo": _first_line(["skopeo", "--version"]),
        "docker engine": client.version()["Version"],
        "ab": _first_line(["ab", "-V"]) if shutil.which("ab") else "not installed",
        "python": platform.python_version(),
        "bcrypt (python)": bcrypt_module.__version__,
    }


# ---- results ----------------------------------------------------------------------------------
def shown_path(path: Path) -> str:
    """A path as results and logs name it: within the checkout relative to it, else whole."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def write_result(name: str, result: dict) -> Path:
    """Store one benchmark's result (figures, ratios, settings, machine, versions) as JSON."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    log(f"wrote {shown_path(path)}")
    return path


# ---- containers -------------------------------------------------------------------------------
def _tar(files: dict[str, tuple[str, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, (content, mode) in files.items():
            data = content.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def put_files(container_name: str, files: dict[str, tuple[str, int]]) -> None:
    """Copy files (path -> (content, mode)) into a container, as the program's uploads do."""
    docker.from_env().api.put_archive(container_name, "/", _tar(files))


@dataclass
class Variant:
    name: str
    address: str  # host:port as clients write it
    tls: bool
    auth: bool
    port: int = 0
    # Containers a request passes through, by role ("nginx", "registry"), for CPU accounting.
    containers: dict = field(default_factory=dict)
    # CA folder for skopeo's --cert-dir when the variant has its own CA (another stack).
    cert_dir: Optional[Path] = None


@dataclass
class BenchStack:
    """The program's stack plus the comparison containers; use as a context manager."""

    config_extra: dict = field(default_factory=dict)
    variants_wanted: tuple[str, ...] = ("ours", "ours-tcp", "direct", "tutorial", "native", "authoff")
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    # Extra "NAME=value" environment for the program's registry container (a bench-only
    # variant, e.g. GOGC=400; see registry_gc.py); empty: exactly as the program declares it.
    registry_env: tuple[str, ...] = ()
    # Which distribution the stack runs (the program's images.registry); 3 unless
    # TEST_REGISTRY_VERSION=2. The comparison registries run the same one.
    registry_version: int = REGISTRY_VERSION

    def __post_init__(self) -> None:
        self.client = docker.from_env()
        self.registry_image = registry_image(self.registry_version)
        self.ports = {name: free_port() for name in ("ours", "ours-tcp", "direct", "tutorial", "native", "authoff")}
        self.prefix = f"bench-{self.tag}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        os.chmod(self.workdir, 0o700)
        self.extra_containers: list[str] = []
        self.extra_volumes: list[str] = []
        self.deployment: Optional[Deployment] = None
        self.variants: dict[str, Variant] = {}

    # The stack's settings: the program's defaults except what a benchmark must pin down.
    def config(self) -> dict:
        config = {
            "httpsPort": self.ports["ours"],
            "bindAddress": "127.0.0.1",
            "namePrefix": self.prefix,
            "volume": {"name": f"{self.prefix}-data", "keepOnDestroy": False},
        }
        if AUTH_MODES:
            # The variants compared here are nginx's basic auth; token mode is its own variant.
            config["auth"] = {"mode": "basic"}
        if self.registry_version == 2:
            config["images"] = {"registry": REGISTRY2_IMAGE}
        config.update(self.config_extra)
        return config

    def __enter__(self) -> "BenchStack":
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> None:
        self.run = run_program(self.config(), secret_keys=["users"] if "users" in self.config_extra else ())
        self.password = self.run.exports["passwords"][self.run.exports["userNames"][0]]
        self.user = self.run.exports["userNames"][0]
        self.deployment = Deployment(self.run)
        if self.registry_env:
            spec = self.deployment.container("registry-container")
            declared = tuple(spec.inputs.get("envs") or ())
            merged: dict[str, str] = {}
            for entry in (*declared, *self.registry_env):
                merged.pop(entry.split("=", 1)[0], None)
                merged[entry.split("=", 1)[0]] = entry
            spec.inputs["envs"] = list(merged.values())
        self.deployment.up()
        proxy_spec = self.deployment.container("proxy-container")
        self.proxy_name = proxy_spec.plain_inputs["name"]
        self.registry_name = self.deployment.container("registry-container").plain_inputs["name"]
        self.network = self.run.monitor.by_type("docker:index/network:Network")[0].plain_inputs["name"]
        self.socket_volume = f"{self.prefix}-socket"
        self.cert_pem = upload_content(proxy_spec, CERT_PATH)
        self.key_pem = upload_content(proxy_spec, KEY_PATH)
        self.htpasswd = upload_content(proxy_spec, HTPASSWD_PATH)
        self.nginx_conf = upload_content(proxy_spec, CONF_PATH)
        self.cert_dir = self.workdir / "certs"
        self.cert_dir.mkdir()
        (self.cert_dir / "ca.crt").write_text(self.run.exports["caCertificatePem"])
        self.ca_file = str(self.cert_dir / "ca.crt")
        self.variants["ours"] = Variant("ours", f"localhost:{self.ports['ours']}", tls=True, auth=True,
                                        containers={"nginx": self.proxy_name, "registry": self.registry_name})
        self._start_tcp_registry()
        self.variants["direct"] = Variant("direct", f"127.0.0.1:{self.ports['direct']}", tls=False, auth=False,
                                          containers={"registry": self.tcp_registry})
        if "ours-tcp" in self.variants_wanted:
            self._start_ours_tcp()
        if "tutorial" in self.variants_wanted:
            self._start_tutorial()
        if "native" in self.variants_wanted:
            self._start_native()
        if "authoff" in self.variants_wanted:
            self._start_authoff()
        for name, variant in self.variants.items():
            variant.port = self.ports[name]
        self._write_authfile()
        for variant in self.variants.values():
            self.wait_ready(variant)

    # ---- comparison containers --------------------------------------------------------------
    def _run_container(self, name: str, image: str, port: int, internal: int, files: dict,
                       volumes: Optional[dict] = None, stop_signal: Optional[str] = None,
                       aliases: Optional[list] = None) -> None:
        api = self.client.api
        registry = image in (STANDIN_REGISTRY2, STANDIN_REGISTRY3)
        created = api.create_container(
            image=image,
            name=name,
            ports=[internal],
            # A registry as the program runs one: `registry serve CONFIG_PATH` (registry:3's own
            # command reads /etc/distribution/config.yml) and the program's environment.
            entrypoint=serve_command(CONFIG_PATH) if registry else None,
            environment=registry_environment(registry_version_of(image), self.registry_env) if registry else None,
            host_config=api.create_host_config(
                port_bindings={internal: ("127.0.0.1", port)},
                binds=volumes or None,
            ),
            networking_config=api.create_networking_config(
                {self.network: api.create_endpoint_config(aliases=aliases)}),
            labels=LABEL,
            stop_signal=stop_signal,
        )
        self.extra_containers.append(name)
        api.put_archive(created["Id"], "/", _tar(files))
        api.start(created["Id"])

    def _start_tcp_registry(self) -> None:
        """The program's registry config, serving TCP on :5000, on the program's data volume."""
        import yaml

        config = registry_config(http_secret=uuid.uuid4().hex, tcp_addr=f":{PORT}")
        config["http"].pop("debug")
        self.tcp_registry = f"{self.prefix}-registry-tcp"
        self._run_container(self.tcp_registry, self.registry_image, self.ports["direct"], PORT,
                            {CONFIG_PATH: (yaml.safe_dump(config, sort_keys=False), 0o600)},
                            volumes={f"{self.prefix}-data": {"bind": DATA_DIR, "mode": "rw"}}, aliases=["registry"])

    def _start_ours_tcp(self) -> None:
        conf = render_nginx_conf(NginxOptions(upstreams=(f"{self.tcp_registry}:{PORT}",), backup_upstreams=(),
                                              server_names=("localhost", "127.0.0.1"),
                                              public_port=self.ports["ours-tcp"]))
        files = {CONF_PATH: (conf, 0o644), CERT_PATH: (self.cert_pem, 0o644), KEY_PATH: (self.key_pem, 0o600),
                 HTPASSWD_PATH: (self.htpasswd, 0o640)}
        self._run_container(f"{self.prefix}-ours-tcp", STANDIN_NGINX, self.ports["ours-tcp"], CONTAINER_HTTPS_PORT,
                            files, stop_signal="SIGQUIT")
        self.variants["ours-tcp"] = Variant("ours-tcp", f"localhost:{self.ports['ours-tcp']}", tls=True, auth=True,
                                            containers={"nginx": f"{self.prefix}-ours-tcp",
                                                        "registry": self.tcp_registry})

    def _start_tutorial(self) -> None:
        # The tutorial hashes with `htpasswd -c` (Apache's default, apr1-MD5); same password.
        apr1 = subprocess.run(["openssl", "passwd", "-apr1", "-stdin"], input=self.password,
                              capture_output=True, text=True, check=True).stdout.strip()
        files = {
            "/etc/nginx/nginx.conf": ((TUTORIAL_DIR / "nginx.conf").read_text(), 0o644),
            "/etc/nginx/conf.d/registry.conf": ((TUTORIAL_DIR / "registry.conf").read_text(), 0o644),
            "/etc/nginx/conf.d/domain.crt": (self.cert_pem, 0o644),
            "/etc/nginx/conf.d/domain.key": (self.key_pem, 0o600),
            "/etc/nginx/conf.d/registry.password": (f"{self.user}:{apr1}\n", 0o644),
        }
        self._run_container(f"{self.prefix}-tutorial", STANDIN_NGINX, self.ports["tutorial"], 443, files,
                            stop_signal="SIGQUIT")
        self.variants["tutorial"] = Variant("tutorial", f"localhost:{self.ports['tutorial']}", tls=True, auth=True,
                                            containers={"nginx": f"{self.prefix}-tutorial",
                                                        "registry": self.tcp_registry})

    def _start_native(self) -> None:
        config = registry_config(http_secret=uuid.uuid4().hex, tcp_addr=f":{PORT}")
        config["http"].pop("debug")
        config["http"]["tls"] = {"certificate": "/certs/server.crt", "key": "/certs/server.key"}
        config["auth"] = {"htpasswd": {"realm": "Registry Realm", "path": "/auth/htpasswd"}}
        import yaml

        volume = f"{self.prefix}-native-data"
        self.client.volumes.create(volume, labels=LABEL)
        self.extra_volumes.append(volume)
        files = {
            CONFIG_PATH: (yaml.safe_dump(config, sort_keys=False), 0o644),
            "/certs/server.crt": (self.cert_pem, 0o644),
            "/certs/server.key": (self.key_pem, 0o600),
            "/auth/htpasswd": (self.htpasswd, 0o644),
        }
        self._run_container(f"{self.prefix}-native", self.registry_image, self.ports["native"], PORT, files,
                            volumes={volume: {"bind": DATA_DIR, "mode": "rw"}})
        self.variants["native"] = Variant("native", f"localhost:{self.ports['native']}", tls=True, auth=True,
                                          containers={"registry": f"{self.prefix}-native"})

    def _start_authoff(self) -> None:
        conf = render_nginx_conf(NginxOptions(auth=False, server_names=("localhost", "127.0.0.1"),
                                              public_port=self.ports["authoff"]))
        files = {
            CONF_PATH: (conf, 0o644),
            CERT_PATH: (self.cert_pem, 0o644),
            KEY_PATH: (self.key_pem, 0o600),
        }
        self._run_container(f"{self.prefix}-authoff", STANDIN_NGINX, self.ports["authoff"], CONTAINER_HTTPS_PORT,
                            files, stop_signal="SIGQUIT",
                            volumes={self.socket_volume: {"bind": SOCKET_DIR, "mode": "rw"}})
        self.variants["authoff"] = Variant("authoff", f"localhost:{self.ports['authoff']}", tls=True, auth=False,
                                           containers={"nginx": f"{self.prefix}-authoff",
                                                       "registry": self.registry_name})

    # ---- clients ----------------------------------------------------------------------------
    def _write_authfile(self) -> None:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        auths = {v.address: {"auth": token} for v in self.variants.values() if v.auth}
        self.authfile = self.workdir / "auth.json"
        fd = os.open(self.authfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"auths": auths}, out)

    def basic_auth_header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    def url(self, variant: Variant, path: str) -> str:
        return f"{'https' if variant.tls else 'http'}://{variant.address}{path}"

    def wait_ready(self, variant: Variant, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        auth = (self.user, self.password) if variant.auth else None
        while True:
            try:
                response = requests.get(self.url(variant, "/v2/"), auth=auth, verify=self.ca_file, timeout=5)
                if response.status_code == 200:
                    return
                problem = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                problem = exc.__class__.__name__
            if time.monotonic() > deadline:
                raise TimeoutError(f"{variant.name} ({variant.address}) not ready after {timeout}s: {problem}")
            time.sleep(0.3)

    def skopeo(self, source: str, destination: str, *, src: Optional[Variant] = None,
               dest: Optional[Variant] = None, timeout: float = 900) -> float:
        """``skopeo copy`` between transports; returns wall seconds. Raises with skopeo's stderr."""
        args = ["skopeo", "copy", "--quiet", "--authfile", str(self.authfile)]
        for flag, variant in (("src", src), ("dest", dest)):
            if variant is None:
                continue
            if variant.tls:
                args += [f"--{flag}-cert-dir", str(variant.cert_dir or self.cert_dir)]
            else:
                args += [f"--{flag}-tls-verify=false"]
        args += [source, destination]
        start = time.perf_counter()
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        elapsed = time.perf_counter() - start
        if out.returncode != 0:
            raise RuntimeError(f"skopeo copy {source} -> {destination} failed: {out.stderr.strip()[-2000:]}")
        return elapsed

    def push(self, layout: Path, tag: str, variant: Variant, repository: str) -> float:
        return self.skopeo(f"oci:{layout}:{tag}", f"docker://{variant.address}/{repository}:{tag}", dest=variant)

    def pull(self, variant: Variant, repository: str, tag: str) -> float:
        """Pull into a fresh ``dir:`` (nothing to reuse), then remove it; returns wall seconds."""
        target = Path(tempfile.mkdtemp(prefix="pull-", dir=self.workdir))
        try:
            return self.skopeo(f"docker://{variant.address}/{repository}:{tag}", f"dir:{target}", src=variant)
        finally:
            shutil.rmtree(target, ignore_errors=True)

    def cpu_meter(self, variant: Variant) -> CpuMeter:
        return CpuMeter(variant.containers, (variant.port,))

    def set_htpasswd(self, content: str) -> None:
        """Swap the proxy's htpasswd file; nginx reads it on every request, so no reload is needed."""
        put_files(self.proxy_name, {HTPASSWD_PATH: (content, 0o640)})

    def settings(self) -> dict:
        """The settings a result depends on, for the record."""
        return {
            "stack": "program defaults; httpsPort on 127.0.0.1; a TCP registry on the same volume for direct/ours-tcp",
            "bcrypt cost (program default)": DEFAULT_BCRYPT_ROUNDS,
            "nginx options (ours)": {k: v for k, v in NginxOptions().__dict__.items()
                                     if k not in ("upstreams", "backup_upstreams", "server_names", "public_port")},
            "certificate": "program's ECDSA P-256 server certificate for every TLS variant",
            "tutorial": "bench/tutorial/ (registry.conf from the tutorial, apr1 htpasswd, worker_processes 1)",
            "native": "registry serves TLS + htpasswd itself (program's cert and bcrypt htpasswd)",
        }

    # ---- teardown ---------------------------------------------------------------------------
    def down(self) -> None:
        for name in self.extra_containers:
            try:
                self.client.api.remove_container(name, force=True, v=True)
            except docker.errors.NotFound:
                pass
        self.extra_containers.clear()
        for name in self.extra_volumes:
            try:
                self.client.volumes.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass
        self.extra_volumes.clear()
        if self.deployment is not None:
            self.deployment.down(remove_volumes=True)
            self.deployment = None
        shutil.rmtree(self.workdir, ignore_errors=True)


def rotated(items: list, round_index: int) -> list:
    """The items in a different order every round, so no variant always runs first or last."""
    k = round_index % len(items)
    order = items[k:] + items[:k]
    return order if round_index % 2 == 0 else list(reversed(order))


def repeat_interleaved(names: list[str], rounds: int, measure: Callable[[str, int], float]) -> dict[str, list[float]]:
    """Run ``measure(name, round)`` for every name in every round, order rotated per round."""
    figures: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in rotated(names, r):
            figures[name].append(measure(name, r))
    return figures
