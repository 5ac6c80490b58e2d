"""Bounded concurrency: the shared thread-pool loop and reusable buffers of the byte paths.

- :func:`bounded_map` runs a function over items on a few threads and yields the results in
  item order, with at most ``window`` calls submitted and not yet collected. Unlike
  ``Executor.map`` it never makes a future for every item up front, so memory and open
  descriptors stay flat whatever the number of chunks. Leaving the loop early (an error, a
  ``break``, a closed generator) cancels what has not started and waits for what has.
- :class:`ThreadBuffers` gives each worker thread one reusable scratch buffer, grown on
  demand, so reading a chunk does not fault in fresh pages every time.
- :class:`BufferPool` hands out equal-sized buffers again once nothing views them.

``chunking.store_chunks`` keeps a pool of its own: its writes and the late hashing of tensor
ranges share one executor, collected in file order by ``chunking._Stored``.
"""

from __future__ import annotations

import mmap
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["BufferPool", "ThreadBuffers", "bounded_map"]

A = TypeVar("A")
R = TypeVar("R")


def bounded_map(
    fn: Callable[[A], R], items: Iterable[A], *, workers: int, window: int, name: str
) -> Generator[R, None, None]:
    """``fn(item)`` for every item on ``workers`` threads (named ``name``), results yielded
    in the order of ``items``; at most ``window`` (at least 1) calls are pending at once.

    ``items`` is consumed lazily on the caller's thread, so it may be a generator that does
    work of its own per item. An exception from ``fn`` is raised at its item's turn."""
    window = max(1, window)
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=name) as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:  # bounded: one future collected per pass
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


class ThreadBuffers:
    """One scratch ``bytearray`` per thread, reused for every call on that thread and grown
    (never shrunk) to the largest size asked for, at least ``minimum`` bytes."""

    def __init__(self, minimum: int = 0) -> None:
        self._local = threading.local()
        self._minimum = minimum

    def get(self, size: int) -> bytearray:
        """This thread's buffer, at least ``size`` bytes long (slice a view of what you use)."""
        buf: bytearray | None = getattr(self._local, "buf", None)
        if buf is None or len(buf) < size:
            buf = bytearray(max(size, self._minimum))
            self._local.buf = buf
        return buf


def _unviewed(buf: mmap.mmap) -> bool:
    """True when no memoryview of ``buf`` is alive: a mapping with a live view refuses to be
    resized (``BufferError``). The probe resizes it to its own size (``mremap`` to the same
    length: nothing moves)."""
    try:
        buf.resize(len(buf))
    except BufferError:
        return False
    return True


def _anonymous(size: int) -> mmap.mmap:
    """``size`` bytes of fresh anonymous memory (at least one byte): zero pages the kernel
    fills in on first touch, by whatever thread first writes them (a read into the buffer
    faults its pages in without holding the GIL), never set to zero byte by byte first as a
    new ``bytearray`` is. Private, so its pages count as this process's anonymous memory."""
    return mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


class BufferPool:
    """Buffers of ``size`` bytes (anonymous mappings: :func:`_anonymous`), handed out again
    once no view of them is alive (views of a buffer are what the chunks cut from it travel
    as); at most ``keep`` are kept for reuse, the others unmapped once their last view is
    released."""

    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self._keep = keep
        self._buffers: list[mmap.mmap] = []

    def take(self) -> mmap.mmap:
        """A buffer nothing views now: a kept one when one is free, else a new one."""
        for buf in self._buffers:
            if _unviewed(buf):
                return buf
        buf = _anonymous(self.size)
        if len(self._buffers) < self._keep:
            self._buffers.append(buf)
        return buf
