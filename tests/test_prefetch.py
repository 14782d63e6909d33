"""`fna_zoo.runtime.prefetch`: the same outputs in the same order, computed ahead on a second thread."""
from __future__ import annotations

import threading
import time

import pytest

from fna_zoo.runtime.prefetch import PrefetchClock, prefetch


@pytest.mark.parametrize('ahead', [0, 1, 3])
def test_outputs_and_order_are_those_of_a_plain_map(ahead):
    clock = PrefetchClock()
    assert list(prefetch(lambda v: v * v, range(7), ahead, clock)) == [v * v for v in range(7)]
    assert clock.items == 7 and clock.wait_s >= 0
    assert list(prefetch(lambda v: v, [], ahead)) == []


def test_work_and_item_drawing_run_on_the_worker_thread_ahead_of_the_consumer():
    main = threading.get_ident()
    drawn, done = [], []

    def items():
        for i in range(4):
            drawn.append(threading.get_ident())
            yield i

    def work(i):
        done.append(i)
        return threading.get_ident()

    it = prefetch(work, items(), 1)
    assert next(it) != main
    time.sleep(0.2)  # the worker prepares item 1 while the consumer holds item 0, and no further
    assert done == [0, 1]
    assert all(t != main for t in [*drawn, *it])


def test_overlap_hides_the_work_behind_the_consumer():
    def slow(i):
        time.sleep(0.05)
        return i

    for ahead, hidden in ((0, False), (1, True)):
        clock = PrefetchClock()
        for _ in prefetch(slow, range(5), ahead, clock):
            time.sleep(0.1)  # the consumer's own work (the network), twice the pre-processing
        # NOTE: without a thread every item is waited for (0.25 s); with one only the first (0.05 s)
        assert (clock.wait_s < 0.15) is hidden, (ahead, clock.wait_s)


def test_an_error_is_raised_at_its_item_and_an_early_stop_closes_the_source():
    def work(i):
        if i == 2:
            raise ValueError('bad item 2')
        return i

    it = prefetch(work, range(5), 1)
    assert [next(it), next(it)] == [0, 1]
    with pytest.raises(ValueError, match='bad item 2'):
        next(it)
    closed = []

    def items():
        try:
            yield from range(100)
        finally:
            closed.append(True)

    for ahead in (0, 2):
        for v in prefetch(lambda v: v, items(), ahead):
            if v == 3:
                break
    assert closed == [True, True]


def test_a_negative_ahead_is_refused():
    with pytest.raises(ValueError, match='prefetch ahead is -1; expected 0'):
        list(prefetch(lambda v: v, range(3), -1))
