"""Garbage collection across the registry's replicas in Swarm mode (a dynamic provider).

Distribution collects garbage only while nothing writes. With replicas on shared storage:

* ``readonly`` (default): the registry service is switched to its read-only config (a Swarm
  secret the program declares next to the writable one) by a rolling update that starts each
  new task before stopping the old one, so pulls never stop. Once every running task has the
  read-only spec and pushes are refused, ``registry garbage-collect`` runs as a one-off Swarm
  job on the same storage, the shared Redis cache is flushed (it would otherwise describe
  deleted blobs), and the service is rolled back to the writable config.
* ``stop``: the service is scaled to 0, collected, flushed, scaled back.
* ``dry-run``: only the job with ``--dry-run``; replicas untouched, nothing deleted.

The job runs the registry's image with the replicas' environment and Swarm configs (the S3
endpoint's CA and the ``SSL_CERT_DIR`` naming it) on the stack's network. In ``readonly`` mode
nothing is collected unless, after the switch, every running task has the read-only config and
``2 * replicas + 2`` pushes through the load-balanced address are all refused.

Whatever fails after the switch, the service is put back (writable config, replica count); an
update Swarm rolls back while putting it back is tried again (``RESTORE_ATTEMPTS`` in all).
The provider talks to a swarm manager (``dockerHost``) with the Docker SDK, and to the registry
through the load-balanced address with :class:`components.registry_api.RegistryClient`.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from typing import Any, Optional

import docker
import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from components.registry_api import RegistryClient, RegistryError, parse_created

GC_MODES = ("readonly", "stop", "dry-run")
CONFIG_PATH = "/etc/docker/registry/config.yml"
REDIS_AUTH_PATH = "/run/secrets/redis-auth"
PROBE_REPOSITORY = "private-registry-maintenance/readonly-probe"
JOB_LABEL = "org.private-registry.gc-job"
RESTORE_ATTEMPTS = 3  # updates tried when putting the service back


class SwarmGcError(RuntimeError):
    """A step of the collection failed; the message says which and what was restored."""


class UpdateRolledBack(SwarmGcError):
    """Swarm paused or rolled back an update of the registry service."""


def _wait(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SwarmGcError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def docker_timestamp(text: Optional[str]) -> float:
    """Seconds since the epoch of a Docker API time (RFC 3339, up to nanoseconds, read to the
    microsecond by :func:`components.registry_api.parse_created`); 0 for none."""
    moment = parse_created(text)
    return moment.timestamp() if moment else 0.0


class SwarmCollector:
    """The steps of one collection against a swarm manager."""

    def __init__(self, docker_host: str, service: str, timeout: float = 300):
        self.client = docker.DockerClient(base_url=docker_host, timeout=120)
        self.service = service
        self.timeout = timeout

    def close(self) -> None:
        self.client.close()

    # --- the registry service ----------------------------------------------------------------
    def inspect(self) -> dict:
        try:
            return self.client.api.inspect_service(self.service)
        except docker.errors.NotFound:
            raise SwarmGcError(f"service '{self.service}' does not exist on the swarm") from None

    def _update(self, spec_change) -> None:
        current = self.inspect()
        spec = current["Spec"]
        template = spec["TaskTemplate"]
        mode = spec.get("Mode")
        spec_change(template, spec)
        self.client.api.update_service(
            current["ID"], current["Version"]["Index"], task_template=template, name=spec["Name"],
            labels=spec.get("Labels"), mode=spec.get("Mode", mode), update_config=spec.get("UpdateConfig"),
            rollback_config=spec.get("RollbackConfig"), endpoint_spec=spec.get("EndpointSpec"),
            fetch_current_spec=False,
        )

    def config_secret(self) -> str:
        """Name of the Swarm secret mounted as the registry's config."""
        for secret in self.inspect()["Spec"]["TaskTemplate"]["ContainerSpec"].get("Secrets") or []:
            if secret["File"]["Name"] == CONFIG_PATH:
                return secret["SecretName"]
        raise SwarmGcError(f"service '{self.service}' mounts no secret at {CONFIG_PATH}")

    def switch_config(self, secret_name: str, attempts: int = 1) -> None:
        """Roll the service onto the config in ``secret_name`` and wait until every task runs it.

        An update Swarm rolls back (a new task failed or stopped within the monitor period) is
        tried again, up to ``attempts`` updates in all, each once the rollback has finished."""
        try:
            secret_id = self.client.secrets.get(secret_name).id
        except docker.errors.NotFound:
            raise SwarmGcError(f"Swarm secret '{secret_name}' does not exist") from None

        def change(template: dict, _spec: dict) -> None:
            for secret in template["ContainerSpec"]["Secrets"]:
                if secret["File"]["Name"] == CONFIG_PATH:
                    secret["SecretID"], secret["SecretName"] = secret_id, secret_name

        def runs_it(task: dict) -> bool:
            return any(s["SecretName"] == secret_name for s in task["Spec"]["ContainerSpec"].get("Secrets") or [])

        self._retried(change, runs_it, None, attempts)

    def scale(self, replicas: int, attempts: int = 1) -> None:
        """Set the replica count and wait until exactly that many tasks run; retried as
        :meth:`switch_config` is."""
        def change(_template: dict, spec: dict) -> None:
            spec["Mode"] = {"Replicated": {"Replicas": replicas}}

        self._retried(change, lambda task: True, replicas, attempts)

    def _retried(self, change, matches, replicas: Optional[int], attempts: int) -> None:
        failures = []
        for _ in range(max(1, attempts)):
            before = self.update_status().get("StartedAt")
            self._update(change)
            try:
                self.wait_converged(matches, replicas=replicas, since=before)
                return
            except UpdateRolledBack as exc:
                failures.append(str(exc))
                _wait(lambda: self.update_status().get("State") not in ("updating", "rollback_started"),
                      self.timeout, f"the rollback of '{self.service}' to finish")
        raise SwarmGcError(f"{len(failures)} updates of '{self.service}' failed: " + "; ".join(failures))

    def update_status(self) -> dict:
        """The service's ``UpdateStatus`` (State, StartedAt, Message); empty before any update."""
        return self.inspect().get("UpdateStatus") or {}

    def replicas(self) -> int:
        return int(self.inspect()["Spec"]["Mode"]["Replicated"]["Replicas"])

    def running_tasks(self) -> list[dict]:
        service_id = self.inspect()["ID"]
        return [t for t in self.client.api.tasks(filters={"service": service_id})
                if t["DesiredState"] == "running" and t["Status"]["State"] == "running"]

    def wait_converged(self, matches, replicas: Optional[int] = None, since: Optional[str] = None) -> None:
        """Until the update is done and exactly ``replicas`` tasks run, all matching; none other.

        ``since``: the ``StartedAt`` of the update status before this update; a status that old
        belongs to an earlier update and is not this one's outcome. Raises
        :class:`UpdateRolledBack` if this update is paused or rolled back."""
        want = self.replicas() if replicas is None else replicas

        def converged() -> bool:
            update = self.update_status()
            status = update.get("State") if update.get("StartedAt") != since else None
            if status in ("paused", "rollback_started", "rollback_completed", "rollback_paused"):
                raise UpdateRolledBack(f"the service update of '{self.service}' ended {status} "
                                       f"({update.get('Message', '')}); {self._failed_tasks(update.get('StartedAt'))}")
            service_id = self.inspect()["ID"]
            live = [t for t in self.client.api.tasks(filters={"service": service_id})
                    if t["Status"]["State"] in ("new", "pending", "assigned", "accepted", "preparing", "starting",
                                                "running")]
            return status in (None, "completed") and len(live) == want and all(
                t["Status"]["State"] == "running" and matches(t) for t in live
            )

        _wait(converged, self.timeout, f"service '{self.service}' to converge")

    def _failed_tasks(self, since: Optional[str]) -> str:
        """The errors of the service's tasks that failed, were rejected or stopped since ``since``."""
        service_id = self.inspect()["ID"]
        errors = sorted({
            f"{t['Status']['State']}: {t['Status'].get('Err') or t['Status'].get('Message')}"
            for t in self.client.api.tasks(filters={"service": service_id})
            if t["Status"]["State"] in ("failed", "rejected", "shutdown", "complete")
            and docker_timestamp(t["Status"].get("Timestamp")) >= docker_timestamp(since)
        })
        return f"tasks ended since: {errors[:3]}" if errors else "no task failed"

    # --- one-off jobs ------------------------------------------------------------------------
    def run_job(self, role: str, image: str, args: list[str], secrets: list[dict], *, command=None,
                env: Optional[list[str]] = None, configs: Optional[list[dict]] = None,
                network: Optional[str] = None) -> str:
        """Run a one-off task to completion; return its output. Removed afterwards."""
        name = f"{self.service}-{role}-{uuid.uuid4().hex[:6]}"
        container = {"Image": image, "Args": args, "Secrets": secrets}
        if command:
            container["Command"] = command
        if env:
            container["Env"] = env
        if configs:
            container["Configs"] = configs
        template: dict = {"ContainerSpec": container, "RestartPolicy": {"Condition": "none"}}
        if network:
            template["Networks"] = [{"Target": network}]
        created = self.client.api.create_service(
            template, name=name, mode={"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}},
            labels={JOB_LABEL: role},
        )
        try:
            def finished():
                tasks = self.client.api.tasks(filters={"service": created["ID"]})
                states = [t["Status"]["State"] for t in tasks]
                return tasks if any(s in ("complete", "failed", "rejected", "shutdown") for s in states) else None

            tasks = _wait(finished, self.timeout, f"the {role} job")
            output = b"".join(self.client.api.service_logs(created["ID"], stdout=True, stderr=True, follow=False))
            text = output.decode(errors="replace")
            if not any(t["Status"]["State"] == "complete" for t in tasks):
                errors = [t["Status"].get("Err") or t["Status"]["State"] for t in tasks]
                raise SwarmGcError(f"the {role} job failed ({'; '.join(errors)}): {text[-500:]}")
            return text
        finally:
            try:
                self.client.api.remove_service(created["ID"])
            except docker.errors.APIError:
                pass

    def secret_ref(self, name: str, path: str) -> dict:
        try:
            secret = self.client.secrets.get(name)
        except docker.errors.NotFound:
            raise SwarmGcError(f"Swarm secret '{name}' does not exist") from None
        return {"File": {"Name": path, "UID": "0", "GID": "0", "Mode": 0o444}, "SecretID": secret.id,
                "SecretName": name}


def _summary(text: str) -> dict[str, Optional[int]]:
    match = re.search(r"(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion", text)
    if not match:
        return {"blobsMarked": None, "blobsEligible": None, "manifestsEligible": None}
    return {"blobsMarked": int(match.group(1)), "blobsEligible": int(match.group(2)),
            "manifestsEligible": int(match.group(3))}


def collect(props: dict[str, Any]) -> dict[str, Any]:
    """One collection as ``props`` say (see :class:`SwarmGarbageCollection`); returns its figures."""
    mode = props["mode"]
    if mode not in GC_MODES:
        raise SwarmGcError(f"mode must be one of {', '.join(GC_MODES)}, not '{mode}'")
    started = time.monotonic()
    collector = SwarmCollector(props["dockerHost"], props["serviceName"])
    client = RegistryClient(props["registryUrl"], username=props["username"], password=props["password"],
                            ca_pem=props["caPem"])
    writable, readonly = props["writableConfigSecret"], props["readonlyConfigSecret"]
    refused_from = refused_to = None
    try:
        registry_spec = collector.inspect()["Spec"]["TaskTemplate"]["ContainerSpec"]
        image = registry_spec["Image"]
        replicas = collector.replicas()
        if collector.config_secret() != writable:
            # A run that died midway left the read-only config in place: start from the writable one.
            collector.switch_config(writable, attempts=RESTORE_ATTEMPTS)
        try:
            if mode == "readonly":
                collector.switch_config(readonly)
                refused_from = time.monotonic()
                # Every replica answers through the load-balanced address; each probe must be refused.
                for _ in range(2 * replicas + 2):
                    if not client.writes_refused(PROBE_REPOSITORY):
                        raise SwarmGcError("a replica still accepts pushes after the switch to read-only; not collecting")
            elif mode == "stop":
                collector.scale(0)
                refused_from = time.monotonic()
            args = ["garbage-collect", CONFIG_PATH] + (["--dry-run"] if mode == "dry-run" else [])
            # On the stack's network: a task with none has no way out of its node to the object store.
            # With the replicas' environment and configs: the S3 endpoint's CA and SSL_CERT_DIR naming it.
            output = collector.run_job("gc", image, args, [collector.secret_ref(readonly, CONFIG_PATH)],
                                       env=registry_spec.get("Env"), configs=registry_spec.get("Configs"),
                                       network=props.get("networkName"))
            if mode != "dry-run" and props.get("redisHost"):
                # The cache describes blobs that are gone now: empty it before writes resume.
                auth = props.get("redisAuthSecret")
                flushed = collector.run_job(
                    "cache-flush", props["redisImage"], [],
                    [collector.secret_ref(auth, REDIS_AUTH_PATH)] if auth else [],
                    command=["sh", "-c", '[ ! -f "$AUTH_FILE" ] || export REDISCLI_AUTH="$(cat "$AUTH_FILE")"; '
                                         'exec redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" -n "$REDIS_DB" flushdb'],
                    env=[f"AUTH_FILE={REDIS_AUTH_PATH}", f"REDIS_HOST={props['redisHost']}",
                         f"REDIS_PORT={int(props['redisPort'])}", f"REDIS_DB={int(props['redisDb'])}"],
                    network=props.get("networkName"),
                )
                if "OK" not in flushed:
                    raise SwarmGcError(f"the Redis cache was not flushed: {flushed.strip()[-200:]}")
        finally:
            # Put back, retried: a replica that dies during this update must not leave Swarm's
            # rollback (to read-only, or to 0 replicas) in place.
            if mode == "readonly":
                collector.switch_config(writable, attempts=RESTORE_ATTEMPTS)
            elif mode == "stop":
                collector.scale(replicas, attempts=RESTORE_ATTEMPTS)
            if refused_from is not None:
                refused_to = time.monotonic()
        # Served again: a push is accepted by the load-balanced address.
        _wait(lambda: not client.writes_refused(PROBE_REPOSITORY), 60, "the registry to accept pushes again")
    except (RegistryError, docker.errors.APIError) as exc:
        raise SwarmGcError(f"garbage collection ({mode}) of service '{props['serviceName']}': {exc}") from exc
    finally:
        client.close()
        collector.close()
    return {
        **_summary(output),
        "durationSeconds": round(time.monotonic() - started, 3),
        "writesRefusedSeconds": round((refused_to or 0) - (refused_from or 0), 3) if refused_from else 0.0,
    }


_OUTPUTS = ("blobsMarked", "blobsEligible", "manifestsEligible", "durationSeconds", "writesRefusedSeconds")
_RERUN = ("trigger", "mode")


class SwarmGarbageCollectionProvider(ResourceProvider):
    """Collects when the deletions it depends on change (``trigger``) or the mode changes."""

    def check(self, _olds: dict, news: dict):
        from pulumi.dynamic import CheckResult, CheckFailure

        failures = []
        if news.get("mode") not in GC_MODES and not isinstance(news.get("mode"), pulumi.output.Unknown):
            failures.append(CheckFailure("mode", f"must be one of {', '.join(GC_MODES)}"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        changed = [k for k in news if k not in _OUTPUTS and olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[k for k in changed if k in ("dockerHost", "serviceName")])

    def create(self, props: dict) -> CreateResult:
        key = hashlib.sha256(f"{props['dockerHost']}|{props['serviceName']}".encode()).hexdigest()[:16]
        return CreateResult(f"swarm-gc-{key}", {**props, **collect(props)})

    def update(self, _id: str, olds: dict, news: dict) -> UpdateResult:
        if any(olds.get(k) != news.get(k) for k in _RERUN):
            return UpdateResult({**news, **collect(news)})
        return UpdateResult({**news, **{k: olds.get(k) for k in _OUTPUTS}})

    def read(self, id_: str, props: dict) -> ReadResult:
        """A collection is an event, not a state: its recorded figures stay as they were."""
        return ReadResult(id_, dict(props))

    def delete(self, _id: str, _props: dict) -> None:
        return None


class SwarmGarbageCollection(pulumi.dynamic.Resource, module="registry", name="SwarmGarbageCollection"):
    """Garbage collection across the registry service's replicas; runs again when ``trigger`` changes."""

    blobsMarked: pulumi.Output[Optional[int]]
    blobsEligible: pulumi.Output[Optional[int]]
    manifestsEligible: pulumi.Output[Optional[int]]
    durationSeconds: pulumi.Output[float]
    writesRefusedSeconds: pulumi.Output[float]

    def __init__(self, name: str, *, registry_url, ca_pem, username, password, docker_host, service_name,
                 writable_config_secret, readonly_config_secret, mode, trigger, network_name=None,
                 redis_auth_secret=None, redis_image=None, redis_host=None, redis_port=6379, redis_db=0,
                 opts: Optional[pulumi.ResourceOptions] = None):
        props = {
            "registryUrl": registry_url, "caPem": ca_pem, "username": username,
            "password": pulumi.Output.secret(password),
            "dockerHost": docker_host, "serviceName": service_name,
            "writableConfigSecret": writable_config_secret, "readonlyConfigSecret": readonly_config_secret,
            "mode": mode, "trigger": trigger, "networkName": network_name,
            "redisAuthSecret": redis_auth_secret, "redisImage": redis_image, "redisHost": redis_host,
            "redisPort": redis_port, "redisDb": redis_db,
            **{key: None for key in _OUTPUTS},
        }
        super().__init__(
            SwarmGarbageCollectionProvider(), name, props,
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["password"])),
        )
