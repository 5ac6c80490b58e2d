"""A file's bytes held as a sequence of buffers instead of one: what register streams when it
stores an in-memory model (a safetensors header, then each tensor's own memory), never
writing the whole file anywhere.

:meth:`Segments.cuts` gives exactly the content-defined chunks that cutting the
concatenation as one buffer gives (FastCDC decides each cut from the bytes between the
chunk's start and the cut only), while copying only around the places where a chunk
crosses from one buffer into the next: a chunk inside one buffer is a view of that buffer,
a chunk across buffers a view of a small scratch copy (at most two maximum chunk sizes,
released with its last chunk). :meth:`Segments.slices` gives the views covering any byte
range, for hashing a range (a tensor, the whole file) without joining it.
"""

from __future__ import annotations

import bisect
from collections.abc import Generator, Iterable
from typing import Any

__all__ = ["Segments", "cut_decided"]

#: how far past the end of a part a chunk crossing into the next is first cut from a copy
#: (a chunk averages about 1.25 MiB; the rare longer one is cut again from a longer copy)
_SCRATCH_PAST = 1 << 20


class Segments:
    """The concatenation of ``parts`` (byte buffers, empty ones dropped), read-only."""

    def __init__(self, parts: Iterable[memoryview | bytes | bytearray]) -> None:
        self.parts: list[memoryview] = []
        self.starts: list[int] = []
        pos = 0
        for p in parts:
            view = memoryview(p)
            if view.ndim != 1 or view.itemsize != 1 or not view.c_contiguous:
                view = view.cast("B")  # raises for a non-contiguous buffer
            if len(view):
                self.parts.append(view)
                self.starts.append(pos)
                pos += len(view)
        self.size = pos

    def _index(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset) - 1

    def slices(self, begin: int, end: int) -> list[memoryview]:
        """Views (in order) of the parts covering ``[begin, end)``; release them after use."""
        out: list[memoryview] = []
        if begin >= end:
            return out
        i = self._index(begin)
        while i < len(self.parts) and self.starts[i] < end:
            start = self.starts[i]
            lo, hi = max(begin - start, 0), min(end - start, len(self.parts[i]))
            out.append(self.parts[i][lo:hi])
            i += 1
        return out

    def gather(self, begin: int, end: int) -> memoryview:
        """The bytes of ``[begin, end)`` in one buffer (a copy)."""
        buf = bytearray(end - begin)
        out = memoryview(buf)
        pos = 0
        for s in self.slices(begin, end):
            with s:
                out[pos : pos + len(s)] = s
                pos += len(s)
        return out

    def cuts(self, chunker: Any) -> Generator[tuple[int, memoryview], None, None]:
        """``(offset, bytes)`` of every chunk ``chunker`` (a ``pyfastcdc.FastCDC``) cuts from
        the concatenation, in order.

        A cut is kept only when the chunker saw the bytes that decide it: it is cut from the
        part it starts in (no copy) unless it ends where that part ends; such a chunk, which
        runs into the following part(s), is cut again from a scratch copy starting where it
        starts and reaching 1 MiB past the part's end, or one maximum chunk size if that
        does not hold it."""
        size, top = self.size, int(chunker.max_size)
        pos = 0
        while pos < size:
            i = self._index(pos)
            part_end = self.starts[i] + len(self.parts[i])
            pos = yield from cut_decided(chunker, self.parts[i][pos - self.starts[i] :], pos, part_end, size)
            if pos >= size:
                break
            reach = part_end - pos + _SCRATCH_PAST
            while True:  # at most twice: a chunk is never longer than ``top``
                limit = min(size, pos + reach)
                start = pos
                pos = yield from cut_decided(chunker, self.gather(pos, limit), pos, limit, size)
                if pos > start:
                    break
                reach = top + 1

    def __len__(self) -> int:
        return self.size

    def release(self) -> None:
        """Release this object's views of the parts (a caller's mmap can then be closed,
        even while a traceback still references this object)."""
        for p in self.parts:
            p.release()


def cut_decided(
    chunker: Any, buf: memoryview, base: int, limit: int, size: int
) -> Generator[tuple[int, memoryview], None, int]:
    """Yield ``(offset, view)`` for the chunks of ``buf`` (the bytes ``[base, limit)`` of a
    file of ``size`` bytes) whose cut the chunker could decide from them: all of them at the
    end of the file, else all but one ending at ``limit`` (decided by bytes past it, to be
    cut again with them). Returns where the next chunk starts. ``buf`` is released."""
    pos = base
    try:
        it = chunker.cut_buf(buf)
        for c in it:
            end = base + c.offset + c.length
            if end == limit and limit != size:
                break
            yield base + c.offset, buf[c.offset : c.offset + c.length]
            pos = end
    finally:
        it = None  # drop pyfastcdc's own view of the buffer first
        buf.release()
    return pos
