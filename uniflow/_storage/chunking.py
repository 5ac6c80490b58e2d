"""Cutting a file into chunks and storing them, in order; and handing a file's chunks back.

The pipeline of ``ObjectStore.put_file`` / ``put_segments`` (:func:`store_chunks`): FastCDC
cuts the file on the calling thread while a pool of threads hashes and writes the chunks
before it (BLAKE3 and file I/O release the GIL), and :class:`~uniflow._storage.ingest.InOrder`
computes the whole-file digest and the digests of byte ranges (tensors) from the same
chunks in order. What writing a chunk means (pinning, linking, the object files) is the
store's: it passes ``write``. :func:`for_each_chunk` is the bounded parallel loop by which
the store reassembles a file. The records (:class:`ChunkRef`, :class:`FileRecord`) and the
chunk parameters live here too; ``_storage.store`` re-exports them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import blake3

from .. import _testhooks
from .._types import ChunkDigest, ProgressFn
from .ingest import InOrder
from .parallel import bounded_map
from .segments import Segments

__all__ = [
    "CHUNK_PARAMS",
    "EMPTY_DIGEST",
    "ChunkRef",
    "FileRecord",
    "KnownFn",
    "RangesFn",
    "WriteFn",
    "chunk_digest",
    "chunker",
    "for_each_chunk",
    "hash_range",
    "store_chunks",
    "whole_digest",
]

# Why these (docs/design.md, "Chunk parameters"): a 1 MiB average keeps a 1 GiB file near
# 1,000 objects while a changed tensor costs one or two chunks.
CHUNK_PARAMS = {"avg_size": 1 << 20, "min_size": 256 << 10, "max_size": 4 << 20}

#: given the start of a file (at least its header; all of it for ``put_file``) and its size,
#: the ``(begin, end)`` ranges (in file order) whose BLAKE3 digests ``put_file`` also
#: computes, on its threads (e.g. ``_records.tensors.TensorScan``)
RangesFn = Callable[[memoryview, int], Sequence[tuple[int, int]]]
#: given the start offsets and digests of the chunks stored so far and a range inside them,
#: the range's BLAKE3 digest if it is known already (then it is not hashed), else None
#: (e.g. ``_records.tensors.KnownDigests``; false when it knows nothing)
KnownFn = Callable[[Sequence[int], Sequence[str], int, int], str | None]
#: stores one chunk (its bytes; ``(fd, offset)`` where the same bytes are in a file, or None)
WriteFn = Callable[[memoryview, "tuple[int, int] | None"], "ChunkRef"]


_MAX_INFLIGHT = 24
_WRITE_WORKERS = 16
_READ_WORKERS = 2
#: chunks submitted ahead of the one being collected when a file is assembled (each holds
#: one chunk, at most ``max_size`` bytes, while it is verified and written)
_READ_WINDOW = 4


@dataclass(frozen=True)
class ChunkRef:
    """A chunk of a stored file: its BLAKE3-256 digest (hex) and size in bytes."""

    digest: ChunkDigest
    size: int


@dataclass(frozen=True)
class FileRecord:
    """A stored file: its size, its file digest and its ordered chunk list."""

    size: int
    digest: str
    chunks: tuple[ChunkRef, ...]
    #: BLAKE3 hex digests of the byte ranges a ``RangesFn`` asked for (register only)
    range_digests: tuple[str, ...] = ()


def whole_digest(data: memoryview | bytes) -> str:
    """BLAKE3-256 of a whole file's bytes (what ``b3sum`` prints), on BLAKE3's own threads."""
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()


EMPTY_DIGEST = blake3.blake3(b"").hexdigest()


def chunk_digest(data: memoryview | bytes) -> str:
    """BLAKE3-256 of a chunk's bytes, its name."""
    # Single-threaded per chunk: the callers already spread chunks over a thread pool
    # (BLAKE3 releases the GIL); hashing threads nested inside it would only compete.
    return blake3.blake3(data).hexdigest()


def chunker() -> Any:
    from pyfastcdc import FastCDC  # noqa: PLC0415 (native; loaded by the first write only)

    return FastCDC(
        CHUNK_PARAMS["avg_size"], min_size=CHUNK_PARAMS["min_size"], max_size=CHUNK_PARAMS["max_size"]
    )


def hash_range(seg: Segments, begin: int, end: int) -> str:
    """BLAKE3 of the bytes ``[begin, end)`` of the concatenation ``seg``."""
    h = blake3.blake3()
    for piece in seg.slices(begin, end):
        with piece:  # released before the caller's mmap is closed
            h.update(piece)
    return h.hexdigest()


