"""The token service's throttle of failed password checks, through the real service (waitress
on loopback, the htpasswd at the default bcrypt cost 11): a wrong-password flood from one
forwarded address is refused with 429 after its burst without bcrypt runs, while another
address logs in, and the flooding address's known-good credentials and refresh tokens still work.
The client address is the one X-Forwarded-For value (what nginx sets); X-Real-IP is ignored."""

from __future__ import annotations

import statistics
import threading
import time

import pytest
import requests

from tests.support.token import SERVICE, serve, token_files

USERS = {"alice": "alice-password-0123", "bob": "bob-password-456789", "carol": "carol-password-0000"}
POLICY = {"version": 1, "groups": {}, "admins": ["alice"], "rules": [], "anonymous_pull": [], "catalog": []}
FLOODER, OTHER = "198.51.100.7", "203.0.113.9"
SECONDS = 4.0
BURST, RATE = 3, 0.2  # the service's defaults (TOKEN_FAILURE_BURST, TOKEN_FAILURES_PER_MINUTE / 60)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    files = token_files(tmp_path_factory.mktemp("throttle"), USERS, POLICY)
    files.write_users(USERS, rounds=11)
    running = serve(files)
    yield running.url
    running.stop()


def get(url: str, address: str, auth, **headers) -> tuple[requests.Response, float]:
    started = time.perf_counter()
    reply = requests.get(url, params={"service": SERVICE}, auth=auth, timeout=60,
                         headers={"X-Forwarded-For": address, **headers})
    return reply, time.perf_counter() - started


def test_flood_is_refused_without_bcrypt_and_other_logins_proceed(service):
    """8 connections send wrong passwords from one address for 4 s: at most burst + rate x 4 s
    (+1) of them reach bcrypt (401), the rest are 429 with Retry-After, each answered faster than
    the fastest bcrypt check; meanwhile a first login from another address succeeds, and the
    flooding address's cached login, its refresh token and its other headers change nothing."""
    url = service
    assert get(url, FLOODER, ("alice", USERS["alice"]))[0].status_code == 200  # alice's pair is now cached
    refresh = requests.post(url, data={"grant_type": "password", "service": SERVICE, "client_id": "t",
                                       "username": "alice", "password": USERS["alice"], "access_type": "offline"},
                            headers={"X-Forwarded-For": FLOODER}, timeout=60).json()["refresh_token"]
    results: dict[int, list[float]] = {}
    retry_afters: set[str] = set()
    lock = threading.Lock()
    stop = time.monotonic() + SECONDS

    def flood(i: int) -> None:
        with requests.Session() as session:
            while time.monotonic() < stop:
                started = time.perf_counter()
                r = session.get(url, params={"service": SERVICE}, auth=("bob", f"wrong-{i}"), timeout=60,
                                headers={"X-Forwarded-For": FLOODER, "X-Real-IP": f"10.9.{i}.{time.monotonic_ns() % 250}"})
                with lock:
                    results.setdefault(r.status_code, []).append(time.perf_counter() - started)
                    if r.status_code == 429:
                        retry_afters.add(r.headers.get("Retry-After", ""))

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    other, other_seconds = get(url, OTHER, ("carol", USERS["carol"]))  # first check of carol: bcrypt
    cached, _ = get(url, FLOODER, ("alice", USERS["alice"]))
    refreshed = requests.post(url, data={"grant_type": "refresh_token", "service": SERVICE, "client_id": "t",
                                         "refresh_token": refresh}, headers={"X-Forwarded-For": FLOODER}, timeout=60)
    post_guess = requests.post(url, data={"grant_type": "password", "service": SERVICE, "client_id": "t",
                                          "username": "alice", "password": "wrong"},
                               headers={"X-Forwarded-For": FLOODER}, timeout=60)
    for t in threads:
        t.join()
    checked, refused = results.get(401, []), results.get(429, [])
    print(f"\nthrottle, 8-connection wrong-password flood for {SECONDS:.0f} s at bcrypt 11: {len(checked)} "
          f"checked (401, median {statistics.median(checked) * 1000:.0f} ms), {len(refused)} refused (429, "
          f"median {statistics.median(refused) * 1000:.1f} ms); another address's first login "
          f"{other_seconds * 1000:.0f} ms")
    assert set(results) == {401, 429}
    assert len(checked) <= BURST + RATE * SECONDS + 1 and len(refused) >= 20
    assert statistics.median(refused) < min(checked)
    assert retry_afters and all(v.isdigit() and int(v) >= 1 for v in retry_afters)
    assert other.status_code == 200 and "token" in other.json()
    assert cached.status_code == 200 and refreshed.status_code == 200
    assert post_guess.status_code == 429 and post_guess.json() == {"error": "slow_down"}
    assert post_guess.headers["Retry-After"].isdigit()


def test_budget_returns_with_time(service):
    """After the flood, the address gets a check again within 1/rate seconds (plus Retry-After's
    rounding), and a right password from it succeeds and spends nothing."""
    time.sleep(1 / RATE + 0.5)
    reply, _ = get(service, FLOODER, ("bob", USERS["bob"]))
    assert reply.status_code == 200
    for _ in range(3):  # right passwords (cached now) never spend the budget
        assert get(service, FLOODER, ("bob", USERS["bob"]))[0].status_code == 200
    assert get(service, FLOODER, ("bob", "still-wrong"))[0].status_code == 401
