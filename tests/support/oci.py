"""Write OCI image layouts by hand, for ``skopeo copy oci:DIR:TAG docker://HOST/REPO:TAG``.

No image can be pulled here, so tests make their own: random-content layers of chosen sizes
(deterministic for a given seed), images sharing layers, multi-arch image indexes. Digests are
computed here, so a test can compare them with what the registry reports.

Layers are gzip-compressed: skopeo compresses uncompressed layers on upload, which would change
the digests. Random content is stored (gzip level 0) since it cannot shrink; that keeps a
500 MiB layer to a few seconds. Not safe for concurrent writers to the same layout directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from os import PathLike
from pathlib import Path

MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"

_CHUNK = 1 << 20

Layer = bytes | int
"""A layer's content: the bytes of its single file, or a size for that many random bytes."""


def random_chunks(size: int, seed: int | str = 0) -> Iterator[bytes]:
    """Deterministic pseudo-random bytes, ``size`` in total, in chunks of at most 1 MiB."""
    for i, start in enumerate(range(0, size, _CHUNK)):
        key = f"{seed}/{i}".encode()
        yield hashlib.shake_128(key).digest(min(_CHUNK, size - start))


def random_bytes(size: int, seed: int | str = 0) -> bytes:
    """``size`` deterministic pseudo-random bytes; pass the same bytes to share a layer."""
    return b"".join(random_chunks(size, seed))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(layout_dir: str | PathLike, digest: str) -> Path:
    algorithm, hex_digest = digest.split(":", 1)
    return Path(layout_dir, "blobs", algorithm, hex_digest)


def read_blob(layout_dir: str | PathLike, digest: str) -> bytes:
    return blob_path(layout_dir, digest).read_bytes()


def _write_blob(layout_dir: Path, data: bytes, media_type: str) -> dict:
    digest = _digest(data)
    path = blob_path(layout_dir, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


class _LayerSink:
    """File-like target for tarfile: hashes the tar, gzips it, hashes and stores the result."""

    def __init__(self, out, compresslevel: int) -> None:
        self._out = out
        self._gzip = zlib.compressobj(compresslevel, zlib.DEFLATED, 31)
        self.diff_id = hashlib.sha256()
        self.digest = hashlib.sha256()
        self.size = 0
        self._offset = 0

    def tell(self) -> int:
        return self._offset

    def write(self, data: bytes) -> int:
        self._offset += len(data)
        self.diff_id.update(data)
        self._emit(self._gzip.compress(data))
        return len(data)

    def close(self) -> None:
        self._emit(self._gzip.flush())

    def _emit(self, data: bytes) -> None:
        if data:
            self.digest.update(data)
            self.size += len(data)
            self._out.write(data)


class _ChunkReader:
    """Readable file object over an iterator of byte chunks, for ``tarfile.addfile``."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def _write_layer(layout_dir: Path, layer: Layer, key: str, compresslevel: int | None) -> tuple[dict, str]:
    """Store one layer blob; return its descriptor and diff_id (digest of the plain tar)."""
    if isinstance(layer, int):
        name, size, chunks = f"random-{key}.bin", layer, random_chunks(layer, key)
        level = 0 if compresslevel is None else compresslevel
    else:
        # Named after the content, so equal bytes give an equal layer in any image.
        name, size, chunks = f"data-{hashlib.sha256(layer).hexdigest()[:16]}.bin", len(layer), iter([layer])
        level = 1 if compresslevel is None else compresslevel
    info = tarfile.TarInfo(name.replace("/", "-"))
    info.size, info.mtime, info.mode = size, 0, 0o644
    blobs = layout_dir / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=blobs, prefix=".layer-", delete=False) as out:
        try:
            sink = _LayerSink(out, level)
            with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_CHUNK) as tar:
                tar.addfile(info, _ChunkReader(chunks))
            sink.close()
        except BaseException:
            os.unlink(out.name)
            raise
    digest = "sha256:" + sink.digest.hexdigest()
    os.chmod(out.name, 0o644)
    os.replace(out.name, blob_path(layout_dir, digest))
    descriptor = {"mediaType": MEDIA_TYPE_LAYER, "digest": digest, "size": sink.size}
    return descriptor, "sha256:" + sink.diff_id.hexdigest()


def _write_manifest(
    layout_dir: Path,
    layers: Sequence[Layer],
    architecture: str,
    os_name: str,
    seed: int | str,
    compresslevel: int | None,
) -> dict:
    """Store layers, config and manifest blobs; return the manifest's descriptor."""
    written = [
        _write_layer(layout_dir, layer, f"{seed}-{architecture}-{i}", compresslevel)
        for i, layer in enumerate(layers)
    ]
    config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": architecture,
        "os": os_name,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in written]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"tests.support.oci seed={seed}"}],
    }
    config_descriptor = _write_blob(layout_dir, json.dumps(config).encode(), MEDIA_TYPE_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": config_descriptor,
        "layers": [descriptor for descriptor, _ in written],
    }
    descriptor = _write_blob(layout_dir, json.dumps(manifest).encode(), MEDIA_TYPE_MANIFEST)
    descriptor["platform"] = {"architecture": architecture, "os": os_name}
    return descriptor


