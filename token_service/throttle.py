"""Throttling of password checks: per-address failure budgets and a fair bound on bcrypt runs.

:class:`FailureBudget` keeps one token bucket per client address (``rate`` failures a second,
at most ``burst`` saved up; by default one failure every 5 s and 3 saved up, so one address's
wrong-password flood runs bcrypt about once every 5 s). A password check *takes* a token before
bcrypt runs and gives it back when the password was right, so only failures spend the budget; an address with no token
left is refused at once (429 with ``Retry-After``) without running bcrypt. The table holds at
most ``max_addresses`` buckets; the least recently used one is dropped first (an address that
comes back starts with a full budget). The clock is injected, so tests need no sleeps.

:class:`FairSlots` bounds how many bcrypt checks run at once (the cores' worth) and admits the
waiting ones in arrival order, so a check from an address with budget waits behind at most the
checks that arrived before it.

The address is the WSGI ``REMOTE_ADDR``: behind nginx, the value nginx sets in
``X-Forwarded-For`` (its ``$remote_addr``, overwriting what a client sent), applied by waitress
with :data:`token_service.config.SERVER_OPTIONS`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Iterator

MAX_ADDRESSES = 16384


class FailureBudget:
    """Per-address token buckets of failed password checks; thread-safe."""

    def __init__(self, rate: float = 0.2, burst: int = 3, max_addresses: int = MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1 or max_addresses < 1:
            raise ValueError("rate must be > 0, burst and max_addresses >= 1")
        self.rate, self.burst, self.max_addresses = float(rate), float(burst), max_addresses
        self._clock = clock
        self._buckets: "OrderedDict[str, tuple[float, float]]" = OrderedDict()  # address -> (tokens, at)
        self._lock = threading.Lock()

    def _level(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (self.burst, now))
        return min(self.burst, tokens + max(0.0, now - at) * self.rate)

    def _store(self, address: str, tokens: float, now: float) -> None:
        self._buckets[address] = (tokens, now)
        self._buckets.move_to_end(address)
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)

    def take(self, address: str) -> float:
        """Spend one token for a check about to run: 0.0 when taken, else the seconds until the
        address has one again (nothing taken: refuse the request)."""
        with self._lock:
            now = self._clock()
            tokens = self._level(address, now)
            if tokens < 1.0:
                self._store(address, tokens, now)
                return (1.0 - tokens) / self.rate
            self._store(address, tokens - 1.0, now)
            return 0.0

    def refund(self, address: str) -> None:
        """Give back the token of a check that succeeded."""
        with self._lock:
            now = self._clock()
            self._store(address, min(self.burst, self._level(address, now) + 1.0), now)

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


class FairSlots:
    """At most ``slots`` holders at once; waiters are admitted first come, first served."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.slots = slots
        self._free = slots
        self._next_ticket = 0
        self._serving = 0
        self._cond = threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._cond.wait_for(lambda: ticket == self._serving and self._free > 0)
            self._serving += 1
            self._free -= 1
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._free += 1
                self._cond.notify_all()
