"""Tensor-aligned, parallel chunking: where a file's chunks begin and end, cut on several threads.

**The rule** (a pure function of the file's bytes and the byte ranges it is given; the
threads only change who computes it). The ``(begin, end)`` ranges (a tensor file's tensors,
from ``_records.tensors.TensorScan``; none for other files) give *boundaries*: every
``begin`` and ``end`` strictly inside the file. The boundaries split the file into
*regions* (the bytes before the first boundary are the header). :func:`plan` turns them
into :class:`Piece` s, each one chunk or a run of chunks, using the regions' *sizes* only:

1. A region of at least ``min_size`` bytes is *large* and is cut on its own, from its first
   byte, so its chunks are its own bytes and the same bytes give the same chunks wherever
   they sit. In a file with ranges (a tensor file) it is cut every :data:`TENSOR_STEP`
   bytes; in a file without, FastCDC cuts it (``CHUNK_PARAMS``) as if it were a file. If
   its last chunk is shorter than ``min_size`` and the region does not end the file, that
   chunk joins the one before it (a region ending the file keeps it, as a whole file's
   last chunk always has).

   Why fixed steps in a tensor: content-defined cuts find shared bytes that moved, and a
   tensor's bytes do not move inside it. A fine-tune rewrites values in place; a re-save
   moves whole tensors (each is cut from its own first byte, so it keeps its chunks); a
   tensor grown along its first dimension (a vocabulary extended at the end) keeps its
   leading rows at the same offsets, so its leading chunks too. Only bytes inserted in the
   middle of a tensor would dedup better with FastCDC. Steps cost no CPU: on a 1 GiB
   safetensors file FastCDC was about 0.3-0.4 CPU-seconds of a register's 1.4
   (docs/benchmarks.md).
2. A maximal run of consecutive *small* regions (shorter than ``min_size``) holding at
   least ``min_size`` bytes in all is grouped from its end backwards: a group closes as soon
   as it holds ``min_size`` bytes, and the bytes left at the run's front join the first
   group. Each group is one chunk (shorter than ``3 * min_size``). Grouping from the end
   makes the groups depend on the tensors only, never on the header's size, which a
   re-save with other metadata changes.
3. A run of small regions holding fewer than ``min_size`` bytes in all (the header before a
   large first tensor; a bias between two weights) is glued to the front of the next
   large region's first chunk; at the end of the file it is the file's last chunk (which
   may be short), so loading a small last tensor alone fetches that tensor's bytes, not a
   large neighbour's last chunk too; a file of nothing else is one chunk.

So a tensor of at least ``min_size`` bytes whose neighbours are not glued to it is covered
by whole chunks of its own (:func:`covering` finds them: its identity is then the Merkle
hash of those chunks), a smaller tensor shares a chunk with its neighbours, and a file
with no ranges gets exactly the chunks FastCDC cuts from it whole (the chunks of every
earlier release, so new versions dedup against old ones). Every chunk but a file's last is
at least ``min_size`` (above the manifest gate's minimum) and at most
``max_size + 3 * min_size`` bytes.

**The threads.** The file is divided into *units* of at most ``reader.segment`` bytes
(:data:`FILE_SEGMENT` for a file read from disk, :data:`MEMORY_SEGMENT` in memory; smaller,
down to 16 MiB, so that each thread gets about four), each ending at a piece's edge where
one lies in its second half. :func:`cut` runs FastCDC over the units on ``threads`` threads
(pyfastcdc releases the GIL; stepped runs need no cutting) and yields the chunks in file
order on the caller's thread. A
large region that spans units is cut from each unit's start as well as from its own; from
the first chunk start the two cuts share they are the same cut, so the caller's thread
re-cuts only from the region's last chunk start before a unit's edge to that shared start,
and the result is exactly the sequential rule above whatever the units and threads are
(``tests/test_cutting.py`` checks it). The price is work done twice at each edge inside a
region: the chunk the unit before could not decide, the chunks the unit after cut before
the two agree, and the re-cut (about four average chunks in all), which is why units are
as large as memory allows; a piece that ends inside a unit costs nothing extra. Cutting each segment on its
own from fixed offsets would be simpler and save that re-cut, but every segment edge would
then be a forced cut that moves with the bytes before it: 100 bytes inserted at a file's
start would change about two chunks per segment (a few percent of the file) instead of one
or two in all, and opaque files would no longer dedup against the chunks of their earlier
versions.

**Memory.** An in-memory file (a buffer or :class:`~uniflow._storage.segments.Segments`) is
cut from views of its own memory, copied only where a unit's piece or a chunk crosses from
one part into the next or a re-cut crosses a unit's edge (about a chunk). A file is read a
unit at a time by the cutting threads, at most ``threads + 1`` units ahead of the one whose
chunks are being yielded, into buffers reused once no chunk views them.

**Integration.** ``ObjectStore.put_file`` and ``put_segments`` compute the ranges first
(``spans = ranges(head, size)``) and hand ``_storage.chunking.store_chunks``
``cut_file(FileReader(src.size, src.read_into), spans)`` (then ``src.check_unchanged()``)
or ``cut(MemoryReader(seg), spans)``. A tensor's identity is the Merkle hash of its runs
(``_storage.merkle.RangeIdentities``): a run that is a whole chunk is that chunk's name,
a run that is part of a chunk (a small tensor, or a large one whose small neighbour is
glued to it) is the BLAKE3 of its bytes, the only bytes hashed twice. For a file read
from disk the units are small (they are the read buffers), so the work repeated at their
edges is a larger share of the cutting; and a register's writer threads keep the second
core busy hashing and writing anyway. So ``put_file`` cuts with :func:`cut_file`: the
same chunks, every piece cut once from its start on the caller's thread, through windows
that start where the first chunk not yet handed out does, the next read on a thread of
its own while one is cut. :func:`cut` on threads
pays where a core would otherwise wait (bytes in memory, the chunking benchmark).
"""

