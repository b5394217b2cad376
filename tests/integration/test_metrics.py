"""Metrics as the program deploys them (``metrics.enabled``), scraped by a real Prometheus
(Debian's ``prometheus``): a token-mode stack, its metrics listener on a port of its own behind
the metrics credential; a push, a pull and a refused login each move the counters they should;
the listener refuses everyone else and the public listener serves none of it."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from components.metrics import metrics_paths
from tests.support import oci
from tests.support.deploy import live_stack
from tests.support.ports import free_port

USERS = {"admin": "admin-password-0123456789"}
# Prometheus job per endpoint, named by its last path segment (registry, storage, certificate, token).
JOBS = {path: path.rsplit("/", 1)[-1] for path in metrics_paths(token_mode=True)}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    with live_stack(tmp, "metrics", USERS, auth={"admins": ["admin"]},
                    metrics={"enabled": True, "port": free_port()}) as live:
        yield live


class Prometheus:
    """A Prometheus server scraping the stack's metrics listener every second."""

    def __init__(self, work: Path, live, password: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        address = live.run.exports["metrics"]["urls"][0].split("/")[2]
        scrape = [{
            "job_name": job, "metrics_path": path, "scheme": "https", "scrape_interval": "1s",
            "basic_auth": {"username": live.run.exports["metrics"]["username"], "password": password},
            "tls_config": {"ca_file": str(live.ca_file)},
            "static_configs": [{"targets": [address]}],
        } for path, job in JOBS.items()]
        config = work / "prometheus.yml"
        config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": scrape}))
        check = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = (work / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path: str, **params) -> dict:
        reply = requests.get(f"{self.url}{path}", params=params, timeout=10)
        reply.raise_for_status()
        return reply.json()["data"]

    def targets(self) -> dict[str, str]:
        return {t["labels"]["job"]: t["health"] for t in self.get("/api/v1/targets")["activeTargets"]}

    def value(self, query: str) -> float:
        result = self.get("/api/v1/query", query=query)["result"]
        return float(result[0]["value"][1]) if result else 0.0

    def wait(self, what: str, ok, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = ok()
                if found:
                    return found
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{what}: not within {timeout:.0f}s (targets {self.targets()})")

    def stop(self):
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def prometheus(stack, tmp_path_factory):
    assert shutil.which("prometheus") and shutil.which("promtool"), "apt-get install prometheus"
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), stack, stack.run.exports["metricsPassword"])
    try:
        server.wait("every target up", lambda: set(server.targets().values()) == {"up"}
                    and len(server.targets()) == len(JOBS))
        yield server
    finally:
        server.stop()


COUNTERS = {
    "manifest PUTs": 'sum(registry_http_requests_total{handler="manifest",method="put"})',
    "manifest GETs": 'sum(registry_http_requests_total{handler="manifest",method="get"})',
    "tokens issued": "sum(token_service_tokens_issued_total)",
    "logins refused": "sum(token_service_logins_refused_total)",
    "throttled": "sum(token_service_throttled_total)",
}


