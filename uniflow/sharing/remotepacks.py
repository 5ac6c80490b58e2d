"""Packs on blob remotes: push writes packs, pull and loads read chunks by byte range.

A blob remote holding packs (a directory, any fsspec filesystem: ``blobstore.PackFiles``)
has, beside the loose chunks older uniflow pushed::

    <url>/uniflow-remote.json        {"format": 3}: written before the first pack
    <url>/packs/<name>.pack          the pack format of ``_storage.packs`` (same bytes)
    <url>/packs/<name>.idx           its index; present only once the pack is complete

**Push** (:meth:`RemotePacks.push`): the chunks the remote lacks are read from the local
store, each verified, and written in the order asked into packs of about
:data:`REMOTE_PACK_TARGET` bytes (larger than a local pack: fewer files and requests per GiB).
Each pack is uploaded complete, then its index: a reader lists indexes, so a pack becomes
visible only when its index is there, after its bytes are complete. Directories write both
through ``write_immutable`` (unnamed inode or temporary file, fsync, link); S3 gets each pack
streamed piece by piece, checked as it is read, as a multipart upload aborted on any
failure (``packstream``: never a whole pack in memory); other fsspec filesystems get it
from a buffer.

**What a remote has** (:meth:`RemotePacks.load`): the union of its pack indexes and its loose
chunks. ``packs/`` is listed (bounded: :data:`~.blobstore.MAX_PACK_FILES` names), each index
downloaded once into ``<store>/cache/remote-packs/<name>.idx`` and validated every time it is
read (``PackIndex.parse``: checksum, name, size of the pack as listed, order, duplicates,
tiling), after a size bound (:data:`MAX_INDEX_BYTES`, and no larger than the pack it
describes). An index names its pack by its checksum, so a cached copy can only be that index.

**Fetch** (:meth:`RemotePacks.fetch`): the wanted chunks found in packs are sorted by pack
and offset and adjacent ones coalesced into one range read (gaps up to :data:`MAX_GAP`, a
range up to :data:`MAX_RANGE`); every chunk of a range is hashed and compared with its name
before any of them is stored.

**Format marker**: a remote whose ``uniflow-remote.json`` names a format above
:data:`REMOTE_FORMAT` is refused (:class:`NewerFormatError`: upgrade uniflow), for reads and
pushes alike; a marker that is not a small JSON object is a :class:`RemoteError`.
"""

from __future__ import annotations

import collections
import itertools
import json
import queue
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import blake3

from .._errors import CorruptChunkError, RemoteError
from .._storage.chunking import CHUNK_PARAMS
from .._storage.fsio import StagedFile, write_immutable
from .._storage.ingest import read_full
from .._storage.packs import (
    END_MAGIC,
    FORMAT_VERSION,
    INDEX_HEAD,
    PACK_HEAD,
    PACK_MAGIC,
    PACK_TAIL,
    CorruptPackError,
    NewerFormatError,
    PackIndex,
    PackReader,
)
from .._storage.parallel import ThreadBuffers, bounded_map
from .blobstore import MARKER, BlobRemote, LocalFiles, PackFiles, PackStreams, RangeInto, describe
from .packstream import Outgoing, abort_stale, send_pack

if TYPE_CHECKING:  # pragma: no cover
    from .._storage.store import ObjectStore

__all__ = [
    "MAX_GAP",
    "MAX_INDEX_BYTES",
    "MAX_RANGE",
    "PACKS_IN_FLIGHT",
    "REMOTE_FORMAT",
    "REMOTE_PACK_TARGET",
    "WHOLE_PACK_MIN",
    "RemotePacks",
    "Span",
    "open_packs",
]

