"""Operations on the running registry container through the Docker API (Docker SDK).

Works with any Docker host the SDK speaks to: ``unix:///var/run/docker.sock`` locally or
``ssh://user@host`` remotely. Nothing here reads or writes files on the Docker host itself:
files inside the container are read with ``exec cat`` and written with ``put_archive``.

The centrepiece is :func:`garbage_collect`, ``registry garbage-collect`` done safely:

* ``readonly`` (default): switch the registry to read-only maintenance mode
  (``storage.maintenance.readonly.enabled: true``) and restart it, collect while pulls keep
  being served and pushes are refused with ``405 UNSUPPORTED``, then restore the original
  configuration and restart again. The second restart is needed in any case: a registry
  with the ``inmemory`` blob descriptor cache that stayed up across a collection serves
  corrupt answers (a re-push "succeeds", then its manifest is 404) until it restarts.
* ``stop``: the tutorial's way. Stop the registry, collect from a one-off container of the
  same image with the same volumes, start it again. Nothing is served meanwhile.
* ``dry-run``: ``garbage-collect --dry-run`` in the live container; nothing changes.

Whatever fails, the original configuration is put back and the registry restarted.
"""

from __future__ import annotations

import io
import re
import shlex
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import docker
import docker.errors
import yaml

CONFIG_PATH = "/etc/docker/registry/config.yml"
REGISTRY_BIN = "/bin/registry"
DEFAULT_DATA_DIR = "/var/lib/registry"
GC_MODES = ("readonly", "stop", "dry-run")
_BACKUP_SUFFIX = ".pre-gc"
_ONE_OFF_CONFIG = "/tmp/gc-config.yml"


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
    """The outcome of :func:`garbage_collect`; times in seconds, sizes in bytes of the data directory."""

    mode: str
    bytes_before: int
    bytes_after: int
    blobs_removed: int
    blobs_eligible: int
    manifests_eligible: int
    duration_seconds: float
    writes_refused_seconds: float
    reads_unavailable_seconds: float
    # Wall-clock (epoch seconds) marks: writes_refused_from, collect_start, collect_end, served_again.
    timeline: dict[str, float] = field(default_factory=dict)
    output: str = field(default="", repr=False)