def test_a_push_a_pull_and_a_refused_login_move_their_counters_in_prometheus(stack, prometheus, tmp_path):
    """Every target (registry, token service, storage health, certificate) is up in Prometheus;
    a push moves the registry's manifest PUTs and tokens issued, a pull its manifest GETs, a
    wrong password the token service's refusals (and nothing is throttled); the storage is
    healthy and the certificate gauge is the served certificate's expiry, its renewal window
    the settings' 720 hours."""
    layout = tmp_path / "layout"
    oci.write_image(layout, "v1", [16 * 1024], seed="metrics")
    before = {name: prometheus.value(query) for name, query in COUNTERS.items()}
    creds = f"admin:{USERS['admin']}"
    pushed = subprocess.run(["skopeo", "copy", "-q", f"--dest-cert-dir={stack.cert_dir}", f"--dest-creds={creds}",
                             f"oci:{layout}:v1", f"docker://{stack.address}/team/app:v1"], capture_output=True, text=True)
    assert pushed.returncode == 0, pushed.stderr
    pulled = subprocess.run(["skopeo", "inspect", "--raw", f"--cert-dir={stack.cert_dir}", f"--creds={creds}",
                             f"docker://{stack.address}/team/app:v1"], capture_output=True, text=True)
    assert pulled.returncode == 0, pulled.stderr
    refused = requests.get(f"https://{stack.address}/token", params={"service": stack.address},
                           auth=("admin", "wrong-password-0123456789"), verify=str(stack.ca_file), timeout=30)
    assert refused.status_code == 401

    def moved():
        now = {name: prometheus.value(query) for name, query in COUNTERS.items()}
        grown = all(now[name] > before[name] for name in ("manifest PUTs", "manifest GETs", "tokens issued",
                                                            "logins refused"))
        return now if grown else None

    after = prometheus.wait("the counters moved", moved, timeout=30)
    deltas = {name: after[name] - before[name] for name in COUNTERS}
    print(f"\nPrometheus targets: {json.dumps(prometheus.targets(), sort_keys=True)}; counter deltas after one push, "
          f"one pull and one refused login: {json.dumps(deltas, sort_keys=True)}")
    assert deltas["manifest PUTs"] == 1 and deltas["logins refused"] == 1 and deltas["throttled"] == 0
    assert prometheus.value("private_registry_storage_healthy") == 1
    expiry = datetime.datetime.fromisoformat(stack.run.exports["serverCertificateExpiry"].replace("Z", "+00:00"))
    assert prometheus.value("private_registry_certificate_expiry_timestamp_seconds") == int(expiry.timestamp())
    assert prometheus.value("private_registry_certificate_renew_before_seconds") == 720 * 3600


def test_the_metrics_listener_refuses_everyone_else_and_the_public_one_serves_none(stack):
    """Without credentials, with a registry user's password, or with the metrics user's name and
    a wrong password: 401 on every metrics endpoint; an unknown path there: 404; the registry's
    public listener answers 404 for every metrics path (it serves none of them)."""
    metrics = stack.run.exports["metrics"]
    assert sorted(metrics["urls"]) == sorted(f"https://{metrics['urls'][0].split('/')[2]}{p}"
                                             for p in metrics_paths(token_mode=True))
    right = (metrics["username"], stack.run.exports["metricsPassword"])
    for url in metrics["urls"]:
        for auth in (None, ("admin", USERS["admin"]), (metrics["username"], "wrong")):
            reply = requests.get(url, auth=auth, verify=str(stack.ca_file), timeout=10)
            assert reply.status_code == 401, (url, auth and auth[0], reply.status_code)
        assert requests.get(url, auth=right, verify=str(stack.ca_file), timeout=10).status_code == 200
    base = metrics["urls"][0].rsplit("/metrics/", 1)[0]
    for path in ("/metrics", "/debug/health", "/debug/vars", "/v2/"):
        assert requests.get(base + path, auth=right, verify=str(stack.ca_file), timeout=10).status_code == 404, path
    for path in metrics_paths(token_mode=True) + ("/metrics", "/debug/health"):
        reply = requests.get(f"https://{stack.address}{path}", auth=right, verify=str(stack.ca_file), timeout=10)
        assert reply.status_code == 404, (path, reply.status_code)


def test_storage_health_reads_zero_while_the_registry_is_down_and_one_when_back(stack, prometheus):
    """The storage gauge follows the registry's health: with the registry stopped (its debug
    listener unreachable) it reads 0, in Prometheus too; started again, 1."""
    metrics = stack.run.exports["metrics"]
    url = next(u for u in metrics["urls"] if u.endswith("/metrics/storage"))
    auth = (metrics["username"], stack.run.exports["metricsPassword"])
    registry = stack.deployment.client.containers.get(stack.deployment.container("registry-container").plain_inputs["name"])

    def gauge() -> str:
        return requests.get(url, auth=auth, verify=str(stack.ca_file), timeout=10).text.strip().splitlines()[-1]

    assert gauge() == "private_registry_storage_healthy 1"
    registry.stop(timeout=10)
    try:
        assert gauge() == "private_registry_storage_healthy 0"
        prometheus.wait("the gauge at 0", lambda: prometheus.value("private_registry_storage_healthy") == 0
                        and prometheus.get("/api/v1/query", query="private_registry_storage_healthy")["result"])
    finally:
        registry.start()
    prometheus.wait("the gauge back at 1", lambda: gauge() == "private_registry_storage_healthy 1")
