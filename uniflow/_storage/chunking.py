"""Cutting a file into chunks and storing them, in order; and handing a file's chunks back.

The pipeline of ``ObjectStore.put_file`` / ``put_segments`` (:func:`store_chunks`): the
chunks come cut (tensor-aligned: ``_storage.cutting.cut_file`` in one pass for a file on
disk, ``cut`` on several threads for bytes in memory) while a pool of threads hashes and
writes the chunks before them (BLAKE3 and file I/O release the GIL). Hashing the chunks is
the one pass over the bytes: the file's identity and its tensors' are Merkle hashes over
the chunk names (``_storage.merkle``), accumulated as the chunks are collected in order.
What writing a chunk means (pinning, the packs) is the store's: it passes ``write``.
:func:`for_each_chunk` is the bounded parallel loop by which the store reassembles a
file, and :func:`range_b3sum` gives the ``b3sum`` of a file or a byte range from its
stored chunks, when asked. The records (:class:`ChunkRef`, :class:`FileRecord`) and the
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
from .merkle import EMPTY_IDENTITY, MerkleBuilder, RangeIdentities
from .parallel import bounded_map

__all__ = [
    "CHUNK_PARAMS",
    "EMPTY_DIGEST",
    "ChunkRef",
    "FileRecord",
    "RangesFn",
    "WriteFn",
    "chunk_digest",
    "chunker",
    "for_each_chunk",
    "range_b3sum",
    "store_chunks",
]

# Why these (docs/design.md, "Chunk parameters"): a 1 MiB average keeps a 1 GiB file near
# 1,000 objects while a changed tensor costs one or two chunks.
CHUNK_PARAMS = {"avg_size": 1 << 20, "min_size": 256 << 10, "max_size": 4 << 20}

#: given the start of a file (at least its header) and its size, the ``(begin, end)``
#: ranges (in file order) that ``put_file`` cuts at and gives identities
#: (e.g. ``_records.tensors.TensorScan``)
RangesFn = Callable[[memoryview, int], Sequence[tuple[int, int]]]
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
    """A stored file: its size, its digest and its ordered chunk list.

    ``digest`` is the file's identity as its manifest records it: the Merkle identity of
    its chunks (``_storage.merkle``) for a file stored by this uniflow or read from a
    format-3 manifest, the BLAKE3 of its bytes (what ``b3sum`` prints) for one read from a
    manifest of format 1 or 2."""

    size: int
    digest: str
    chunks: tuple[ChunkRef, ...]
    #: the Merkle identities of the byte ranges a ``RangesFn`` gave (register only)
    range_digests: tuple[str, ...] = ()


#: the digest of an empty file stored now: the identity of no chunks
EMPTY_DIGEST = EMPTY_IDENTITY


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


def store_chunks(
    cuts: Generator[tuple[int, memoryview], None, None],
    write: WriteFn,
    size: int,
    spans: Sequence[tuple[int, int]],
    progress: ProgressFn | None,
    *,
    src_fd: int | None = None,
) -> FileRecord:
    """Store the chunks ``cuts`` gives (in order, ``size`` bytes in all) with ``write``, on
    :data:`_WRITE_WORKERS` threads and at most :data:`_MAX_INFLIGHT` chunks ahead; the
    file's record. The one pass over the bytes is the chunk names (hashed by ``write``):
    the file's identity is the Merkle hash of its chunks (``_storage.merkle``), and the
    identities of ``spans`` (tensor ranges, in file order) are built from the chunk names
    and, where a span holds only part of a chunk, the BLAKE3 of that part, hashed on the
    same thread as the chunk. With ``src_fd`` (a file read from disk), ``write`` gets
    ``(src_fd, offset)``: where the same bytes are in the file."""
    ids = RangeIdentities(spans)
    stored: _Stored | None = None
    try:
        with ThreadPoolExecutor(max_workers=_WRITE_WORKERS, thread_name_prefix="uniflow-put") as pool:
            stored = _Stored(size, progress, ids)
            try:
                for offset, piece in cuts:
                    src = (src_fd, offset) if src_fd is not None else None
                    runs = ids.partial_runs(offset, len(piece))
                    stored.submit(pool.submit(_write_one, write, piece, src, runs), offset, piece)
                    if not offset and src is not None:
                        _testhooks.point("put-file-read")
                    stored.drain(_MAX_INFLIGHT)
                stored.drain(0)
            except BaseException:
                stored.cancel()
                raise
    finally:
        cuts.close()
        if stored is not None:
            stored.release()
    return FileRecord(size, stored.whole.hexdigest(), tuple(stored.refs), ids.hexdigests())


def _write_one(
    write: WriteFn, piece: memoryview, src: tuple[int, int] | None, runs: list[tuple[int, int]]
) -> tuple[ChunkRef, list[str]]:
    """Store one chunk and hash the parts of it that ``runs`` name (on a writer thread)."""
    ref = write(piece, src)
    return ref, [chunk_digest(piece[lo:hi]) for lo, hi in runs]


class _Stored:
    """The chunks of one file as they are stored, in order: at most a bounded number of
    writes in flight, each collected in file order (its record appended, its name added
    to the file's and the spans' identities, its piece released, progress told)."""

    def __init__(self, size: int, progress: ProgressFn | None, ids: RangeIdentities) -> None:
        self.size, self.progress, self.ids = size, progress, ids
        self.whole = MerkleBuilder()
        self.refs: list[ChunkRef] = []
        self.done = 0
        self.inflight: deque[tuple[Future[tuple[ChunkRef, list[str]]], int, memoryview]] = deque()

    def submit(self, fut: Future[tuple[ChunkRef, list[str]]], offset: int, piece: memoryview) -> None:
        self.inflight.append((fut, offset, piece))

    def drain(self, limit: int) -> None:
        """Collect stored chunks, oldest first, until at most ``limit`` are in flight."""
        while len(self.inflight) > limit:
            fut, offset, piece = self.inflight[0]
            ref, partial = fut.result()
            self.inflight.popleft()
            piece.release()
            self.refs.append(ref)
            self.whole.add(ref.digest, ref.size)
            self.ids.add(offset, ref.digest, ref.size, partial)
            self.done += ref.size
            if self.progress is not None:
                self.progress(self.done, self.size)

    def cancel(self) -> None:
        for fut, _, _ in self.inflight:
            fut.cancel()

    def release(self) -> None:
        for _, _, piece in self.inflight:
            piece.release()


def range_b3sum(
    chunks: Sequence[ChunkRef], read: Callable[[ChunkRef], bytes], begin: int = 0, end: int | None = None
) -> str:
    """BLAKE3 of the bytes ``[begin, end)`` (default: all) of the file made of ``chunks``
    (what ``b3sum`` prints of them), each chunk read (and verified) by ``read``, a few
    chunks ahead on :data:`_READ_WORKERS` threads; only the chunks holding the range are read."""
    total = sum(c.size for c in chunks)
    end = total if end is None else end
    h = blake3.blake3()

    def wanted() -> Iterator[tuple[ChunkRef, int]]:
        offset = 0
        for c in chunks:
            if offset < end and offset + c.size > begin:
                yield c, offset
            offset += c.size

    def one(item: tuple[ChunkRef, int]) -> tuple[bytes, int]:
        return read(item[0]), item[1]

    for data, offset in bounded_map(
        one, wanted(), workers=_READ_WORKERS, window=_READ_WINDOW + 1, name="uniflow-b3"
    ):
        with memoryview(data) as view, view[max(begin - offset, 0) : end - offset] as part:
            h.update(part)
    return h.hexdigest()


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
