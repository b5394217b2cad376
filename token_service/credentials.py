"""Password checks against the bcrypt htpasswd file the Pulumi program writes.

Lines are ``user:$2y$NN$...`` (also ``$2a$``/``$2b$``); other lines, comments and other hash
kinds are ignored, so such users cannot log in. Checking runs bcrypt (the ``bcrypt`` package,
which releases the GIL) against the stored hash; a user who does not exist still costs one
bcrypt run against a dummy hash of the same cost, so timing does not tell who exists.

A successful check is remembered for ``cache_seconds`` under an HMAC (random per-process key)
of the user, the password and the stored line, so clients that send the password with every
token request (skopeo, podman, containerd) cost one bcrypt run per ``cache_seconds``, and a
changed line (new password or cost) misses at once. Neither the password nor a fast hash of
it is kept: only that HMAC, whose key never leaves memory.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from typing import Optional

import bcrypt

from token_service.files import WatchedFile

CACHE_MAX = 4096
PASSWORD_MAX = 72  # bytes: bcrypt's limit, as the program enforces; longer ones are refused


def parse_htpasswd(data: bytes) -> dict[str, str]:
    """user -> bcrypt hash, for the bcrypt lines of an htpasswd file."""
    users: dict[str, str] = {}
    for raw in data.decode("utf-8", errors="replace").splitlines():
        user, sep, digest = raw.strip().partition(":")
        if sep and user and not user.startswith("#") and digest[:4] in ("$2y$", "$2a$", "$2b$"):
            users[user] = digest
    return users


def line_binding(user: str, digest: str) -> str:
    """A short digest of the user's stored hash: refresh tokens carry it, so they die with it."""
    return hashlib.sha256(f"{user}:{digest}".encode()).hexdigest()[:32]


class Credentials:
    """Checks user/password pairs against a watched htpasswd file."""

    def __init__(self, htpasswd_path: str, cache_seconds: float = 300.0) -> None:
        self._file = WatchedFile(htpasswd_path, parse_htpasswd, "htpasswd")
        self._cache_seconds = cache_seconds
        self._cache: "OrderedDict[bytes, float]" = OrderedDict()
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)
        self._dummy: dict[bytes, bytes] = {}

    def stored(self, user: str) -> Optional[str]:
        """The user's stored bcrypt hash, or None when the user does not exist."""
        return self._file.get().get(user)

    def binding(self, user: str) -> Optional[str]:
        """:func:`line_binding` of the user's current line, or None when the user is gone."""
        digest = self.stored(user)
        return None if digest is None else line_binding(user, digest)

    def _cache_key(self, user: str, secret: bytes, digest: str) -> bytes:
        return hmac.new(self._key, b"\0".join([user.encode(), secret, digest.encode()]), hashlib.sha256).digest()

    def _hit(self, key: bytes, now: float) -> bool:
        with self._lock:
            expiry = self._cache.get(key)
            if expiry is not None and expiry > now:
                self._cache.move_to_end(key)
                return True
        return False

    def cached(self, user: str, password: str) -> bool:
        """Whether this pair passed a check within ``cache_seconds`` (no bcrypt run: a False
        means only "not known good")."""
        secret = password.encode("utf-8", errors="surrogateescape")
        digest = self.stored(user)
        if digest is None or len(secret) > PASSWORD_MAX:
            return False
        return self._hit(self._cache_key(user, secret, digest), time.monotonic())

    def check(self, user: str, password: str) -> bool:
        """Whether ``password`` is the user's password."""
        secret = password.encode("utf-8", errors="surrogateescape")
        digest = self.stored(user)
        if digest is None or len(secret) > PASSWORD_MAX:
            self._burn(digest)
            return False
        key = self._cache_key(user, secret, digest)
        now = time.monotonic()
        if self._hit(key, now):
            return True
        try:
            ok = bcrypt.checkpw(secret, digest.replace("$2y$", "$2b$", 1).encode())
        except ValueError:
            return False
        if ok:
            with self._lock:
                self._cache[key] = now + self._cache_seconds
                self._cache.move_to_end(key)
                while len(self._cache) > CACHE_MAX:
                    self._cache.popitem(last=False)
        return ok

    def _burn(self, digest: Optional[str]) -> None:
        """One bcrypt run at the file's usual cost, so a missing user takes as long as a wrong password."""
        users = self._file.get()
        sample = digest or next(iter(users.values()), None)
        cost = sample.split("$")[2].encode() if sample else b"10"
        dummy = self._dummy.get(cost)
        if dummy is None:
            dummy = self._dummy.setdefault(cost, bcrypt.hashpw(b"x", bcrypt.gensalt(int(cost))))
        bcrypt.checkpw(b"not the password", dummy)
