"""The content-addressed chunk store under ``<common Git directory>/uniflow/``.

Every work tree of a repository shares it (as they share the refs): a version registered in
one ``git worktree`` is complete in all of them, and ``git worktree remove`` deletes no chunk.
A store of the old layout, ``<work tree>/.uniflow/{objects,tmp,cache}``, is moved into it on
first use (:meth:`ObjectStore.adopt`). Registries read by URL keep their chunk cache under
``<cache home>/store/.uniflow`` (``sharing.remote``), with the same layout below it.

Files are cut into content-defined chunks (FastCDC, native), each named by the BLAKE3-256
digest of its bytes. A register appends new chunks to packs in ``packs/`` (format 3:
``_storage.packs``, ``_storage.packwriter``); stores of formats 1 and 2 hold each chunk as a
file ``objects/<2 hex>/<62 hex>``, still read (first), and chunks fetched from a blob
remote are still stored that way:

* **write**: chunk bytes go to an unnamed read-only inode (``O_TMPFILE``) in the object's
  fan-out directory, are fsynced, then linked to their name with ``linkat`` (the first
  writer wins; an existing object is never modified); where the filesystem refuses
  ``O_TMPFILE`` a read-only file in ``tmp/`` is written and hard-linked instead
  (``_storage.fsio.write_immutable``). The object directories are fsynced before
  :meth:`ObjectStore.put_file` returns.
* **read**: every chunk is hashed and compared with its name before any byte is handed
  out; a mismatch raises :class:`IntegrityError` naming the context (model, version, file)
  and the chunk.

A file's digest (manifest format 3) is the Merkle identity of its chunk list
(``_storage.merkle``), built from the chunk names as they are collected: hashing the chunks
is the only pass over a file's bytes. A materialized copy is checked against the chunk list,
and only when its stamp changed since it was written or last checked (``_storage.verified``).
A user's file is read, never mapped, and refused if it changes meanwhile (``_storage.ingest``).
The pipeline that cuts, hashes and hands chunks to :meth:`ObjectStore._store_chunk` in
order, and the records it returns, are ``_storage.chunking``'s; what a chunk file is stays here.

A register passes a :class:`~uniflow._storage.pins.Pin`: each chunk's digest is pinned before the
chunk is looked for or written, so a concurrent ``gc`` never deletes it (see ``_storage.pins``).
Everything written in flight under ``tmp/`` carries its writer's owner token, so gc removes
only what a dead writer left behind. This module and ``_storage.pins`` create, move and
delete the chunk files of a store (``_storage.fsio.write_immutable`` creates them for it);
``sharing.remote`` also opens chunk files itself (those of the per-user cache of registries
read by URL, and of a directory blob remote) and deletes a damaged cache entry.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import _testhooks
from .._errors import CorruptChunkError, InvalidPathError, MissingChunkError, RepositoryError
from .._naming import validate_digest
from .._types import ChunkDigest, ProgressFn
from .chunking import (
    CHUNK_PARAMS,
    EMPTY_DIGEST,
    ChunkRef,
    FileRecord,
    RangesFn,
    chunk_digest,
    for_each_chunk,
    store_chunks,
)
from .cutting import FileReader, MemoryReader, cut, cut_file
from .fsio import copy_file, force_unlink, fsync_dir, os_reason, write_immutable
from .ingest import FileSource, fd_stamp, read_full
from .packs import PackSet, pack_dir
from .packwriter import PackStream, PackWriter
from .parallel import ThreadBuffers
from .pins import AsideSet, Pin, clean_tmp, read_pins, recover, restore_abandoned, tmp_name
from .repack import recover_set_aside
from .safefs import first_link
from .segments import Segments
from .verified import KeyFn, StampBook, holds_chunks

__all__ = [
    "ObjectStore",
    "FetchFn",
    "read_verified",
]

#: called by the store with digests it lacks (e.g. ``sharing.blobs.BlobFetcher``): fetch, verify, add
FetchFn = Callable[["ObjectStore", list[str]], None]
#: bytes of a file's start given to a ``RangesFn`` that does not say how many it needs
_HEAD = 64 << 10
#: what a store of the old layout kept in ``<work tree>/.uniflow/`` (moved by ``adopt``)
LEGACY_DIRS = ("objects", "tmp", "cache")
_HEX = frozenset("0123456789abcdef")
#: the longest a chunk waits for the chunks before it to take their places in a pack (s)
_TURN_WAIT = 5.0


@dataclass(frozen=True)
class VerifiedChunk:
    """A chunk's bytes, read and verified (:meth:`ObjectStore.open_verified`), and the open
    descriptor they were read from. A caller may copy the bytes from ``fd`` in the kernel
    (``copy_file_range``: no copy through user memory into the page cache)
    and then ask :meth:`unchanged`: False means the file was written meanwhile, so what was
    copied may not be what was verified (write ``data`` instead, or undo the copy)."""

    data: memoryview
    fd: int
    stamp: tuple[int, ...]
    #: where the bytes lie in ``fd``: 0 for a chunk file, the chunk's offset in its pack
    offset: int = 0

    def unchanged(self) -> bool:
        return fd_stamp(self.fd) == self.stamp


class ObjectStore:
    """Chunk objects under ``root``: ``<common Git directory>/uniflow`` (``_records.paths.store_dir``),
    or the per-user cache of registries read by URL."""

    def __init__(
        self,
        root: Path,
        fetcher: FetchFn | None = None,
        *,
        durable: bool = True,
        stamp_key: KeyFn | None = None,
    ) -> None:
        self.root = Path(root)
        #: False for a download cache (registries read by URL): chunks are not fsynced, and a
        #: chunk that fails verification is deleted and fetched again instead of reported
        self.durable = durable
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self.cache = self.root / "cache" / "files"
        self.packs_dir = pack_dir(self.root)
        #: called with digests missing locally before a read gives up (blob remotes)
        self.fetcher = fetcher
        self._checked: set[Path] = set()  # fan-out directories seen to be real directories
        self._packs: PackSet | None = None
        self._batches: dict[Pin, _PackSink] = {}  # the open packs of a register, by its pin
        #: stamps of verified cached copies, MAC-ed with ``stamp_key`` (none without a key)
        self.stamps = StampBook(self.root / "cache" / "stamps", self.tmp, stamp_key)

    @property
    def packs(self) -> PackSet:
        """The store's packs (their indexes read on first use)."""
        if self._packs is None:
            self._packs = PackSet(self.root)
        return self._packs

    def close(self) -> None:
        """Close the packs this store holds open for reading (reopened when next read)."""
        if self._packs is not None:
            self._packs.close()

    # ------------------------------------------------------------------ layout
    def object_path(self, digest: str) -> Path:
        validate_digest(digest, "chunk digest")
        return self.objects / digest[:2] / digest[2:]

    def ensure_dirs(self) -> None:
        self.check_layout()
        try:
            for d in (self.objects, self.tmp, self.cache, self.packs_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RepositoryError(f"cannot create the object store in {self.root}: {exc.strerror}") from exc
        self.check_layout()

    def check_layout(self) -> None:
        """Refuse a store directory that is a symlink (or not a directory).

        The store, its ``objects``, ``tmp`` and ``cache`` are created by uniflow as real
        directories; it never writes, links or deletes through a link found in their place.
        """
        dirs = (self.objects, self.tmp, self.cache, self.root / "cache" / "versions", self.tmp / "pins")
        for d in (*dirs, self.packs_dir):
            self._check_dir(d)

    def _check_dir(self, d: Path) -> None:
        bad = first_link(self.root.parent, d)
        if bad is not None:
            what = "a symlink" if bad.is_symlink() else "not a directory"
            raise RepositoryError(
                f"{bad} is {what}: uniflow never writes through links in its store; remove it "
                f"({self.root} holds only chunks, writes in flight and caches)"
            )

    def _fanout(self, d: Path) -> None:
        """Create a fan-out directory (``objects/ab``, ``cache/files/ab``) and check it is real."""
        if d in self._checked:
            return
        d.mkdir(exist_ok=True)
        self._check_dir(d)
        self._checked.add(d)

    def tmp_path(self, label: str) -> Path:
        """A fresh name under ``tmp/`` carrying this process's owner token (see ``clean_tmp``)."""
        return self.tmp / tmp_name(label)

    def pin(self) -> Pin:
        """A new pin for a register: its chunks survive any gc until it is released."""
        try:
            return Pin(self.tmp)
        except PermissionError as exc:
            raise RepositoryError(f"the object store {self.root} is read-only: {exc.strerror}") from exc
        except OSError as exc:
            raise RepositoryError(f"cannot write to the object store {self.root}: {os_reason(exc)}") from exc

    def has(self, digest: str) -> bool:
        """True if chunk ``digest`` is here now: a chunk file, or in a pack whose file exists."""
        return self.object_path(digest).exists() or self.packs.locate(digest) is not None

    def stored_size(self, digest: str) -> int:
        """The size of chunk ``digest`` as stored here (its file's, or its pack entry's); 0 if
        it is not here. Unverified: for progress totals."""
        try:
            return self.object_path(digest).stat().st_size
        except OSError:
            pass
        entry = self.packs.lookup(digest)
        return entry.length if entry is not None else 0

    def missing(self, digests: Iterable[str]) -> list[str]:
        """The chunks of ``digests`` that are neither chunk files nor in a pack, in order."""
        # Plain string paths: this runs over every chunk of a file before a first load.
        base = os.fspath(self.objects)
        exists = os.path.exists
        loose_missing = []
        for d in dict.fromkeys(digests):
            validate_digest(d, "chunk digest")
            if not exists(f"{base}/{d[:2]}/{d[2:]}"):
                loose_missing.append(d)
        if not loose_missing or not self.packs_dir.is_dir():
            return loose_missing
        self.packs.refresh()
        return [d for d in loose_missing if self.packs.locate(d, refresh=False) is None]

    def iter_objects(self) -> Iterator[tuple[str, Path]]:
        """Every stored chunk as ``(digest, path)``."""
        self.check_layout()
        if not self.objects.is_dir():
            return
        for sub in sorted(self.objects.iterdir()):
            if len(sub.name) != 2 or sub.is_symlink() or not sub.is_dir():
                continue  # a planted link is never listed, so never deleted through
            for entry in os.scandir(sub):
                digest = sub.name + entry.name
                if len(digest) == 64:
                    yield digest, Path(entry.path)

    # ------------------------------------------------------------------ write
    def put_file(
        self,
        path: Path,
        progress: ProgressFn | None = None,
        pin: Pin | None = None,
        ranges: RangesFn | None = None,
    ) -> FileRecord:
        """Chunk, hash and store ``path``; return its record once every chunk is durable.

        The file is read once, a window at a time, into this process's own memory (never
        mapped) and every chunk is hashed from those bytes and appended, from the same
        bytes, to this call's packs (``_storage.packwriter.PackStream``; every pack and its
        index durable before this returns). A file that changes while it is read is refused
        with :class:`InvalidPathError` (the packs written stay: their chunks are named by
        their bytes, unreferenced; gc removes them). This thread cuts
        (``_storage.cutting.cut_file``) while a pool hashes and writes (BLAKE3 and file
        I/O release the GIL). With ``pin``, every chunk is
        pinned before it is looked for or written. With ``ranges`` (a tensor file's
        tensors, found from its start), every range's edges are cut points
        (``_storage.cutting``) and ``range_digests`` holds the ranges' identities.
        """
        self.ensure_dirs()
        try:
            # O_NONBLOCK: a FIFO put in a model's place is refused instead of waited on
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise InvalidPathError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            src = FileSource(fd, path)
            if src.size == 0:
                return FileRecord(0, EMPTY_DIGEST, ())
            spans: Sequence[tuple[int, int]] = ()
            if ranges is not None:
                head_size = getattr(ranges, "head_size", None)
                first = int(head_size(src.head(16))) if callable(head_size) else 0
                spans = ranges(src.head(max(first, _HEAD)), src.size)
            cuts = cut_file(FileReader(src.size, src.read_into), spans)
            rec = self._put_chunks(cuts, src.size, spans, progress, pin, src_fd=fd)
            src.check_unchanged()
            return rec
        finally:
            os.close(fd)

    def put_segments(
        self,
        parts: Iterable[memoryview | bytes | bytearray],
        progress: ProgressFn | None = None,
        pin: Pin | None = None,
        ranges: RangesFn | None = None,
    ) -> FileRecord:
        """:meth:`put_file` for a file that exists only as the concatenation of ``parts``
        (an in-memory model streamed by its serializer): the same chunks, digests and record
        as storing the joined bytes, with no copy of them beyond a few MiB at a time.
        ``ranges`` gets the first part (which must hold the file's header) and the size."""
        self.ensure_dirs()
        seg = Segments(parts)
        try:
            if seg.size == 0:
                return FileRecord(0, EMPTY_DIGEST, ())
            spans = ranges(seg.parts[0], seg.size) if ranges is not None else ()
            return self._put_chunks(cut(MemoryReader(seg), spans), seg.size, spans, progress, pin)
        finally:
            seg.release()

    def put_bytes(self, data: bytes, pin: Pin | None = None) -> FileRecord:
        """:meth:`put_segments` of one buffer."""
        return self.put_segments([data], None, pin)

    def _put_chunks(
        self,
        cuts: Generator[tuple[int, memoryview], None, None],
        size: int,
        spans: Sequence[tuple[int, int]],
        progress: ProgressFn | None,
        pin: Pin | None,
        *,
        src_fd: int | None = None,
    ) -> FileRecord:
        """:func:`~uniflow._storage.chunking.store_chunks` into this store: each chunk pinned
        with ``pin``, then looked for, and appended to this call's packs if it is nowhere;
        every pack and its index durable when this returns."""
        shared = self._batches.get(pin) if pin is not None else None
        sink = shared or _PackSink(self.root, self.durable)
        order = _InOrder()

        def write(piece: memoryview, src: tuple[int, int] | None) -> ChunkRef:  # noqa: ARG001 (WriteFn; a pack is written from the hashed bytes)
            return self._store_chunk(piece, pin, sink, order)

        try:
            self.packs.refresh(force=False)  # the packs there now: each chunk is then looked up unlisted
            rec = store_chunks(order.tickets(cuts), write, size, spans, progress, src_fd=src_fd)
            if shared is None:
                sink.close()
        except BaseException:
            if shared is None:
                sink.abort()
            raise
        return rec

    @contextlib.contextmanager
    def batch(self, pin: Pin) -> Iterator[None]:
        """Store every file put with ``pin`` inside the block in the same packs (a register's
        files), finished when the block ends: then, and only then, every chunk they wrote is
        durable and visible (a caller records nothing that names them before). An exception
        discards the pack being filled."""
        sink = self._batches[pin] = _PackSink(self.root, self.durable)
        try:
            yield
            sink.close()
        except BaseException:
            sink.abort()
            raise
        finally:
            del self._batches[pin]

    def _store_chunk(self, piece: memoryview, pin: Pin | None, sink: _PackSink, order: _InOrder) -> ChunkRef:
        """Hash, pin, look for, and (if new) append one chunk; its place in the pack is taken
        in the file's order (:class:`_InOrder`), its bytes written in parallel."""
        ticket = order.ticket(piece)
        slot = None
        try:
            digest = chunk_digest(piece)
            if pin is not None:
                try:
                    pin.add(digest)  # before the existence check: the order gc relies on
                except OSError as exc:
                    raise RepositoryError(
                        f"cannot write to the object store {self.root}: {os_reason(exc)}"
                    ) from exc
            new = not sink.wrote(digest) and not self._holds(digest)
            order.wait(ticket)
            if new:
                slot = sink.reserve(digest, len(piece))
        finally:
            order.done(ticket)
        if slot is not None:
            sink.write(slot, piece)
        return ChunkRef(ChunkDigest(digest), len(piece))

    def _holds(self, digest: str) -> bool:
        """:meth:`has` for a register's chunk (a name it computed): a chunk file, or an entry
        of a pack listed when this file's register began whose ``.pack`` exists now (the
        check gc's pins rely on). A pack another process wrote since is not listed again
        for every chunk: such a chunk is written once more (gc's repack drops the copy)."""
        if os.path.exists(f"{self.objects}/{digest[:2]}/{digest[2:]}"):
            return True
        return self.packs.locate(digest, refresh=False) is not None

    def _write_object(
        self, digest: str, data: memoryview | bytes, *, src: tuple[int, int] | None = None
    ) -> bool:
        """Store ``data`` as the object ``digest`` unless it exists (see :func:`write_immutable`;
        ``src``: the same bytes at ``(fd, offset)``, copied in the kernel); True if this call
        created it."""
        final = self.objects / digest[:2] / digest[2:]
        if final.exists():
            return False
        try:
            self._fanout(final.parent)
            return write_immutable(
                final, self.tmp, data, tmp_name(f"obj-{digest[:12]}"), fsync=self.durable, src=src
            )
        except PermissionError as exc:
            raise RepositoryError(f"the object store {self.root} is read-only: {exc.strerror}") from exc
        except OSError as exc:
            raise RepositoryError(f"cannot write to the object store {self.root}: {os_reason(exc)}") from exc

    def add_verified(
        self,
        digest: str,
        data: memoryview | bytes,
        *,
        sync_dir: bool = True,
        src: tuple[int, int] | None = None,
    ) -> bool:
        """Store bytes the caller has just hashed and found equal to ``digest`` (a download
        verified on arrival), after :meth:`ensure_dirs`.
        True if this call created the object.

        The chunk's bytes are durable before its name appears (:func:`write_immutable`); the
        name itself is made durable here unless ``sync_dir=False``: then the caller calls
        :meth:`sync_dirs` once for a whole batch, before anything relies on the names. With
        ``src`` (``(fd, offset)`` holding the same bytes: the file they were read and
        verified from) they are copied in the kernel; the caller then checks that file did
        not change meanwhile and else removes what this call created."""
        validate_digest(digest, "chunk digest")
        created = self._write_object(digest, data, src=src)
        if self.durable and sync_dir:
            fsync_dir(self.objects / digest[:2])
        return created

    def sync_dirs(self, digests: Iterable[str]) -> None:
        """Make the names of the chunks ``digests`` durable: one fsync per fan-out directory
        (``objects/ab``) holding any of them, whatever their number (nothing for a cache)."""
        if not self.durable:
            return
        for shard in sorted({d[:2] for d in digests}):
            fsync_dir(self.objects / shard)

    def link_verified(self, digest: str, fd: int) -> bool:
        """Name the open file ``fd``, whose bytes the caller has just read from it and found
        equal to ``digest``, as the object ``digest`` with a hard link: no copy of the bytes.

        Only for a download cache (``durable=False``), whose every chunk is verified on use
        (a later change to the linked file is a miss there, fetched again), and only on the
        same filesystem: False when the link cannot be made (another filesystem, a file the
        kernel does not let us link, no ``/proc``); then store a copy (:meth:`add_verified`).
        """
        validate_digest(digest, "chunk digest")
        if self.durable:
            return False
        final = self.objects / digest[:2] / digest[2:]
        if final.exists():
            return True
        self._fanout(final.parent)
        try:
            # the inode read through ``fd``, not whatever the source's name points at now
            os.link(f"/proc/self/fd/{fd}", final, src_dir_fd=fd, follow_symlinks=True)
        except FileExistsError:
            return True  # another process cached the same bytes first
        except OSError:
            return False
        return True

    # ------------------------------------------------------------------ read
    # A chunk is looked for as a chunk file first (stores of formats 1 and 2, and chunks
    # fetched from a blob remote), then in the packs; missing from both, among the chunks
    # and packs a gc has set aside, then on the blob remote (``_fetch``), and once more.
    def read_chunk(self, ref: ChunkRef | str, context: str = "", *, _again: bool = False) -> bytes:
        """The verified bytes of one chunk."""
        digest = ref.digest if isinstance(ref, ChunkRef) else ref
        size = ref.size if isinstance(ref, ChunkRef) else None
        f = self._open_loose(digest, context)
        if f is None:
            with self._open_packed(digest, bytearray(0), context) as chunk:
                if size is not None and len(chunk.data) != size:
                    raise _corrupt(digest, context)  # the manifest says another size
                return bytes(chunk.data)
        with f:
            data = f.read()
        if (size is not None and len(data) != size) or chunk_digest(data) != digest:
            if self._refetch(digest, _again):
                return self.read_chunk(ref, context, _again=True)
            raise _corrupt(digest, context)
        return data

    @contextlib.contextmanager
    def open_verified(self, digest: str, buf: bytearray, context: str = "") -> Iterator[VerifiedChunk]:
        """Read the chunk ``digest`` (into ``buf`` when it fits) and verify it; yields its bytes
        and the descriptor they were read from, valid until the block ends (see
        :class:`VerifiedChunk`). Missing or corrupted: as :meth:`read_chunk`."""
        for again in (False, True):
            f = self._open_loose(digest, context)
            if f is None:
                with self._open_packed(digest, buf, context) as chunk:
                    yield chunk
                return
            with f:
                stamp = fd_stamp(f.fileno())
                data = _read_into(f, buf)
                try:
                    if chunk_digest(data) == digest:
                        yield VerifiedChunk(data, f.fileno(), stamp)
                        return
                finally:
                    data.release()
            if not self._refetch(digest, again):
                break
        raise _corrupt(digest, context)

    def _open_loose(self, digest: str, context: str) -> io.FileIO | None:
        """The chunk's file, opened unbuffered; None when it is in a pack instead (fetched
        first when it is in neither: :class:`MissingChunkError` if it cannot be)."""
        path = self.object_path(digest)
        for fetched in (False, True):
            try:
                return open(path, "rb", buffering=0)
            except FileNotFoundError:
                pass
            if self.packs.locate(digest) is not None:
                return None
            if not fetched:
                self._fetch([digest])
        raise self._missing(digest, context)

    def _missing(self, digest: str, context: str) -> CorruptChunkError | MissingChunkError:
        """The error for a chunk found nowhere: corrupted if a damaged pack lists it."""
        damaged = self.packs.damaged_holder(digest)
        if damaged is not None:
            return CorruptChunkError(
                _where(context) + f"chunk {digest[:16]} is corrupted: its pack {damaged[0][:16]} is "
                f"damaged ({damaged[1]})",
                digest,
            )
        return MissingChunkError(_where(context) + f"chunk {digest[:16]} is missing from the store", digest)

    @contextlib.contextmanager
    def _open_packed(self, digest: str, buf: bytearray, context: str) -> Iterator[VerifiedChunk]:
        """The chunk read from its pack and verified; a pack removed meanwhile by a gc is
        looked for among the packs it set aside (and the blob remote) once."""
        for fetched in (False, True):
            with contextlib.ExitStack() as stack:
                try:
                    data, fd, offset = stack.enter_context(self.packs.open_verified(digest, buf))
                except CorruptChunkError:
                    pack = (self.packs.pack_of(digest, refresh=False) or "?")[:16]
                    raise CorruptChunkError(f"{_corrupt(digest, context)} in pack {pack}", digest) from None
                except MissingChunkError:
                    if fetched:
                        break
                else:
                    yield VerifiedChunk(data, fd, fd_stamp(fd), offset)
                    return
            self._fetch([digest])
            if self.object_path(digest).exists():  # fetched from a blob remote as a chunk file
                with self.open_verified(digest, buf, context) as chunk:
                    yield chunk
                    return
        raise self._missing(digest, context)

    def _refetch(self, digest: str, again: bool) -> bool:
        """Delete a damaged chunk of a download cache so that it is fetched again (once)."""
        if not self.durable and self.fetcher is not None and not again:
            self.delete_object(digest)
            return True
        return False

    def _fetch(self, digests: list[str]) -> None:
        """Find missing chunks: first among those a gc has set aside (chunk files and packs),
        then on the blob remote."""
        if not digests:
            return
        recover(self.tmp, self.objects, digests)
        recover_set_aside(self.root, digests)
        if self._packs is not None:
            self._packs.refresh()
        if self.fetcher is not None:
            still = self.missing(digests)
            if still:
                self.fetcher(self, still)

    def ensure_local(self, records: Iterable[FileRecord]) -> None:
        """Fetch chunks missing locally through the fetcher, in one batch."""
        wanted = [c.digest for r in records for c in r.chunks]
        missing = self.missing(wanted)
        if missing:
            self._fetch(missing)

    def materialize(
        self,
        rec: FileRecord,
        context: str = "",
        progress: ProgressFn | None = None,
        link: Callable[[Path], None] | None = None,
    ) -> Path:
        """A read-only file in the cache holding ``rec``'s bytes, verified before return.

        The first call reassembles the chunks (each verified as it is read) and records the
        cached file's stamp (:class:`~uniflow._storage.verified.StampBook`); a later call
        whose stamp is unchanged uses it without reading it, one whose stamp changed checks
        it against the chunk list (:func:`~uniflow._storage.verified.holds_chunks`) and
        rebuilds it if it was tampered with. ``link`` (e.g. a hard link of it into a version's
        tree, which changes its ctime) is called with the file before its stamp is recorded.
        """
        self.ensure_dirs()
        target = self.cache / rec.digest[:2] / rec.digest
        if target.exists():
            if self._cached_ok(target, rec, link):
                if progress is not None:
                    progress(rec.size, rec.size)
                return target
            force_unlink(target)
            self.stamps.forget(rec.digest)
        self.ensure_local([rec])
        self._fanout(target.parent)
        tmp = self.tmp_path(f"mat-{rec.digest[:16]}")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                if rec.size:
                    os.ftruncate(fd, rec.size)
                # Every chunk is verified as it is copied: what they prove is recorded with
                # the file's stamp, so a later use need not read it again.
                self._assemble(rec, fd, context, progress)
                os.fchmod(fd, 0o444)
                os.replace(tmp, target)
                if link is not None:
                    link(target)
                self.stamps.record(rec.digest, fd)  # after the rename and link: they change the ctime
            finally:
                os.close(fd)
        except OSError as exc:
            force_unlink(tmp)
            raise RepositoryError(f"cannot write the file cache in {self.root}: {os_reason(exc)}") from exc
        except BaseException:
            force_unlink(tmp)
            raise
        return target

    def _assemble(self, rec: FileRecord, fd: int, context: str, progress: ProgressFn | None) -> None:
        buffers = ThreadBuffers(CHUNK_PARAMS["max_size"] + 1)  # one per worker thread, reused

        def one(c: ChunkRef, offset: int) -> int:
            with self.open_verified(c.digest, buffers.get(c.size + 1), context) as chunk:
                if len(chunk.data) != c.size:
                    raise _corrupt(c.digest, context)  # the manifest says another size
                # written from the verified bytes: copy_file_range into a file at a chunk's
                # unaligned offset is slower than pwrite (docs/benchmarks.md, "Figures behind the design")
                written = 0
                while written < c.size:  # bounded: each pwrite makes progress or raises
                    with chunk.data[written:] as rest:
                        written += os.pwrite(fd, rest, offset + written)
            return c.size

        for_each_chunk(rec.chunks, rec.size, one, progress)

    def _cached_ok(self, path: Path, rec: FileRecord, link: Callable[[Path], None] | None = None) -> bool:
        """True if the cached copy at ``path`` is read-only and holds ``rec``'s chunks: its
        stamp is the one recorded, or (checked again, then recorded) its bytes are; then
        ``link`` is called with it (before its stamp is recorded)."""
        fd = _open_file(path)
        if fd is None:
            return False
        try:
            st = os.fstat(fd)
            if st.st_size != rec.size or stat.S_IMODE(st.st_mode) & 0o222:
                return False  # a get's output kept here (writable) is not handed to a load
            return self._copy_ok(rec, fd, path, link)
        finally:
            os.close(fd)

    def _copy_ok(
        self, rec: FileRecord, fd: int, path: Path, link: Callable[[Path], None] | None = None
    ) -> bool:
        """True if the open cached file ``fd`` (at ``path``) holds ``rec``'s chunks: its stamp
        unchanged, or its bytes checked again (then ``link`` is called and its stamp
        recorded anew)."""
        _testhooks.point("whole-digest")
        if self.stamps.trusted(rec.digest, fd):
            if link is not None:
                link(path)  # linked already, mostly: a new link costs one check next time
            return True
        if not holds_chunks(fd, rec):
            return False
        if link is not None:
            link(path)
        self.stamps.record(rec.digest, fd)
        return True

    def open_cached(self, rec: FileRecord) -> int | None:
        """A descriptor of the cached copy of ``rec`` (the caller closes it), verified as
        :meth:`materialize` verifies one, or None when there is none; one that is no longer
        ``rec``'s bytes is removed. Unlike :meth:`materialize` this takes a writable copy
        too (an output a get kept, :meth:`keep_copy`): for copying from, never to hand out."""
        target = self.cache / rec.digest[:2] / rec.digest
        fd = _open_file(target)
        if fd is None:
            return None
        if os.fstat(fd).st_size == rec.size and self._copy_ok(rec, fd, target):
            return fd
        os.close(fd)
        force_unlink(target)
        self.stamps.forget(rec.digest)
        return None

    def has_cached_copy(self, rec: FileRecord) -> bool:
        """True if a cached copy of ``rec`` is there (unverified: :meth:`open_cached` checks it)."""
        return os.path.lexists(self.cache / rec.digest[:2] / rec.digest)

    def keep_copy(self, rec: FileRecord, fd: int) -> None:
        """Keep the file open as ``fd``, which the caller has just written from ``rec``'s
        verified chunks, as the cached copy of ``rec`` (unless there is one): a reflink of it
        where the file system shares extents (its own inode; no byte copied), else, in a
        download cache only (``durable=False``, every copy checked by its stamp on use), a
        hard link to it. Its stamp is recorded. Failures are ignored: a cache is optional."""
        target = self.cache / rec.digest[:2] / rec.digest
        if self.stamps.key is None or os.path.lexists(target):
            return
        try:
            self.ensure_dirs()
            self._fanout(target.parent)
            tmp = self.tmp_path(f"keep-{rec.digest[:16]}")
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444)
            try:
                if copy_file(fd, out, rec.size, reflink_only=True) == "reflink":
                    os.replace(tmp, target)
                    self.stamps.record(rec.digest, out)
                    return
            finally:
                os.close(out)
                force_unlink(tmp)
            if not self.durable:
                os.link(f"/proc/self/fd/{fd}", target, src_dir_fd=fd, follow_symlinks=True)
                self.stamps.record(rec.digest, fd)  # after the link: it changes the ctime
        except (OSError, RepositoryError):
            return

    # ------------------------------------------------------------------ maintenance
    def read_loose(self, digest: str) -> bytes | None:
        """The bytes of chunk file ``digest`` if it exists and holds them (else None): what
        ``gc --repack`` copies into a pack."""
        try:
            with open(self.object_path(digest), "rb", buffering=0) as f:
                data = f.read()
        except OSError:
            return None
        return data if chunk_digest(data) == digest else None

    def delete_object(self, digest: str) -> int:
        """Unlink the object's name (a symlink planted there is removed, never followed);
        the bytes freed."""
        path = self.object_path(digest)
        try:
            size = path.lstat().st_size
            path.unlink()
            return size
        except FileNotFoundError:
            return 0

    def clean_cache(self, live_files: set[str], live_versions: set[str], older_than: float) -> int:
        """Drop materialized files and version trees no live version needs; the count removed."""
        import shutil

        self.check_layout()
        cutoff = time.time() - older_than
        removed = 0
        fanouts = (
            [d for d in self.cache.iterdir() if not d.is_symlink() and d.is_dir()]
            if self.cache.is_dir()
            else []
        )
        for path in [p for d in fanouts for p in d.iterdir()]:
            if path.name not in live_files and path.stat().st_mtime < cutoff:
                force_unlink(path)
                removed += 1
        versions = self.root / "cache" / "versions"
        for vdir in list(versions.iterdir()) if versions.is_dir() else []:
            if vdir.name not in live_versions and vdir.stat().st_mtime < cutoff:
                shutil.rmtree(vdir, ignore_errors=True)
                removed += 1
        return removed

    def clean_tmp(self, older_than: float) -> int:
        """Remove what dead writers left in ``tmp/``; the count removed (see
        :func:`~uniflow._storage.pins.clean_tmp`)."""
        self.check_layout()
        return clean_tmp(self.tmp, older_than)

    def pinned(self, remove_stale: bool = True) -> set[str]:
        """Digests pinned by registers in flight (stale pins of dead processes are removed)."""
        return read_pins(self.tmp, remove_stale)

    def set_aside(self) -> AsideSet:
        """A new set for gc to move candidate chunks into before it reads the pins."""
        return AsideSet(self.tmp, self.objects)

    def restore_abandoned(self) -> int:
        """Put back the chunks a gc that died had set aside; the count restored."""
        return restore_abandoned(self.tmp, self.objects)

    # ------------------------------------------------------------------ the old layout
    def adopt(self, legacy: Path) -> int:
        """Move a store of the old layout (``legacy`` = ``<work tree>/.uniflow``) into this
        one; the count of chunks moved (0 at once when there is none: four ``lstat``).

        No chunk is ever lost, whenever the process is killed and however many processes
        move the same store at once: each chunk is linked into this store (copied when the
        two are on different filesystems), the fan-out directory is fsynced, and only then
        is the old name unlinked, so every chunk has a name in one store or the other at
        every moment. Chunks a gc had set aside in ``tmp/gc.*`` are moved the same way
        (restored: the next gc decides again); then what uniflow wrote in the rest of
        ``tmp/`` (writes in flight of dead processes, stale pins) and in ``cache/`` (derived,
        rebuilt on demand) is removed. A symlink in the old place is not the store: it is
        never followed, moved through or removed.
        Assumes no uniflow older than this store's layout writes the old store meanwhile.
        """
        if first_link(legacy.parent, legacy) is not None:
            return 0  # .uniflow is not a real directory: nothing of ours lies behind it
        present = [n for n in LEGACY_DIRS if _real_dir(legacy / n)]
        if not present:
            return 0
        self.ensure_dirs()
        moved = 0
        try:
            if "objects" in present:
                moved += self._adopt_objects(legacy / "objects")
            if "tmp" in present:
                moved += self._adopt_sets(legacy / "tmp")
            _testhooks.point("store-migrate-chunks-moved")
            for name in ("tmp", "cache"):
                if name in present:
                    _remove_ours(legacy / name)
            _rmdir(legacy / "objects")
        except OSError as exc:
            raise RepositoryError(
                f"cannot move the chunk store from {legacy} to {self.root}: {os_reason(exc)} "
                "(no chunk was lost; run again to finish)"
            ) from exc
        return moved

    def _adopt_objects(self, old: Path) -> int:
        """Move every chunk of the old ``objects/`` one fan-out directory at a time: link all
        of its chunks, fsync the new fan-out directory, then unlink the old names."""
        moved = 0
        for fan in _entries(old):
            if len(fan.name) != 2 or not _HEX.issuperset(fan.name) or not fan.is_dir(follow_symlinks=False):
                continue
            names = [
                e.name
                for e in _entries(Path(fan.path))
                if len(e.name) == 62 and _HEX.issuperset(e.name) and e.is_file(follow_symlinks=False)
            ]
            srcs = [(Path(fan.path) / n, fan.name + n) for n in names]
            moved += self._adopt_chunks(srcs)
            _testhooks.point("store-migrate-linked")
            for src, _digest in srcs:
                _unlink_gone_ok(src)
            _rmdir(Path(fan.path))
            _testhooks.point("store-migrate-unlinked")
        return moved

    def _adopt_sets(self, tmp: Path) -> int:
        """Move back the chunks gc runs of the old store had set aside (``tmp/gc.*/<digest>``)."""
        moved = 0
        for d in _entries(tmp):
            if not d.name.startswith("gc.") or not d.is_dir(follow_symlinks=False):
                continue
            srcs = [
                (Path(e.path), e.name)
                for e in _entries(Path(d.path))
                if len(e.name) == 64 and _HEX.issuperset(e.name) and e.is_file(follow_symlinks=False)
            ]
            moved += self._adopt_chunks(srcs)
            for src, _digest in srcs:
                _unlink_gone_ok(src)
        return moved

    def _adopt_chunks(self, srcs: list[tuple[Path, str]]) -> int:
        """Give each ``(old file, digest)`` its name in this store (an existing one is kept:
        the same bytes), then make the names durable; the count linked or copied here."""
        done = 0
        for src, digest in srcs:
            final = self.objects / digest[:2] / digest[2:]
            self._fanout(final.parent)
            try:
                os.link(src, final, follow_symlinks=False)
            except (FileExistsError, FileNotFoundError):
                continue  # already here, or moved by another process (it links before it unlinks)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP):
                    raise
                if not self._copy_in(src, final, digest):
                    continue
            done += 1
        self.sync_dirs(digest for _src, digest in srcs)
        return done

    def _copy_in(self, src: Path, final: Path, digest: str) -> bool:
        """Copy a chunk of the old store that cannot be hard-linked (another filesystem), as
        it is: reads verify it as they verify every chunk. False if it vanished meanwhile."""
        try:
            fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        with os.fdopen(fd, "rb") as f:  # closes fd
            data = f.read()
        return write_immutable(final, self.tmp, data, tmp_name(f"obj-{digest[:12]}"), fsync=self.durable)


