"""swarm_gc.collect without a swarm: the steps of each mode against a recording fake collector
and registry client (the real swarm is in tests/integration/test_swarm_gc.py and test_swarm.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from components import swarm_gc
from components.render.storage import S3_CA_ENV, S3_CA_PATH
from components.swarm_gc import CONFIG_PATH, SwarmGcError, collect

SUMMARY = "team/gc\n\n7 blobs marked, 3 blobs and 0 manifests eligible for deletion\n"
CA_CONFIG = {"File": {"Name": S3_CA_PATH, "UID": "0", "GID": "0", "Mode": 0o444}, "ConfigID": "c1",
             "ConfigName": "p-file0-abc"}


class FakeCollector:
    """Records the service changes and jobs collect() asks for."""

    def __init__(self, calls: list, replicas: int = 2):
        self.calls, self._replicas = calls, replicas
        self.secret = "writable"
        self.jobs: list[dict] = []

    def inspect(self):
        return {"Spec": {"TaskTemplate": {"ContainerSpec": {
            "Image": "registry:2", "Env": [S3_CA_ENV], "Configs": [CA_CONFIG]}}}}

    def replicas(self):
        return self._replicas

    def config_secret(self):
        return self.secret

    def switch_config(self, name, attempts=1):
        self.calls.append(f"switch {name}" + (f" (up to {attempts})" if attempts > 1 else ""))
        self.secret = name

    def scale(self, replicas, attempts=1):
        self.calls.append(f"scale {replicas}" + (f" (up to {attempts})" if attempts > 1 else ""))

    def run_job(self, role, image, args, secrets, **kwargs):
        self.calls.append(f"job {role}")
        self.jobs.append({"role": role, "image": image, "args": args, "secrets": secrets, **kwargs})
        return SUMMARY if role == "gc" else "OK\n"

    def secret_ref(self, name, path):
        return {"SecretName": name, "File": {"Name": path}}

    def close(self):
        pass


class FakeClient:
    """Through the load-balanced address: pushes refused exactly while the read-only config is
    on (unless ``state["refusing"]`` is false: a read-only config that does not take)."""

    def __init__(self, calls: list, collector: FakeCollector, state: dict):
        self.calls, self.collector, self.state = calls, collector, state

    def writes_refused(self, repository):
        self.calls.append("probe")
        return self.state["refusing"] and self.collector.secret == "readonly"

    def close(self):
        pass


PROPS = {"dockerHost": "unix:///m.sock", "serviceName": "p-registry", "registryUrl": "https://r:443",
         "username": "u", "password": "p", "caPem": "pem", "writableConfigSecret": "writable",
         "readonlyConfigSecret": "readonly", "networkName": "p-net", "redisHost": "redis", "redisPort": 6379,
         "redisDb": 0, "redisImage": "redis:7", "redisAuthSecret": "p-redis-auth"}


@pytest.fixture
def fake(monkeypatch):
    calls: list = []
    state = {"refusing": True}
    collector = FakeCollector(calls)
    monkeypatch.setattr(swarm_gc, "SwarmCollector", lambda *a, **k: collector)

    monkeypatch.setattr(swarm_gc, "RegistryClient", lambda *a, **k: FakeClient(calls, collector, state))
    # A clock that advances one second per look and never sleeps.
    ticks = iter(range(10**6))
    monkeypatch.setattr(swarm_gc, "time", SimpleNamespace(monotonic=lambda: float(next(ticks)), sleep=lambda s: None))
    return calls, collector, state


def test_the_gc_job_runs_with_the_replicas_environment_and_configs(fake):
    """The collection job gets the registry's image, the read-only config secret, and the
    service's environment and Swarm configs: the S3 endpoint's CA and SSL_CERT_DIR naming it."""
    calls, collector, _ = fake
    collect({**PROPS, "mode": "readonly"})
    gc = next(job for job in collector.jobs if job["role"] == "gc")
    assert gc["image"] == "registry:2" and gc["args"] == ["garbage-collect", CONFIG_PATH]
    assert gc["secrets"] == [{"SecretName": "readonly", "File": {"Name": CONFIG_PATH}}]
    assert gc["env"] == [S3_CA_ENV] and gc["configs"] == [CA_CONFIG] and gc["network"] == "p-net"


def test_readonly_switches_probes_collects_flushes_and_switches_back(fake):
    """readonly: switch to the read-only config (one update), 2 * replicas + 2 probes all
    refused, the job, the Redis flush, back to the writable config (up to 3 updates should Swarm
    roll one back), then a push accepted."""
    calls, _, _ = fake
    report = collect({**PROPS, "mode": "readonly"})
    assert calls == ["switch readonly", *["probe"] * 6, "job gc", "job cache-flush", "switch writable (up to 3)",
                     "probe"]
    assert report["blobsEligible"] == 3 and report["writesRefusedSeconds"] > 0


def test_a_replica_accepting_pushes_stops_the_collection_before_the_job(fake):
    """readonly: if a probe is accepted after the switch, nothing is collected or flushed, the
    service goes back to the writable config, and the error says why."""
    calls, _, state = fake
    state["refusing"] = False
    with pytest.raises(SwarmGcError, match="still accepts pushes.*not collecting"):
        collect({**PROPS, "mode": "readonly"})
    assert not [c for c in calls if c.startswith("job")]
    assert calls == ["switch readonly", "probe", "switch writable (up to 3)"]


def test_stop_scales_to_zero_collects_flushes_and_scales_back(fake):
    """stop: the service scaled to 0, the job, the flush, scaled back to its replica count (up
    to 3 updates)."""
    calls, _, _ = fake
    report = collect({**PROPS, "mode": "stop"})
    assert calls == ["scale 0", "job gc", "job cache-flush", "scale 2 (up to 3)", "probe"]
    assert report["writesRefusedSeconds"] > 0


def test_dry_run_only_runs_the_job_with_dry_run(fake):
    """dry-run: the job with --dry-run alone; no switch, no scaling, no flush; its counts reported."""
    calls, collector, _ = fake
    report = collect({**PROPS, "mode": "dry-run"})
    assert calls == ["job gc", "probe"]
    assert collector.jobs[0]["args"] == ["garbage-collect", CONFIG_PATH, "--dry-run"]
    assert (report["blobsEligible"], report["manifestsEligible"], report["writesRefusedSeconds"]) == (3, 0, 0.0)


def test_a_failed_job_in_stop_mode_still_scales_back(fake):
    """Whatever fails after the service was changed, it is put back (here: scaled back to 2)."""
    calls, collector, _ = fake

    def broken(role, *args, **kwargs):
        calls.append(f"job {role}")
        raise SwarmGcError("the gc job failed (x509: certificate signed by unknown authority)")

    collector.run_job = broken
    with pytest.raises(SwarmGcError, match="x509"):
        collect({**PROPS, "mode": "stop"})
    assert calls == ["scale 0", "job gc", "scale 2 (up to 3)"]
