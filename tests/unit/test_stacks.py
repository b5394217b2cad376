"""The shipped stack files and the dev bring-up script."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from components.render.token_service import missing_wheels
from components.settings import parse_settings
from tests.support.program import run_program

ROOT = Path(__file__).resolve().parents[2]
STACK_FILES = sorted((ROOT / "stacks").glob("Pulumi.*.yaml"))


def stack_config(path: Path) -> dict:
    config = yaml.safe_load(path.read_text())["config"]
    return {key.split(":", 1)[1]: value for key, value in config.items()}


def test_stack_files_exist():
    """The embedded dev stack and the commented prod example are both shipped."""
    assert [p.name for p in STACK_FILES] == ["Pulumi.dev.yaml", "Pulumi.prod.example.yaml"]


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_stack_file_settings_validate(path):
    """Every shipped stack file passes validation as it stands."""
    settings = parse_settings(stack_config(path), stack="x")
    assert settings.hosts


def test_dev_stack_is_local_on_5443():
    """dev: localhost:5443 on the loopback of the local engine, trusted by this host's Docker."""
    settings = parse_settings(stack_config(ROOT / "stacks" / "Pulumi.dev.yaml"), stack="dev")
    assert settings.address == "localhost:5443"
    assert settings.bind_address == "127.0.0.1"
    assert settings.docker.host == "unix:///var/run/docker.sock"
    assert [t.kinds for t in settings.trust] == [("docker",)]


def test_dev_stack_runs_and_generates_admin():
    """The dev stack's program run declares its containers (registry, token service, proxy) and
    exports a generated admin password."""
    run = run_program(stack_config(ROOT / "stacks" / "Pulumi.dev.yaml"))
    assert len(run.monitor.by_type("docker:index/container:Container")) == 3
    assert run.exports["userNames"] == ["admin"]
    assert len(run.exports["passwords"]["admin"]) == 32
    assert "passwords" in run.secret_exports


def test_up_dev_script_drives_pulumi_with_a_file_backend(tmp_path):
    """scripts/up-dev.sh logs in to a local file backend, keeps a private passphrase file,
    selects or creates the dev stack, runs scripts/prepare.sh (the .venv and the token service's
    wheels) and then `pulumi up` on it. (A recording stand-in takes the Pulumi CLI's place;
    docker and prepare.sh are the real ones.)"""
    if shutil.which("docker") is None:
        pytest.fail("docker CLI missing: .ci/run installs it")
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", ".pulumi-state"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "pulumi.log"
    fake = bin_dir / "pulumi"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n[ "$1 $2" = "stack output" ] && echo out-$3\nexit 0\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    result = subprocess.run(["bash", str(repo / "scripts" / "up-dev.sh"), "--diff"], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[:3] == [
        f"login file://{repo}/.pulumi-state",
        "stack select dev --create --non-interactive",
        "up --stack dev --yes --non-interactive --diff",
    ]
    assert (repo / ".venv" / "bin" / "python").exists()
    assert missing_wheels(repo / "token_service") is None
    passphrase = repo / ".pulumi-state" / "passphrase"
    assert stat.S_IMODE(passphrase.stat().st_mode) == 0o600 and len(passphrase.read_text().strip()) >= 40
    assert "Registry: https://out-registryAddress" in result.stdout
