"""Operations on the running registry container through the Docker API (Docker SDK).

Works with any Docker host the SDK speaks to: ``unix:///var/run/docker.sock`` locally or
``ssh://user@host`` remotely. Nothing here reads or writes files on the Docker host itself:
files inside a container are read with ``exec cat`` and written with ``put_archive``.

The centrepiece is :func:`garbage_collect`, ``registry garbage-collect`` done safely:

* ``readonly`` (default): pulls never stop. A :class:`StandbyRegistry` starts beside the
  registry: same image, volumes, environment, user and trusted files (token certificate, S3
  endpoint CA), no network (on S3: the registry's, to reach the store), and the registry's config
  with ``storage.maintenance.readonly.enabled: true``, listening on the stand-by socket that
  nginx's ``upstream`` lists as its ``backup`` (components/render/nginx.py). nginx tries the
  registry's socket first on every request and the stand-by's only when that refuses, so the
  stand-by serves nothing until the registry is stopped, at a moment it serves no request;
  from then on the stand-by serves every read and refuses every write with ``405
  UNSUPPORTED``. The collection runs in the stand-by. The registry starts again, a fresh
  process with its own unchanged config (one with the ``inmemory`` blob descriptor cache that
  stayed up across a collection serves corrupt answers until it restarts): nginx's next
  request goes to it, and the stand-by drains its requests and goes.
* ``stop``: the tutorial's way. Stop the registry, collect from a one-off container of the
  same image with the same volumes (and environment, networks and files as the stand-by), start
  it again. Nothing is served meanwhile.
* ``dry-run``: ``garbage-collect --dry-run`` in the live container; nothing changes.

Whatever fails, the registry is started again, on one restore path for both modes. In
``readonly`` mode the stand-by is removed once the registry serves; if the registry cannot come
back, the stand-by stays and keeps serving pulls, and the error says so. A stand-by left by a
crashed run is handed back and removed before anything else, in every mode.
"""

from __future__ import annotations

import io
import re
import shlex
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import docker
import docker.errors
import yaml

from components.grammar import is_repository
from components.render.registry_config import (
    CONFIG_PATH,
    HEALTH_URL,
    REGISTRY_BIN,
    REGISTRY_SOCKET,
    STANDBY_SOCKET,
    serve_command,
)
from components.render.storage import S3_CA_ENV, S3_CA_PATH

DEFAULT_DATA_DIR = "/var/lib/registry"
GC_MODES = ("readonly", "stop", "dry-run")
_ONE_OFF_CONFIG = "/tmp/gc-config.yml"

STANDBY_SUFFIX = "-gc-standby"
# Not under /etc/docker/registry: a config bind-mounted there from the host stays untouched.
STANDBY_CONFIG_PATH = "/etc/private-registry-gc/config.yml"
ROLE_LABEL = "private-registry.role"
STANDBY_ROLE = "gc-standby"
STANDBY_OF_LABEL = "private-registry.gc-standby-of"
# On SIGTERM the stand-by finishes what it is serving (up to this long) before it exits.
STANDBY_DRAIN_SECONDS = 30
# How long to look for a moment the registry serves nothing before stopping it anyway.
IDLE_WAIT_SECONDS = 30.0


class DockerExecError(Exception):
    """A Docker operation on the registry container failed; the message says where and why."""

    def __init__(self, host: str, container: str, reason: str):
        self.host = host
        self.container = container
        self.reason = reason
        super().__init__(f"docker host {host}, container '{container}': {reason}")


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class GcCounts:
    """What ``registry garbage-collect`` printed about its work."""

    blobs_marked: int = 0
    blobs_eligible: int = 0
    manifests_eligible: int = 0
    blobs_deleted: int = 0


@dataclass(frozen=True)
class GcReport:
    """The outcome of :func:`garbage_collect`; times in seconds, sizes in bytes of the data
    directory (None on object storage, which the Docker host cannot measure)."""

    mode: str
    bytes_before: Optional[int]
    bytes_after: Optional[int]
    blobs_removed: int
    blobs_eligible: int
    manifests_eligible: int
    duration_seconds: float
    writes_refused_seconds: float
    reads_unavailable_seconds: float
    # Wall-clock (epoch seconds) marks. All modes: collect_start, collect_end; readonly and stop:
    # writes_refused_from, served_again (writes accepted again); readonly also registry_stopped
    # and registry_serving (the registry's own container down and back).
    timeline: dict[str, float] = field(default_factory=dict)
    output: str = field(default="", repr=False)


