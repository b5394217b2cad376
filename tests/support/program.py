"""Run the whole Pulumi program (``__main__.py``) under the engine-like mocks."""

from __future__ import annotations

import json
import os
import runpy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import pulumi

from components.private_registry import EXPORTS
from tests.support.engine import EngineMocks, EngineMonitor

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "__main__.py"
PROJECT = "private-registry"

# The distribution the integration suite's stacks run: 3 (the program's default image) or,
# with TEST_REGISTRY_VERSION=2, 2.8 (tests/integration/conftest.py calls use_registry_version).
REGISTRY_VERSION = int(os.environ.get("TEST_REGISTRY_VERSION", "3"))
if REGISTRY_VERSION not in (2, 3):
    raise SystemExit(f"TEST_REGISTRY_VERSION={REGISTRY_VERSION}: use 2 or 3")
_stack_registry_image: Optional[str] = None


def use_registry_version(version: int) -> None:
    """From now on, runs whose config sets no ``images.registry`` get distribution ``version``'s
    pinned image (3: the default, nothing added)."""
    from components.settings import REGISTRY2_IMAGE

    global _stack_registry_image
    _stack_registry_image = REGISTRY2_IMAGE if version == 2 else None


def _with_registry_image(config: Optional[dict]) -> Optional[dict]:
    images = (config or {}).get("images", {})
    if _stack_registry_image is None or not isinstance(images, dict) or "registry" in images:
        return config
    return {**(config or {}), "images": {**images, "registry": _stack_registry_image}}


def use_mocks(*, stack: str = "dev", preview: bool = False, config: Optional[dict] = None,
              secret_keys: Iterable[str] = (), state: Optional[dict] = None) -> EngineMonitor:
    """Install fresh engine-like mocks and stack config; returns the recording monitor.

    Pass the same ``state`` dict to successive calls to model successive runs of one stack."""
    # A new root Stack per run, named after this run's stack (set_mocks keeps an existing one).
    pulumi.runtime.settings.ROOT.set(None)
    config = _with_registry_image(config)
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
