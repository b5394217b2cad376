"""tests/support/background.repeating: the loop the Swarm and storage tests run pulls in."""

import time

from tests.support.background import repeating


def test_each_thread_numbers_its_calls_and_all_stop_with_the_block():
    """Every thread calls the step with its own number and a count from 0 up; the results are
    collected as they come; no call starts after the block ends."""
    with repeating(lambda thread, n: (thread, n), threads=2, interval=0.01) as results:
        time.sleep(0.2)
    count = len(results)
    for thread in (0, 1):
        ns = [n for t, n in results if t == thread]
        assert ns and ns == list(range(len(ns)))
    time.sleep(0.05)
    assert len(results) == count


def test_the_block_ends_even_when_it_raises():
    """An exception in the block still stops and joins the threads, and propagates."""
    try:
        with repeating(lambda *_: None, interval=0.01) as results:
            time.sleep(0.05)
            raise RuntimeError("boom")
    except RuntimeError as error:
        assert str(error) == "boom"
    count = len(results)
    time.sleep(0.05)
    assert count > 0 and len(results) == count