from __future__ import annotations

import bisect
import contextlib
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from .._errors import UniflowError, UsageError
from .chunking import CHUNK_PARAMS, chunker
from .parallel import BufferPool, bounded_map
from .segments import Segments

__all__ = [
    "FILE_SEGMENT",
    "MEMORY_SEGMENT",
    "TENSOR_STEP",
    "THREADS",
    "FileReader",
    "MemoryReader",
    "Piece",
    "Reader",
    "boundaries",
    "covering",
    "cut",
    "cut_ends",
    "cut_file",
    "plan",
]

#: threads that cut (FastCDC releases the GIL; one per core of a two-core machine)
THREADS = 2
#: the largest unit of parallel work in a file read from disk (each is one read buffer)
FILE_SEGMENT = 16 << 20
#: the largest unit of parallel work in memory (views: larger units re-cut less at their edges)
MEMORY_SEGMENT = 64 << 20
#: units are made smaller, down to this, to give every thread about four
_BALANCE_FLOOR = 16 << 20
_MIN = CHUNK_PARAMS["min_size"]
_MAX = CHUNK_PARAMS["max_size"]
#: the size of the chunks a tensor file's large regions are cut into (the last one of a
#: region aside): the average FastCDC chunk, so a file has as many chunks either way
TENSOR_STEP = CHUNK_PARAMS["avg_size"]
#: how far the caller's thread cuts at a time when it re-cuts a region across a unit's edge
_REACH = 2 << 20
#: how far past a unit's end such a re-cut first reaches (a copy of the bytes around the edge,
#: which then also serves the chunk across the edge)
_PAST = 3 << 19


