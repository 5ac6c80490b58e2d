"""Packs streamed to an object store: each piece read, checked and sent, never a whole pack
held in memory.

A pack pushed to a remote that takes streamed uploads (S3: :class:`~.blobstore.PackStreams`)
is described by an :class:`Outgoing`: its index and its pieces (the header, each chunk, the
tail), which tile it, and how to read one piece into a buffer, checked (a chunk hashed and
compared with its name; a damaged one is an integrity error). It is sent from
:class:`PieceBody` objects: seekable binary files over a run of pieces that read one piece at
a time into their own buffer. The HTTP client may read a body more than once (to sign its
bytes, to checksum them, to send them); every pass reads and checks again, so every byte
sent was checked in the pass that sent it.

A pack of up to :data:`MULTIPART_MIN` bytes (every pack a push writes: about 80 MiB) is one
PUT of a streamed body; a failed PUT, a damaged chunk included, leaves no object. A larger
pack is one multipart upload, split at piece boundaries into parts of about
:data:`PART_SIZE`, two parts in flight; any failure, a damaged chunk included, aborts the
upload (no part is kept, no object appears). The index is written only once the pack is
complete, as for every remote: a reader sees a pack only through its index. Two packs go
at a time (``remotepacks.PACKS_IN_FLIGHT``): one pack's completion and index overlap the
next one's bytes. A push killed mid-upload leaves an upload that is neither completed nor
aborted (its parts are kept, never visible); the next push aborts ours
(``packs/<64 hex>.pack``) once they are :data:`STALE_UPLOAD_AGE` seconds old.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .._errors import UniflowError
from .._storage.packs import CorruptPackError, PackIndex
from .._storage.parallel import bounded_map
from .blobstore import PackStreams

__all__ = [
    "MULTIPART_MIN",
    "PART_SIZE",
    "STALE_UPLOAD_AGE",
    "Outgoing",
    "PieceBody",
    "abort_stale",
    "send_pack",
    "split_parts",
]

log = logging.getLogger("uniflow.remote")

#: a pack larger than this is a multipart upload; up to this, one streamed PUT (one request
#: instead of four or more: packs of ``remotepacks.REMOTE_PACK_TARGET`` with their last chunk
#: and index stay below it). A body is streamed, so neither costs memory.
MULTIPART_MIN = 96 << 20
#: the size of a part of a multipart upload (about: parts are cut at piece boundaries)
PART_SIZE = 32 << 20
#: parts of one pack uploaded at once
PARTS_IN_FLIGHT = 2
#: uploads of ours older than this, neither completed nor aborted, are aborted by a push
STALE_UPLOAD_AGE = 3600.0

_OURS = re.compile(r"packs/[0-9a-f]{64}\.pack")
T = TypeVar("T")
#: ``call(what, fn)``: ``fn()`` retried like every transfer (``blobs.retry_transient``)
Call = Callable[[str, Callable[[], Any]], Any]


@dataclass(frozen=True)
class Outgoing:
    """A pack to send: its index, the start of each of its pieces (ascending, the first 0;
    piece ``i`` ends where ``i + 1`` starts, the last at the pack's end), and ``read(i, buf)``:
    piece ``i``'s bytes, read into ``buf`` (longer than any piece) and checked, as a view."""

    index: PackIndex
    starts: list[int]
    read: Callable[[int, bytearray], memoryview]

    def end_of(self, i: int) -> int:
        """Where piece ``i`` ends."""
        return self.starts[i + 1] if i + 1 < len(self.starts) else self.index.pack_size

    def largest(self) -> int:
        """The length of the longest piece."""
        return max(self.end_of(i) - s for i, s in enumerate(self.starts))


class PieceBody(io.RawIOBase):
    """Pieces ``[first, last)`` of an :class:`Outgoing` as a seekable binary file, read one
    piece at a time into a buffer of its own and checked as it is read. A failed check is
    kept in :attr:`error` (an HTTP client may wrap what its body raises)."""

    def __init__(self, pack: Outgoing, first: int, last: int) -> None:
        super().__init__()
        self._pack = pack
        self._first, self._last = first, last
        self._start = pack.starts[first]
        self._size = pack.end_of(last - 1) - self._start
        self._buf = bytearray(max(pack.end_of(i) - pack.starts[i] for i in range(first, last)) + 1)
        self._pos = 0
        self._piece = -1  # the piece in the buffer
        self._view = memoryview(b"")
        self.error: UniflowError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def __len__(self) -> int:
        return self._size

    def readinto(self, b: Any) -> int:
        with self._next(len(b)) as piece:
            b[: len(piece)] = piece
            return len(piece)

    def read(self, size: int | None = -1) -> bytes:
        """At most ``size`` bytes (never past the piece being read: an HTTP client asking
        for a whole part at once gets one piece, copied once)."""
        if size is None or size < 0:
            return self.readall()
        with self._next(size) as piece:
            return bytes(piece)

    def _next(self, size: int) -> memoryview:
        """A view of the next bytes, at most ``size``, within one piece (loaded and checked
        if it is not the one in the buffer); the position moves past them."""
        at = self._start + self._pos
        if self._pos >= self._size or size <= 0:
            return memoryview(b"")
        i = bisect.bisect_right(self._pack.starts, at, self._first, self._last) - 1
        if i != self._piece:
            self._load(i)
        offset = at - self._pack.starts[i]
        n = min(size, len(self._view) - offset)
        self._pos += n
        return self._view[offset : offset + n]

    def _load(self, i: int) -> None:
        self._view.release()
        self._piece = -1
        try:
            self._view = self._pack.read(i, self._buf)
        except UniflowError as exc:
            self.error = exc
            raise
        if len(self._view) != self._pack.end_of(i) - self._pack.starts[i]:
            self.error = CorruptPackError(
                f"local pack {self._pack.index.name[:16]} changed size while it was sent; "
                "it was not published"
            )
            raise self.error
        self._piece = i

    def close(self) -> None:
        self._view.release()
        super().close()


def split_parts(pack: Outgoing, part_size: int | None = None) -> list[tuple[int, int]]:
    """The parts of ``pack``'s upload as runs of pieces ``(first, last)``: one up to
    :data:`MULTIPART_MIN` bytes, else as many as ``part_size`` (:data:`PART_SIZE`) asks, of
    about equal length, cut at piece boundaries."""
    size = pack.index.pack_size
    limit = part_size or PART_SIZE
    count = 1 if size <= MULTIPART_MIN else -(-size // limit)
    cuts = [0]
    for k in range(1, count):
        i = bisect.bisect_left(pack.starts, k * size // count)
        if cuts[-1] < i < len(pack.starts):
            cuts.append(i)
    cuts.append(len(pack.starts))
    return list(zip(cuts, cuts[1:], strict=False))


def _sent(fn: Callable[[PieceBody], T], body: PieceBody) -> T:
    """``fn(body)``; a failed check of the body's bytes is raised as itself, however the
    client reported it."""
    try:
        return fn(body)
    except Exception:
        if body.error is not None:
            raise body.error from None
        raise
    finally:
        body.close()


def send_pack(streams: PackStreams, pack: Outgoing, call: Call) -> None:
    """Upload ``pack`` (see the module's doc), then its index. A failure raises, with no part
    kept and no object of the pack or its index written."""
    name = pack.index.name
    rel = f"packs/{name}.pack"
    parts = split_parts(pack)
    if len(parts) == 1:
        call(
            f"upload of pack {name[:16]}",
            lambda: _sent(lambda body: streams.put_stream(rel, body), PieceBody(pack, 0, len(pack.starts))),
        )
    else:
        _multipart(streams, pack, rel, parts, call)
    call(
        f"upload of the index of pack {name[:16]}",
        lambda: streams.put_stream(f"packs/{name}.idx", io.BytesIO(pack.index.raw)),
    )


def _multipart(
    streams: PackStreams, pack: Outgoing, rel: str, parts: list[tuple[int, int]], call: Call
) -> None:
    """``pack`` as one multipart upload of ``parts``, completed, or aborted on any failure."""
    name = pack.index.name[:16]
    upload: str = call(f"start of the upload of pack {name}", lambda: streams.start_upload(rel))

    def one(item: tuple[int, tuple[int, int]]) -> str:
        number, (first, last) = item
        etag: str = call(
            f"upload of part {number} of pack {name}",
            lambda: _sent(
                lambda body: streams.put_part(rel, upload, number, body), PieceBody(pack, first, last)
            ),
        )
        return etag

    try:
        # the pool is shut down (every part finished or failed) before an abort is sent
        etags = list(
            bounded_map(
                one,
                enumerate(parts, 1),
                workers=PARTS_IN_FLIGHT,
                window=PARTS_IN_FLIGHT,
                name="uniflow-part-up",
            )
        )
        call(f"completion of the upload of pack {name}", lambda: streams.complete_upload(rel, upload, etags))
    except BaseException:
        try:
            call(f"abort of the upload of pack {name}", lambda: streams.abort_upload(rel, upload))
        except Exception as exc:  # the first failure is the one to report
            log.warning("abort of the upload of pack %s failed: %s", name, exc)
        raise


def abort_stale(streams: PackStreams, older_than: float | None = None) -> int:
    """Abort the uploads of packs a killed push left (older than ``older_than`` seconds,
    :data:`STALE_UPLOAD_AGE`); best effort: a remote that refuses to list them is left as
    it is. How many were aborted."""
    age = STALE_UPLOAD_AGE if older_than is None else older_than
    aborted = 0
    try:
        for rel, upload in streams.stale_uploads("packs/", age):
            if not _OURS.fullmatch(rel):
                continue
            with contextlib.suppress(Exception):
                streams.abort_upload(rel, upload)
                aborted += 1
    except Exception as exc:
        log.info("uploads left by an earlier push were not listed: %s", exc)
    return aborted