class _PackSink:
    """The packs one register writes, started on its first new chunk (thread-safe)."""

    def __init__(self, root: Path, durable: bool) -> None:
        self._root, self._durable = root, durable
        self._lock = threading.Lock()
        self._stream: PackStream | None = None
        self._names: set[str] = set()

    def wrote(self, digest: str) -> bool:
        """True if this register has added chunk ``digest`` already."""
        return digest in self._names

    def reserve(self, digest: str, length: int) -> tuple[PackStream, tuple[PackWriter, int]] | None:
        """A place for chunk ``digest`` in the pack being filled (None: this register has it)."""
        with self._lock:
            if self._stream is None:
                self._stream = PackStream(self._root, durable=self._durable)
            self._names.add(digest)
            slot = self._stream.reserve(digest, length)
            return None if slot is None else (self._stream, slot)

    def write(self, slot: tuple[PackStream, tuple[PackWriter, int]], piece: memoryview) -> None:
        stream, place = slot
        with piece.cast("B") as flat:
            stream.write_reserved(place, flat)

    def close(self) -> None:
        """Every pack durable and visible (with its index) when this returns."""
        if self._stream is not None:
            self._stream.close()

    def abort(self) -> None:
        if self._stream is not None:
            self._stream.abort()


class _InOrder:
    """The order in which the cutter hands a file's chunks out, so that their places in a
    pack are taken in that order while they are hashed and written on many threads: a
    first load then reads each pack front to back. Each chunk gets a ticket as the cutter
    yields it (:meth:`tickets`); a writer waits until every earlier ticket is done, at
    most :data:`_TURN_WAIT` seconds (the order serves locality only, so a chunk whose
    turn does not come, e.g. after an earlier one was cancelled, goes on without it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._issued: dict[int, int] = {}  # id of a piece in flight -> its ticket
        self._next = 0
        self._turn = 0  # every ticket below this is done
        self._done: set[int] = set()
        self._waiting: dict[int, threading.Event] = {}  # ticket -> set when its turn comes

    def tickets(
        self, cuts: Generator[tuple[int, memoryview], None, None]
    ) -> Generator[tuple[int, memoryview], None, None]:
        try:
            for offset, piece in cuts:
                self._issued[id(piece)] = self._next  # the piece lives until its write is collected
                self._next += 1
                yield offset, piece
        finally:
            cuts.close()

    def ticket(self, piece: memoryview) -> int:
        return self._issued.pop(id(piece), -1)

    def wait(self, ticket: int) -> None:
        """Wait until every ticket before ``ticket`` is done (at most :data:`_TURN_WAIT` s).
        Each waiter has its own event, set only when its own turn comes: a ticket done
        wakes one writer, not all of them."""
        with self._lock:
            if ticket <= self._turn:
                return
            turn = self._waiting[ticket] = threading.Event()
        try:
            turn.wait(_TURN_WAIT)
        finally:
            with self._lock:
                self._waiting.pop(ticket, None)

    def done(self, ticket: int) -> None:
        with self._lock:
            self._done.add(ticket)
            while self._turn in self._done:
                self._done.remove(self._turn)
                self._turn += 1
            turn = self._waiting.get(self._turn)
        if turn is not None:
            turn.set()


def _open_file(path: Path) -> int | None:
    """``path`` opened for reading if it is a regular file (never through a link, never
    waiting on a FIFO), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    os.close(fd)
    return None


