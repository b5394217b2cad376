"""Pytest plugin: in CI, a skipped or xfail-marked test fails the run.

A skip usually means a tool or service was missing, so the behaviour it guards went untested.
Enabled when the environment has ``CI=true`` or ``REQUIRE_NO_SKIPS=1``; load it with
``-p tests.support.no_skips`` (``scripts/test.sh`` does). "No tests collected" fails too.
"""

from __future__ import annotations

import os

import pytest


def _enabled() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("REQUIRE_NO_SKIPS") == "1"


class NoSkipsPolicy:
    def __init__(self) -> None:
        self.offenders: list[str] = []
        self.no_tests = False

    def _note(self, report: pytest.CollectReport | pytest.TestReport, what: str) -> None:
        reason = getattr(report, "wasxfail", None)
        if reason is None and isinstance(report.longrepr, tuple):
            reason = report.longrepr[2].removeprefix("Skipped: ")
        self.offenders.append(f"{what} {report.nodeid or report.fspath}: {reason or 'no reason given'}")

    @pytest.hookimpl
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:
            self._note(report, "SKIPPED (collection)")

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if hasattr(report, "wasxfail"):
            if report.when == "call" or report.skipped:
                self._note(report, "XFAIL" if report.skipped else "XPASS")
        elif report.skipped:
            self._note(report, "SKIPPED")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
            self.no_tests = True
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        elif self.offenders and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not (self.offenders or self.no_tests):
            return
        terminalreporter.section("no-skips policy (CI=true or REQUIRE_NO_SKIPS=1)", red=True)
        if self.no_tests:
            terminalreporter.line("FAILED: no tests were collected.", red=True)
        if self.offenders:
            terminalreporter.line(
                f"FAILED: {len(self.offenders)} test(s) skipped or marked xfail; "
                "in CI every test must run and pass:",
                red=True,
            )
            for line in self.offenders:
                terminalreporter.line(f"  {line}")


def pytest_configure(config: pytest.Config) -> None:
    if _enabled():
        config.pluginmanager.register(NoSkipsPolicy(), "no_skips_policy")
