"""The one bounded thread-pool loop and the reusable buffers (uniflow._storage.parallel)."""

from __future__ import annotations

import threading
import time

import pytest

from uniflow._storage.parallel import BufferPool, ThreadBuffers, bounded_map


def test_results_come_in_item_order_whatever_finishes_first() -> None:
    def slow_first(i: int) -> int:
        time.sleep(0.02 if i == 0 else 0)
        return i * i

    assert list(bounded_map(slow_first, range(20), workers=4, window=8, name="t")) == [
        i * i for i in range(20)
    ]


def test_never_more_than_window_calls_pending() -> None:
    lock = threading.Lock()
    pulled = 0
    collected = 0
    worst = 0

    def items():  # counts what the loop took from the caller
        nonlocal pulled
        for i in range(100):
            pulled += 1
            yield i

    for _ in bounded_map(lambda i: i, items(), workers=3, window=5, name="t"):
        with lock:
            collected += 1
            worst = max(worst, pulled - collected)
    assert collected == 100
    assert worst <= 5


def test_an_error_is_raised_at_its_turn_and_the_rest_is_cancelled() -> None:
    started: list[int] = []

    def fn(i: int) -> int:
        started.append(i)
        if i == 3:
            raise ValueError("three")
        return i

    got: list[int] = []
    with pytest.raises(ValueError, match="three"):
        for r in bounded_map(fn, range(1000), workers=2, window=4, name="t"):
            got.append(r)
    assert got == [0, 1, 2]
    assert len(started) < 20  # the loop stopped pulling items: nothing ran past the window


def test_a_buffer_is_not_handed_out_while_a_view_of_it_lives() -> None:
    pool = BufferPool(1024, keep=4)
    first = pool.take()
    view = memoryview(first)
    second = pool.take()
    assert second is not first  # first is still viewed
    view.release()
    del second
    assert pool.take() is first  # free again once its view is released
    assert len(first) == 1024  # the probe leaves its size alone


def test_thread_buffers_are_per_thread_and_grow() -> None:
    buffers = ThreadBuffers(16)
    a = buffers.get(4)
    assert len(a) == 16 and buffers.get(8) is a
    assert len(buffers.get(100)) == 100
    other: list[bytearray] = []
    t = threading.Thread(target=lambda: other.append(buffers.get(4)))
    t.start()
    t.join()
    assert other[0] is not buffers.get(4)
