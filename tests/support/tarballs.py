"""In-memory tar archives, as Docker's ``put_archive`` takes files into a container."""

from __future__ import annotations

import io
import tarfile
import time
from typing import Union

Content = Union[bytes, str, tuple[Union[bytes, str], int]]


def tar_bytes(files: dict[str, Content]) -> bytes:
    """A tar of ``{path: content}``; content is bytes or text, or ``(content, mode)`` (default 0644).

    Paths are stored relative to ``/`` (put them to ``/``); modification time is now.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, content in files.items():
            data, mode = content if isinstance(content, tuple) else (content, 0o644)
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(raw), mode, int(time.time())
            archive.addfile(info, io.BytesIO(raw))
    return buffer.getvalue()