def store_chunks(
    cuts: Generator[tuple[int, memoryview], None, None],
    write: WriteFn,
    size: int,
    head: memoryview,
    progress: ProgressFn | None,
    ranges: RangesFn | None,
    known: KnownFn | None,
    reread: Callable[[int, int], str],
    *,
    src_fd: int | None = None,
    parts: Segments | None = None,
) -> FileRecord:
    """Store the chunks ``cuts`` gives (in order, ``size`` bytes in all; ``head`` is the
    file's start, for ``ranges``) with ``write``, on :data:`_WRITE_WORKERS` threads and at
    most :data:`_MAX_INFLIGHT` chunks ahead; the file's record. ``reread`` hashes a byte
    range again, for the ranges settled once their chunks are stored. With ``src_fd``,
    ``write`` gets ``(src_fd, offset)``: where the same bytes are in the file, to copy them
    in the kernel after hashing the chunk given. With ``parts`` (the bytes, all in the
    caller's memory), the whole-file and range digests are computed from its parts rather
    than from the chunks (no scratch copy is held for them)."""
    # With digests known already, a range is settled once its chunks are stored (their
    # digests name its bytes): known, or hashed then, a few chunks behind the cutter.
    late = known if known else None
    spans = list(ranges(head, size)) if ranges is not None else []
    # The whole file's digest (and the ranges', unless settled late) are computed from the
    # chunks as they are cut, in order, on threads of their own beside the chunk writers.
    order = InOrder([] if late else spans, bounded=parts is None)
    for part_start, part in zip(parts.starts, parts.parts, strict=True) if parts is not None else ():
        order.feed(part_start, part)
    stored: _Stored | None = None
    try:
        with ThreadPoolExecutor(max_workers=_WRITE_WORKERS, thread_name_prefix="uniflow-put") as pool:
            stored = _Stored(pool, size, progress, spans if late else [], late, reread)
            try:
                for offset, piece in cuts:
                    src = (src_fd, offset) if src_fd is not None else None
                    stored.submit(pool.submit(write, piece, src), piece)
                    if parts is None:
                        order.feed(offset, piece)
                    if not offset and src is not None:
                        _testhooks.point("put-file-read")
                    stored.drain(_MAX_INFLIGHT)
                stored.drain(0)
                whole, in_order = order.digests()
                late_digests = stored.span_digests()
            except BaseException:
                stored.cancel()
                raise
    finally:
        order.close()
        cuts.close()
        if stored is not None:
            stored.release()
    return FileRecord(size, whole, tuple(stored.refs), late_digests if late else in_order)


class _Stored:
    """The chunks of one file as they are stored, in order: at most a bounded number of
    writes in flight, each collected in file order (its record appended, its piece
    released, progress told) and, when ranges are settled late, each range whose chunks
    are all stored settled (from ``known`` digests, or hashed again on ``pool``)."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        size: int,
        progress: ProgressFn | None,
        spans: list[tuple[int, int]],
        known: KnownFn | None,
        reread: Callable[[int, int], str],
    ) -> None:
        self.pool, self.size, self.progress = pool, size, progress
        self.spans, self.known, self.reread = spans, known, reread
        self.refs: list[ChunkRef] = []
        self.starts: list[int] = []  # offset of each stored chunk
        self.digests: list[str] = []
        self.done = 0
        self.inflight: deque[tuple[Future[ChunkRef], memoryview]] = deque()
        self.span_futs: list[Future[str] | str] = []

    def submit(self, fut: Future[ChunkRef], piece: memoryview) -> None:
        self.inflight.append((fut, piece))

    def drain(self, limit: int) -> None:
        """Collect stored chunks, oldest first, until at most ``limit`` are in flight."""
        while len(self.inflight) > limit:
            fut, piece = self.inflight[0]
            ref = fut.result()
            self.inflight.popleft()
            piece.release()
            self.refs.append(ref)
            self.starts.append(self.done)
            self.digests.append(ref.digest)
            self.done += ref.size
            self._settle(self.done)
            if self.progress is not None:
                self.progress(self.done, self.size)

    def _settle(self, stored: int) -> None:
        """Settle the ranges that lie inside the first ``stored`` bytes."""
        if self.known is None:
            return
        while len(self.span_futs) < len(self.spans) and self.spans[len(self.span_futs)][1] <= stored:
            begin, end = self.spans[len(self.span_futs)]
            digest = self.known(self.starts, self.digests, begin, end)
            self.span_futs.append(digest or self.pool.submit(self.reread, begin, end))

    def span_digests(self) -> tuple[str, ...]:
        """The settled ranges' digests, in order (after the last :meth:`drain`)."""
        self._settle(self.size)
        return tuple(f if isinstance(f, str) else f.result() for f in self.span_futs)

    def cancel(self) -> None:
        for fut, _ in self.inflight:
            fut.cancel()
        for sfut in self.span_futs:
            if not isinstance(sfut, str):
                sfut.cancel()

    def release(self) -> None:
        for _, piece in self.inflight:
            piece.release()


def for_each_chunk(
    chunks: Sequence[ChunkRef], total: int, one: Callable[[ChunkRef, int], int], progress: ProgressFn | None
) -> None:
    """``one(chunk, offset)`` for every chunk of a file (``total`` bytes), on
    :data:`_READ_WORKERS` threads with at most :data:`_READ_WINDOW` chunks pending
    (:func:`~uniflow._storage.parallel.bounded_map`): memory stays flat whatever the file's
    size. ``one`` returns the bytes it handled, for ``progress``."""

    def located() -> Iterator[tuple[ChunkRef, int]]:
        offset = 0
        for c in chunks:
            yield c, offset
            offset += c.size

    done = 0
    for n in bounded_map(
        lambda item: one(*item), located(), workers=_READ_WORKERS, window=_READ_WINDOW + 1, name="uniflow-get"
    ):
        done += n
        if progress is not None:
            progress(done, total)
