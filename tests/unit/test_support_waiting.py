"""tests/support/waiting: the one polling loop of the tests."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.support.waiting import http_status, listening, wait_for


def test_returns_the_first_answer_even_a_falsy_one():
    """The condition's first value other than None or False is returned, 0 and an empty list
    included (a 401 response is falsy yet an answer); earlier None/False values are polled past."""
    values = iter([None, False, 0])
    assert wait_for(lambda: next(values), timeout=5, interval=0) == 0
    values = iter([False, []])
    assert wait_for(lambda: next(values), timeout=5, interval=0) == []


def test_times_out_naming_what_and_the_log(tmp_path):
    """A condition that never holds ends in TimeoutError naming what was awaited and the log's tail."""
    log = tmp_path / "log"
    log.write_text("line one\nthe last words\n")
    with pytest.raises(TimeoutError, match=r"(?s)the thing: not within 0.2s.*the last words"):
        wait_for(lambda: False, timeout=0.2, interval=0.05, what="the thing", log=log)
    with pytest.raises(TimeoutError, match="from a callable"):
        wait_for(lambda: None, timeout=0.1, interval=0.05, log=lambda: "from a callable")


def test_a_process_that_exits_ends_the_wait_at_once():
    """A watched process that exits ends the wait with RuntimeError and its exit code, long before
    the timeout."""
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    with pytest.raises(RuntimeError, match=r"the process exited \(3\) first"):
        wait_for(lambda: False, timeout=60, interval=0.05, what="a server", process=process)


def test_listening_and_http_status_on_a_closed_and_an_open_port():
    """listening is False and http_status None where nothing listens; True once a socket listens."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    assert listening(port) is False
    assert http_status(f"http://127.0.0.1:{port}/", timeout=0.5) is None
    server.listen()
    try:
        assert listening(port) is True
    finally:
        server.close()
