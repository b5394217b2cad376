"""The CI workflow's preview and up jobs, run as written: their own `run:` steps, read from the
YAML, leave a fresh copy of the project ready for the CLI, wheels included."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components.render.token_service import missing_wheels

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "pulumi.yml"
# `${{ secrets.X }}` and friends: GitHub substitutes them before the shell sees the step.
EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def run_steps(job: str) -> list[str]:
    """The job's `run:` scripts, in order, up to the step that calls the Pulumi CLI."""
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"][job]["steps"]
    scripts = []
    for step in steps:
        if str(step.get("uses", "")).startswith("pulumi/actions"):
            return scripts
        if "run" in step:
            scripts.append(step["run"])
    raise AssertionError(f"job {job} never calls pulumi/actions")


def fresh_copy(destination: Path) -> Path:
    """The files git tracks, as in the work tree: what a runner's checkout holds."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for name in filter(None, names.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def test_preview_and_up_prepare_the_program_alike():
    """The preview and up jobs run the same steps before the CLI, and one of them is the
    preparation script that scripts/up-dev.sh runs before `pulumi up`."""
    preview, up = run_steps("preview"), run_steps("up")
    assert preview == up
    assert "scripts/prepare.sh" in [script.strip() for script in preview]
    dev = (ROOT / "scripts" / "up-dev.sh").read_text().splitlines()
    assert dev.index("scripts/prepare.sh") < next(i for i, line in enumerate(dev) if line.startswith("pulumi up"))


def test_the_preview_jobs_steps_leave_the_token_image_buildable(tmp_path):
    """In a fresh copy the program's wheel check fails (it would stop preview with 'needs
    wheels'); after the preview job's own run: steps it passes and the .venv imports the
    program's providers."""
    project = fresh_copy(tmp_path / "checkout")
    assert not (project / "token_service" / "wheels").exists()
    assert missing_wheels(project / "token_service") is not None

    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    for script in run_steps("preview"):
        expanded = EXPRESSION.sub("test-value", script)
        result = subprocess.run(["bash", "-e", "-c", expanded], cwd=project, env=env,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"step failed:\n{expanded}\n{result.stdout}\n{result.stderr}"

    assert missing_wheels(project / "token_service") is None
    imported = subprocess.run(
        [str(project / ".venv" / "bin" / "python"), "-c",
         "import pulumi, pulumi_docker, pulumi_tls, pulumi_command, pulumi_random, components; print(components.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    assert Path(imported.stdout.strip()).is_relative_to(project)
