"""The order in which a register's writer threads take their places in a pack
(``_storage.store._InOrder``): ticket order whatever order the threads arrive in, one
waiter woken per ticket done, and a turn that never comes waited for only so long."""

from __future__ import annotations

import random
import threading
import time

import pytest

from uniflow._storage import store
from uniflow._storage.store import _InOrder


def _pieces(n: int) -> list[memoryview]:
    return [memoryview(bytes([i % 256])) for i in range(n)]


def test_places_are_taken_in_ticket_order_from_many_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every writer is woken when its turn comes: none waits out the (here long) limit."""
    monkeypatch.setattr(store, "_TURN_WAIT", 120.0)
    order = _InOrder()
    pieces = _pieces(200)
    issued = list(order.tickets(iter((i, p) for i, p in enumerate(pieces))))
    taken: list[int] = []
    lock = threading.Lock()

    def writer(piece: memoryview) -> None:
        ticket = order.ticket(piece)
        time.sleep(random.random() / 1000)  # arrive in any order
        order.wait(ticket)
        with lock:
            taken.append(ticket)
        order.done(ticket)

    threads = [threading.Thread(target=writer, args=(p,)) for _, p in issued]
    random.shuffle(threads)
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert taken == list(range(200))
    assert time.monotonic() - start < 60  # a missed wake-up would hold a writer 120 s


def test_a_turn_that_never_comes_is_waited_for_only_so_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "_TURN_WAIT", 0.2)
    order = _InOrder()
    pieces = _pieces(3)
    issued = list(order.tickets(iter((i, p) for i, p in enumerate(pieces))))
    tickets = [order.ticket(p) for _, p in issued]
    start = time.monotonic()
    order.wait(tickets[2])  # ticket 0 and 1 never done (their writes were cancelled)
    assert 0.15 < time.monotonic() - start < 5
    order.done(tickets[2])
    order.done(tickets[0])  # late: no waiter is left behind, nothing raises
    assert order._waiting == {}
