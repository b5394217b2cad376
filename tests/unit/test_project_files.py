"""Project files a newcomer meets first: Pulumi.yaml, requirements, scripts/test.sh, the CI workflow."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_pulumi_and_the_tests_use_one_virtualenv():
    """Pulumi.yaml's virtualenv is the `.venv` scripts/test.sh creates, and requirements.txt
    installs the project itself (pyproject.toml), so the provider host can import it anywhere."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["runtime"]["options"]["virtualenv"] == ".venv"
    assert 'venv=$root/.venv' in (ROOT / "scripts" / "test.sh").read_text()
    assert "-e ." in (ROOT / "requirements.txt").read_text().splitlines()
    assert 'packages = ["components", "components.render", "token_service"]' in (ROOT / "pyproject.toml").read_text()


@pytest.fixture
def fake_root(tmp_path):
    """A copy of scripts/test.sh in a tree whose Docker scripts and Python only record their calls."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "test.sh", tmp_path / "scripts" / "test.sh")
    log = tmp_path / "calls.log"
    for name in ("start-dockerd.sh", "build-standin-images.sh", "token-wheels.sh"):
        script = tmp_path / "scripts" / name
        script.write_text(f"#!/bin/sh\necho {name} >> {log}\n")
        script.chmod(0o755)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\n[ "$1" = -c ] && exit 0\necho "python $*" >> {log}\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "requirements.txt").write_text("")
    (tmp_path / "requirements-dev.txt").write_text("")
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tests" / "integration").mkdir(parents=True)
    return tmp_path


def run_test_sh(root: Path, *args: str) -> list[str]:
    (root / "calls.log").write_text("")
    env = {**os.environ, "PYTHON": str(root / ".venv" / "bin" / "python")}
    subprocess.run(["bash", str(root / "scripts" / "test.sh"), *args], cwd=root, env=env, check=True,
                   capture_output=True, timeout=60)
    return [line.split()[0] for line in (root / "calls.log").read_text().splitlines() if "pytest" not in line
            and "pip" not in line and "token-wheels" not in line]


@pytest.mark.parametrize("args, docker", [
    (["tests/unit"], False),
    (["./tests/unit/", "-x", "-k", "grammar"], False),
    (["tests/unit/test_x.py::test_y", "-q"], False),
    ([], True),
    (["tests/integration"], True),
    (["tests/unit", "tests/integration"], True),
    (["-x"], True),
])
def test_test_sh_starts_docker_only_when_tests_beyond_unit_may_need_it(fake_root, args, docker):
    """`scripts/test.sh tests/unit ...` neither starts dockerd nor builds images; no path, or
    any path outside tests/unit, does both."""
    calls = run_test_sh(fake_root, *args)
    assert calls == (["start-dockerd.sh", "build-standin-images.sh"] if docker else [])


def _list_step() -> str:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "pulumi.yml").read_text())
    return next(step["run"] for step in workflow["jobs"]["stacks"]["steps"] if step.get("id") == "list")


@pytest.mark.parametrize("files, names", [
    (["Pulumi.dev.yaml", "Pulumi.prod.example.yaml"], "[]"),
    (["Pulumi.dev.yaml", "Pulumi.prod.example.yaml", "Pulumi.prod.yaml", "Pulumi.staging.yaml"], '["prod","staging"]'),
])
def test_workflow_previews_and_deploys_only_stacks_that_exist(tmp_path, files, names):
    """The workflow's stack list is the stack files in stacks/ other than dev and examples (the
    repository ships none, so only the tests run); preview and up take their matrix from it."""
    if shutil.which("jq") is None:
        pytest.fail("jq is needed (GitHub's runners have it)")
    (tmp_path / "stacks").mkdir()
    for name in files:
        (tmp_path / "stacks" / name).write_text("config: {}\n")
    output = tmp_path / "github_output"
    subprocess.run(["bash", "-e", "-c", _list_step()], cwd=tmp_path, env={**os.environ, "GITHUB_OUTPUT": str(output)},
                   check=True, capture_output=True, timeout=30)
    assert output.read_text().strip() == f"names={names}"
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "pulumi.yml").read_text())
    for job in ("preview", "up"):
        assert workflow["jobs"][job]["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.names) }}"
        assert "needs.stacks.outputs.names != '[]'" in workflow["jobs"][job]["if"]
    shipped = sorted(p.name for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))
    assert "Pulumi.prod.yaml" not in shipped
