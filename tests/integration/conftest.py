"""Fixtures of the integration tests: registries deployed from the program (tests/support/deploy.py),
on distribution 3 or, with TEST_REGISTRY_VERSION=2, on 2.8."""

import pytest

from tests.support import deploy, program

program.use_registry_version(program.REGISTRY_VERSION)


@pytest.fixture
def registry_stack(tmp_path):
    """A fresh stack (the program deployed) per test."""
    with deploy.registry_stack(tmp_path) as stack:
        yield stack


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory):
    """One stack for tests that change nothing in it (errors, probes)."""
    with deploy.registry_stack(tmp_path_factory.mktemp("shared-stack")) as stack:
        yield stack