def _tag(layout_dir: Path, tag: str, descriptor: dict) -> None:
    """Point ``tag`` at ``descriptor`` in index.json, keeping the layout's other tags."""
    (layout_dir / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index_file = layout_dir / "index.json"
    index = json.loads(index_file.read_text()) if index_file.exists() else {"schemaVersion": 2, "manifests": []}
    index["manifests"] = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) != tag]
    index["manifests"].append({**descriptor, "annotations": {REF_NAME: tag}})
    index_file.write_text(json.dumps(index))


def write_image(
    layout_dir: str | PathLike,
    tag: str,
    layers: Sequence[Layer],
    *,
    architecture: str = "amd64",
    os: str = "linux",  # noqa: A002 - the OCI field's name
    seed: int | str = 0,
    compresslevel: int | None = None,
) -> str:
    """Write a single-platform image tagged ``tag`` into the OCI layout; return its manifest digest.

    ``layers`` items are bytes (a layer holding one file with that content) or ints (that many
    random bytes, derived from ``seed``, the architecture and the layer's position).
    ``compresslevel`` defaults to 0 for random layers and 1 for given bytes.
    """
    layout = Path(layout_dir)
    descriptor = _write_manifest(layout, layers, architecture, os, seed, compresslevel)
    del descriptor["platform"]
    _tag(layout, tag, descriptor)
    return descriptor["digest"]


def write_index(
    layout_dir: str | PathLike,
    tag: str,
    platforms: Sequence[tuple[str, Sequence[Layer]]],
    *,
    os: str = "linux",  # noqa: A002 - the OCI field's name
    seed: int | str = 0,
    compresslevel: int | None = None,
) -> str:
    """Write a multi-arch image index tagged ``tag``; return the index digest.

    ``platforms`` is ``[(architecture, layers), ...]``; each becomes an image manifest for
    ``os/architecture``. Push it with ``skopeo copy --all`` (or ``--multi-arch all``).
    """
    layout = Path(layout_dir)
    children = [
        _write_manifest(layout, layers, architecture, os, seed, compresslevel)
        for architecture, layers in platforms
    ]
    index = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": children}
    descriptor = _write_blob(layout, json.dumps(index).encode(), MEDIA_TYPE_INDEX)
    _tag(layout, tag, descriptor)
    return descriptor["digest"]


def index_children(layout_dir: str | PathLike, index_digest: str) -> dict[str, str]:
    """The manifests an index written here refers to: ``{"linux/amd64": digest, ...}``."""
    index = json.loads(read_blob(layout_dir, index_digest))
    return {
        f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in index["manifests"]
    }


def set_created(layout: Path, tag: str, created: str | dict[str, str]) -> str:
    """Rewrite the build time (config ``created``) of ``tag`` in an OCI layout; returns the new digest.

    ``tests.support.oci`` writes every image as built in 1970; retention needs other times.
    For an index, ``created`` maps architecture to time and each platform image is rewritten.
    """

    def write(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blob_path(layout, digest).write_bytes(data)
        return digest

    def rewrite_image(descriptor: dict, stamp: str) -> dict:
        manifest = json.loads(read_blob(layout, descriptor["digest"]))
        config = json.loads(read_blob(layout, manifest["config"]["digest"]))
        config["created"] = stamp
        config_bytes = json.dumps(config).encode()
        manifest["config"] = {**manifest["config"], "digest": write(config_bytes), "size": len(config_bytes)}
        manifest_bytes = json.dumps(manifest).encode()
        return {**descriptor, "digest": write(manifest_bytes), "size": len(manifest_bytes)}

    index_file = layout / "index.json"
    top = json.loads(index_file.read_text())
    entry = next(m for m in top["manifests"] if m.get("annotations", {}).get(REF_NAME) == tag)
    if entry["mediaType"] == MEDIA_TYPE_INDEX:
        index = json.loads(read_blob(layout, entry["digest"]))
        index["manifests"] = [rewrite_image(child, created[child["platform"]["architecture"]])
                              for child in index["manifests"]]
        index_bytes = json.dumps(index).encode()
        new_entry = {**entry, "digest": write(index_bytes), "size": len(index_bytes)}
    else:
        new_entry = rewrite_image(entry, created)
    top["manifests"] = [new_entry if m is entry else m for m in top["manifests"]]
    index_file.write_text(json.dumps(top))
    return new_entry["digest"]
