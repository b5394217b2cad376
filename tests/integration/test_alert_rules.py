"""monitoring/alerts.yml with Prometheus's own tools (Debian's `prometheus` package): the rules
load, each alert fires on the series monitoring/alerts.test.yml gives it and stays quiet on
the ones beside them, and a rule whose threshold is wrong fails those tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from components.render.nginx import METRICS_PREFIX

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"


def promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess:
    assert shutil.which("promtool"), "promtool missing: apt-get install prometheus"
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_the_rules_load_and_pass_their_tests():
    """`promtool check rules` finds the five rules; `promtool test rules` passes every case."""
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0 and "SUCCESS: 5 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_every_alert_is_tested_and_reads_only_metrics_the_stack_serves():
    """Each alert has a firing case and a quiet one in the tests, and reads the stack's own
    metric names (the program's prefix, the registry's, the token service's)."""
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"][0]["rules"]
    cases = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())["tests"]
    checks = [c for case in cases for c in case["alert_rule_test"]]
    for rule in rules:
        mine = [c for c in checks if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine) and any(not c["exp_alerts"] for c in mine), rule["alert"]
        assert any(name in rule["expr"] for name in (f"{METRICS_PREFIX}_", "registry_http_", "token_service_")), rule


def test_a_wrong_threshold_fails_the_rule_tests(tmp_path):
    """The tests can fail: the 5xx rule with 50% instead of 5%, or the storage rule reading 1 as
    unhealthy, each fails `promtool test rules`."""
    text = (MONITORING / "alerts.yml").read_text()
    for wrong in (text.replace("> 0.05", "> 0.5"), text.replace("private_registry_storage_healthy == 0",
                                                                 "private_registry_storage_healthy == 1")):
        assert wrong != text
        (tmp_path / "alerts.yml").write_text(wrong)
        shutil.copy(MONITORING / "alerts.test.yml", tmp_path / "alerts.test.yml")
        failed = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
        assert failed.returncode != 0 and "FAILED" in failed.stdout + failed.stderr
