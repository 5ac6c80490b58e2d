"""A file's bytes held as a sequence of buffers instead of one: what register streams when it
stores an in-memory model (a safetensors header, then each tensor's own memory), never
writing the whole file anywhere.

``_storage.cutting.MemoryReader`` cuts them. :meth:`Segments.slices` gives the views
covering any byte range, for hashing a range (a tensor, the whole file) without joining it;
:meth:`Segments.gather` copies a range into one buffer.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

__all__ = ["Segments"]


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

    def __len__(self) -> int:
        return self.size

    def release(self) -> None:
        """Release this object's views of the parts (a caller's mmap can then be closed,
        even while a traceback still references this object)."""
        for p in self.parts:
            p.release()