@dataclass(frozen=True)
class Piece:
    """The chunks covering ``[lo, end)``. With ``run``, ``[begin, end)`` is cut into a run of
    chunks (by FastCDC, or every ``step`` bytes from ``begin`` when ``step`` is set) and the
    bytes ``[lo, begin)`` are glued to its first chunk; else ``[lo, end)`` is one chunk
    (``begin == lo``)."""

    lo: int
    begin: int
    end: int
    run: bool
    #: a last chunk shorter than ``min_size`` joins the one before it (not at a file's end)
    merge_tail: bool = False
    #: the run's chunks are ``step`` bytes each (a tensor file's large region); 0: FastCDC
    step: int = 0

    @property
    def cdc(self) -> bool:
        """True for a run that FastCDC cuts."""
        return self.run and not self.step


def boundaries(size: int, ranges: Sequence[tuple[int, int]]) -> list[int]:
    """The sorted offsets strictly inside a file of ``size`` bytes where a range begins or
    ends. ``ranges`` must lie inside the file, in order, and not overlap."""
    out: list[int] = []
    last = 0
    for begin, end in ranges:
        if not 0 <= begin <= end <= size or begin < last:
            raise UsageError(f"byte range {begin}..{end} is not inside a {size}-byte file, in order")
        last = end
        out.extend(x for x in (begin, end) if 0 < x < size and (not out or out[-1] != x))
    return out


def plan(size: int, ranges: Sequence[tuple[int, int]] = ()) -> list[Piece]:
    """The pieces of a file of ``size`` bytes cut at ``ranges`` (the rule in the module doc)."""
    step = TENSOR_STEP if ranges else 0
    edges = [0, *boundaries(size, ranges), size] if size else []
    regions = [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]
    pieces: list[Piece] = []
    glue: int | None = None  # the start of a short run waiting for the next large region
    i = 0
    while i < len(regions):
        begin, end = regions[i]
        if end - begin >= _MIN:
            lo = begin if glue is None else glue
            pieces.append(Piece(lo, begin, end, True, end != size, step))
            glue, i = None, i + 1
            continue
        j = i
        while j < len(regions) and regions[j][1] - regions[j][0] < _MIN:
            j += 1
        run_begin, run_end = begin, regions[j - 1][1]
        if run_end - run_begin >= _MIN:
            pieces.extend(Piece(a, a, b, False) for a, b in _groups(regions[i:j]))
        elif j < len(regions):
            glue = run_begin
        else:
            pieces.append(Piece(run_begin, run_begin, run_end, False))
        i = j
    return pieces