def _real_dir(path: Path) -> bool:
    """True if ``path`` is a directory itself (``lstat``: a symlink to one is not)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of ``directory``; none when another process removed it already."""
    try:
        with os.scandir(directory) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _unlink_gone_ok(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _rmdir(path: Path) -> None:
    """Remove an emptied directory of the old store; one still holding something unexpected
    (or removed by another process already) is left as it is."""
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _remove_ours(path: Path) -> None:
    """Remove what uniflow wrote below ``path`` (regular files and the directories holding
    them), bottom up; a symlink or anything else found there is left as it is, never
    followed (a clone may carry one as a committed file), and so is its directory. What
    another process removed first is not an error."""
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):  # never follows links
        for name in filenames + dirnames:
            entry = os.path.join(dirpath, name)
            try:
                mode = os.lstat(entry).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISREG(mode):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry)
            elif stat.S_ISDIR(mode):
                _rmdir(Path(entry))
    _rmdir(path)


def read_verified(fd: int, digest: str, buf: bytearray, size: int | None = None) -> memoryview | None:
    """The bytes of the open file ``fd`` (from its offset) when they are chunk ``digest``, as a
    view of ``buf``; None when they are not (other bytes, a length other than ``size`` when
    given, or a file that fills ``buf``: size it one byte above the longest chunk expected).
    The check of a chunk read from a file the store does not own (a blob remote's, the
    download cache's); :meth:`ObjectStore.open_verified` is the one for its own objects."""
    with memoryview(buf) as view:
        n = read_full(fd, view)
        data = view[:n]
    if n == len(buf) or (size is not None and n != size) or chunk_digest(data) != digest:
        data.release()
        return None
    return data


def _read_into(f: io.FileIO, buf: bytearray) -> memoryview:
    """All of ``f``: a view of ``buf`` if it fits, else of a new buffer."""
    view = memoryview(buf)
    n = read_full(f.fileno(), view)
    if n < len(buf):
        data = view[:n]
        view.release()
        return data
    view.release()
    f.seek(n)
    return memoryview(bytes(buf) + f.read())


def _where(context: str) -> str:
    return f"{context}: " if context else ""


def _corrupt(digest: str, context: str) -> CorruptChunkError:
    return CorruptChunkError(_where(context) + f"chunk {digest[:16]} is corrupted (digest mismatch)", digest)
