"""The service's configuration, from the environment (the container's ``env``).

=========================  =====================================================  ==========
variable                   meaning                                                default
=========================  =====================================================  ==========
TOKEN_ISSUER               ``iss`` of every token; the registry's auth.token.issuer  (required)
TOKEN_SERVICE              ``aud``; the registry's auth.token.service               (required)
TOKEN_KEY_FILE             PEM private key (EC P-256 or RSA >= 2048) signing tokens  /run/token/key.pem
TOKEN_CERT_FILE            PEM certificate of that key (the registry's rootcertbundle)  /run/token/cert.pem
TOKEN_HTPASSWD_FILE        bcrypt htpasswd the program writes                     /run/token/htpasswd
TOKEN_POLICY_FILE          access policy (JSON, token_service/access.py)          /run/token/policy.json
TOKEN_TTL                  access token lifetime, seconds (60-3600)               300
TOKEN_REFRESH_TTL          refresh token lifetime, seconds (3600-31536000)        7776000 (90 days)
TOKEN_LISTEN               host:port to listen on                                 0.0.0.0:5001
TOKEN_THREADS              worker threads (1-32)                                  4
TOKEN_FAILURES_PER_MINUTE  failed password checks a client address may make a     12
                           minute (1-6000), token_service/throttle.py
TOKEN_FAILURE_BURST        failed checks an address may save up (1-1000)          3
=========================  =====================================================  ==========

bcrypt checks run at most min(TOKEN_THREADS, CPU count) at once, in arrival order.
:data:`SERVER_OPTIONS` (waitress) take the client address from ``X-Forwarded-For``, the one
value nginx's ``/token`` location sets (its ``$remote_addr``, replacing any the client sent):
the service's port is reachable only from nginx on the stack's network, never published.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

PORT = 5001
SERVER_OPTIONS = {"trusted_proxy": "*", "trusted_proxy_count": 1, "trusted_proxy_headers": {"x-forwarded-for"},
                  "clear_untrusted_proxy_headers": True}


class ConfigError(ValueError):
    """A variable is missing or out of range; the message names it."""


@dataclass(frozen=True)
class Config:
    issuer: str
    service: str
    key_file: str = "/run/token/key.pem"
    cert_file: str = "/run/token/cert.pem"
    htpasswd_file: str = "/run/token/htpasswd"
    policy_file: str = "/run/token/policy.json"
    ttl: int = 300
    refresh_ttl: int = 90 * 86400
    host: str = "0.0.0.0"
    port: int = PORT
    threads: int = 4
    failures_per_minute: int = 12
    failure_burst: int = 3

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Config":
        def need(name: str) -> str:
            value = env.get(name, "")
            if not value or not value.isprintable():
                raise ConfigError(f"{name} must be set")
            return value

        def number(name: str, default: int, low: int, high: int) -> int:
            raw = env.get(name, str(default))
            if not raw.isdigit() or not low <= int(raw) <= high:
                raise ConfigError(f"{name} must be a whole number from {low} to {high}")
            return int(raw)

        host, _, port = env.get("TOKEN_LISTEN", f"0.0.0.0:{PORT}").rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError("TOKEN_LISTEN must be host:port")
        return cls(
            issuer=need("TOKEN_ISSUER"),
            service=need("TOKEN_SERVICE"),
            key_file=env.get("TOKEN_KEY_FILE", cls.key_file),
            cert_file=env.get("TOKEN_CERT_FILE", cls.cert_file),
            htpasswd_file=env.get("TOKEN_HTPASSWD_FILE", cls.htpasswd_file),
            policy_file=env.get("TOKEN_POLICY_FILE", cls.policy_file),
            ttl=number("TOKEN_TTL", 300, 60, 3600),
            refresh_ttl=number("TOKEN_REFRESH_TTL", 90 * 86400, 3600, 365 * 86400),
            host=host,
            port=int(port),
            threads=number("TOKEN_THREADS", 4, 1, 32),
            failures_per_minute=number("TOKEN_FAILURES_PER_MINUTE", 12, 1, 6000),
            failure_burst=number("TOKEN_FAILURE_BURST", 3, 1, 1000),
        )


def build_app(config: Config):
    """The WSGI app for ``config`` (files are read lazily, re-read when they change)."""
    from token_service.app import TokenApp, load_policy
    from token_service.credentials import Credentials
    from token_service.files import WatchedFile
    from token_service.throttle import FailureBudget, FairSlots
    from token_service.tokens import Issuer, KeyFiles

    issuer = Issuer(KeyFiles(config.key_file, config.cert_file), config.issuer, config.service,
                    config.ttl, config.refresh_ttl)
    return TokenApp(issuer, Credentials(config.htpasswd_file, cache_seconds=config.ttl),
                    WatchedFile(config.policy_file, load_policy, "policy"),
                    FailureBudget(config.failures_per_minute / 60, config.failure_burst),
                    FairSlots(max(1, min(config.threads, os.cpu_count() or 1))))
