"""token_service/throttle.py: per-address failure budgets (time injected, no sleeps) and the
fair bound on concurrent bcrypt checks."""

from __future__ import annotations

import threading

import pytest

from token_service.throttle import FailureBudget, FairSlots, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_one_failure_a_second():
    """An address may fail `burst` times at once, then once per 1/rate seconds; the refusal says
    how long to wait."""
    clock = Clock()
    budget = FailureBudget(rate=1, burst=5, clock=clock)
    assert [budget.take("a") for _ in range(5)] == [0.0] * 5
    assert budget.take("a") == pytest.approx(1.0)
    clock.now += 0.25
    assert budget.take("a") == pytest.approx(0.75)
    clock.now += 0.75
    assert budget.take("a") == 0.0
    assert budget.take("a") == pytest.approx(1.0)
    clock.now += 100
    assert [budget.take("a") for _ in range(6)][-2:] == [0.0, pytest.approx(1.0)]  # refills to burst only


def test_refused_attempts_do_not_spend_budget():
    """Being refused costs nothing: an address hammering while out of budget gets its next
    check after 1/rate seconds, not later."""
    clock = Clock()
    budget = FailureBudget(rate=2, burst=1, clock=clock)
    assert budget.take("a") == 0.0
    for _ in range(100):
        assert budget.take("a") > 0
    clock.now += 0.5
    assert budget.take("a") == 0.0


def test_successes_are_refunded_and_addresses_are_independent():
    """A check that succeeded gives its token back; one address's failures leave another's
    budget whole."""
    clock = Clock()
    budget = FailureBudget(rate=1, burst=2, clock=clock)
    for _ in range(10):
        assert budget.take("good") == 0.0
        budget.refund("good")
    assert budget.take("bad") == 0.0 and budget.take("bad") == 0.0 and budget.take("bad") > 0
    assert budget.take("good") == 0.0 and budget.take("good") == 0.0
    budget.refund("bad")
    budget.refund("bad")
    budget.refund("bad")
    assert [budget.take("bad") for _ in range(3)][-1] > 0  # a refund never exceeds the burst


def test_table_is_bounded_least_recently_used_first():
    """At most max_addresses buckets are kept; the least recently used one is dropped."""
    clock = Clock()
    budget = FailureBudget(rate=1, burst=1, max_addresses=3, clock=clock)
    for address in ("a", "b", "c"):
        budget.take(address)
    assert budget.take("a") > 0  # a is now the most recently used
    budget.take("d")  # drops b
    assert len(budget) == 3
    assert budget.take("b") == 0.0  # b starts over with a full budget; drops c
    assert budget.take("a") > 0 and budget.take("d") > 0
    for i in range(1000):
        budget.take(f"10.0.{i // 256}.{i % 256}")
    assert len(budget) == 3


def test_bad_settings_and_retry_after():
    """Non-positive settings are refused; Retry-After is whole seconds, at least 1."""
    for kwargs in ({"rate": 0}, {"burst": 0}, {"max_addresses": 0}):
        with pytest.raises(ValueError):
            FailureBudget(**kwargs)
    with pytest.raises(ValueError):
        FairSlots(0)
    assert [retry_after(s) for s in (0.01, 1.0, 1.2, 7.9)] == ["1", "1", "2", "8"]


def test_fair_slots_bound_and_order():
    """No more than `slots` holders at once, and waiters are admitted in arrival order."""
    slots = FairSlots(2)
    admitted: list[int] = []
    holding = [0]
    peak = [0]
    lock = threading.Lock()
    gate = threading.Event()

    def holder(i: int, arrived: threading.Event) -> None:
        with slots.slot():
            with lock:
                admitted.append(i)
                holding[0] += 1
                peak[0] = max(peak[0], holding[0])
            arrived.set()
            gate.wait(10)
            with lock:
                holding[0] -= 1

    threads = []
    for i in range(8):
        arrived = threading.Event()
        t = threading.Thread(target=holder, args=(i, arrived))
        t.start()
        threads.append(t)
        if i < 2:
            assert arrived.wait(5)
        else:  # wait until thread i is queued (holds its ticket) before starting the next
            for _ in range(500):
                if slots._next_ticket == i + 1:  # noqa: SLF001 - the ticket counter shows arrival
                    break
                threading.Event().wait(0.002)
    assert admitted == [0, 1]
    gate.set()
    for t in threads:
        t.join(10)
    assert admitted == list(range(8)) and peak[0] == 2
