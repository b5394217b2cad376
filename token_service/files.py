"""Files the service reads, re-read when they change (the program rewrites them in place).

A file is re-parsed when its inode, size or modification time changes, checked on every use
(one ``stat``). A file that fails to parse keeps the last good value and the failure is
logged once per change; a file that never parsed raises :class:`FileUnavailable`.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Generic, Optional, TypeVar

T = TypeVar("T")
log = logging.getLogger("token_service")


class FileUnavailable(RuntimeError):
    """A watched file is missing or has never parsed."""


class WatchedFile(Generic[T]):
    """``get()`` returns ``parse(bytes)`` of the file's current content."""

    def __init__(self, path: str, parse: Callable[[bytes], T], what: str) -> None:
        self.path, self._parse, self._what = path, parse, what
        self._lock = threading.Lock()
        self._stamp: Optional[tuple] = None
        self._value: Optional[T] = None
        self._loaded = False

    def get(self) -> T:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError as exc:
            stamp = ("missing", exc.errno)
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    with open(self.path, "rb") as handle:
                        self._value = self._parse(handle.read())
                    self._loaded = True
                except Exception as exc:  # noqa: BLE001 - any parse failure keeps the last value
                    log.error("%s %s could not be read: %s", self._what, self.path, type(exc).__name__)
            if not self._loaded:
                raise FileUnavailable(f"{self._what} {self.path} is unavailable")
            return self._value  # type: ignore[return-value]