_SUMMARY = re.compile(r"(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion")
_ELIGIBLE_MANIFEST = re.compile(r"^manifest eligible for deletion: (sha256:[a-f0-9]{64})\s*$")
_REPOSITORY_LINE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*$")


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
    a tagged multi-architecture index.
    """
    found: dict[str, list[str]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        eligible = _ELIGIBLE_MANIFEST.match(line)
        if eligible:
            if current is None:
                raise ValueError("an eligible manifest came before any repository name in the garbage-collect output")
            found.setdefault(current, []).append(eligible.group(1))
        elif _REPOSITORY_LINE.match(line):
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


def storage_root(text: str) -> str:
    """Where the filesystem storage driver keeps data (the registry's default if unset)."""
    config = yaml.safe_load(text) or {}
    storage = config.get("storage") or {}
    filesystem = storage.get("filesystem")
    if filesystem is None:
        drivers = sorted(k for k in storage if k not in ("cache", "delete", "maintenance", "redirect", "tag"))
        raise ValueError(f"only the filesystem storage driver can be measured, not {', '.join(drivers) or 'none'}")
    return (filesystem or {}).get("rootdirectory") or DEFAULT_DATA_DIR


def gc_command(*, dry_run: bool = False, delete_untagged: bool = False, config_path: str = CONFIG_PATH) -> list[str]:
    """``registry garbage-collect [--dry-run] [--delete-untagged] CONFIG`` as argv."""
    argv = [REGISTRY_BIN, "garbage-collect"]
    if dry_run:
        argv.append("--dry-run")
    if delete_untagged:
        argv.append("--delete-untagged")
    return [*argv, config_path]


class RegistryContainer:
    """The registry container on one Docker host, by name."""

    # Long: one exec of `garbage-collect` on a big registry can take many minutes.
    def __init__(self, docker_host: str, container_name: str, *, timeout: int = 1800):
        self.host = docker_host
        self.name = container_name
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

    def write_file(self, path: str, text: str) -> None:
        """Replace a file in the container, keeping its permission bits."""
        mode_text = self.exec(["stat", "-c", "%a", path], check=False).stdout.strip()
        mode = int(mode_text, 8) if re.fullmatch(r"[0-7]{3,4}", mode_text) else 0o644
        target = PurePosixPath(path)
        data = text.encode()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            info = tarfile.TarInfo(target.name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            archive.addfile(info, io.BytesIO(data))
        try:
            ok = self.container.put_archive(str(target.parent), buffer.getvalue())
        except docker.errors.APIError as exc:
            raise self._fail(f"cannot write {path} (read-only mount?): {exc.explanation or exc}") from exc
        if not ok:
            raise self._fail(f"cannot write {path}")

    def volume_bytes(self, path: str = DEFAULT_DATA_DIR) -> int:
        """Apparent size in bytes of everything under ``path`` (``du -sb``)."""
        out = self.exec(["du", "-sb", path]).stdout.split()
        if not out or not out[0].isdigit():
            raise self._fail(f"du -sb {path} printed no size")
        return int(out[0])

    def status(self) -> tuple[str, str | None]:
        """(state, health) as Docker reports them; health is None without a healthcheck."""
        self.container.reload()
        state = self.container.attrs.get("State", {})
        return state.get("Status", "unknown"), (state.get("Health") or {}).get("Status")

    def restart(self, timeout: int = 10) -> None:
        try:
            self.container.restart(timeout=timeout)
        except docker.errors.APIError as exc:
            raise self._fail(f"restart failed: {exc.explanation or exc}") from exc

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

    def run_gc(self, *, dry_run: bool, delete_untagged: bool = False, config_path: str = CONFIG_PATH) -> str:
        """``registry garbage-collect`` inside the running container; returns stdout then stderr.

        Both: the summary is on stdout, but "Deleting blob" lines are log lines on stderr.
        """
        result = self.exec(gc_command(dry_run=dry_run, delete_untagged=delete_untagged, config_path=config_path))
        return result.stdout + result.stderr

    def run_gc_one_off(self, config_text: str) -> str:
        """``registry garbage-collect`` in a throwaway container sharing this one's volumes; its output.

        For ``stop`` mode: the registry container is stopped, so nothing can exec in it. The
        config goes to the one-off container's own ``/tmp`` so no mounted file is touched.
        """
        try:
            one_off = self.client.containers.create(
                image=self.container.image.id,
                entrypoint=[REGISTRY_BIN],
                command=["garbage-collect", _ONE_OFF_CONFIG],
                volumes_from=[self.container.id],
                network_mode="none",
                labels={"private-registry.role": "gc-one-off"},
            )
        except docker.errors.APIError as exc:
            raise self._fail(f"cannot create the garbage-collect container: {exc.explanation or exc}") from exc
        try:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as archive:
                data = config_text.encode()
                info = tarfile.TarInfo(PurePosixPath(_ONE_OFF_CONFIG).name)
                info.size, info.mode = len(data), 0o600
                archive.addfile(info, io.BytesIO(data))
            one_off.put_archive(str(PurePosixPath(_ONE_OFF_CONFIG).parent), buffer.getvalue())
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

    ``probe`` tells when the restarted registry serves again (see :meth:`RegistryContainer.wait_healthy`).
    ``check_readonly`` runs once the registry is read-only and before anything is deleted; it
    should raise if writes are still accepted, so a config that did not take effect (an
    environment variable overriding it, say) never lets a collection race a push.
    ``prepare`` runs after the "before" size is measured and while the registry still accepts
    writes (deleting untagged manifests through the API, for instance).
    """
    if mode not in GC_MODES:
        raise ValueError(f"garbage collection mode must be one of {', '.join(GC_MODES)}, not '{mode}'")
    started = time.monotonic()
    original = target.read_file(CONFIG_PATH)
    root = storage_root(original)
    bytes_before = target.volume_bytes(root)
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

    unavailable = 0.0

    def bounce(action: Callable[[], None]) -> None:
        nonlocal unavailable
        down = time.monotonic()
        action()
        target.wait_healthy(timeout, probe)
        unavailable += time.monotonic() - down

    refused_from = time.monotonic()
    output = ""
    failure: BaseException | None = None
    try:
        if mode == "readonly":
            # A copy beside the config, for a person to restore by hand if everything below fails.
            target.write_file(CONFIG_PATH + _BACKUP_SUFFIX, original)
            target.write_file(CONFIG_PATH, readonly_config(original))
            refused_from = time.monotonic()
            timeline["writes_refused_from"] = time.time()
            bounce(target.restart)
            if check_readonly is not None:
                check_readonly()
            timeline["collect_start"] = time.time()
            output = target.run_gc(dry_run=False)
            timeline["collect_end"] = time.time()
        else:
            refused_from = time.monotonic()
            timeline["writes_refused_from"] = time.time()
            target.stop()
            timeline["collect_start"] = time.time()
            output = target.run_gc_one_off(original)
            timeline["collect_end"] = time.time()
    except BaseException as exc:  # noqa: BLE001 - restored below, then re-raised
        failure = exc
    finally:
        try:
            if mode == "readonly":
                target.write_file(CONFIG_PATH, original)
                bounce(target.restart)
                target.exec(["rm", "-f", CONFIG_PATH + _BACKUP_SUFFIX], check=False)
            else:
                bounce(target.start)
        except Exception as restore_exc:
            hint = (
                f"its original config is saved in the container as {CONFIG_PATH}{_BACKUP_SUFFIX}"
                if mode == "readonly"
                else "start it by hand"
            )
            raise target._fail(
                f"could not restore the registry after garbage collection ({restore_exc}); {hint}"
            ) from (failure or restore_exc)
    writes_refused = time.monotonic() - refused_from
    timeline["served_again"] = time.time()
    if mode == "stop":
        unavailable = writes_refused
    if failure is not None:
        if not isinstance(failure, Exception):
            raise failure
        raise target._fail(f"garbage collection ({mode}) failed, registry restored: {failure}") from failure
    counts = parse_gc_output(output)
    return GcReport(
        mode=mode,
        bytes_before=bytes_before,
        bytes_after=target.volume_bytes(root),
        blobs_removed=counts.blobs_deleted,
        blobs_eligible=counts.blobs_eligible,
        manifests_eligible=counts.manifests_eligible,
        duration_seconds=time.monotonic() - started,
        writes_refused_seconds=writes_refused,
        reads_unavailable_seconds=unavailable,
        timeline=timeline,
        output=output,
    )
