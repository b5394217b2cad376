"""Shared fixtures: engine-like Pulumi mocks (see tests/support/engine.py)."""

import pytest

from tests.support.engine import EngineMonitor
from tests.support.program import run_program, use_mocks


@pytest.fixture
def pulumi_mocks() -> EngineMonitor:
    """Fresh mocks with empty stack config; the monitor records every registered resource."""
    return use_mocks()


@pytest.fixture
def program():
    """Run the whole program: ``program(config, secret_keys=..., preview=...)`` -> ProgramRun."""
    return run_program
