"""Run the whole Pulumi program (``__main__.py``) under the engine-like mocks."""

from __future__ import annotations

import json
import runpy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import pulumi

from tests.support.engine import EngineMocks, EngineMonitor

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "__main__.py"
PROJECT = "private-registry"


def use_mocks(*, stack: str = "dev", preview: bool = False, config: Optional[dict] = None,
              secret_keys: Iterable[str] = (), state: Optional[dict] = None) -> EngineMonitor:
    """Install fresh engine-like mocks and stack config; returns the recording monitor.

    Pass the same ``state`` dict to successive calls to model successive runs of one stack."""
    # A new root Stack per run, named after this run's stack (set_mocks keeps an existing one).
    pulumi.runtime.settings.ROOT.set(None)
    mocks = EngineMocks(preview=preview, state=state)
    monitor = EngineMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    encoded = {
        f"{PROJECT}:{key}": value if isinstance(value, str) else json.dumps(value)
        for key, value in (config or {}).items()
    }
    pulumi.runtime.set_all_config(encoded, secret_keys=[f"{PROJECT}:{k}" for k in secret_keys])
    return monitor


@dataclass
class ProgramRun:
    monitor: EngineMonitor
    exports: dict[str, Any]  # revealed values
    secret_exports: set[str]  # names of exports that are secret


EXPORTS = {
    "registryAddress": "address",
    "caCertificatePem": "ca_certificate_pem",
    "serverCertificateExpiry": "server_certificate_expiry",
    "userNames": "user_names",
    "passwords": "passwords",
    "loginCommand": "login_command",
    "volumeName": "volume_name",
    "pendingDeletions": "pending_deletions",
    "deletedTags": "deleted_tags",
    "garbageCollection": "garbage_collection",
}


def run_program(config: Optional[dict] = None, *, secret_keys: Iterable[str] = (), stack: str = "dev",
                preview: bool = False, state: Optional[dict] = None) -> ProgramRun:
    """Run ``__main__.py`` as ``pulumi up`` (or preview) would, and collect its exports.
    ``state``: see :func:`use_mocks`."""
    monitor = use_mocks(stack=stack, preview=preview, config=config, secret_keys=secret_keys, state=state)
    collected: dict[str, Any] = {}
    secrets: set[str] = set()

    def program():
        namespace = runpy.run_path(str(MAIN), run_name="__pulumi_main__")
        registry = namespace["registry"]
        outputs = {name: getattr(registry, attr) for name, attr in EXPORTS.items()}

        async def gather():
            for name, output in outputs.items():
                collected[name] = await output.future(with_unknowns=True)
                if await output.is_secret():
                    secrets.add(name)

        return pulumi.Output.from_input(None).apply(lambda _: gather())

    pulumi.runtime.test(program)()
    return ProgramRun(monitor=monitor, exports=collected, secret_exports=secrets)
