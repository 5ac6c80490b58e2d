"""Writing packs (the format, the reader and the write order are ``_storage.packs``'s doc).

:class:`PackWriter` fills one pack; :class:`PackStream` rolls over to a new pack whenever
one is full and finishes the full one on a thread of its own, so its fsyncs overlap the
writing of the next (a register keeps writing while the disk flushes). :func:`recover_packs`
completes what a writer killed between its two links left: a pack without its index.

The steps of :meth:`PackWriter.finish`, each a test point (``_testhooks``): the index and
tail written (``pack-written``), the pack fsynced (``pack-synced``), linked
(``pack-linked``), the index written, fsynced and linked (``pack-indexed``), ``packs/``
fsynced (``pack-done``); ``pack-chunk-written`` follows each chunk's write.

**Plain writes.** A durable pack is written with ``pwrite``, one writer thread at a time
(the others sleep on the pack's lock rather than spin on the file's inode lock), into blocks
reserved :data:`PREALLOC_AHEAD` bytes ahead with ``fallocate`` (``fsio.preallocate``; the
file system then does not allocate page by page, and the blocks not used are cut off before
the fsync); writeback of each :data:`FLUSH_STEP` window is started (``fsio.start_writeback``)
as soon as every byte of it is written, so the pack's fsync finds little left to write.

**Direct writes, on request.** A durable pack is written with ``pwrite`` from the
caller's bytes, through the page cache: a push, a load or a ``get`` that follows a register
then reads the pack from memory, not from the disk. With ``UNIFLOW_DIRECT_PACKS=1`` (a
machine that registers and never reads back, such as a CI job whose packs a later job
uploads) it is written with ``O_DIRECT`` where the file system takes it (:class:`_Staged`):
each chunk is copied into a page-aligned window of :data:`STAGE` bytes of the pack, and a
window is written, bypassing the page cache, as soon as every byte of it is there (by the
thread that filled it last); :meth:`PackWriter.finish` writes the last window and the index
rounded up to a whole block, then cuts the file to its length before the fsync. The kernel
then allocates no pages and the fsync has no dirty pages to write back (less system time),
but whatever reads the pack next reads it from the disk. Where ``O_DIRECT`` is refused
(tmpfs, some network file systems) and for a download cache (``durable=False``), chunks are
written with ``pwrite``. The write order and what a crash can leave (nothing named before
the fsync) are the same either way.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .. import _testhooks
from .._errors import IntegrityError, RepositoryError
from .fsio import force_unlink, fsync_dir, os_reason, preallocate, start_writeback, write_immutable
from .packs import (
    DATA_START,
    END_MAGIC,
    FORMAT_VERSION,
    PACK_HEAD,
    PACK_MAGIC,
    PACK_TAIL,
    PACK_TARGET,
    PackIndex,
    check_name,
    pack_dir,
    raw_name,
    read_pack_tail,
    scan_packs,
)
from .pins import tmp_name

__all__ = [
    "DIRECT_ENV",
    "FLUSH_STEP",
    "PREALLOC_AHEAD",
    "STAGE",
    "PackStream",
    "PackWriter",
    "WindowPool",
    "recover_packs",
]

_TMPFILE_UNSUPPORTED = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOSYS)
Data = bytes | bytearray | memoryview
#: bytes of a pack staged in memory and written at once by a direct write (a multiple of
#: every block size ``O_DIRECT`` asks to align to)
STAGE = 8 << 20
#: what a direct write's length and offset are rounded to (a page: every block size is a divisor)
_ALIGN = mmap.PAGESIZE
#: set to ``1``: durable packs are written with ``O_DIRECT`` (see the module doc)
DIRECT_ENV = "UNIFLOW_DIRECT_PACKS"
#: staging windows kept for reuse (more are made, and freed, while more are filling)
_KEEP = 6
#: how far past the end of a write a durable pack's blocks are reserved (``fallocate``,
#: renewed whenever a write reaches past what is reserved): a small pack reserves little
PREALLOC_AHEAD = 32 << 20
#: writeback of a durable pack is started a window of this many bytes at a time, as soon as
#: every byte of the window is written
FLUSH_STEP = 16 << 20


def _open_unnamed(directory: Path, tmp_dir: Path) -> tuple[int, Path | None]:
    """A new file to write a pack into: an unnamed inode in ``directory`` (None), or where
    that is refused a file in ``tmp_dir`` named with this process's owner token."""
    flag = getattr(os, "O_TMPFILE", 0)
    if flag and os.path.isdir("/proc/self/fd"):
        try:
            return os.open(directory, flag | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444), None
        except OSError as exc:
            if exc.errno not in _TMPFILE_UNSUPPORTED:
                raise
    path = tmp_dir / tmp_name("pack")
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444), path


