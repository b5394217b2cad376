"""Apply what the program declares in Swarm mode to a real swarm, the way pulumi-docker would.

Networks, Swarm secrets and configs and services are created on the manager exactly as the
program registered them (task spec, mode, update and rollback config, endpoint spec, secrets
and configs with their files and modes, network aliases, healthchecks); each pinned image
reference is swapped for a stand-in loaded into the nodes. :meth:`SwarmDeployment.update`
does what ``pulumi up`` does with a changed program: new secrets/configs first, services
updated in place (Swarm rolls the tasks as the update config says), old objects removed.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field

import docker

from tests.support.deploy import _nanoseconds
from tests.support.engine import Registered
from tests.support.program import ProgramRun
from tests.support.waiting import http_status, wait_for

SERVICE = "docker:index/service:Service"
SECRET = "docker:index/secret:Secret"
CONFIG = "docker:index/serviceConfig:ServiceConfig"
NETWORK = "docker:index/network:Network"
LABEL = "private-registry.test"


def _mock_id(resource: Registered) -> str:
    """The id the engine-like mocks give a resource (see tests/support/engine.py)."""
    return f"{resource.name}-id"


def _file(entry: dict) -> dict:
    return {"Name": entry["fileName"], "UID": entry.get("fileUid") or "0", "GID": entry.get("fileGid") or "0",
            "Mode": int(entry.get("fileMode") or 0o444)}


@dataclass
class SwarmDeployment:
    run: ProgramRun
    client: docker.DockerClient  # the manager
    standins: dict
    ids: dict = field(default_factory=dict)  # mock id -> real id
    created: dict = field(default_factory=lambda: {"service": [], "secret": [], "config": [], "network": []})

    def services(self) -> list[Registered]:
        return self.run.monitor.by_type(SERVICE)

    def service(self, suffix: str) -> Registered:
        return next(r for r in self.services() if r.name.endswith(suffix))

    def service_name(self, suffix: str) -> str:
        return self.service(suffix).plain_inputs["name"]

    # ---- translation ------------------------------------------------------------------------
    def _spec(self, spec: Registered) -> dict:
        i = spec.plain_inputs
        task = i["taskSpec"]
        c = task["containerSpec"]
        image = self.standins.get(c["image"], c["image"])
        container: dict = {"Image": image, "Labels": {l["label"]: l["value"] for l in c.get("labels") or []}}
        if c.get("commands"):
            container["Command"] = c["commands"]
        if c.get("args"):
            container["Args"] = c["args"]
        if c.get("env"):
            container["Env"] = [f"{k}={v}" for k, v in c["env"].items()]
        if c.get("stopGracePeriod"):
            container["StopGracePeriod"] = _nanoseconds(c["stopGracePeriod"])
        if c.get("sysctl"):
            container["Sysctls"] = dict(c["sysctl"])
        if c.get("stopSignal"):
            container["StopSignal"] = c["stopSignal"]
        if c.get("healthcheck"):
            h = c["healthcheck"]
            container["Healthcheck"] = {
                "Test": h["tests"], "Interval": _nanoseconds(h.get("interval")), "Timeout": _nanoseconds(h.get("timeout")),
                "Retries": int(h.get("retries") or 0), "StartPeriod": _nanoseconds(h.get("startPeriod")),
            }
        container["Secrets"] = [
            {"File": _file(s), "SecretID": self.ids[s["secretId"]], "SecretName": s["secretName"]}
            for s in c.get("secrets") or []
        ]
        container["Configs"] = [
            {"File": _file(s), "ConfigID": self.ids[s["configId"]], "ConfigName": s["configName"]}
            for s in c.get("configs") or []
        ]
        template: dict = {"ContainerSpec": container}
        template["Networks"] = [
            {"Target": self.ids[n["id"]], "Aliases": n.get("aliases") or []} for n in task.get("networksAdvanceds") or []
        ]
        if task.get("restartPolicy"):
            r = task["restartPolicy"]
            template["RestartPolicy"] = {"Condition": r.get("condition") or "any", "Delay": _nanoseconds(r.get("delay"))}
        if task.get("placement"):
            p = task["placement"]
            template["Placement"] = {
                "Constraints": p.get("constraints") or [],
                "Preferences": [{"Spread": {"SpreadDescriptor": pref.split("=", 1)[1]}} for pref in p.get("prefs") or []],
            }
        mode = i.get("mode") or {}
        out: dict = {
            "name": i["name"], "task_template": template,
            "labels": {l["label"]: l["value"] for l in i.get("labels") or []} | {LABEL: "1"},
            "mode": {"Global": {}} if mode.get("global") else {"Replicated": {"Replicas": int(mode["replicated"]["replicas"])}},
        }
        for key, target in (("updateConfig", "update_config"), ("rollbackConfig", "rollback_config")):
            if i.get(key):
                u = i[key]
                out[target] = {
                    "Parallelism": int(u.get("parallelism") or 1), "Delay": _nanoseconds(u.get("delay")) or 0,
                    "FailureAction": u.get("failureAction") or "pause", "Monitor": _nanoseconds(u.get("monitor")) or 0,
                    "Order": u.get("order") or "stop-first",
                }
        if i.get("endpointSpec"):
            e = i["endpointSpec"]
            out["endpoint_spec"] = {
                "Mode": e.get("mode") or "vip",
                "Ports": [
                    {"Protocol": p.get("protocol") or "tcp", "TargetPort": int(p["targetPort"]),
                     "PublishedPort": int(p["publishedPort"]), "PublishMode": p.get("publishMode") or "ingress"}
                    for p in e.get("ports") or []
                ],
            }
        return out

    # ---- create / update / remove ----------------------------------------------------------
    def _objects(self, run: ProgramRun) -> None:
        for net in run.monitor.by_type(NETWORK):
            if _mock_id(net) in self.ids:
                continue
            i = net.plain_inputs
            created = self.client.networks.create(i["name"], driver=i.get("driver") or "overlay",
                                                  attachable=bool(i.get("attachable")), labels={LABEL: "1"})
            self.ids[_mock_id(net)] = created.id
            self.created["network"].append(created.id)
        # Secrets and configs alike: named by content, so one that exists already is reused.
        for kind, type_token, listing, create in (
            ("secret", SECRET, self.client.secrets.list, self.client.api.create_secret),
            ("config", CONFIG, self.client.configs.list, self.client.api.create_config),
        ):
            existing = {item.name: item.id for item in listing()}
            for resource in run.monitor.by_type(type_token):
                name = resource.plain_inputs["name"]
                if name not in existing:
                    data = base64.b64decode(resource.plain_inputs["data"])
                    existing[name] = create(name, data, labels={LABEL: "1"})["ID"]
                    self.created[kind].append(existing[name])
                self.ids[_mock_id(resource)] = existing[name]

    def up(self) -> "SwarmDeployment":
        self._objects(self.run)
        for spec in self.services():
            kwargs = self._spec(spec)
            created = self.client.api.create_service(**kwargs)
            self.created["service"].append(created["ID"])
        return self

    def update(self, new_run: ProgramRun) -> None:
        """Update each service in place to ``new_run``'s spec (Swarm rolls the tasks)."""
        self._objects(new_run)
        self.run = new_run
        for spec in self.services():
            kwargs = self._spec(spec)
            current = self.client.api.inspect_service(kwargs["name"])
            self.client.api.update_service(
                current["ID"], current["Version"]["Index"], task_template=kwargs["task_template"],
                name=kwargs["name"], labels=kwargs["labels"], mode=kwargs["mode"],
                update_config=kwargs.get("update_config"), rollback_config=kwargs.get("rollback_config"),
                endpoint_spec=kwargs.get("endpoint_spec"), fetch_current_spec=False,
            )

    def down(self) -> None:
        for service_id in self.created["service"]:
            try:
                self.client.api.remove_service(service_id)
            except docker.errors.NotFound:
                pass
        # Tasks leave their secrets and networks only once their containers are gone.
        deadline = time.monotonic() + 60
        while self.client.api.containers(all=True, filters={"label": "com.docker.swarm.service.id"}) \
                and time.monotonic() < deadline:
            time.sleep(0.5)
        for kind, remove in (("secret", self.client.api.remove_secret), ("config", self.client.api.remove_config),
                             ("network", self.client.api.remove_network)):
            for object_id in self.created[kind]:
                for _ in range(20):
                    try:
                        remove(object_id)
                        break
                    except docker.errors.NotFound:
                        break
                    except docker.errors.APIError:
                        time.sleep(0.5)

    # ---- observation --------------------------------------------------------------------------
    def running_tasks(self, suffix: str) -> list[dict]:
        service_id = self.client.api.inspect_service(self.service_name(suffix))["ID"]
        return [t for t in self.client.api.tasks(filters={"service": service_id})
                if t["DesiredState"] == "running" and t["Status"]["State"] == "running"]

    def wait_converged(self, nodes: list, https_port: int, ca_file: str, replicas: int, timeout: float = 120) -> None:
        """Until the manager reports ``replicas`` registry tasks, one nginx task per node and (in
        token mode) one token service task running, and every node's nginx serves /healthz."""
        token = any(r.name.endswith("-token") for r in self.services())

        def converged() -> bool:
            return (len(self.running_tasks("registry")) == replicas
                    and len(self.running_tasks("proxy")) == len(nodes)
                    and (not token or len(self.running_tasks("-token")) == 1)
                    and all(http_status(f"https://{node.host_address}:{https_port}/healthz", verify=ca_file,
                                        timeout=3) == 200 for node in nodes))

        def registry_tasks() -> str:
            """Every task's state and error per service, and each node's /healthz status."""
            lines = []
            for suffix in ("registry", "proxy", *(("-token",) if token else ())):
                tasks = self.client.api.tasks(filters={"service": self.service_name(suffix)})
                lines.append(f"{suffix.lstrip('-')} tasks {[(t['Status']['State'], t['Status'].get('Err')) for t in tasks]}")
            for node in nodes:
                status = http_status(f"https://{node.host_address}:{https_port}/healthz", verify=ca_file, timeout=3)
                lines.append(f"{node.host_address}:{https_port}/healthz -> {status}")
            return "\n".join(lines)

        wait_for(converged, timeout, interval=1, what="swarm stack converged", log=registry_tasks)


def task_container(nodes: list, task: dict) -> tuple[object, str]:
    """(node, container id) running ``task``."""
    container_id = task["Status"]["ContainerStatus"]["ContainerID"]
    for node in nodes:
        if node.client().containers.list(filters={"id": container_id}):
            return node, container_id
    raise LookupError(f"no node runs task {task['ID']}")