def _groups(run: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Rule 2: a run of small regions (``min_size`` bytes or more in all) grouped from its
    end backwards, the bytes left at its front joined to the first group."""
    starts: list[int] = []
    acc = 0
    for begin, end in reversed(run):
        acc += end - begin
        if acc >= _MIN:
            starts.append(begin)
            acc = 0
    starts.reverse()
    starts[0] = run[0][0]
    return list(zip(starts, [*starts[1:], run[-1][1]], strict=True))


def covering(ends: Sequence[int], begin: int, end: int) -> range | None:
    """The indexes of the chunks (given by their end offsets, in order) that make up exactly
    the bytes ``[begin, end)``, or None if a chunk crosses either edge (or it is empty)."""
    if begin >= end:
        return None
    i = bisect.bisect_left(ends, begin)
    j = bisect.bisect_left(ends, end)
    starts_ok = begin == 0 or (i < len(ends) and ends[i] == begin)
    if not starts_ok or j >= len(ends) or ends[j] != end:
        return None
    return range(i + 1 if begin else 0, j + 1)


# ---------------------------------------------------------------------- readers
class Reader(Protocol):
    """The bytes being cut: :meth:`load` runs on the cutting threads, :meth:`view` on the
    caller's thread with the units loaded so far (in order; each ``(begin, loaded)``)."""

    size: int
    #: the largest unit of work
    segment: int

    def edges(self) -> Sequence[int]:
        """Offsets where a unit had better end (to avoid copies), sorted."""
        ...

    def buffer(self, n: int) -> memoryview | None:  # noqa: ARG002 (the reader protocol's signature)
        """A buffer of ``n`` bytes to load a unit into (taken on the caller's thread)."""
        ...

    def load(self, begin: int, end: int, buf: memoryview | None) -> memoryview | None:  # noqa: ARG002 (the reader protocol's signature)
        """The bytes ``[begin, end)`` read into ``buf`` (None: the bytes are in memory)."""
        ...

    def view(self, held: Sequence[tuple[int, memoryview | None]], begin: int, end: int) -> memoryview:  # noqa: ARG002 (the reader protocol's signature)
        """The bytes ``[begin, end)``, inside the units ``held`` (``(begin, loaded bytes)``
        in order): a view where one unit holds them all, else a copy."""
        ...


class MemoryReader:
    """The bytes of a buffer or of :class:`Segments` (not owned: the caller releases them),
    never copied but where a view would cross from one part into the next."""

    def __init__(
        self, data: Segments | memoryview | bytes | bytearray, segment: int = MEMORY_SEGMENT
    ) -> None:
        self.seg = data if isinstance(data, Segments) else Segments([data])
        self.size = self.seg.size
        self.segment = segment

    def edges(self) -> Sequence[int]:
        return self.seg.starts

    def buffer(self, n: int) -> memoryview | None:  # noqa: ARG002 (the reader protocol's signature)
        return None

    def load(self, begin: int, end: int, buf: memoryview | None) -> memoryview | None:  # noqa: ARG002 (the reader protocol's signature)
        return None

    def view(self, held: Sequence[tuple[int, memoryview | None]], begin: int, end: int) -> memoryview:  # noqa: ARG002 (the reader protocol's signature)
        parts = self.seg.slices(begin, end)
        if len(parts) == 1:
            return parts[0]
        for p in parts:
            p.release()
        return self.seg.gather(begin, end)


class FileReader:
    """A file of ``size`` bytes read by ``read_into(view, pos)`` (e.g.
    ``FileSource.read_into``, which refuses a file that changed), a unit at a time."""

    def __init__(self, size: int, read_into: Callable[[memoryview, int], None], segment: int = FILE_SEGMENT):
        self.size = size
        self.segment = segment
        self._read_into = read_into
        self._pool = BufferPool(segment, keep=THREADS + 4)

    def edges(self) -> Sequence[int]:
        return ()

    def buffer(self, n: int) -> memoryview | None:  # noqa: ARG002 (the reader protocol's signature)
        # Viewed at once: a pooled buffer is handed out again only once no view of it is alive.
        with memoryview(self._pool.take() if n <= self.segment else bytearray(n)) as whole:
            return whole[:n]

    def load(self, begin: int, end: int, buf: memoryview | None) -> memoryview | None:  # noqa: ARG002 (the reader protocol's signature)
        assert buf is not None
        self._read_into(buf, begin)
        return buf

    def view(self, held: Sequence[tuple[int, memoryview | None]], begin: int, end: int) -> memoryview:  # noqa: ARG002 (the reader protocol's signature)
        i = bisect.bisect_right([b for b, _ in held], begin) - 1
        assert i >= 0, "a unit released too early"
        first, data = held[i]
        assert data is not None
        if end - first <= len(data):
            return data[begin - first : end - first]
        out = memoryview(bytearray(end - begin))
        pos = begin
        while pos < end:  # bounded: each pass copies from the next unit
            first, data = held[i]
            assert data is not None
            n = min(end, first + len(data)) - pos
            out[pos - begin : pos - begin + n] = data[pos - first : pos - first + n]
            pos, i = pos + n, i + 1
        return out


# ---------------------------------------------------------------------- cutting
@dataclass
class _Unit:
    """The bytes ``[begin, end)`` loaded (for a file) and, for every FastCDC piece that
    meets them, where its chunks start when cut from ``max(piece.begin, begin)``: the cuts
    decided by these bytes (all of them when the piece ends here)."""

    begin: int
    end: int
    data: memoryview | None = None
    #: piece index -> sorted chunk starts, the last the piece's end or the first undecided start
    starts: dict[int, list[int]] = field(default_factory=dict)


def _units(size: int, edges: Sequence[int], segment: int) -> list[tuple[int, int]]:
    """Consecutive spans of at most ``segment`` bytes covering ``[0, size)``, each ending at
    one of ``edges`` when one lies in its second half."""
    out: list[tuple[int, int]] = []
    begin = 0
    while begin < size:  # bounded: each pass advances
        limit = min(size, begin + segment)
        k = bisect.bisect_right(edges, limit) - 1
        end = edges[k] if k >= 0 and edges[k] > begin + segment // 2 else limit
        out.append((begin, end))
        begin = end
    return out


def _cut_from(buf: memoryview, base: int, limit: int, final: bool) -> Generator[int, None, None]:
    """The ends of the chunks FastCDC cuts from ``buf`` (the bytes ``[base, limit)``): all
    of them if ``final`` (the piece ends at ``limit``), else those these bytes decide.
    Close it before releasing ``buf``."""
    it = chunker().cut_buf(buf)
    try:
        for c in it:
            e = base + c.offset + c.length
            if e == limit and not final:
                return
            yield e
    finally:
        it = None  # drop pyfastcdc's view of the buffer


def _bounds(p: Piece, ends: Iterable[int]) -> Iterator[tuple[int, int]]:
    """The chunks of run ``p`` whose cut ends ``ends`` gives (cut from ``p.begin``, in
    order): its last chunk merged into the one before when short (``merge_tail``), its
    glued bytes added to its first chunk. A chunk is given as soon as the end after it is
    known (that end tells whether the two merge)."""
    start, pending = p.lo, None
    for e in ends:
        merges = e == p.end and p.merge_tail and pending is not None and e - pending < _MIN
        if pending is not None and not merges:
            yield start, pending
            start = pending
        pending = e
    if pending is not None:
        yield start, pending


def _fixed_bounds(p: Piece) -> Iterator[tuple[int, int]]:
    """The chunks of a piece no FastCDC cuts: a stepped run's (every ``step`` bytes from
    ``begin``, through :func:`_bounds`), or the one chunk ``[lo, end)``."""
    if not p.run:
        return iter([(p.lo, p.end)])
    return _bounds(p, [*range(p.begin + p.step, p.end, p.step), p.end])


class _Cutter:
    """The chunks of one file under a plan, cut on threads and yielded in file order."""

    def __init__(self, reader: Reader, pieces: Sequence[Piece], threads: int) -> None:
        self.reader, self.pieces = reader, pieces
        self.piece_ends = [p.end for p in pieces]
        edges = sorted({*reader.edges(), *(p.lo for p in pieces), reader.size})
        balanced = max(_BALANCE_FLOOR, -(-reader.size // (4 * max(1, threads))))
        self.units = _units(reader.size, edges, max(1, min(reader.segment, balanced)))
        self.unit_begins = [b for b, _ in self.units]
        self.threads = max(1, threads)
        self.held: deque[_Unit] = deque()  # loaded units not yet released, in order
        self.starts: list[dict[int, list[int]]] = []  # each loaded unit's cut starts
        self._loaded: Iterator[_Unit] = iter(())
        #: the last copy of bytes across a unit's edge (its offset): the chunks cut from it are views of it
        self._scratch: tuple[int, memoryview] | None = None

    # -- on the cutting threads
    def _work(self, item: tuple[int, int, memoryview | None]) -> _Unit:
        begin, end, buf = item
        unit = _Unit(begin, end, self.reader.load(begin, end, buf))
        k = bisect.bisect_right(self.piece_ends, begin)  # the first piece ending past ``begin``
        while k < len(self.pieces) and self.pieces[k].begin < end:
            p = self.pieces[k]
            start, limit = max(p.begin, begin), min(p.end, end)
            if p.cdc and start < limit:
                with self.reader.view([(unit.begin, unit.data)], start, limit) as view:
                    unit.starts[k] = [start, *_cut_from(view, start, limit, limit == p.end)]  # all consumed
            k += 1
        return unit

    # -- on the caller's thread
    def _items(self) -> Iterator[tuple[int, int, memoryview | None]]:
        for begin, end in self.units:
            yield begin, end, self.reader.buffer(end - begin)

    def _load_to(self, n: int) -> None:
        """Load units until ``n`` of them are (or all are)."""
        while len(self.starts) < n:  # bounded by the units
            unit = next(self._loaded)
            self.held.append(unit)
            self.starts.append(unit.starts)

    def view(self, begin: int, end: int) -> memoryview:  # noqa: ARG002 (the reader protocol's signature)
        """The bytes ``[begin, end)`` (a view of a unit or of the caller's memory, or a copy)."""
        if self._scratch is not None:
            first, kept = self._scratch
            if first <= begin and end <= first + len(kept):
                return kept[begin - first : end - first]
        self._load_to(bisect.bisect_left(self.unit_begins, end))
        out = self.reader.view([(u.begin, u.data) for u in self.held], begin, end)
        if end > self.units[bisect.bisect_right(self.unit_begins, begin) - 1][1]:
            self._drop_scratch()
            self._scratch = (begin, out)
            return out[:]
        return out

    def _drop_scratch(self) -> None:
        if self._scratch is not None:
            self._scratch[1].release()
            self._scratch = None

    def _release_before(self, pos: int) -> None:
        if self._scratch is not None and self._scratch[0] + len(self._scratch[1]) <= pos:
            self._drop_scratch()
        while self.held and self.held[0].end <= pos:  # bounded by the units held
            unit = self.held.popleft()
            if unit.data is not None:
                unit.data.release()

    def chunks(self) -> Generator[tuple[int, memoryview], None, None]:
        """``(offset, view)`` of every chunk, in file order."""
        self._loaded = bounded_map(
            self._work, self._items(), workers=self.threads, window=self.threads + 1, name="uniflow-cut"
        )
        try:
            for i, p in enumerate(self.pieces):
                bounds = self._piece_chunks(i, p) if p.cdc else _fixed_bounds(p)
                for begin, end in bounds:
                    yield begin, self.view(begin, end)
                    self._release_before(end)
        finally:
            close = getattr(self._loaded, "close", None)
            if close is not None:
                close()
            self._release_before(self.reader.size + 1)

    def _piece_chunks(self, i: int, p: Piece) -> Iterator[tuple[int, int]]:
        return _bounds(p, self._piece_ends(i, p))

    def _piece_ends(self, i: int, p: Piece) -> Iterator[int]:
        """Where the chunks of piece ``i`` end, as cutting it alone from ``p.begin`` gives:
        each unit's cuts from the first start it shares with the cut so far."""
        pos = p.begin
        k = bisect.bisect_right(self.unit_begins, p.begin) - 1
        while pos < p.end:  # bounded: each pass moves to the next unit or advances ``pos``
            self._load_to(k + 1)
            starts = self.starts[k][i]
            j = bisect.bisect_left(starts, pos)
            if j < len(starts) and starts[j] == pos:
                yield from starts[j + 1 :]
                pos = starts[-1]
            elif pos < starts[-1]:
                pos = yield from self._recut(p, pos, starts)
                continue
            k += 1

    def _recut(self, p: Piece, pos: int, starts: list[int]) -> Generator[int, None, int]:
        """Cut piece ``p`` from ``pos`` until a chunk starts at one of ``starts`` or past
        them all; yields each chunk's end, returns where the last ends. Bytes are cut from
        within one unit where they can be (a view), else from a copy reaching 1 MiB past
        the unit's end, else one maximum chunk long."""
        shared, last = set(starts), starts[-1]
        tries = 0
        while pos not in shared and pos < last:  # bounded: each pass cuts a chunk or reaches further
            unit_end = self.units[bisect.bisect_right(self.unit_begins, pos) - 1][1]
            far = (min(unit_end, pos + _REACH), unit_end + _PAST, pos + _MAX + 1)[min(tries, 2)]
            limit = min(p.end, max(far, pos + 1))
            tries += 1
            with self.view(pos, limit) as buf:
                ends = _cut_from(buf, pos, limit, limit == p.end)
                try:
                    for e in ends:
                        yield e
                        pos, tries = e, 0
                        if pos in shared or pos >= last:
                            break
                finally:
                    ends.close()
        return pos


class _ReadAhead:
    """The bytes after the window being cut, read on a thread of its own meanwhile: from the
    window's end into a buffer of ``reader.segment`` bytes after a gap of a quarter of it.
    When the next window is wanted from ``start``, the bytes ``[start, window end)`` (the
    chunks not yet handed on) are copied into the gap, so no byte is read twice."""

    def __init__(self, reader: FileReader) -> None:
        self.reader = reader
        self.gap = reader.segment // 4
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="uniflow-read")
        self._next: tuple[int, memoryview, Future[None]] | None = None  # (offset, buffer, its read)

    def start(self, at: int) -> None:
        """Read the bytes from ``at`` (up to the buffer's end or the file's) in the background."""
        self.drop()
        n = min(self.reader.size - at, self.reader.segment - self.gap)
        if n > 0:
            buf = self.reader.buffer(self.gap + n)
            assert buf is not None
            self._next = (at, buf, self._pool.submit(self._load, at, buf))

    def _load(self, at: int, buf: memoryview) -> None:
        with buf[self.gap :] as rest:
            self.reader.load(at, at + len(rest), rest)

    def take(self, window: tuple[int, memoryview] | None, start: int, end: int) -> memoryview | None:
        """The bytes from ``start`` to at least ``end`` as one view: ``window``'s bytes from
        ``start`` on, then the bytes read ahead after them; None (the read ahead dropped)
        when ``window`` does not end where they begin or they do not reach ``end``."""
        if self._next is None or window is None:
            return None
        at, buf, read = self._next
        first, data = window
        keep = at - start
        if not (
            first <= start
            and at == first + len(data)
            and 0 <= keep <= self.gap
            and end <= at + len(buf) - self.gap
        ):
            self.drop()
            return None
        self._next = None
        read.result()  # raises what the read raised (a file that changed)
        buf[self.gap - keep : self.gap] = data[start - first :]
        out = buf[self.gap - keep :]
        buf.release()
        return out

    def drop(self) -> None:
        """Forget the read ahead (once it is done: its buffer is being written)."""
        if self._next is not None:
            _, buf, read = self._next
            self._next = None
            with contextlib.suppress(UniflowError, OSError):  # a read from disk again will raise it
                read.result()
            buf.release()

    def close(self) -> None:
        self.drop()
        self._pool.shutdown()


class _InOrder:
    """The chunks of a file read from disk under a plan, cut on the caller's thread in one
    pass: each FastCDC piece is cut from its start through windows of ``reader.segment``
    bytes, each starting at the first chunk not yet handed out (:class:`_ReadAhead` reads
    the next while one is cut), so every chunk is a view of one window and no cut is made
    twice (see :func:`cut_file`)."""

    def __init__(self, reader: FileReader, pieces: Sequence[Piece]) -> None:
        self.reader, self.pieces = reader, pieces
        self.window: tuple[int, memoryview] | None = None  # (offset, bytes) of the last read
        self.low = 0  # where the first chunk not yet handed out starts
        self._ahead = _ReadAhead(reader)

    def chunks(self) -> Generator[tuple[int, memoryview], None, None]:
        try:
            for p in self.pieces:
                bounds = _bounds(p, self._ends(p)) if p.cdc else _fixed_bounds(p)
                for begin, end in bounds:
                    yield begin, self._bytes(begin, end)
                    self.low = end
        finally:
            self._ahead.close()
            if self.window is not None:
                self.window[1].release()
                self.window = None

    def _bytes(self, begin: int, end: int) -> memoryview:
        """A view of the bytes ``[begin, end)``: in the last window, else in a new one from
        :attr:`low` (``begin`` is never before it): the read ahead, or a read now."""
        if self.window is not None:
            first, data = self.window
            if first <= begin and end <= first + len(data):
                return data[begin - first : end - first]
        start = min(self.low, begin)
        buf = self._ahead.take(self.window, start, end)
        if buf is None:
            n = max(min(self.reader.size - start, self.reader.segment), end - start)
            buf = self.reader.buffer(n)
            assert buf is not None
            self.reader.load(start, start + n, buf)
        if self.window is not None:
            self.window[1].release()  # the chunks handed out keep their own views of it
        self.window = (start, buf)
        self._ahead.start(start + len(buf))
        return buf[begin - start : end - start]

    def _ends(self, p: Piece) -> Iterator[int]:
        """Where the chunks of FastCDC piece ``p`` end, cut from ``p.begin``: each window
        cut from the last chunk end up to the cut its bytes cannot decide."""
        pos = p.begin
        while pos < p.end:  # bounded: each pass cuts at least one chunk (a window holds a maximum chunk)
            first, data = self.window if self.window is not None else (0, memoryview(b""))
            if first + len(data) < min(p.end, pos + _MAX + 1):
                self._bytes(self.low, min(p.end, pos + _MAX + 1)).release()  # read the next window
                first, data = self.window  # type: ignore[misc]  # set by _bytes
            limit = min(p.end, first + len(data))
            with data[pos - first : limit - first] as view:
                ends = _cut_from(view, pos, limit, limit == p.end)
                try:
                    for e in ends:
                        yield e
                        pos = e
                finally:
                    ends.close()


def cut_file(
    reader: FileReader, ranges: Sequence[tuple[int, int]] = ()
) -> Generator[tuple[int, memoryview], None, None]:
    """:func:`cut` for a file read from disk, on the caller's thread: the same chunks (the
    rule does not depend on who cuts), each piece cut once from its start, the file read
    once, a window ahead on a thread of its own, into buffers of ``reader.segment`` bytes (a
    window starts where the first chunk not yet handed out does: those bytes of the last
    window are copied in front of the bytes read ahead, see :class:`_ReadAhead`).
    For a register, where the writer threads hash and write while this thread cuts, this
    costs less CPU than :func:`cut` on threads, which cuts again at every unit's edge.
    Release each view when done with it (buffers are reused)."""
    return _InOrder(reader, plan(reader.size, ranges)).chunks()


def cut(
    reader: Reader, ranges: Sequence[tuple[int, int]] = (), *, threads: int = THREADS
) -> Generator[tuple[int, memoryview], None, None]:
    """``(offset, view)`` of every chunk of ``reader``'s bytes cut at ``ranges`` (see the
    module doc), in file order, FastCDC running on ``threads`` threads over units of at
    most ``reader.segment`` bytes. Release each view when done with it (buffers are reused)."""
    return _Cutter(reader, plan(reader.size, ranges), threads).chunks()


def cut_ends(reader: Reader, ranges: Sequence[tuple[int, int]] = (), *, threads: int = THREADS) -> list[int]:
    """Where the chunks :func:`cut` gives end, in order (for :func:`covering`)."""
    out: list[int] = []
    for offset, view in cut(reader, ranges, threads=threads):
        out.append(offset + len(view))
        view.release()
    return out