def _link_into_place(fd: int, tmp: Path | None, final: Path) -> None:
    """Give the written file its name (an existing one is the same bytes: first writer wins)."""
    try:
        if tmp is None:
            # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N (src_dir_fd makes os.link use linkat)
            os.link(f"/proc/self/fd/{fd}", final, src_dir_fd=fd, follow_symlinks=True)
        else:
            os.link(tmp, final)
    except FileExistsError:
        pass


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):  # bounded: each write makes progress or raises
        with view[done:] as rest:
            done += os.pwrite(fd, rest, offset + done)


class WindowPool:
    """Page-aligned buffers of :data:`STAGE` bytes (anonymous mappings) for direct writes,
    reused so that the packs of one stream do not fault in fresh pages for every window; at
    most :data:`_KEEP` kept (freed with the pool)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[mmap.mmap] = []

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return mmap.mmap(-1, STAGE)

    def give(self, buf: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < _KEEP:
                self._free.append(buf)
                return
        buf.close()


def _set_direct(fd: int, on: bool) -> bool:
    """Turn ``O_DIRECT`` on or off for ``fd``; False where the file system refuses it."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        return False
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | direct) if on else (flags & ~direct))
    except OSError:
        return False
    return True


class _Staged:
    """The bytes of one pack file (``fd``, opened ``O_DIRECT``), staged in windows of
    :data:`STAGE` bytes at offsets that are multiples of it and written whole, each as soon
    as all its bytes are in (see the module doc). :meth:`put` may be called from several
    threads for disjoint ranges; at most the windows that ranges in flight touch are held."""

    def __init__(self, fd: int, pool: WindowPool) -> None:
        self._fd, self._pool = fd, pool
        self._lock = threading.Lock()
        self._windows: dict[int, tuple[mmap.mmap, list[int]]] = {}  # index -> (buffer, [bytes in])
        self._direct = True

    def put(self, offset: int, data: memoryview) -> None:
        """Stage ``data`` (format ``B``) at ``offset``; write every window it completes."""
        pos = 0
        while pos < len(data):  # bounded: each pass stages the part in one window
            k, at = divmod(offset + pos, STAGE)
            n = min(len(data) - pos, STAGE - at)
            with self._lock:
                buf, filled = self._windows.get(k) or self._windows.setdefault(k, (self._pool.take(), [0]))
            with memoryview(buf) as whole:
                whole[at : at + n] = data[pos : pos + n]
            with self._lock:
                filled[0] += n
                complete = filled[0] == STAGE
                if complete:
                    del self._windows[k]
            if complete:
                try:
                    self._write(buf, k * STAGE, STAGE)
                finally:
                    self._pool.give(buf)
            pos += n

    def finish(self, end: int) -> None:
        """Write the windows left (the file's last ``end`` bytes not yet written, each rounded
        up to a whole block with zeros), then cut the file to ``end`` bytes."""
        with self._lock:
            left = sorted(self._windows.items())
            self._windows.clear()
        try:
            for k, (buf, _) in left:
                n = min(STAGE, end - k * STAGE)
                if n <= 0:
                    continue
                padded = -(-n // _ALIGN) * _ALIGN
                buf[n:padded] = bytes(padded - n)
                self._write(buf, k * STAGE, padded)
        finally:
            for _, (buf, _) in left:
                self._pool.give(buf)
        os.ftruncate(self._fd, end)

    def discard(self) -> None:
        """Drop the windows not written (not reused: a write still in flight may hold one)."""
        with self._lock:
            self._windows.clear()

    def _write(self, buf: mmap.mmap, offset: int, n: int) -> None:
        with memoryview(buf) as whole, whole[:n] as view:
            if self._direct:
                try:
                    _pwrite_all(self._fd, view, offset)
                    return
                except OSError as exc:
                    if exc.errno != errno.EINVAL:  # EINVAL: this file system takes no direct write
                        raise
                    self._direct = False
                    _set_direct(self._fd, False)
            _pwrite_all(self._fd, view, offset)


class PackWriter:
    """Appends chunks to one new pack in ``<store_root>/packs/``.

    ``add`` takes a chunk whose name the caller computed from these very bytes (it is not
    hashed again here; every read verifies it). It may be called from several threads at
    once: each call reserves its range under a lock and writes it outside (staged for a
    direct write, or with ``pwrite``: the module doc); :meth:`finish` waits for the writes in
    flight, then makes the pack and its index durable and visible. :meth:`abort`, or leaving
    a ``with`` block by an exception, discards it. ``durable=False`` (a download cache)
    skips the fsyncs and the direct writes. ``windows``: the staging buffers to reuse (a
    stream's packs share one pool)."""

    def __init__(
        self,
        store_root: Path,
        *,
        target: int = PACK_TARGET,
        durable: bool = True,
        windows: WindowPool | None = None,
    ) -> None:
        self.directory = pack_dir(store_root)
        self._tmp_dir = Path(store_root) / "tmp"
        self.target = target
        self.durable = durable
        self._lock = threading.Condition()
        self._pwrite_lock = threading.Lock()
        self._end = DATA_START
        self._ranges: dict[bytes, tuple[int, int]] = {}
        self._inflight = 0
        self._failed: str | None = None
        self._fd, self._tmp = -1, None
        self._staged: _Staged | None = None
        self._flushing = self._sized = False
        self._reserved_to = 0  # bytes [0, _reserved_to) have their blocks reserved
        self._filled: dict[int, int] = {}  # FLUSH_STEP window -> bytes written in it
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._tmp_dir.mkdir(parents=True, exist_ok=True)
            self._fd, self._tmp = _open_unnamed(self.directory, self._tmp_dir)
            if durable and os.environ.get(DIRECT_ENV) == "1" and _set_direct(self._fd, True):
                self._staged = _Staged(self._fd, windows or WindowPool())
            self._flushing = durable and self._staged is None
            self._write(memoryview(PACK_HEAD.pack(PACK_MAGIC, FORMAT_VERSION, 0)), 0)
            self._written(0, DATA_START)
        except OSError as exc:
            self.abort()
            raise RepositoryError(f"cannot write a pack in {self.directory}: {os_reason(exc)}") from exc

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.abort()

    @property
    def size(self) -> int:
        """Bytes of the pack so far (header and chunks)."""
        return self._end

    @property
    def full(self) -> bool:
        """True once the chunk bytes reached the target size: finish it, start another."""
        return self._end - DATA_START >= self.target

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and raw_name(name) in self._ranges

    def add(self, name: str, data: Data) -> bool:
        """Append chunk ``name`` (``data`` are its bytes); False if this pack already has it."""
        with memoryview(data) as view, view.cast("B") as flat:
            offset = self.reserve(name, flat.nbytes)
            if offset is None:
                return False
            self.write_reserved(offset, flat)
        return True

    def reserve(self, name: str, length: int) -> int | None:
        """Reserve ``length`` bytes for chunk ``name``: their offset, None if the pack already
        has it. The caller must then call :meth:`write_reserved` (a pack with a reserved range
        left unwritten cannot be finished)."""
        raw = check_name(name, "chunk name")
        if length < 1:
            raise ValueError("an empty chunk has no place in a pack")
        with self._lock:
            if self._fd < 0:
                raise RuntimeError("PackWriter.add after finish or abort")
            if raw in self._ranges:
                return None
            offset = self._end
            self._end += length
            self._ranges[raw] = (offset, length)
            self._inflight += 1
        return offset

    def write_reserved(self, offset: int, data: memoryview) -> None:
        """Write a reserved range (see :meth:`reserve`)."""
        try:
            self._write(data, offset)
            self._written(offset, len(data))
        except OSError as exc:
            self._failed = os_reason(exc)
            raise RepositoryError(f"cannot write a pack: {self._failed}") from exc
        finally:
            with self._lock:
                self._inflight -= 1
                self._lock.notify_all()
        _testhooks.point("pack-chunk-written")

    def _written(self, offset: int, length: int) -> None:
        """Count ``length`` bytes written at ``offset``; start the writeback of every
        :data:`FLUSH_STEP` window of a durable pack they complete (so that the fsync in
        :meth:`finish` finds little left to write; the pack still has no name)."""
        if not self._flushing:
            return
        done = []
        with self._lock:
            pos, end = offset, offset + length
            while pos < end:  # bounded: each pass counts the part in one window
                k = pos // FLUSH_STEP
                n = min(end, (k + 1) * FLUSH_STEP) - pos
                filled = self._filled.get(k, 0) + n
                if filled == FLUSH_STEP:
                    del self._filled[k]
                    done.append(k)
                else:
                    self._filled[k] = filled
                pos += n
        for k in done:
            start_writeback(self._fd, k * FLUSH_STEP, FLUSH_STEP)

    def finish(self) -> PackIndex | None:
        """Write the index, make the pack durable and visible; its index (None if empty)."""
        with self._lock:
            while self._inflight:  # bounded: every reserved write ends, written or failed
                self._lock.wait()
            if self._fd < 0:
                raise RuntimeError("PackWriter.finish after finish or abort")
            if self._failed is not None or not self._ranges:
                failed = self._failed
                self.abort()
                if failed is not None:
                    raise RepositoryError(f"cannot write a pack: {failed}")
                return None
            index = PackIndex.build(self._ranges, self._end)
            try:
                self._publish(index)
            except OSError as exc:
                self.abort()
                raise RepositoryError(f"cannot write pack {index.name[:16]}: {os_reason(exc)}") from exc
            self.abort()  # closes the descriptor; the pack has its name now
        return index

    def _publish(self, index: PackIndex) -> None:
        """The write order of ``_storage.packs``' doc, one step per test point."""
        with memoryview(index.raw + PACK_TAIL.pack(len(index.raw), END_MAGIC)) as tail:
            self._write(tail, self._end)
            if self._staged is not None:
                self._staged.finish(self._end + len(tail))
            elif self._sized:
                os.ftruncate(self._fd, self._end + len(tail))  # the blocks reserved and not used
        _testhooks.point("pack-written")
        if self.durable:
            os.fsync(self._fd)
        _testhooks.point("pack-synced")
        _link_into_place(self._fd, self._tmp, self.directory / f"{index.name}.pack")
        _testhooks.point("pack-linked")
        write_immutable(self.directory / f"{index.name}.idx", self._tmp_dir, index.raw, fsync=self.durable)
        _testhooks.point("pack-indexed")
        if self.durable:
            fsync_dir(self.directory)
        _testhooks.point("pack-done")

    def _write(self, data: memoryview, offset: int) -> None:
        """Write ``data`` (format ``B``) at ``offset``: staged for a direct write, or ``pwrite``
        one writer at a time. The file system lets one ``pwrite`` into a file proceed at a
        time anyway (the inode's lock) and has the others spin on that lock while its owner
        runs, burning a core; waiting on :attr:`_pwrite_lock` instead, they sleep."""
        if self._staged is not None:
            self._staged.put(offset, data)
        else:
            with self._pwrite_lock:
                if self._flushing and offset + len(data) > self._reserved_to:
                    self._reserve_blocks(offset + len(data) + PREALLOC_AHEAD)
                _pwrite_all(self._fd, data, offset)

    def _reserve_blocks(self, end: int) -> None:
        """Reserve the pack's blocks up to ``end`` (under the pwrite lock), so that the writes
        find them allocated instead of the file system allocating page by page; where the
        file system cannot, stop asking (the writes allocate as they go)."""
        if preallocate(self._fd, end):
            self._reserved_to, self._sized = end, True
        else:
            self._reserved_to = 1 << 62  # never asked again

    def abort(self) -> None:
        """Close the pack; unless :meth:`finish` named it, nothing of it stays visible."""
        if self._staged is not None:
            self._staged.discard()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._tmp is not None:
            force_unlink(self._tmp)
            self._tmp = None


class PackStream:
    """Chunks written to as many packs as they need, in ``<store_root>/packs/``.

    ``add`` may be called from several threads. When a pack is full, the next ``add`` starts
    a new one and the full pack is finished on a background thread (its fsyncs overlap the
    writing of the next). :meth:`close` finishes the last pack, waits for the others and
    returns every index, in the order the packs were started: all durable and visible.
    :meth:`abort` discards the pack being filled (the packs already finished stay: whole,
    unreferenced, gc's to remove)."""

    def __init__(self, store_root: Path, *, target: int = PACK_TARGET, durable: bool = True) -> None:
        self._root = Path(store_root)
        self._target, self._durable = target, durable
        self._lock = threading.Lock()
        self._windows = WindowPool()  # shared by this stream's packs (at most two fill at once)
        self._writer = PackWriter(self._root, target=target, durable=durable, windows=self._windows)
        self._names: set[str] = set()
        self._finishing: list[Future[PackIndex | None]] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="uniflow-pack-finish")

    def __enter__(self) -> PackStream:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.abort()

    def add(self, name: str, data: Data) -> bool:
        """Append chunk ``name``; False if this stream already wrote it."""
        with memoryview(data) as view, view.cast("B") as flat:
            slot = self.reserve(name, flat.nbytes)
            if slot is None:
                return False
            self.write_reserved(slot, flat)
        return True

    def reserve(self, name: str, length: int) -> tuple[PackWriter, int] | None:
        """Reserve ``length`` bytes for chunk ``name`` in the pack being filled (so chunks lie
        in the order of their reservations): the slot, or None if this stream already has
        the chunk. The caller must then call :meth:`write_reserved` with the slot."""
        with self._lock:
            if name in self._names:
                return None
            writer = self._writer
            offset = writer.reserve(name, length)
            self._names.add(name)
            if writer.full:  # this chunk fills it: the next add goes to a new pack
                self._writer = PackWriter(
                    self._root, target=self._target, durable=self._durable, windows=self._windows
                )
                self._finishing.append(self._pool.submit(writer.finish))  # waits for our write
        if offset is None:  # unreachable: the writer is new to this stream's names
            raise RuntimeError(f"chunk {name[:16]} reserved twice")
        return writer, offset

    def write_reserved(self, slot: tuple[PackWriter, int], data: memoryview) -> None:
        """Write the bytes of a slot :meth:`reserve` gave (outside any lock: ``pwrite``)."""
        writer, offset = slot
        writer.write_reserved(offset, data)

    def close(self) -> list[PackIndex]:
        """Finish every pack; their indexes (durable and visible when this returns)."""
        try:
            done = [f.result() for f in self._finishing]  # in order: packs appear as started
            with self._lock:
                done.append(self._writer.finish())
        except BaseException:
            self.abort()
            raise
        finally:
            self._pool.shutdown()
        return [i for i in done if i is not None]

    def abort(self) -> None:
        """Discard the pack being filled; wait for the ones being finished."""
        with self._lock:
            self._writer.abort()
        for f in self._finishing:
            with contextlib.suppress(RepositoryError, RuntimeError):
                f.result()
        self._pool.shutdown()


def recover_packs(store_root: Path) -> list[str]:
    """Write the missing ``.idx`` of every complete pack that lacks one (from its tail); the
    names indexed. A pack whose tail does not validate is left alone (gc reports it)."""
    done = []
    directory = pack_dir(store_root)
    for name in scan_packs(store_root).unindexed:
        with contextlib.suppress(IntegrityError, RepositoryError):
            index = read_pack_tail(store_root, name)
            write_immutable(directory / f"{name}.idx", Path(store_root) / "tmp", index.raw)
            done.append(name)
    if done:
        fsync_dir(directory)
    return done