#: the layout of a blob remote this uniflow writes and reads (1, 2: loose chunks only)
REMOTE_FORMAT = 3
#: a pack pushed is full once its chunk bytes reach this: 13 packs per GiB (with their
#: indexes and the marker, 27 files); below ``packstream.MULTIPART_MIN`` even with its last
#: chunk (4 MiB at most) and index: one streamed PUT each on S3
REMOTE_PACK_TARGET = 80 << 20
#: a local pack is sent as it is only from this size on: smaller ones (a small register's,
#: the tail of a large one) are re-assembled together, so the remote gets fewer files
WHOLE_PACK_MIN = REMOTE_PACK_TARGET // 2
#: packs uploaded at once to a remote that takes streams (S3)
PACKS_IN_FLIGHT = 2
#: the largest index read from a remote (an index of 48 bytes per chunk: ~170,000 chunks)
MAX_INDEX_BYTES = 8 << 20
#: bytes between two wanted chunks of a pack still fetched in one range read
MAX_GAP = 1 << 20
#: the longest single range read
MAX_RANGE = 16 << 20
_MAX_MARKER = 4096
_FRAME = PACK_HEAD.size + PACK_TAIL.size
_ENTRY_SIZE = 48  # an index entry: name (32 bytes), offset, length (u64 each)
_HEX = frozenset("0123456789abcdef")

T = TypeVar("T")
#: ``retry(what, fn)``: ``fn()`` retried like every transfer (``blobs.retry_transient``)
Retry = Callable[[str, Callable[[], T]], T]


@dataclass
class Span:
    """One range read: bytes ``[start, end)`` of a pack, holding ``chunks`` (name, offset, length)."""

    pack: str
    start: int
    end: int
    chunks: list[tuple[str, int, int]] = field(default_factory=list)


