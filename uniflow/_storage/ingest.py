"""Reading a file that is being stored, and hashing it in order.

A file handed to ``ObjectStore.put_file`` belongs to the user and may change while it is
read: a training job still writing its checkpoint, a copy in progress, a hostile file system.
So it is never mapped (a mapping of a file truncated meanwhile kills the process with
SIGBUS); :class:`FileSource` reads it a window at a time into this process's own memory,
and every chunk is hashed from those bytes and appended to the register's pack from the
same bytes (``ObjectStore.batch``), so a stored chunk always holds what its name says. The
file's stamp (size, mtime, ctime, inode) is compared before and after, and a byte past the
recorded end means it grew: a file that changed is refused, never recorded as a mix of its
old and new bytes (the chunks already appended are garbage for gc).

:class:`InOrder` computes the digests that need the file's bytes in order (the whole file,
and the byte ranges of its tensors) from the chunks themselves as they are cut, each on a
thread of its own, with at most a few chunks queued: what they name is exactly what the
chunks hold.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import blake3

from .. import _testhooks
from .._errors import InvalidPathError
from .parallel import BufferPool
from .segments import cut_decided

__all__ = ["WINDOW", "FileSource", "InOrder", "fd_digest", "fd_stamp", "read_full"]

#: bytes read from a file at a time (more than the longest chunk; a few are held at once)
WINDOW = 8 << 20
#: buffers kept for reuse (more are made, and freed, if the writers fall that far behind)
_POOL = 16
#: pieces queued for each in-order hasher before the cutter waits for it
_BACKLOG = 8


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def fd_stamp(fd: int) -> tuple[int, ...]:
    """What changes when the file open as ``fd`` is written, truncated or replaced in place
    (device, inode, size, mtime, ctime; Linux 6.13 and later give a change a new ctime even
    within one clock tick once the old one was read)."""
    return _stamp(os.fstat(fd))


def _pread_into(fd: int, view: memoryview, pos: int) -> int:
    preadv = getattr(os, "preadv", None)
    if preadv is not None:
        return int(preadv(fd, [view], pos))
    data = os.pread(fd, len(view), pos)  # platforms without preadv: one copy more
    view[: len(data)] = data
    return len(data)


def fd_digest(fd: int, size: int) -> str | None:
    """BLAKE3 of the open file ``fd`` (what ``b3sum`` prints), which should hold ``size``
    bytes; None if it holds fewer or more (cut short or grown meanwhile: the caller's copy is
    damaged). Read, never mapped, so a file truncated meanwhile cannot kill the process; the
    next window is read on a thread of its own while this one is hashed with BLAKE3's
    threads, so reading overlaps hashing (``docs/benchmarks.md`` compares it with a mapping)."""
    _testhooks.point("whole-digest")
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    bufs = [memoryview(bytearray(min(WINDOW, size))) for _ in range(2 if size > WINDOW else 1)]

    def read(i: int, pos: int) -> bool:
        with bufs[i][: min(WINDOW, size - pos)] as view:
            return read_full(fd, view, pos) == len(view)

    with ThreadPoolExecutor(1, thread_name_prefix="uniflow-read") as reader:
        pos, i = 0, 0
        ahead = reader.submit(read, 0, 0) if size else None
        while ahead is not None:  # bounded: each pass advances by a window
            if not ahead.result():
                return None
            n = min(WINDOW, size - pos)
            ahead = reader.submit(read, 1 - i, pos + n) if pos + n < size else None
            with bufs[i][:n] as view:
                h.update(view)
            pos, i = pos + n, (i + 1) % len(bufs)
    return None if os.pread(fd, 1, size) else h.hexdigest()


def read_full(fd: int, view: memoryview, pos: int = 0) -> int:
    """Read the bytes of ``fd`` at ``pos`` into ``view`` until it is full or the file ends
    (the descriptor's own position is left alone); how many bytes were read."""
    got = 0
    while got < len(view):  # bounded: each read makes progress or ends the loop
        with view[got:] as rest:
            n = _pread_into(fd, rest, pos + got)
        if n == 0:
            break
        got += n
    return got


class FileSource:
    """A regular file open for reading (``fd``, not owned), read in windows; see the module doc."""

    def __init__(self, fd: int, path: Path) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidPathError(f"cannot store {path}: not a regular file")
        self.fd, self.path, self.size = fd, path, st.st_size
        self._stamp = _stamp(st)

    def changed(self) -> InvalidPathError:
        return InvalidPathError(
            f"{self.path} changed while it was being registered (is something still writing it?); "
            "register it again once it is complete"
        )

    def read_into(self, view: memoryview, pos: int) -> None:
        """Fill ``view`` with the bytes at ``pos``; a file now shorter than that is changed."""
        if read_full(self.fd, view, pos) < len(view):
            raise self.changed()

    def head(self, n: int) -> memoryview:
        """The file's first ``n`` bytes (at most its size), for a header parser."""
        view = memoryview(bytearray(min(n, self.size)))
        self.read_into(view, 0)
        return view

    def cuts(self, chunker: Any) -> Generator[tuple[int, memoryview], None, None]:
        """``(offset, view)`` of every chunk ``chunker`` (a ``pyfastcdc.FastCDC`` whose chunks
        are shorter than :data:`WINDOW`) cuts from the file, the same as cutting it whole.

        The file is read a window at a time into buffers reused once nothing holds a view of
        them (the chunks cut from a window keep it while they are written and hashed). A
        window ends in a chunk the cut of which depends on bytes past it; the next window
        starts where that chunk starts, so those bytes are read again rather than copied."""
        pool = BufferPool(WINDOW, keep=_POOL)
        pos = 0
        while pos < self.size:  # bounded: each window cuts at least one chunk
            end = min(self.size, pos + WINDOW)
            with memoryview(pool.take()) as whole:
                view = whole[: end - pos]
            self.read_into(view, pos)
            start = pos
            pos = yield from cut_decided(chunker, view, pos, end, self.size)
            if pos == start:
                raise ValueError(f"a chunk longer than the read window ({WINDOW} bytes)")

    def hash_range(self, begin: int, end: int) -> str:
        """BLAKE3 of the bytes ``[begin, end)``, read again (see :meth:`check_unchanged`)."""
        h = blake3.blake3()
        with memoryview(bytearray(min(WINDOW, max(end - begin, 0)))) as buf:
            pos = begin
            while pos < end:  # bounded: each pass advances by a window
                n = min(len(buf), end - pos)
                with buf[:n] as part:
                    self.read_into(part, pos)
                    h.update(part)
                pos += n
        return h.hexdigest()

    def check_unchanged(self) -> None:
        """Raise :meth:`changed` unless the file is as it was when opened: the same stamp and
        nothing past its end. Called once every byte that was stored has been read."""
        if _stamp(os.fstat(self.fd)) != self._stamp or os.pread(self.fd, 1, self.size):
            raise self.changed()


class InOrder:
    """BLAKE3 of a whole file and of ``spans`` (``(begin, end)`` byte ranges in file order),
    fed the file's bytes in order by :meth:`feed`; :meth:`digests` waits for the results.
    The whole file and the spans are hashed on one thread each, beside the chunk writers."""

    def __init__(self, spans: Sequence[tuple[int, int]], *, bounded: bool = True) -> None:
        self.whole = blake3.blake3()
        self.spans = list(spans)
        self._hashers = [blake3.blake3() for _ in self.spans]
        self._first = 0  # the first span not wholly fed yet
        #: False when what is fed is the caller's own memory (nothing held but views of it)
        self._bounded = bounded
        self._pools = [ThreadPoolExecutor(1, thread_name_prefix="uniflow-whole")]
        if self.spans:
            self._pools.append(ThreadPoolExecutor(1, thread_name_prefix="uniflow-spans"))
        self._pending: deque[Future[None]] = deque()

    def feed(self, start: int, view: memoryview) -> None:
        """Queue the bytes ``view`` found at ``start`` (every byte once, in file order; the
        caller may release ``view`` at once)."""
        self._pending.append(self._pools[0].submit(self._update_whole, view[:]))
        if self.spans:
            self._pending.append(self._pools[1].submit(self._update_spans, start, view[:]))
        while self._bounded and len(self._pending) > _BACKLOG * len(self._pools):  # bounded by the queue
            self._pending.popleft().result()

    def _update_whole(self, view: memoryview) -> None:
        with view:
            self.whole.update(view)

    def _update_spans(self, start: int, view: memoryview) -> None:
        end = start + len(view)
        with view:
            i = self._first
            while i < len(self.spans) and self.spans[i][0] < end:  # bounded by the spans
                begin, stop = self.spans[i]
                if stop > start:
                    with view[max(begin, start) - start : min(stop, end) - start] as part:
                        self._hashers[i].update(part)
                i += 1
        while self._first < len(self.spans) and self.spans[self._first][1] <= end:
            self._first += 1

    def digests(self) -> tuple[str, tuple[str, ...]]:
        """The whole file's digest and the spans' (in order), once everything fed is hashed."""
        while self._pending:  # bounded by the queue
            self._pending.popleft().result()
        return self.whole.hexdigest(), tuple(h.hexdigest() for h in self._hashers)

    def close(self) -> None:
        """Stop the threads (after :meth:`digests`, or abandoning the rest on an error)."""
        for fut in self._pending:
            fut.cancel()
        for pool in self._pools:
            pool.shutdown(wait=True)
