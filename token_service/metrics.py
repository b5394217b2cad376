"""The token service's counters, served at ``/metrics`` in the Prometheus text format.

nginx's metrics listener (components/render/nginx.py, ``/metrics/token``) is the only way to
them from outside the stack's private network, behind the metrics credential. Labels carry
the route only (``GET`` or ``POST``, the token and OAuth2 specifications), never a user name
or address: a counter must not become a list of who tried what.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

ROUTES = ("GET", "POST")


class TokenMetrics:
    """Tokens issued, logins refused (wrong password, bad refresh token) and requests
    throttled (429: the client address spent its failure budget)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.issued = Counter("token_service_tokens_issued", "Tokens issued.", ["route"], registry=self.registry)
        self.refused = Counter("token_service_logins_refused",
                               "Logins refused: wrong credentials, or a refresh token no longer valid.",
                               ["route"], registry=self.registry)
        self.throttled = Counter("token_service_throttled",
                                 "Password checks refused with 429: the client address spent its failure budget.",
                                 ["route"], registry=self.registry)
        for route in ROUTES:  # every series exists from the start, so a rate is never missing
            for counter in (self.issued, self.refused, self.throttled):
                counter.labels(route=route)

    def render(self) -> bytes:
        return generate_latest(self.registry)
