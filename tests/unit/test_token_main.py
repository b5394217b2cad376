"""token_service/__main__.py: the process serving the token app."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.ports import free_port
from tests.support.waiting import listening, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_ends_the_server_with_exit_code_0(tmp_path):
    """SIGTERM stops the server through its handler: the process logs the signal and exits 0
    within 3 s (without the handler it would die of the signal, and as a container's PID 1
    ignore it)."""
    port = free_port()
    log = tmp_path / "stderr"
    env = {**os.environ, "TOKEN_ISSUER": "issuer", "TOKEN_SERVICE": "service", "TOKEN_LISTEN": f"127.0.0.1:{port}"}
    with log.open("wb") as err:
        process = subprocess.Popen([sys.executable, "-m", "token_service"], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_for(lambda: listening(port), timeout=30, interval=0.1, what="the token service listening",
                     process=process, log=log)
            began = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=3) == 0, log.read_text()
            assert time.monotonic() - began < 3
        finally:
            process.kill()
            process.wait()
    assert "signal 15: stopping" in log.read_text()