class RemotePacks:
    """The packs of one blob remote as this process knows them: the union of their indexes,
    each validated (see the module's doc). :meth:`load` reads them; :meth:`push` adds some;
    :meth:`fetch` reads chunks out of them by range."""

    def __init__(self, remote: BlobRemote, files: PackFiles, cache: Path, retry: Retry[object]) -> None:
        self.remote = remote
        self.files = files
        self.cache = cache
        self._retry = retry
        self._where: dict[bytes, tuple[str, int, int]] = {}
        self._loaded: set[str] = set()
        self.marker: int | None = None

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return self._retry(what, fn)  # type: ignore[return-value]

    # ------------------------------------------------------------------ what the remote has
    def load(self) -> None:
        """Check the marker, list ``packs/`` and read every index not read yet."""
        self._check_marker()
        listing = self._call("listing packs", self.files.pack_listing)
        for name in sorted(self._complete(listing) - self._loaded):
            index = self._index(name, listing[f"{name}.pack"], listing[f"{name}.idx"])
            for entry in index.entries():
                self._where.setdefault(bytes.fromhex(entry.name), (name, entry.offset, entry.length))
            self._loaded.add(name)

    @staticmethod
    def _complete(listing: dict[str, int]) -> set[str]:
        """Names with both a ``.pack`` and an ``.idx`` (an index alone, or a pack alone, is
        an upload in flight or abandoned: not used)."""
        return {
            f[:64]
            for f in listing
            if f.endswith(".idx") and len(f) == 68 and _HEX.issuperset(f[:64]) and f"{f[:64]}.pack" in listing
        }

    def _check_marker(self) -> None:
        raw = self._call("reading the layout marker", lambda: self.files.read_small(MARKER, _MAX_MARKER))
        if raw is None:
            return
        try:
            doc = json.loads(raw) if len(raw) <= _MAX_MARKER else None
            fmt = doc.get("format") if isinstance(doc, dict) else None
        except (ValueError, UnicodeDecodeError):
            fmt = None
        if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
            raise RemoteError(f"{describe(self.remote)}: {MARKER} is not a uniflow layout marker; refused")
        if fmt > REMOTE_FORMAT:
            raise NewerFormatError(
                f"{describe(self.remote)} was written by a newer uniflow (remote format {fmt}, this "
                f"uniflow reads up to {REMOTE_FORMAT}): upgrade uniflow"
            )
        self.marker = fmt

    def _index(self, name: str, pack_size: int, idx_size: int) -> PackIndex:
        """Pack ``name``'s index, from the cache or else downloaded (and cached), validated."""
        bound = min(MAX_INDEX_BYTES, pack_size - _FRAME)
        if idx_size > bound:
            raise CorruptPackError(
                f"{describe(self.remote)}: pack {name[:16]}: index of {idx_size} bytes is larger "
                f"than {bound} bytes allowed; refused, nothing was stored"
            )
        cached = self.cache / f"{name}.idx"
        raw = _read_cached(cached, bound)
        fresh = raw is None
        if raw is None:
            raw = self._call(
                f"download of the index of pack {name[:16]}",
                lambda: self.files.read_small(f"packs/{name}.idx", bound),
            )
            if raw is None or len(raw) > bound:
                raise CorruptPackError(
                    f"{describe(self.remote)}: pack {name[:16]}: its index is gone or larger than "
                    f"{bound} bytes; refused, nothing was stored"
                )
        try:
            index = PackIndex.parse(raw, pack_size, name)
        except CorruptPackError as exc:
            raise CorruptPackError(f"{describe(self.remote)}: {exc}; refused, nothing was stored") from None
        if fresh:
            self._cache_index(name, raw)
        return index

    def _cache_index(self, name: str, raw: bytes) -> None:
        """Keep a copy of pack ``name``'s index (validated again whenever it is read)."""
        self.cache.mkdir(parents=True, exist_ok=True)
        write_immutable(self.cache / f"{name}.idx", self.cache, raw, fsync=False)

    def locate(self, digest: str) -> tuple[str, int, int] | None:
        """``(pack, offset, length)`` of chunk ``digest`` in the packs read, or None."""
        return self._where.get(bytes.fromhex(digest)) if len(digest) == 64 else None

    def names(self) -> set[str]:
        """Every chunk name in the packs read."""
        return {raw.hex() for raw in self._where}

    # ------------------------------------------------------------------ fetch
    def fetch(
        self, store: ObjectStore, digests: Iterable[str], jobs: int, done: Callable[[str, int], None]
    ) -> list[str]:
        """Store the chunks of ``digests`` found in packs, fetched by coalesced range reads
        and verified; ``done(digest, size)`` after each is stored. The digests not in any
        pack (a loose chunk, or none at all)."""
        spans, rest = self.plan(digests)

        def one(span: Span) -> list[tuple[str, int]]:
            return self._fetch_span(store, span)

        for stored in bounded_map(
            one, spans, workers=max(1, min(jobs, len(spans))), window=2 * jobs, name="uniflow-rng"
        ):
            for d, n in stored:
                done(d, n)
        return rest

    def plan(self, digests: Iterable[str]) -> tuple[list[Span], list[str]]:
        """``(range reads, the rest)``: the chunks of ``digests`` found in packs, sorted by
        pack and offset and coalesced (:func:`_coalesce`), and those in no pack, in order."""
        located: list[tuple[str, int, int, str]] = []
        rest: list[str] = []
        for d in digests:
            where = self.locate(d)
            if where is None:
                rest.append(d)
            else:
                located.append((where[0], where[1], where[2], d))
        return _coalesce(located), rest

    def read_chunk(self, digest: str, where: str = "") -> bytes | None:
        """Chunk ``digest`` read out of its pack (one range read) and verified; None if no
        pack read holds it."""
        found = self.locate(digest)
        if found is None:
            return None
        pack, off, length = found
        span = Span(pack, off, off + length, [(digest, off, length)])
        return self.read_span(span, where)

    def read_span(self, span: Span, where: str = "") -> bytes:
        """The bytes of ``span`` (one range read), every chunk in it hashed and compared with
        its name before they are returned: a mismatch is a :class:`CorruptChunkError`."""
        rel = f"packs/{span.pack}.pack"
        data = self._call(
            f"download of pack {span.pack[:16]} bytes {span.start}..{span.end}",
            lambda: self.files.read_range(rel, span.start, span.end),
        )
        with memoryview(data) as view:
            self._verify_span(span, view, where)
        return data

    def verified_chunks(
        self, span: Span, buffers: ThreadBuffers, where: str = ""
    ) -> Iterator[tuple[str, memoryview]]:
        """The chunks of ``span`` (one range read), in pack order, each yielded as ``(name,
        view of its bytes)`` only once it is hashed and found to match its name (a mismatch,
        or a range cut short, is a :class:`CorruptChunkError` at that chunk). The caller uses
        a chunk while its bytes are still in the CPU's cache. A remote that reads ranges into
        a buffer (:class:`RangeInto`: a directory) reads into this thread's buffer of
        ``buffers``, so a reused buffer takes the bytes with no allocation or copy."""
        with self._read_span_raw(span, buffers) as view:
            for d, off, length in span.chunks:
                with view[off - span.start : off - span.start + length] as piece:
                    self._check_chunk(span, d, length, piece, where)
                    yield d, piece

    def _read_span_raw(self, span: Span, buffers: ThreadBuffers) -> memoryview:
        """The bytes of ``span`` as read, not verified (into this thread's buffer of
        ``buffers`` when the remote can)."""
        rel = f"packs/{span.pack}.pack"
        what = f"download of pack {span.pack[:16]} bytes {span.start}..{span.end}"
        files = self.files
        if not isinstance(files, RangeInto):
            return memoryview(self._call(what, lambda: files.read_range(rel, span.start, span.end)))
        view = memoryview(buffers.get(span.end - span.start))[: span.end - span.start]
        try:
            got = self._call(what, lambda: files.read_range_into(rel, span.start, view))
        except BaseException:
            view.release()
            raise
        if got == len(view):
            return view
        with view:
            return view[:got]  # cut short: the chunks past its end fail their check

    def _verify_span(self, span: Span, view: memoryview, where: str) -> None:
        """Hash every chunk of ``span`` in ``view`` (its bytes as read, possibly short) and
        compare it with its name: a missing or mismatched byte is a :class:`CorruptChunkError`."""
        for d, off, length in span.chunks:
            with view[off - span.start : off - span.start + length] as piece:
                self._check_chunk(span, d, length, piece, where)

    def _check_chunk(self, span: Span, d: str, length: int, piece: memoryview, where: str) -> None:
        """:class:`CorruptChunkError` unless ``piece`` is chunk ``d`` of ``span``, whole."""
        if len(piece) != length or blake3.blake3(piece).hexdigest() != d:
            at = f" ({where})" if where else ""
            raise CorruptChunkError(
                f"chunk {d[:16]} in pack {span.pack[:16]} on {describe(self.remote)} is "
                f"corrupted: its bytes do not match its name{at}; it was not stored",
                d,
            )

    def _fetch_span(self, store: ObjectStore, span: Span) -> list[tuple[str, int]]:
        """One range read; every chunk in it verified before any is stored."""
        data = self.read_span(span)
        out = []
        with memoryview(data) as view:
            for d, off, length in span.chunks:
                with view[off - span.start : off - span.start + length] as piece:
                    store.add_verified(d, piece, sync_dir=False)
                out.append((d, length))
        return out

    # ------------------------------------------------------------------ push
    def push(
        self,
        store: ObjectStore,
        todo: list[str],
        where: Callable[[str], str],
        sent: Callable[[int, int], None],
    ) -> None:
        """Upload the chunks ``todo`` (none of them on the remote) as packs, then their
        indexes; ``sent(chunks, bytes)`` after each pack is visible."""
        if not todo:
            return
        if self.marker is None:
            marker = json.dumps({"format": REMOTE_FORMAT}).encode() + b"\n"
            self._call("writing the layout marker", lambda: self.files.put_marker(marker))
            self.marker = REMOTE_FORMAT

        whole, rest = _split_whole(store, todo)
        local = self.remote.local_files()
        if whole and local is not None:
            self._push_whole(store, local, whole, where, sent)
            whole = []
        streams = self.files.pack_streams()
        if streams is not None:
            self._push_streamed(store, streams, whole, rest, where, sent)
            return
        pool = _PackBuffers()

        def upload(pack: tuple[memoryview, PackIndex]) -> tuple[int, int]:
            data, index = pack
            self._call(
                f"upload of pack {index.name[:16]}", lambda: self.files.put_pack(index.name, data, index.raw)
            )
            pool.give(data)
            self._cache_index(index.name, index.raw)  # the next push or pull need not download it
            return len(index), index.data_bytes

        # one pack uploading while the next is built (window 2: the next is built before the
        # first upload is awaited); two packs in memory at most
        packs = itertools.chain(
            _read_whole(store, whole, where, pool), _packs_to_send(store, rest, where, pool)
        )
        for chunks, size in bounded_map(upload, packs, workers=1, window=2, name="uniflow-pack-up"):
            sent(chunks, size)

    def _push_whole(
        self,
        store: ObjectStore,
        local: LocalFiles,
        whole: list[PackIndex],
        where: Callable[[str], str],
        sent: Callable[[int, int], None],
    ) -> None:
        """Upload the local packs ``whole`` as they are to a directory remote: each copied in
        the kernel and the copy checked byte for byte (:func:`_verify_pack`: a damaged local
        pack is never published) on two threads, so one pack is hashed while the next is
        copied; each named, then its index, in order; ``packs/`` fsynced once at the end."""

        def stage(index: PackIndex) -> StagedFile:
            with PackReader(store.root, index.name, index) as reader:
                return self._call(
                    f"upload of pack {index.name[:16]}",
                    lambda: local.stage_pack(
                        index.name,
                        reader.fd,
                        index.pack_size,
                        lambda fd: _verify_pack(_fd_reader(fd), index, where),
                    ),
                )

        staged = bounded_map(stage, whole, workers=2, window=3, name="uniflow-pack-copy")
        for index, copy in zip(whole, staged, strict=True):
            try:
                copy.publish()
                local.put_index(index.name, index.raw)  # the pack is visible from here on
            finally:
                copy.close()
            self._cache_index(index.name, index.raw)
            sent(len(index), index.data_bytes)
        local.sync_packs()

    def _push_streamed(
        self,
        store: ObjectStore,
        streams: PackStreams,
        whole: list[PackIndex],
        rest: list[str],
        where: Callable[[str], str],
        sent: Callable[[int, int], None],
    ) -> None:
        """Upload the local packs ``whole`` as they are, then packs of the chunks ``rest``, to
        a remote that takes streams (``packstream``): each read piece by piece and checked as
        it is sent, never whole in memory; each pack's index after it. Two packs at a time
        (:data:`PACKS_IN_FLIGHT`: one pack's completion and index overlap the next one's
        parts), each holding one piece per part in flight."""
        abort_stale(streams)

        def one(item: PackIndex | list[tuple[str, int]]) -> PackIndex:
            if isinstance(item, PackIndex):
                with PackReader(store.root, item.name, item) as reader:
                    send_pack(streams, _local_pack(reader.fd, item, where), self._call)
                return item
            pack = _assembled_pack(store, item, where)
            send_pack(streams, pack, self._call)
            return pack.index

        items: Iterator[PackIndex | list[tuple[str, int]]] = itertools.chain(
            whole, _groups(store, rest, where)
        )
        workers = PACKS_IN_FLIGHT
        for index in bounded_map(one, items, workers=workers, window=workers, name="uniflow-pack-up"):
            self._cache_index(index.name, index.raw)
            sent(len(index), index.data_bytes)


