"""The token service: a WSGI app implementing distribution's token and OAuth2 specifications.

Routes (the realm is ``https://<registry name>/token`` through nginx):

- ``GET /token?service=S&scope=...&offline_token=true&client_id=C&account=U`` with Basic
  credentials, or none for anonymous. Answers ``{"token", "access_token", "expires_in",
  "issued_at"}`` plus ``"refresh_token"`` when ``offline_token=true`` and a user logged in.
  Wrong credentials: 401 with ``WWW-Authenticate: Basic``.
- ``POST /token`` (form): ``grant_type=password`` (``username``, ``password``,
  ``access_type=offline`` for a refresh token) or ``grant_type=refresh_token``
  (``refresh_token``); ``service`` and ``client_id`` required. Answers ``{"access_token",
  "token", "scope", "expires_in", "issued_at"}`` (+ ``"refresh_token"``); a failed grant is
  400 ``{"error": "invalid_grant"}``. This is what ``docker login`` and every later docker pull
  use: the password is checked once at login, later tokens come from the refresh token.
- ``GET /healthz``: 200 when the key, certificate, htpasswd and policy files are readable.
- ``GET /metrics``: the counters of token_service/metrics.py (Prometheus text format).

Password checks are throttled (token_service/throttle.py): a pair that passed a check within the
credential cache's lifetime is accepted without bcrypt; any other check spends one of the client
address's failure budget (refunded when the password was right) and waits for one of the
bcrypt slots in arrival order. An address with no budget left gets 429 with ``Retry-After`` at
once, without bcrypt: ``{"errors": [{"code": "TOOMANYREQUESTS"}]}`` for GET,
``{"error": "slow_down"}`` for POST. Refresh-token grants and anonymous requests never check a
password and are never throttled here.

The access claim is :meth:`token_service.access.Policy.grant` of the requested scopes. A
``service`` other than the configured one is refused (400). Nothing secret is logged: one line
per token request with the route, grant, user name, granted scope count and status.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional
from urllib.parse import parse_qs

from token_service.access import Policy, parse_scopes
from token_service.credentials import Credentials
from token_service.files import FileUnavailable, WatchedFile
from token_service.metrics import TokenMetrics
from token_service.throttle import FailureBudget, FairSlots, retry_after
from token_service.tokens import Issuer

log = logging.getLogger("token_service")
BODY_MAX = 16 * 1024
USER_MAX = 64


def load_policy(data: bytes) -> Policy:
    return Policy.from_document(json.loads(data))


@dataclass
class TokenApp:
    """WSGI callable; see the module docstring."""

    issuer: Issuer
    credentials: Credentials
    policy: WatchedFile
    failures: FailureBudget = field(default_factory=FailureBudget)
    checks: FairSlots = field(default_factory=lambda: FairSlots(2))
    metrics: TokenMetrics = field(default_factory=TokenMetrics)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "")
        try:
            if path == "/healthz" and method in ("GET", "HEAD"):
                self.policy.get()
                self.issuer.keys.get()
                self.credentials.stored("")
                return _reply(start_response, 200, {"status": "ok"})
            if path == "/metrics" and method == "GET":
                data = self.metrics.render()
                start_response("200 OK", [("Content-Type", self.metrics.content_type),
                                          ("Content-Length", str(len(data))), ("Cache-Control", "no-store")])
                return [data]
            if path != "/token":
                return _reply(start_response, 404, {"error": "not_found"})
            if method == "GET":
                return self._get(environ, start_response)
            if method == "POST":
                return self._post(environ, start_response)
            return _reply(start_response, 405, {"error": "method_not_allowed"}, [("Allow", "GET, POST")])
        except FileUnavailable as exc:
            log.error("unavailable: %s", exc)
            return _reply(start_response, 503, {"error": "temporarily_unavailable"})

    # --- GET: the token specification ---------------------------------------------------------
    def _get(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if not self._service_ok(query):
            return _reply(start_response, 400, {"error": "invalid_request", "error_description": "unknown service"})
        user: Optional[str] = None
        header = environ.get("HTTP_AUTHORIZATION", "")
        if header:
            basic = _basic(header)
            wait = self._wait(environ, *basic) if basic else 0.0
            if wait:
                self.metrics.throttled.labels(route="GET").inc()
                log.info("GET /token: 429 for %s", _printable(basic[0]))
                return _reply(start_response, 429, {"errors": [{"code": "TOOMANYREQUESTS",
                                                                 "message": "too many failed logins"}]},
                              [("Retry-After", retry_after(wait))])
            if basic is None or not self._check(environ, *basic):
                self.metrics.refused.labels(route="GET").inc()
                log.info("GET /token: 401 for %s", _printable(basic[0]) if basic else "a malformed header")
                return _reply(
                    start_response, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                    [("WWW-Authenticate", 'Basic realm="registry token"')],
                )
            user = basic[0]
        account = query.get("account", [""])[0]
        if account and account != user:
            return _reply(start_response, 400, {"error": "invalid_request", "error_description": "account is not the user"})
        body = self._tokens(user, query.get("scope", []))
        if user is not None and query.get("offline_token", [""])[0].lower() == "true":
            body["refresh_token"] = self.issuer.refresh_token(user, self.credentials.binding(user) or "")
        self.metrics.issued.labels(route="GET").inc()
        log.info("GET /token: 200 for %s, %d resources", user or "anonymous", body.pop("_count"))
        return _reply(start_response, 200, body)

    # --- POST: the OAuth2 specification -------------------------------------------------------
    def _post(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= BODY_MAX:
            return _reply(start_response, 400, {"error": "invalid_request"})
        form = parse_qs(environ["wsgi.input"].read(length).decode("utf-8", "replace"), keep_blank_values=True)
        first = lambda key: form.get(key, [""])[0]  # noqa: E731
        if not self._service_ok(form, required=True) or not first("client_id"):
            return _reply(start_response, 400, {"error": "invalid_request"})
        grant = first("grant_type")
        refresh: Optional[str] = None
        if grant == "password":
            user = first("username")
            wait = self._wait(environ, user, first("password")) if user and len(user) <= USER_MAX else 0.0
            if wait:
                self.metrics.throttled.labels(route="POST").inc()
                log.info("POST /token password: 429 for %s", _printable(user))
                return _reply(start_response, 429, {"error": "slow_down"}, [("Retry-After", retry_after(wait))])
            if not user or len(user) > USER_MAX or not self._check(environ, user, first("password")):
                self.metrics.refused.labels(route="POST").inc()
                log.info("POST /token password: 400 for %s", _printable(user))
                return _reply(start_response, 400, {"error": "invalid_grant"})
            if first("access_type") == "offline":
                refresh = self.issuer.refresh_token(user, self.credentials.binding(user) or "")
        elif grant == "refresh_token":
            refresh = first("refresh_token")
            claims = self.issuer.refresh_claims(refresh)
            user = claims["sub"] if claims else ""
            named = first("username")
            if claims is None or (named and named != user) or self.credentials.binding(user) != claims["bnd"]:
                self.metrics.refused.labels(route="POST").inc()
                log.info("POST /token refresh_token: 400")
                return _reply(start_response, 400, {"error": "invalid_grant"})
        else:
            return _reply(start_response, 400, {"error": "unsupported_grant_type"})
        body = self._tokens(user, form.get("scope", []))
        body["scope"] = " ".join(
            f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in body["_access"]
        )
        if refresh:
            body["refresh_token"] = refresh
        self.metrics.issued.labels(route="POST").inc()
        log.info("POST /token %s: 200 for %s, %d resources", grant, user, body.pop("_count"))
        return _reply(start_response, 200, body)

    # --- shared -------------------------------------------------------------------------------
    def _wait(self, environ: dict, user: str, password: str) -> float:
        """0.0 when the pair may be checked now (known good, or a failure token taken for the
        address: :meth:`_check` must follow), else the seconds until the address may try again."""
        if self.credentials.cached(user, password):
            environ["token_service.known_good"] = True
            return 0.0
        return self.failures.take(environ.get("REMOTE_ADDR", ""))

    def _check(self, environ: dict, user: str, password: str) -> bool:
        """The password check after :meth:`_wait` returned 0.0: bcrypt in a fair slot, the
        address's token given back when the password was right."""
        if environ.get("token_service.known_good"):
            return True
        with self.checks.slot():
            ok = self.credentials.check(user, password)
        if ok:
            self.failures.refund(environ.get("REMOTE_ADDR", ""))
        return ok

    def _service_ok(self, params: dict, required: bool = False) -> bool:
        services = params.get("service", [])
        if not services:
            return not required
        return services == [self.issuer.service]

    def _tokens(self, user: Optional[str], scope_params: list[str]) -> dict:
        access = self.policy.get().grant(user, parse_scopes(scope_params))
        token, issued, expires_in = self.issuer.access_token(user or "", access)
        return {
            "token": token,
            "access_token": token,
            "expires_in": expires_in,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(issued)),
            "_count": len(access),
            "_access": access,
        }


def _basic(header: str) -> Optional[tuple[str, str]]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or len(value) > 1024:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user or len(user) > USER_MAX:
        return None
    return user, password


def _printable(user: str) -> str:
    """A user name fit for a log line (printable ASCII, at most 64 characters)."""
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in user[:USER_MAX]) or "''"


def _reply(start_response: Callable, status: int, body: dict, headers: Optional[list] = None) -> list[bytes]:
    body = {k: v for k, v in body.items() if not k.startswith("_")}
    data = json.dumps(body).encode()
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
              405: "Method Not Allowed", 429: "Too Many Requests", 503: "Service Unavailable"}[status]
    start_response(
        f"{status} {reason}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
         ("Cache-Control", "no-store")] + (headers or []),
    )
    return [data]
