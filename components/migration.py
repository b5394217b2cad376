"""Moving a single-host stack from its filesystem volume to S3: copy, switch, verify.

The operator's tool, not part of the Pulumi program (``python -m components.migration``):

1. ``copy``: stream the volume's ``docker/registry/v2`` tree out of the Docker engine (the
   archive API of a created, never started container that mounts the volume read-only) into
   the bucket under the driver's root directory. Every blob's bytes are hashed on the way and
   must match the digest in its path; blobs already there with the same size are skipped, so
   a second pass right before the switch copies only new blobs (and every small link file).
2. switch: ``pulumi config set private-registry:storage.driver s3`` (+ ``storage.s3.*``), ``pulumi up``.
3. ``verify``: through the registry's API, every tag's manifest (index children included),
   config and layer is fetched and its sha256 compared with its digest.

Pushes made between the last copy and the switch are not carried over: stop pushes for that
window (pulls keep working). S3 keys come from the environment (``S3_ACCESS_KEY``,
``S3_SECRET_KEY``), never from the command line.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tarfile
from dataclasses import dataclass, field
from typing import IO, Iterator, Optional

import docker

from components import grammar
from components.registry_api import RegistryClient

TREE = "docker/registry/v2"
DATA_DIR = "/var/lib/registry"
_BLOB_DATA = re.compile(r"docker/registry/v2/blobs/sha256/[a-f0-9]{2}/(?P<hex>[a-f0-9]{64})/data")


class MigrationError(RuntimeError):
    """The copy or the verification found something wrong; the message says what."""


@dataclass
class CopyReport:
    files: int = 0
    copied: int = 0
    skipped: int = 0
    bytes_copied: int = 0
    blobs_verified: int = 0


@dataclass
class VerifyReport:
    repositories: int = 0
    tags: int = 0
    manifests: set = field(default_factory=set)
    blobs: set = field(default_factory=set)


class _HashingReader:
    """A file object that hashes what is read through it."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        chunk = self.raw.read(n)
        self.sha256.update(chunk)
        self.size += len(chunk)
        return chunk


def s3_key(root_directory: Optional[str], path: str) -> str:
    """The object key distribution's s3 driver uses for a storage path like ``docker/registry/v2/...``."""
    if root_directory is not None and not grammar.is_object_path(root_directory):
        raise MigrationError(f"root directory {root_directory!r} is not a key prefix like /registry")
    prefix = (root_directory or "").strip("/")
    return f"{prefix}/{path}" if prefix else path


def volume_files(client: docker.DockerClient, volume: str, image: str) -> Iterator[tuple[str, tarfile.TarFile, tarfile.TarInfo]]:
    """Every regular file under the volume's ``docker/registry/v2``, as (path, tar, member).

    ``image``: any local image (the registry's own will do); its container is created with the
    volume mounted read-only, never started, and removed afterwards.
    """
    if not grammar.is_docker_name(volume):
        raise MigrationError(f"volume {volume!r} is not a Docker volume name")
    container = client.containers.create(
        image, command=["true"], volumes={volume: {"bind": DATA_DIR, "mode": "ro"}},
        labels={"private-registry.migration": "1"},
    )
    try:
        try:
            stream, _ = container.get_archive(f"{DATA_DIR}/docker")
        except docker.errors.NotFound:
            raise MigrationError(f"volume {volume!r} holds no registry data ({TREE} is missing)") from None
        reader = _StreamReader(stream)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                if member.isfile() and member.name.startswith(TREE + "/"):
                    yield member.name, tar, member
    finally:
        container.remove(force=True)