def _split_whole(store: ObjectStore, todo: list[str]) -> tuple[list[PackIndex], list[str]]:
    """``(local packs to send as they are, the other chunks of todo)``: a local pack is sent
    as it is when ``todo`` asks for every chunk of it, in the order they lie in it (a
    version's files in order, as a register wrote them: the remote gets the same layout as
    re-assembly would give) and it holds at least :data:`WHOLE_PACK_MIN` bytes. The packs
    in the order of their first chunk in ``todo``."""
    packs = store.packs
    packs.refresh(force=False)
    wanted = list(dict.fromkeys(todo))
    holder = {d: packs.pack_of(d, refresh=False) for d in wanted}
    asked: dict[str, list[str]] = collections.defaultdict(list)
    for d, p in holder.items():
        if p is not None:
            asked[p].append(d)
    indexes = packs.indexes()
    whole = [
        p
        for p, names in asked.items()
        if p in indexes and indexes[p].data_bytes >= WHOLE_PACK_MIN and names == _in_pack_order(indexes[p])
    ]
    chosen = set(whole)
    return [indexes[p] for p in whole], [d for d in wanted if holder[d] not in chosen]


def _in_pack_order(index: PackIndex) -> list[str]:
    """The chunk names of a pack in the order they lie in it."""
    return [e.name for e in sorted(index.entries(), key=lambda e: e.offset)]


