"""A registry user's clients for the scale-out tests: skopeo push/pull and the API client."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from components.registry_api import RegistryClient


@dataclass
class RegistryUser:
    """Pushes and pulls as ``username`` through ``host`` (host:port), trusting the CA in ``cert_dir``."""

    host: str
    username: str
    password: str
    cert_dir: Path
    work: Path

    @property
    def ca_pem(self) -> str:
        return (self.cert_dir / "ca.crt").read_text()

    def client(self, **overrides) -> RegistryClient:
        kwargs = {"username": self.username, "password": self.password, "ca_pem": self.ca_pem, **overrides}
        return RegistryClient(f"https://{self.host}", **kwargs)

    def skopeo(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(["skopeo", *args], capture_output=True, timeout=timeout, check=check, text=True)

    def push(self, layout: Path, tag: str, repository: str, *, multi: bool = False, check: bool = True,
             retries: int = 0, attempts: int = 1) -> subprocess.CompletedProcess:
        """skopeo copy to the registry; ``retries``: skopeo's own (network errors), ``attempts``:
        the whole push again after a failure, as docker push retries a failed layer upload.
        The result carries ``attempts_used``."""
        extra = ["--all"] if multi else []
        retry = ["--retry-times", str(retries)] if retries else []
        for attempt in range(1, attempts + 1):
            result = self.skopeo(
                "copy", "-q", *extra, *retry, "--dest-cert-dir", str(self.cert_dir),
                "--dest-creds", f"{self.username}:{self.password}",
                f"oci:{layout}:{tag}", f"docker://{self.host}/{repository}:{tag}", check=check and attempt == attempts,
            )
            result.attempts_used = attempt
            if result.returncode == 0:
                break
        return result

    def pull(self, repository: str, tag: str, *, check: bool = True, multi: bool = False,
             retries: int = 0, attempts: int = 1) -> subprocess.CompletedProcess:
        """A real pull into a fresh OCI layout (skopeo verifies every digest), removed afterwards;
        ``retries``/``attempts`` as for :meth:`push` (docker pull retries a failed layer too)."""
        extra = ["--all"] if multi else []
        retry = ["--retry-times", str(retries)] if retries else []
        for attempt in range(1, attempts + 1):
            target = self.work / f"pull-{uuid.uuid4().hex[:8]}"
            try:
                result = self.skopeo(
                    "copy", "-q", *extra, *retry, "--src-cert-dir", str(self.cert_dir),
                    "--src-creds", f"{self.username}:{self.password}",
                    f"docker://{self.host}/{repository}:{tag}", f"oci:{target}:{tag}",
                    check=check and attempt == attempts,
                )
            finally:
                shutil.rmtree(target, ignore_errors=True)
            result.attempts_used = attempt
            if result.returncode == 0:
                break
        return result