class _StreamReader:
    """A read()-able file over an iterator of byte chunks (Docker's archive stream)."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks = iter(chunks)
        self.buffer = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buffer) < n:
            try:
                self.buffer += next(self.chunks)
            except StopIteration:
                break
        if n < 0:
            out, self.buffer = self.buffer, b""
        else:
            out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


def copy_volume_to_bucket(
    client: docker.DockerClient, volume: str, image: str, s3, bucket: str, root_directory: Optional[str] = None
) -> CopyReport:
    """Copy the registry tree from ``volume`` into ``bucket`` (``s3``: a boto3 S3 client).

    Blob data is verified against the digest in its path as it is copied; a mismatch raises
    MigrationError naming the blob (the volume is corrupt there: fix it before switching).
    """
    report = CopyReport()
    for path, tar, member in volume_files(client, volume, image):
        report.files += 1
        key = s3_key(root_directory, path)
        head = None
        if _BLOB_DATA.fullmatch(path):
            try:
                head = s3.head_object(Bucket=bucket, Key=key)
            except s3.exceptions.ClientError:
                head = None
        match = _BLOB_DATA.fullmatch(path)
        # Blobs are content-addressed: the same key and size is the same blob. Every other file
        # (links, which name a digest of fixed length) is small and always copied.
        if match is not None and head is not None and head["ContentLength"] == member.size:
            report.skipped += 1
            continue
        reader = _HashingReader(tar.extractfile(member))
        s3.upload_fileobj(reader, bucket, key)
        if reader.size != member.size:
            raise MigrationError(f"{path}: read {reader.size} bytes of {member.size}")
        if match is not None:
            if reader.sha256.hexdigest() != match.group("hex"):
                s3.delete_object(Bucket=bucket, Key=key)
                raise MigrationError(f"{path}: content hashes to sha256:{reader.sha256.hexdigest()}, not its digest")
            report.blobs_verified += 1
        report.copied += 1
        report.bytes_copied += member.size
    if report.files == 0:
        raise MigrationError(f"volume {volume!r} holds no files under {TREE}")
    return report


def _verify_blob(client: RegistryClient, repository: str, digest: str) -> None:
    response = client._request("GET", f"/v2/{repository}/blobs/{digest}", repository=repository,
                               reference=digest, stream=True)
    sha = hashlib.sha256()
    with response:
        for chunk in response.iter_content(1 << 20):
            sha.update(chunk)
    if "sha256:" + sha.hexdigest() != digest:
        raise MigrationError(f"{repository}@{digest}: blob content hashes to sha256:{sha.hexdigest()}")


def verify_registry(client: RegistryClient, skip: frozenset = frozenset()) -> VerifyReport:
    """Fetch every tag's manifests and blobs through the registry and check each digest.

    ``skip``: (repository, tag) pairs deleted on purpose whose emptied folder the object store
    may still list for a while. Raises MigrationError (or the client's RegistryError) on the
    first one missing or wrong."""
    report = VerifyReport()
    for repository in client.catalog():
        report.repositories += 1
        for tag in client.tags(repository):
            if (repository, tag) in skip:
                continue
            report.tags += 1
            pending = [client.manifest(repository, tag)]
            while pending:
                manifest = pending.pop()
                report.manifests.add(manifest.digest)
                for child in manifest.children:
                    pending.append(client.manifest(repository, child))
                if manifest.is_index:
                    continue
                descriptors = [manifest.document.get("config") or {}, *manifest.document.get("layers", [])]
                for descriptor in descriptors:
                    digest = descriptor.get("digest")
                    if digest and (repository, digest) not in report.blobs:
                        _verify_blob(client, repository, digest)
                        report.blobs.add((repository, digest))
    return report


def _s3_client(endpoint: Optional[str], region: str, path_style: bool, ca_file: Optional[str]):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=region,
        aws_access_key_id=os.environ.get("S3_ACCESS_KEY"), aws_secret_access_key=os.environ.get("S3_SECRET_KEY"),
        verify=ca_file if ca_file else None,
        config=Config(s3={"addressing_style": "path" if path_style else "auto"}),
    )


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.migration", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    copy = sub.add_parser("copy", help="copy the volume's registry tree into the bucket")
    copy.add_argument("--docker-host", default="unix:///var/run/docker.sock")
    copy.add_argument("--volume", required=True)
    copy.add_argument("--image", required=True, help="a local image to mount the volume with (the registry's)")
    copy.add_argument("--endpoint")
    copy.add_argument("--region", default="us-east-1")
    copy.add_argument("--bucket", required=True)
    copy.add_argument("--root-directory")
    copy.add_argument("--path-style", action="store_true")
    copy.add_argument("--ca-file")
    verify = sub.add_parser("verify", help="fetch every tag's manifests and blobs and check their digests")
    verify.add_argument("--url", required=True, help="https://HOST[:PORT] of the registry")
    verify.add_argument("--username", required=True)
    verify.add_argument("--ca-file")
    args = parser.parse_args(argv)
    try:
        if args.command == "copy":
            report = copy_volume_to_bucket(
                docker.DockerClient(base_url=args.docker_host), args.volume, args.image,
                _s3_client(args.endpoint, args.region, args.path_style, args.ca_file), args.bucket, args.root_directory,
            )
            print(f"{report.files} files: {report.copied} copied ({report.bytes_copied} bytes), "
                  f"{report.skipped} already there; {report.blobs_verified} blobs verified")
        else:
            ca = open(args.ca_file).read() if args.ca_file else None
            # The password comes from the environment (REGISTRY_PASSWORD), never the command line.
            with RegistryClient(args.url, username=args.username, password=os.environ["REGISTRY_PASSWORD"],
                                ca_pem=ca) as client:
                report = verify_registry(client)
            print(f"{report.repositories} repositories, {report.tags} tags, {len(report.manifests)} manifests, "
                  f"{len(report.blobs)} blobs: every digest verified")
    except MigrationError as exc:
        print(f"migration: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