def _fd_reader(fd: int) -> Callable[[int, int], memoryview]:
    """``piece(offset, length)``: those bytes of ``fd`` read into this thread's buffer."""

    def piece(offset: int, length: int) -> memoryview:
        buf = _BUFFERS.get(length)
        view = memoryview(buf)[:length]
        return view[: read_full(fd, view, offset)]

    return piece


def _pieces(index: PackIndex) -> list[tuple[int, int, str | bytes]]:
    """The pieces of pack ``index.name``, tiling it: ``(offset, length, expected)``, where
    ``expected`` is a chunk's name or the exact bytes of the header or of the tail (the
    index copy and end marker); the index's entries tile the bytes between."""
    tail = index.raw + PACK_TAIL.pack(len(index.raw), END_MAGIC)
    out: list[tuple[int, int, str | bytes]] = [(0, PACK_HEAD.size, _header())]
    out += [(e.offset, e.length, e.name) for e in sorted(index.entries(), key=lambda e: e.offset)]
    out.append((index.pack_size - len(tail), len(tail), tail))
    return out


def _check_piece(
    index: PackIndex, piece: tuple[int, int, str | bytes], data: memoryview, where: Callable[[str], str]
) -> None:
    """Compare the bytes ``data`` read for ``piece`` of local pack ``index.name`` with what
    they must be (see :func:`_pieces`). A mismatch is an integrity error."""
    _, length, expected = piece
    if isinstance(expected, bytes):
        if data != expected:
            raise CorruptPackError(
                f"local pack {index.name[:16]}: its header or index copy differs from its index; "
                "it was not published"
            )
    elif len(data) != length or blake3.blake3(data).hexdigest() != expected:
        at = where(expected)
        raise CorruptChunkError(
            f"chunk {expected[:16]} in local pack {index.name[:16]} is corrupted: its bytes "
            f"do not match its name{f' ({at})' if at else ''}; the pack was not published",
            expected,
        )


