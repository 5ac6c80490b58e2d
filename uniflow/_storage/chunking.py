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
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import blake3

from .. import _testhooks
from .._types import ChunkDigest
from .ingest import InOrder
from .segments import Segments

__all__ = [
    "CHUNK_PARAMS",
    "EMPTY_DIGEST",
    "ChunkRef",
    "FileRecord",
    "KnownFn",
    "ProgressFn",
    "RangesFn",
    "WriteFn",
    "chunk_digest",
    "chunker",
    "for_each_chunk",
    "hash_range",
    "store_chunks",
    "whole_digest",
]

# Picked by measurement (docs/design.md, "Chunk parameters"): ~1 MiB average keeps a
# 1 GiB file near 1,000 objects while a changed tensor costs one or two chunks.
CHUNK_PARAMS = {"avg_size": 1 << 20, "min_size": 256 << 10, "max_size": 4 << 20}

ProgressFn = Callable[[int, int], None]
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
    """BLAKE3-256 of a whole file's bytes (what ``b3sum`` prints), on both cores."""
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()


EMPTY_DIGEST = blake3.blake3(b"").hexdigest()


def chunk_digest(data: memoryview | bytes) -> str:
    """BLAKE3-256 of a chunk's bytes, its name."""
    # Single-threaded per chunk: the callers already spread chunks over a thread pool
    # (BLAKE3 releases the GIL), which measured faster here than nested hashing threads.
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
    refs: list[ChunkRef] = []
    starts: list[int] = []  # offset of each stored chunk
    digests: list[str] = []
    done = 0
    inflight: deque[tuple[Future[ChunkRef], memoryview]] = deque()
    # With digests known already, a range is settled once its chunks are stored (their
    # digests name its bytes): known, or hashed then, a few chunks behind the cutter.
    late = bool(known)
    spans = list(ranges(head, size)) if ranges is not None else []
    # The whole file's digest (and the ranges', unless settled late) are computed from the
    # chunks as they are cut, in order, on threads of their own beside the chunk writers.
    order = InOrder([] if late else spans, bounded=parts is None)
    for part_start, part in zip(parts.starts, parts.parts, strict=True) if parts is not None else ():
        order.feed(part_start, part)
    span_futs: list[Future[str] | str] = []
    try:
        with ThreadPoolExecutor(max_workers=_WRITE_WORKERS, thread_name_prefix="uniflow-put") as pool:

            def drain(limit: int) -> None:
                nonlocal done
                while len(inflight) > limit:
                    fut, piece = inflight[0]
                    ref = fut.result()
                    inflight.popleft()
                    piece.release()
                    refs.append(ref)
                    starts.append(done)
                    digests.append(ref.digest)
                    done += ref.size
                    if late:
                        settle_spans(done)
                    if progress is not None:
                        progress(done, size)

            def settle_spans(stored: int) -> None:  # ranges inside the chunks stored so far
                assert known is not None
                while len(span_futs) < len(spans) and spans[len(span_futs)][1] <= stored:
                    begin, end = spans[len(span_futs)]
                    digest = known(starts, digests, begin, end)
                    span_futs.append(digest or pool.submit(reread, begin, end))

            try:
                for offset, piece in cuts:
                    src = (src_fd, offset) if src_fd is not None else None
                    inflight.append((pool.submit(write, piece, src), piece))
                    if parts is None:
                        order.feed(offset, piece)
                    if not offset and src is not None:
                        _testhooks.point("put-file-read")
                    drain(_MAX_INFLIGHT)
                drain(0)
                if late:
                    settle_spans(size)
                whole, in_order = order.digests()
                late_digests = tuple(f if isinstance(f, str) else f.result() for f in span_futs)
            except BaseException:
                for fut, _ in inflight:
                    fut.cancel()
                for sfut in span_futs:
                    if not isinstance(sfut, str):
                        sfut.cancel()
                raise
    finally:
        order.close()
        cuts.close()
        for _, piece in inflight:
            piece.release()
    return FileRecord(size, whole, tuple(refs), late_digests if late else in_order)


def for_each_chunk(
    chunks: Sequence[ChunkRef], total: int, one: Callable[[ChunkRef, int], int], progress: ProgressFn | None
) -> None:
    """``one(chunk, offset)`` for every chunk of a file (``total`` bytes), on
    :data:`_READ_WORKERS` threads with at most :data:`_READ_WINDOW` chunks ahead of the one
    collected (not ``pool.map``, which makes a future for every chunk up front): memory stays
    flat whatever the file's size. ``one`` returns the bytes it handled, for ``progress``."""
    done = 0
    inflight: deque[Future[int]] = deque()
    with ThreadPoolExecutor(max_workers=_READ_WORKERS, thread_name_prefix="uniflow-get") as pool:

        def collect() -> None:
            nonlocal done
            done += inflight[0].result()
            inflight.popleft()
            if progress is not None:
                progress(done, total)

        try:
            offset = 0
            for c in chunks:
                inflight.append(pool.submit(one, c, offset))
                offset += c.size
                if len(inflight) > _READ_WINDOW:
                    collect()
            while inflight:
                collect()
        except BaseException:
            for fut in inflight:
                fut.cancel()
            raise