_SUMMARY = re.compile(r"(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion")
# 2.8: "manifest eligible for deletion: DIGEST" after the repository's own line;
# 3: "manifest eligible for deletion: {REPOSITORY DIGEST [TAG ...]}".
_ELIGIBLE_MANIFEST = re.compile(r"^manifest eligible for deletion: (sha256:[a-f0-9]{64})\s*$")
_ELIGIBLE_MANIFEST_3 = re.compile(r"^manifest eligible for deletion: \{(\S+) (sha256:[a-f0-9]{64}) \[[^\]]*\]\}\s*$")


def parse_gc_output(text: str) -> GcCounts:
    """Counts from ``garbage-collect`` output (distribution 2.8: summary line, one line per deleted blob)."""
    summary = _SUMMARY.search(text)
    if summary is None:
        raise ValueError("no summary line ('N blobs marked, ...') in the garbage-collect output")
    marked, blobs, manifests = (int(group) for group in summary.groups())
    return GcCounts(
        blobs_marked=marked,
        blobs_eligible=blobs,
        manifests_eligible=manifests,
        blobs_deleted=sum(1 for line in text.splitlines() if "Deleting blob: " in line),
    )


def parse_untagged(text: str) -> dict[str, list[str]]:
    """``{repository: [digest]}`` of untagged manifests, from ``--dry-run --delete-untagged`` stdout.

    Distribution 2.8 prints each repository's name on a line of its own before that
    repository's lines, and ``manifest eligible for deletion: DIGEST`` for an untagged
    manifest, which (the bug this module works around) includes the platform manifests of
    a tagged multi-architecture index. Distribution 3 names the repository in the line
    itself, ``{REPOSITORY DIGEST [TAGS]}``, and spares a tagged index's platform manifests.
    """
    found: dict[str, list[str]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        eligible = _ELIGIBLE_MANIFEST.match(line)
        named = _ELIGIBLE_MANIFEST_3.match(line)
        if named:
            if not is_repository(named.group(1)):
                raise ValueError(f"not a repository name in the garbage-collect output: {named.group(1)[:80]!r}")
            found.setdefault(named.group(1), []).append(named.group(2))
        elif eligible:
            if current is None:
                raise ValueError("an eligible manifest came before any repository name in the garbage-collect output")
            found.setdefault(current, []).append(eligible.group(1))
        elif is_repository(line):
            current = line
    return found


def readonly_config(text: str) -> str:
    """The registry config with ``storage.maintenance.readonly.enabled: true``, all else kept."""
    config = yaml.safe_load(text)
    if not isinstance(config, dict) or not isinstance(config.get("storage"), dict):
        raise ValueError("the registry config has no 'storage' section")
    maintenance = config["storage"].setdefault("maintenance", {}) or {}
    config["storage"]["maintenance"] = maintenance
    readonly = maintenance.get("readonly") or {}
    readonly["enabled"] = True
    maintenance["readonly"] = readonly
    return yaml.safe_dump(config, sort_keys=False)


def storage_root(text: str) -> Optional[str]:
    """Where the filesystem storage driver keeps data (the registry's default if unset); None
    for object storage (``s3``: nothing on the Docker host to measure)."""
    config = yaml.safe_load(text) or {}
    storage = config.get("storage") or {}
    if "filesystem" in storage:
        return (storage.get("filesystem") or {}).get("rootdirectory") or DEFAULT_DATA_DIR
    drivers = sorted(k for k in storage if k not in ("cache", "delete", "maintenance", "redirect", "tag"))
    if drivers == ["s3"]:
        return None
    raise ValueError(f"the registry's storage driver must be filesystem or s3, not {', '.join(drivers) or 'none'}")


def gc_command(*, dry_run: bool = False, delete_untagged: bool = False, config_path: str = CONFIG_PATH) -> list[str]:
    """``registry garbage-collect [--dry-run] [--delete-untagged] CONFIG`` as argv."""
    argv = [REGISTRY_BIN, "garbage-collect"]
    if dry_run:
        argv.append("--dry-run")
    if delete_untagged:
        argv.append("--delete-untagged")
    return [*argv, config_path]


def standby_config(text: str) -> str:
    """The stand-by's config: the registry's, read-only, on the stand-by socket, and draining
    its requests on SIGTERM.

    Without ``http.draintimeout`` registry 2.8 dies at once on SIGTERM, cutting responses in
    flight; with it, it stops accepting (nginx then tries the registry's socket alone) and
    finishes them.
    """
    config = yaml.safe_load(readonly_config(text))
    http = config.get("http") or {}
    http["net"], http["addr"] = "unix", STANDBY_SOCKET
    http["draintimeout"] = f"{STANDBY_DRAIN_SECONDS}s"
    config["http"] = http
    return yaml.safe_dump(config, sort_keys=False)


def token_bundle_path(text: str) -> Optional[str]:
    """The file a registry config trusts the token signing key from (``auth.token.jwks`` on
    distribution 3, else ``rootcertbundle``), or None without token auth."""
    config = yaml.safe_load(text) or {}
    token = (config.get("auth") or {}).get("token") if isinstance(config, dict) else None
    bundle = (token.get("jwks") or token.get("rootcertbundle")) if isinstance(token, dict) else None
    return bundle if isinstance(bundle, str) and bundle.startswith("/") else None


def registry_socket(text: str) -> str:
    """The Unix socket the registry serves on (``http.net: unix``, ``http.addr``)."""
    http = (yaml.safe_load(text) or {}).get("http") or {}
    if http.get("net") != "unix" or not str(http.get("addr") or "").startswith("/"):
        raise ValueError(
            f"the registry's http.net must be 'unix' with an absolute socket path in http.addr (as "
            f"components/render/registry_config.py renders it: {REGISTRY_SOCKET}), not "
            f"net={http.get('net')!r} addr={http.get('addr')!r}"
        )
    return str(http["addr"])


# /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path". A listening socket has the
# __SO_ACCEPTCON flag; a connection the process accepted is SS_CONNECTED (03) with an inode;
# one still in the accept queue has no inode (it is reset, unanswered, if the process dies).
_ACCEPTCON = 0x10000
_CONNECTED = "03"


def _unix_sockets(proc_net_unix: str, path: str):
    for line in proc_net_unix.splitlines():
        fields = line.split()
        if len(fields) == 8 and fields[7] == path and re.fullmatch(r"[0-9A-Fa-f]+", fields[3]):
            yield int(fields[3], 16), fields[5], fields[6]


def busy_connections(proc_net_unix: str, path: str) -> int:
    """Connections on the socket at ``path`` that the process has accepted, from ``/proc/net/unix``."""
    return sum(
        1
        for flags, state, inode in _unix_sockets(proc_net_unix, path)
        if not flags & _ACCEPTCON and state == _CONNECTED and inode != "0"
    )


def listening(proc_net_unix: str, path: str) -> bool:
    """A process listens on the socket at ``path`` (a file left by a killed one does not count)."""
    return any(flags & _ACCEPTCON for flags, _state, _inode in _unix_sockets(proc_net_unix, path))


def _proc_net_unix(container: Any) -> str | None:
    """``/proc/net/unix`` as read in ``container``'s network namespace; None if it cannot be read."""
    try:
        code, (out, _err) = container.exec_run(["cat", "/proc/net/unix"], demux=True)
    except docker.errors.APIError:
        return None
    return (out or b"").decode(errors="replace") if code == 0 else None


def _tar_one(path: str, text: str, mode: int) -> bytes:
    """A tar archive holding one file at absolute ``path``, for ``put_archive("/", ...)``.

    Docker creates missing directories on the way, so the path need not exist in the image.
    """
    data = text.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size, info.mode, info.mtime = len(data), mode, int(time.time())
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class _Served:
    """A container running ``registry serve`` on a Unix socket, on one Docker host."""

    host: str
    name: str
    config_path: str
    socket: str
    client: Any
    container: Any

    def _fail(self, reason: str) -> DockerExecError:
        return DockerExecError(self.host, self.name, reason)

    def exec(self, argv: list[str], *, check: bool = True) -> ExecResult:
        """Run ``argv`` in the container; with ``check``, a non-zero exit raises."""
        try:
            code, (out, err) = self.container.exec_run(argv, demux=True)
        except docker.errors.APIError as exc:
            raise self._fail(f"exec {shlex.join(argv)} failed: {exc.explanation or exc}") from exc
        result = ExecResult(code, (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace"))
        if check and code != 0:
            tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise self._fail(f"{shlex.join(argv)} exited {code}: {tail}")
        return result

    def read_file(self, path: str) -> str:
        return self.exec(["cat", path]).stdout

    def status(self) -> tuple[str, str | None]:
        """(state, health) as Docker reports them; health is None without a healthcheck."""
        self.container.reload()
        state = self.container.attrs.get("State", {})
        return state.get("Status", "unknown"), (state.get("Health") or {}).get("Status")

    def wait_healthy(self, timeout: float = 60.0, probe: Callable[[], Any] | None = None) -> float:
        """Wait until the container runs and answers; returns the seconds waited.

        With ``probe`` (a callable that raises until the registry serves, e.g. a ``GET /v2/``
        through the proxy) that is the test; without, Docker's own view: running, and healthy
        if the container has a healthcheck.
        """
        start = time.monotonic()
        deadline = start + timeout
        last = "not checked"
        while time.monotonic() < deadline:
            state, health = self.status()
            if state == "running":
                if probe is not None:
                    try:
                        probe()
                        return time.monotonic() - start
                    except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                        last = f"probe: {type(exc).__name__}: {exc}"
                elif health in (None, "healthy"):
                    return time.monotonic() - start
                else:
                    last = f"health {health}"
            elif state in ("exited", "dead"):
                logs = self.container.logs(tail=5).decode(errors="replace").strip().replace("\n", " | ")
                raise self._fail(f"the container {state} instead of starting: {logs}")
            else:
                last = f"state {state}"
            time.sleep(0.05)
        raise self._fail(f"not healthy after {timeout:.0f}s ({last})")

    def answers(self) -> None:
        """Raises unless this container's registry listens on its socket and reports healthy.

        Asked from inside: ``/proc/net/unix`` of the container's own network namespace, and the
        registry's health on its loopback debug listener.
        """
        if not listening(self.exec(["cat", "/proc/net/unix"]).stdout, self.socket):
            raise self._fail(f"nothing listens on {self.socket} yet")
        self.exec(["wget", "-q", "-O", "/dev/null", HEALTH_URL])

    def wait_answering(self, timeout: float = 60.0) -> float:
        return self.wait_healthy(timeout, probe=self.answers)

    def run_gc(self, *, dry_run: bool, delete_untagged: bool = False, config_path: str | None = None) -> str:
        """``registry garbage-collect`` inside the running container; returns stdout then stderr.

        Both: the summary is on stdout, but "Deleting blob" lines are log lines on stderr.
        """
        argv = gc_command(dry_run=dry_run, delete_untagged=delete_untagged, config_path=config_path or self.config_path)
        result = self.exec(argv)
        return result.stdout + result.stderr


class StandbyRegistry(_Served):
    """The read-only stand-by of one registry container, serving on the stand-by socket."""

    def __init__(self, registry: "RegistryContainer", container: Any):
        self.host, self.name, self.client, self.container = registry.host, container.name, registry.client, container
        self.config_path, self.socket = STANDBY_CONFIG_PATH, STANDBY_SOCKET

    @staticmethod
    def name_for(registry_name: str) -> str:
        return f"{registry_name}{STANDBY_SUFFIX}"

    @classmethod
    def find(cls, registry: "RegistryContainer") -> "StandbyRegistry | None":
        """The registry's stand-by if one exists (left by a crashed run), else None."""
        name = cls.name_for(registry.name)
        try:
            found = registry.client.containers.get(name)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            raise registry._fail(f"cannot look for a stand-by: {exc.explanation or exc}") from exc
        if found.labels.get(ROLE_LABEL) != STANDBY_ROLE or found.labels.get(STANDBY_OF_LABEL) != registry.name:
            raise registry._fail(
                f"a container named '{name}' exists but is not this registry's garbage-collection stand-by; "
                "rename or remove it"
            )
        return cls(registry, found)

    @classmethod
    def start(cls, registry: "RegistryContainer", config_text: str,
              files: Optional[dict[str, str]] = None) -> "StandbyRegistry":
        """Create and start the stand-by: the registry's image, volumes (its socket volume
        included), environment, user and networks (none on the filesystem driver, see
        :meth:`RegistryContainer.twin_settings`), with ``config_text`` as its config and
        ``files`` (default: :meth:`RegistryContainer.carried_files`); it is not waited for."""
        registry.container.reload()
        attrs = registry.container.attrs
        for mount in attrs.get("Mounts") or []:
            if STANDBY_CONFIG_PATH.startswith(mount.get("Destination", "").rstrip("/") + "/"):
                raise registry._fail(f"{mount['Destination']} is a mount; the stand-by's config cannot go there")
        if files is None:
            files = registry.carried_files(config_text)
        name = cls.name_for(registry.name)
        settings, networks = registry.twin_settings(config_text)
        try:
            created = registry.client.containers.create(
                image=attrs["Image"],
                name=name,
                entrypoint=serve_command(STANDBY_CONFIG_PATH),
                volumes_from=[registry.container.id],
                labels={ROLE_LABEL: STANDBY_ROLE, STANDBY_OF_LABEL: registry.name},
                **settings,
            )
        except docker.errors.APIError as exc:
            raise registry._fail(f"cannot create the stand-by '{name}': {exc.explanation or exc}") from exc
        standby = cls(registry, created)
        try:
            registry.connect(created, networks)
            # It holds the registry's HTTP secret: readable by the registry process (root) only.
            created.put_archive("/", _tar_one(STANDBY_CONFIG_PATH, config_text, 0o600))
            for path, text in files.items():
                created.put_archive("/", _tar_one(path, text, 0o644))
            created.start()
        except BaseException as exc:
            standby.discard(timeout=0)
            if isinstance(exc, docker.errors.APIError):
                raise registry._fail(f"cannot start the stand-by: {exc.explanation or exc}") from exc
            raise
        return standby

    def discard(self, timeout: int = STANDBY_DRAIN_SECONDS + 5) -> None:
        """Stop (SIGTERM: it drains its requests) and remove the stand-by; gone already is fine."""
        try:
            self.container.stop(timeout=timeout)
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise self._fail(f"cannot remove: {exc.explanation or exc}") from exc


class RegistryContainer(_Served):
    """The registry container on one Docker host, by name."""

    # Long: one exec of `garbage-collect` on a big registry can take many minutes.
    def __init__(self, docker_host: str, container_name: str, *, timeout: int = 1800):
        self.host = docker_host
        self.name = container_name
        self.config_path = CONFIG_PATH
        self.socket = REGISTRY_SOCKET
        try:
            self.client = docker.DockerClient(base_url=docker_host, timeout=timeout)
            self.container = self.client.containers.get(container_name)
        except docker.errors.NotFound as exc:
            raise DockerExecError(docker_host, container_name, "no such container on this Docker host") from exc
        except docker.errors.DockerException as exc:
            raise DockerExecError(docker_host, container_name, f"cannot reach the Docker engine: {exc}") from exc

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "RegistryContainer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def volume_bytes(self, path: str = DEFAULT_DATA_DIR) -> int:
        """Apparent size in bytes of everything under ``path`` (``du -sb``)."""
        out = self.exec(["du", "-sb", path]).stdout.split()
        if not out or not out[0].isdigit():
            raise self._fail(f"du -sb {path} printed no size")
        return int(out[0])

    def stop(self, timeout: int = 10) -> None:
        try:
            self.container.stop(timeout=timeout)
        except docker.errors.APIError as exc:
            raise self._fail(f"stop failed: {exc.explanation or exc}") from exc

    def start(self) -> None:
        try:
            self.container.start()
        except docker.errors.APIError as exc:
            raise self._fail(f"start failed: {exc.explanation or exc}") from exc

    def carried_files(self, config_text: str) -> dict[str, str]:
        """Files besides its config that a twin of the registry (stand-by, one-off) must trust
        as the registry does, read from the registry while it runs: the token signing
        certificate (token auth) and the S3 endpoint's CA (when the registry's environment
        points ``SSL_CERT_DIR`` at it, as :func:`components.cache.storage_wiring` declares)."""
        files: dict[str, str] = {}
        bundle = token_bundle_path(config_text)
        if bundle:
            files[bundle] = self.read_file(bundle)
        self.container.reload()
        if S3_CA_ENV in (self.container.attrs.get("Config", {}).get("Env") or []):
            files[S3_CA_PATH] = self.read_file(S3_CA_PATH)
        return files

    def twin_settings(self, config_text: str) -> tuple[dict, list[str]]:
        """``containers.create`` settings a twin of the registry shares with it (environment,
        user, network) and the further networks to connect it to.

        On the filesystem driver a twin has no network at all (nginx reaches the stand-by
        through its socket). On object storage it needs the registry's networks: the store is
        reached over them.
        """
        attrs = self.container.attrs
        settings: dict = {"environment": attrs.get("Config", {}).get("Env") or [],
                          "user": attrs.get("Config", {}).get("User") or ""}
        networks = sorted((attrs.get("NetworkSettings") or {}).get("Networks") or {})
        storage = (yaml.safe_load(config_text) or {}).get("storage") or {}
        if "s3" not in storage or not networks:
            return {**settings, "network_mode": "none"}, []
        return {**settings, "network": networks[0]}, networks[1:]

    def connect(self, container: Any, networks: list[str]) -> None:
        for network in networks:
            try:
                self.client.networks.get(network).connect(container)
            except docker.errors.APIError as exc:
                raise self._fail(f"cannot connect '{container.name}' to network '{network}': "
                                 f"{exc.explanation or exc}") from exc

    def run_gc_one_off(self, config_text: str, files: Optional[dict[str, str]] = None) -> str:
        """``registry garbage-collect`` in a throwaway container sharing this one's volumes,
        environment, user and (on object storage) networks, with ``files`` (see
        :meth:`carried_files`, read before the registry stopped); its output.

        For ``stop`` mode: the registry container is stopped, so nothing can exec in it. The
        config goes to the one-off container's own ``/tmp`` so no mounted file is touched.
        """
        self.container.reload()
        settings, networks = self.twin_settings(config_text)
        try:
            one_off = self.client.containers.create(
                image=self.container.image.id,
                entrypoint=[REGISTRY_BIN],
                command=["garbage-collect", _ONE_OFF_CONFIG],
                volumes_from=[self.container.id],
                labels={ROLE_LABEL: "gc-one-off"},
                **settings,
            )
        except docker.errors.APIError as exc:
            raise self._fail(f"cannot create the garbage-collect container: {exc.explanation or exc}") from exc
        try:
            self.connect(one_off, networks)
            one_off.put_archive("/", _tar_one(_ONE_OFF_CONFIG, config_text, 0o600))
            for path, text in (files or {}).items():
                one_off.put_archive("/", _tar_one(path, text, 0o644))
            one_off.start()
            code = one_off.wait(timeout=3600).get("StatusCode", -1)
            out = one_off.logs(stdout=True, stderr=True).decode(errors="replace")
            if code != 0:
                err = one_off.logs(stdout=False, stderr=True).decode(errors="replace").strip().splitlines()[-3:]
                raise self._fail(f"garbage-collect exited {code}: {' | '.join(err)}")
            return out
        except docker.errors.APIError as exc:
            raise self._fail(f"garbage-collect container failed: {exc.explanation or exc}") from exc
        finally:
            try:
                one_off.remove(force=True)
            except docker.errors.APIError:
                pass

    @property
    def standby_name(self) -> str:
        return StandbyRegistry.name_for(self.name)

    def find_standby(self) -> StandbyRegistry | None:
        return StandbyRegistry.find(self)

    def start_standby(self, config_text: str, files: Optional[dict[str, str]] = None) -> StandbyRegistry:
        return StandbyRegistry.start(self, config_text, files)

    def _signal(self, signal: str) -> None:
        try:
            self.container.kill(signal=signal)
        except docker.errors.APIError as exc:
            raise self._fail(f"cannot send {signal}: {exc.explanation or exc}") from exc

    def stop_when_idle(self, max_wait: float = IDLE_WAIT_SECONDS, timeout: float = 60.0) -> int:
        """Stop the registry at a moment it serves no request; returns how many looks it took.

        ``docker stop`` lets registry 2.8 drain, but nginx sends it new requests until it has
        stopped listening, and cutting a response already begun fails that pull (nginx cannot
        retry a response it has begun to pass on). Instead the registry is frozen (SIGSTOP: it
        accepts and answers nothing more, while the kernel still queues new connections), its
        accepted connections are read from ``/proc/net/unix`` (:func:`busy_connections`), and
        if none is being served it is killed; the queued ones are reset unanswered, which nginx
        retries on the stand-by. Otherwise it thaws (SIGCONT) and is looked at again shortly.
        The kernel lists an accepted Unix connection in the network namespace of the process
        that connected, so the table is read in the registry's own namespace and in that of
        every running container sharing the socket's mount (the proxy: :meth:`socket_peers`);
        a table that cannot be read counts as busy.
        A kill through the Docker API counts as a manual stop, so the restart policy does not
        bring it back.

        Docker counts any container it has signalled as manually stopped until its next start
        (a crash would then not restart it), so once frozen the registry is always stopped, to
        be started by the caller, even when a step here fails.
        """
        socket = registry_socket(self.read_file(self.config_path))
        peers = self.socket_peers(socket)
        deadline = time.monotonic() + max_wait
        looks = 0
        while True:
            looks += 1
            self._signal("SIGSTOP")
            try:
                own = self.exec(["cat", "/proc/net/unix"], check=False).stdout
                tables = [own, *(_proc_net_unix(peer) for peer in peers)]
                idle = all(text is not None and not busy_connections(text, socket) for text in tables)
                self._signal("SIGKILL" if idle else "SIGCONT")
            except BaseException:
                self._thaw_and_stop()
                raise
            if idle:
                break
            if time.monotonic() >= deadline:
                self.stop()  # never idle: stop it anyway
                break
            time.sleep(0.01)
        if not self.wait_stopped(timeout):
            raise self._fail(f"still running {timeout:.0f}s after being stopped")
        return looks

    def socket_peers(self, socket: str) -> list[Any]:
        """Running containers other than this one that share the mount holding ``socket``
        (the same volume, or the same host directory): those that can connect to it."""
        def key(mount: dict) -> tuple[str, str]:
            return (mount.get("Type", ""), mount.get("Name") or mount.get("Source") or "")

        self.container.reload()
        holding = [m for m in self.container.attrs.get("Mounts") or []
                   if socket.startswith(str(m.get("Destination", "")).rstrip("/") + "/")]
        if not holding:
            return []
        mount = key(max(holding, key=lambda m: len(str(m.get("Destination", "")))))
        try:
            running = self.client.containers.list(filters={"status": "running"})
        except docker.errors.APIError as exc:
            raise self._fail(f"cannot list the containers sharing its socket: {exc.explanation or exc}") from exc
        return [c for c in running if c.id != self.container.id
                and any(key(m) == mount for m in c.attrs.get("Mounts") or [])]

    def _thaw_and_stop(self) -> None:
        try:
            self._signal("SIGCONT")
        finally:
            self.stop()

    def wait_stopped(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.status()[0] in ("running", "paused", "restarting", "removing"):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True


def _restore(
    target: RegistryContainer,
    standby: StandbyRegistry | None,
    *,
    mode: str,
    failure: BaseException | None,
    probe: Callable[[], Any] | None,
    timeout: float,
    timeline: dict[str, float],
) -> None:
    """The one way back, for every mode and outcome: the registry started and answering, the
    stand-by (if any) gone after it, then ``failure`` (if any) raised, naming the mode.

    If the registry does not come back, a stand-by stays to serve pulls and the error says so.
    """
    try:
        if target.status()[0] != "running":
            target.start()
        target.wait_answering(timeout)
        timeline["registry_serving"] = time.time()
        if standby is not None:
            standby.discard()
        if probe is not None:
            target.wait_healthy(timeout, probe)
    except Exception as restore_exc:
        reason = getattr(restore_exc, "reason", restore_exc)
        kept = (
            f"; the read-only stand-by '{standby.name}' keeps serving pulls until it does; start the registry, "
            "and the next collection removes the stand-by"
            if standby is not None and "registry_serving" not in timeline
            else "; start it by hand"
        )
        raise target._fail(f"could not restore the registry after garbage collection, it did not come back "
                           f"({reason}){kept}") from (failure or restore_exc)
    timeline["served_again"] = time.time()
    if failure is not None:
        if not isinstance(failure, Exception):
            raise failure
        raise target._fail(f"garbage collection ({mode}) failed, registry restored: {failure}") from failure


def garbage_collect(
    target: RegistryContainer,
    *,
    mode: str = "readonly",
    probe: Callable[[], Any] | None = None,
    check_readonly: Callable[[], Any] | None = None,
    prepare: Callable[[], Any] | None = None,
    timeout: float = 120.0,
) -> GcReport:
    """Collect garbage in the registry, keeping it consistent; see the module docstring.

    ``probe`` tells when the registry serves through the proxy (see
    :meth:`RegistryContainer.wait_healthy`), checked last, once the registry is back.
    ``check_readonly`` runs once only the read-only stand-by serves and before anything is
    deleted; it should raise if writes are still accepted, so a config that did not take
    effect (an environment variable overriding it, say) never lets a collection race a push.
    ``prepare`` runs after the "before" size is measured and while the registry still accepts
    writes (deleting untagged manifests through the API, for instance).
    """
    if mode not in GC_MODES:
        raise ValueError(f"garbage collection mode must be one of {', '.join(GC_MODES)}, not '{mode}'")
    started = time.monotonic()
    leftover = target.find_standby()
    if leftover is not None:
        _restore(target, leftover, mode=mode, failure=None, probe=None, timeout=timeout, timeline={})
    original = target.read_file(CONFIG_PATH)
    root = storage_root(original)
    bytes_before = target.volume_bytes(root) if root is not None else None
    if prepare is not None:
        prepare()

    timeline: dict[str, float] = {}
    if mode == "dry-run":
        timeline["collect_start"] = time.time()
        output = target.run_gc(dry_run=True)
        timeline["collect_end"] = time.time()
        counts = parse_gc_output(output)
        return GcReport(
            mode=mode, bytes_before=bytes_before, bytes_after=bytes_before, blobs_removed=0,
            blobs_eligible=counts.blobs_eligible, manifests_eligible=counts.manifests_eligible,
            duration_seconds=time.monotonic() - started, writes_refused_seconds=0.0,
            reads_unavailable_seconds=0.0, timeline=timeline, output=output,
        )

    # Read while the registry runs: the one-off of ``stop`` mode starts once it has stopped.
    files = target.carried_files(original)
    standby = target.start_standby(standby_config(original), files) if mode == "readonly" else None
    output = ""
    failure: BaseException | None = None
    refused_from = time.monotonic()
    try:
        if standby is not None:
            standby.wait_answering(timeout)
            refused_from = time.monotonic()
            timeline["writes_refused_from"] = time.time()
            # From here on nginx sends every request to the stand-by: a write there is refused.
            target.stop_when_idle()
            timeline["registry_stopped"] = time.time()
            if check_readonly is not None:
                check_readonly()
            timeline["collect_start"] = time.time()
            output = standby.run_gc(dry_run=False)
        else:
            timeline["writes_refused_from"] = time.time()
            target.stop()
            timeline["collect_start"] = time.time()
            output = target.run_gc_one_off(original, files)
        timeline["collect_end"] = time.time()
    except BaseException as exc:  # noqa: BLE001 - restored below, then re-raised
        failure = exc
    _restore(target, standby, mode=mode, failure=failure, probe=probe, timeout=timeout, timeline=timeline)
    writes_refused = time.monotonic() - refused_from if "writes_refused_from" in timeline else 0.0
    counts = parse_gc_output(output)
    return GcReport(
        mode=mode,
        bytes_before=bytes_before,
        bytes_after=target.volume_bytes(root) if root is not None else None,
        blobs_removed=counts.blobs_deleted,
        blobs_eligible=counts.blobs_eligible,
        manifests_eligible=counts.manifests_eligible,
        duration_seconds=time.monotonic() - started,
        writes_refused_seconds=writes_refused,
        # readonly: some registry answered throughout (the stand-by before the registry
        # stopped, the registry again before the stand-by went); stop: nothing was served.
        reads_unavailable_seconds=0.0 if standby is not None else writes_refused,
        timeline=timeline,
        output=output,
    )