def _verify_pack(
    piece: Callable[[int, int], memoryview], index: PackIndex, where: Callable[[str], str]
) -> None:
    """Check every byte of a copy of pack ``index.name`` (``piece(offset, length)`` reads it):
    its header, its tail (the index and end marker), and each chunk hashed and compared with
    its name (the index's entries tile the rest). A mismatch is an integrity error."""
    pieces = _pieces(index)
    for p in pieces[:1] + pieces[-1:] + pieces[1:-1]:  # the frame first
        with piece(p[0], p[1]) as data:  # (one piece at a time: they may share a buffer)
            _check_piece(index, p, data, where)


def _local_pack(fd: int, index: PackIndex, where: Callable[[str], str]) -> Outgoing:
    """Local pack ``index.name`` (open as ``fd``) to stream as it is: each piece read with
    ``pread`` and checked (:func:`_check_piece`) as it is read."""
    pieces = _pieces(index)

    def read(i: int, buf: bytearray) -> memoryview:
        offset, length, _ = pieces[i]
        view = memoryview(buf)[:length]
        data = view[: read_full(fd, view, offset)]
        _check_piece(index, pieces[i], data, where)
        return data

    return Outgoing(index, [p[0] for p in pieces], read)


def _assembled_pack(
    store: ObjectStore, group: list[tuple[str, int]], where: Callable[[str], str]
) -> Outgoing:
    """The pack of the chunks ``group`` (name, size), in that order, to stream: its index
    built from the sizes first; each chunk read from the store and verified as it is sent."""
    ranges: dict[bytes, tuple[int, int]] = {}
    end = PACK_HEAD.size
    for d, size in group:
        ranges[bytes.fromhex(d)] = (end, size)
        end += size
    index = PackIndex.build(ranges, end)
    pieces = _pieces(index)

    def read(i: int, buf: bytearray) -> memoryview:
        _, length, expected = pieces[i]
        if isinstance(expected, bytes):
            buf[:length] = expected
        else:
            with store.open_verified(expected, buf, where(expected)) as chunk:
                if len(chunk.data) != length:
                    raise CorruptChunkError(
                        f"chunk {expected[:16]} changed size in the local store while it was sent", expected
                    )
                if chunk.data.obj is not buf:
                    buf[:length] = chunk.data
        return memoryview(buf)[:length]

    return Outgoing(index, [p[0] for p in pieces], read)


