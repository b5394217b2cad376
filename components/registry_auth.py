"""``requests`` auth for a registry in either auth mode: Basic, or distribution's token flow.

:class:`RegistryAuth` sends Basic credentials until the registry answers 401 with a
``Bearer realm=...,service=...,scope=...`` challenge (token mode). It then asks the realm for a
token for exactly the challenged scope (GET with Basic credentials, as the token spec says),
retries the request once with ``Authorization: Bearer``, and from then on sends Basic no more.
Tokens are cached per scope until shortly before they expire, and a request whose repository
and kind of action (pull / push / delete) had a token gets it up front, so a run of requests on
one repository costs one token request per action (requests challenged at once wait for the
one fetch of their scope). A 429 from the token endpoint's rate limit
is waited out (up to about 15 s) before it becomes an error.

The realm must be on the registry's own origin (scheme, host and port): the password is never
sent anywhere else. Errors never contain the password or a token.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Callable, Optional
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase, HTTPBasicAuth

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_REPOSITORY_PATH = re.compile(r"^/v2/(.+?)/(?:manifests|blobs|tags)/")
EXPIRY_MARGIN = 30.0
RATE_LIMIT_RETRIES = 6  # waits of 0.5, 1, 2, 4, 4, 4 s: about 15 s in all


class RegistryTokenError(requests.exceptions.RequestException):
    """The token service refused or answered something unusable (message names the status)."""


def _action(method: str) -> str:
    return {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(method.upper(), "push")


class RegistryAuth(AuthBase):
    """Basic or bearer-token auth against one registry (see the module docstring)."""

    def __init__(self, username: str, password: str, origin: str, *,
                 verify: Callable[[], object] = lambda: True, timeout: float = 30.0,
                 realm_origins: tuple[str, ...] = ()) -> None:
        """``realm_origins``: further origins trusted as realms (tests serving the realm elsewhere)."""
        self._basic = HTTPBasicAuth(username, password)
        self._origins = {self._origin_of(o) for o in (origin, *realm_origins)}
        self._verify = verify
        self._timeout = timeout
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (token, expires at)
        self._scope_for: dict[tuple[str, str], str] = {}  # (repository or path, action) -> scope
        self._fetching: dict[str, threading.Lock] = {}  # scope -> held while its token is fetched
        self.token_mode = False
        self.tokens_fetched = 0

    @staticmethod
    def _origin_of(url: str) -> tuple:
        parts = urlsplit(url)
        return (parts.scheme, parts.hostname, parts.port or {"https": 443, "http": 80}.get(parts.scheme))

    def _key(self, request: requests.PreparedRequest) -> tuple[str, str]:
        path = urlsplit(request.url).path
        match = _REPOSITORY_PATH.match(path)
        return (match.group(1) if match else path, _action(request.method or "GET"))

    def _cached(self, scope: str) -> Optional[str]:
        entry = self._tokens.get(scope)
        return entry[0] if entry and entry[1] > time.monotonic() else None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        with self._lock:
            scope = self._scope_for.get(self._key(request))
            token = self._cached(scope) if scope is not None else None
            token_mode = self.token_mode
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        elif not token_mode:
            self._basic(request)
        request.register_hook("response", self._handle_401)
        return request

    def _handle_401(self, response: requests.Response, **kwargs) -> requests.Response:
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status_code != 401 or not challenge.lower().startswith("bearer "):
            return response
        if getattr(response.request, "_token_retry", False):
            return response
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        scope = params.get("scope", "")
        token = self._fetch(params.get("realm", ""), params.get("service", ""), scope)
        with self._lock:
            self.token_mode = True
            self._scope_for[self._key(response.request)] = scope
        response.content  # noqa: B018 - drain, so the connection can be reused
        response.close()
        retry = response.request.copy()
        retry.headers["Authorization"] = f"Bearer {token}"
        retry._token_retry = True  # type: ignore[attr-defined]
        new = response.connection.send(retry, **kwargs)
        new.history.append(response)
        new.request = retry
        return new

    def _fetch(self, realm: str, service: str, scope: str) -> str:
        """The scope's token: cached, or fetched once while concurrent callers for it wait."""
        with self._lock:
            cached = self._cached(scope)
            gate = self._fetching.setdefault(scope, threading.Lock())
        if cached:
            return cached
        with gate:
            with self._lock:
                cached = self._cached(scope)
            return cached or self._fetch_new(realm, service, scope)

    def _fetch_new(self, realm: str, service: str, scope: str) -> str:
        parts = urlsplit(realm)
        if self._origin_of(realm) not in self._origins:
            raise RegistryTokenError(
                f"the registry's token realm is not on its own origin ({parts.scheme}://{parts.hostname}); "
                "the password is not sent there"
            )
        query = {"service": service, **({"scope": scope.split(" ")} if scope else {})}
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            reply = requests.get(realm, params=query, auth=self._basic, verify=self._verify(), timeout=self._timeout)
            if reply.status_code != 429 or attempt == RATE_LIMIT_RETRIES:
                break
            # nginx's per-address limit on the token endpoint: wait for the bucket to refill.
            time.sleep(min(0.5 * 2**attempt, 4.0))
        if reply.status_code == 429:
            raise RegistryTokenError("the token service kept answering HTTP 429 (rate limit): retry later")
        if reply.status_code != 200:
            raise RegistryTokenError(f"the token service answered HTTP {reply.status_code}: check the username and password")
        try:
            body = reply.json()
            token = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            raise RegistryTokenError("the token service's answer is not a token") from None
        if not isinstance(token, str) or not token:
            raise RegistryTokenError("the token service's answer holds no token")
        with self._lock:
            self._tokens[scope] = (token, time.monotonic() + max(lifetime - EXPIRY_MARGIN, 1.0))
            self.tokens_fetched += 1
        return token
