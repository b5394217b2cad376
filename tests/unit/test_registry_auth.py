"""RegistryAuth without a token service: the realm's answers scripted in place of requests.get."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from components import registry_auth
from components.registry_auth import RegistryAuth

ORIGIN = "https://registry.test:5443"
REALM = f"{ORIGIN}/token"


def test_a_burst_of_challenges_for_one_scope_fetches_one_token(monkeypatch):
    """16 requests challenged at once for the same scope (a fan-out of DELETEs) cause one token
    request, not 16: the others wait for it and use its token; another scope gets its own."""
    calls: list[dict] = []
    lock = threading.Lock()

    def realm(url, params, **kwargs):
        with lock:
            calls.append(params)
        time.sleep(0.05)  # long enough for every thread to arrive while it is in flight
        reply = requests.Response()
        reply.status_code = 200
        reply._content = f'{{"token": "tok-{len(calls)}", "expires_in": 300}}'.encode()
        return reply

    monkeypatch.setattr(registry_auth.requests, "get", realm)
    auth = RegistryAuth("maint", "pw", ORIGIN)
    scope = "repository:app:delete"
    with ThreadPoolExecutor(16) as pool:
        tokens = list(pool.map(lambda _: auth._fetch(REALM, "registry.test", scope), range(16)))
    assert tokens == ["tok-1"] * 16
    assert calls == [{"service": "registry.test", "scope": [scope]}]
    assert auth.tokens_fetched == 1
    assert auth._fetch(REALM, "registry.test", "repository:app:pull") == "tok-2"
    assert auth.tokens_fetched == 2