def _read_whole(
    store: ObjectStore, whole: list[PackIndex], where: Callable[[str], str], pool: _PackBuffers
) -> Iterator[tuple[memoryview, PackIndex]]:
    """The local packs ``whole`` read as they are into buffers, each checked byte for byte
    (:func:`_verify_pack`) before it is handed on (to a remote that is not a directory)."""
    for index in whole:
        data = pool.take(index.pack_size)
        with PackReader(store.root, index.name, index) as reader:
            got = read_full(reader.fd, data, 0)

        def piece(offset: int, length: int, data: memoryview = data, got: int = got) -> memoryview:
            return data[offset : min(offset + length, got)]

        _verify_pack(piece, index, where)
        yield data, index


def _read_cached(path: Path, bound: int) -> bytes | None:
    """A cached index's bytes (validated by the caller), None if absent or too large."""
    try:
        with open(path, "rb") as f:
            raw = f.read(bound + 1)
    except OSError:
        return None
    return raw if len(raw) <= bound else None


def _coalesce(located: list[tuple[str, int, int, str]]) -> list[Span]:
    """Range reads covering ``located`` (pack, offset, length, name): chunks of one pack at
    most :data:`MAX_GAP` apart share a range no longer than :data:`MAX_RANGE`."""
    spans: list[Span] = []
    for pack, off, length, d in sorted(located):
        last = spans[-1] if spans else None
        if (
            last is not None
            and last.pack == pack
            and off - last.end <= MAX_GAP
            and off + length - last.start <= MAX_RANGE
            and off >= last.end
        ):
            last.end = off + length
        else:
            last = Span(pack, off, off + length)
            spans.append(last)
        last.chunks.append((d, off, length))
    return spans


def _header() -> bytes:
    return PACK_HEAD.pack(PACK_MAGIC, FORMAT_VERSION, 0)


