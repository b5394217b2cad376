"""Waiting in tests: poll a condition until it holds, one loop for every fixture and test.

A condition holds when it returns anything but ``None`` or ``False`` (a ``requests.Response``
for a 401 is falsy, yet it is an answer); :func:`wait_for` returns that value. A ``process``
given is watched as well: if it exits first, the wait ends at once, with the tail of its
``log`` in the error."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional, TypeVar, Union

import requests

T = TypeVar("T")
Log = Union[Path, Callable[[], str], None]


def wait_for(predicate: Callable[[], T], timeout: float = 60, interval: float = 0.5, what: str = "condition",
             process: Optional[subprocess.Popen] = None, log: Log = None) -> T:
    """``predicate``'s first value that is neither ``None`` nor ``False``, polled every
    ``interval`` seconds; :class:`TimeoutError` after ``timeout`` seconds, :class:`RuntimeError`
    as soon as ``process`` has exited; both name ``what`` and end with the tail of ``log``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value is not None and value is not False:
            return value
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited ({process.returncode}) first{_tail(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s{_tail(log)}")
        time.sleep(interval)


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port`` now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_status(url: str, **kwargs) -> Optional[int]:
    """The status of ``GET url`` (``kwargs`` go to :func:`requests.get`, timeout 2 s unless
    given), or ``None`` while nothing answers."""
    try:
        return requests.get(url, **{"timeout": 2, **kwargs}).status_code
    except requests.RequestException:
        return None


def _tail(log: Log) -> str:
    if log is None:
        return ""
    text = log.read_text(errors="replace") if isinstance(log, Path) else log()
    return ":\n" + text[-2000:]