class _PackBuffers:
    """Pack-sized buffers reused from one pack to the next of a push (a fresh 80 MiB buffer
    costs a page fault per page): :meth:`take` one at least that large, :meth:`give` it back
    once its pack is uploaded. A push holds at most three (two packs and one being built)."""

    def __init__(self) -> None:
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._of: dict[int, bytearray] = {}  # id of a view given out -> its buffer

    def take(self, size: int) -> memoryview:
        try:
            buf = self._free.get_nowait()
        except queue.Empty:
            buf = bytearray(size)
        if len(buf) < size:
            buf = bytearray(size)
        view = memoryview(buf)[:size]
        self._of[id(view)] = buf
        return view

    def give(self, view: memoryview) -> None:
        buf = self._of.pop(id(view))
        view.release()
        self._free.put(buf)


def _groups(
    store: ObjectStore, digests: list[str], where: Callable[[str], str]
) -> Iterator[list[tuple[str, int]]]:
    """The chunks ``digests`` (name, size), in that order, in groups of about
    :data:`REMOTE_PACK_TARGET` bytes: one pack each."""
    group: list[tuple[str, int]] = []
    total = 0
    for d in dict.fromkeys(digests):
        size = store.stored_size(d) or len(store.read_chunk(d, where(d)))  # 0: not where expected
        group.append((d, size))
        total += size
        if total >= REMOTE_PACK_TARGET:
            yield group
            group, total = [], 0
    if group:
        yield group


def _packs_to_send(
    store: ObjectStore, digests: list[str], where: Callable[[str], str], pool: _PackBuffers
) -> Iterator[tuple[memoryview, PackIndex]]:
    """Packs of the chunks ``digests``, in that order, of about :data:`REMOTE_PACK_TARGET`
    bytes each (see :func:`_fill_pack`)."""
    for group in _groups(store, digests, where):
        yield _fill_pack(store, group, where, pool)


#: each reading thread's buffer for one chunk (one byte more: a longer chunk is caught too)
_BUFFERS = ThreadBuffers(CHUNK_PARAMS["max_size"] + 1)


def _fill_pack(
    store: ObjectStore, group: list[tuple[str, int]], where: Callable[[str], str], pool: _PackBuffers
) -> tuple[memoryview, PackIndex]:
    """The pack of the chunks ``group`` (name, size), in one buffer of its final size: each
    chunk read from the store and verified (two at a time: hashing runs on both cores) and
    copied to its place, so a damaged local chunk is never published; then index and tail."""
    ranges: dict[bytes, tuple[int, int]] = {}
    end = PACK_HEAD.size
    for d, size in group:
        ranges[bytes.fromhex(d)] = (end, size)
        end += size
    index_size = INDEX_HEAD.size + len(group) * _ENTRY_SIZE + 32
    data = pool.take(end + index_size + PACK_TAIL.size)
    data[: PACK_HEAD.size] = _header()

    def fill(item: tuple[str, int]) -> None:
        d, size = item
        offset = ranges[bytes.fromhex(d)][0]
        with store.open_verified(d, _BUFFERS.get(size + 1), where(d)) as chunk:
            if len(chunk.data) != size:
                raise CorruptChunkError(
                    f"chunk {d[:16]} changed size in the local store while it was sent", d
                )
            data[offset : offset + size] = chunk.data

    for _ in bounded_map(fill, group, workers=2, window=8, name="uniflow-pack-read"):
        pass
    index = PackIndex.build(ranges, end)
    data[end : end + index_size] = index.raw
    data[end + index_size :] = PACK_TAIL.pack(index_size, END_MAGIC)
    return data, index


def open_packs(remote: BlobRemote, store: ObjectStore, retry: Retry[object]) -> RemotePacks | None:
    """The packs of ``remote`` (loaded), with their indexes cached in ``store``'s cache; None
    for a remote that holds no packs (``memory://``)."""
    files = remote.pack_files()
    if files is None:
        return None
    packs = RemotePacks(remote, files, store.root / "cache" / "remote-packs", retry)
    packs.load()
    return packs
