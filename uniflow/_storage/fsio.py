"""Writing files that no reader ever sees partial, and the small OS helpers around it.

:func:`write_immutable` is the one primitive by which chunk objects, the blob remote's
files and Git's loose objects are created: the bytes go to an unnamed ``O_TMPFILE`` inode
(or a named temporary file where that is refused), are fsynced, and only then get their
name with ``linkat``; the first writer wins and an existing file is never modified. With a
source descriptor the bytes are copied in the kernel (``copy_file_range``).

:func:`stage_copy` copies a file in the kernel into a new file that has no name yet, has the
copy read back and checked by the caller, fsyncs it and hands it over as a
:class:`StagedFile` to be named later (a blob remote's pack is named only once checked).
:func:`copy_file` copies a whole file the cheapest way the file system allows (a reflink,
a kernel copy, else reads and writes); :func:`start_writeback` starts writing a written
range back to disk so that the closing fsync has little left to wait for;
:func:`preallocate` reserves a file's blocks before it is written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from .._errors import ConcurrencyError, InvalidPathError

__all__ = [
    "flock_within",
    "WRITEBACK_STEP",
    "StagedFile",
    "copy_file",
    "force_unlink",
    "fsync_dir",
    "os_reason",
    "preallocate",
    "stage_copy",
    "start_writeback",
    "write_immutable",
]


def write_immutable(
    final: Path,
    tmp_dir: Path,
    data: memoryview | bytes,
    tmp_file: str | None = None,
    *,
    fsync: bool = True,
    src: tuple[int, int] | None = None,
) -> bool:
    """Write ``data`` to ``final`` so that no reader ever sees it partial, fsynced (unless
    ``fsync=False``: a cache, where a write lost to a crash is only re-fetched), then linked
    into place. The first writer wins (``final`` existing already is success); an existing
    file is never modified.

    Where the filesystem supports it the bytes go to an unnamed ``O_TMPFILE`` inode in
    ``final``'s own directory, linked with ``linkat`` once complete: one directory entry per
    write, and a crash leaves nothing behind. Elsewhere a read-only file in ``tmp_dir`` (same
    filesystem; named ``tmp_file``, default ``<final[:16]>.<random>``) is written and
    hard-linked into place; it never outlives the call, whatever fails. With ``src``
    (``(fd, offset)``) the ``len(data)`` bytes are copied in the kernel from that descriptor
    (``copy_file_range``; the caller hashed ``data``, its own copy of the same bytes, and
    checks afterwards that the file did not change). True if this call created ``final``."""
    done = _write_tmpfile(final, data, fsync, src)
    if done is not None:
        return done
    tmp = tmp_dir / (tmp_file or f"{final.name[:16]}.{uuid.uuid4().hex}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            _fill(fd, data, src)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False  # another writer stored the same bytes first
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            os.replace(tmp, final)  # a filesystem without hard links: same bytes, same name
        return True
    finally:
        force_unlink(tmp)


#: st_dev of filesystems where O_TMPFILE + linkat was refused (the named tmp file is used)
_NO_TMPFILE: set[int] = set()
_TMPFILE_UNSUPPORTED = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOSYS)


def _write_tmpfile(
    final: Path, data: memoryview | bytes, fsync: bool, src: tuple[int, int] | None
) -> bool | None:
    """:func:`write_immutable` through an unnamed inode in ``final.parent`` (True if it created
    ``final``); None when this filesystem (or kernel, or a missing ``/proc``) does not allow
    it, before anything was written. Nothing is visible under ``final`` before its bytes are
    complete (and fsynced)."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag:
        return None
    parent = final.parent
    try:
        fd = os.open(parent, flag | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444)
    except OSError as exc:
        if exc.errno in _TMPFILE_UNSUPPORTED:
            return None
        raise
    try:
        dev = os.fstat(fd).st_dev
        if dev in _NO_TMPFILE:
            return None
        _fill(fd, data, src, dev)
        if fsync:
            os.fsync(fd)
        try:
            # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N: giving src_dir_fd (ignored for an
            # absolute path) makes os.link call linkat with that flag instead of link(2).
            os.link(f"/proc/self/fd/{fd}", final, src_dir_fd=fd, follow_symlinks=True)
        except FileExistsError:
            return False  # another writer stored the same bytes first
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            if final.parent.is_dir() and not final.parent.is_symlink():
                _NO_TMPFILE.add(dev)  # no /proc, or no hard links here: the named way
            return None
    finally:
        os.close(fd)
    return True


#: st_dev of filesystems where copy_file_range was refused (the bytes are written instead)
_NO_COPY_RANGE: set[int] = set()


def _fill(
    fd: int, data: memoryview | bytes, src: tuple[int, int] | None = None, dev: int | None = None
) -> None:
    """Write all of ``data`` to ``fd``; with ``src``, copy the same bytes from ``src`` in the
    kernel (a file that is shorter now than when read has changed: InvalidPathError)."""
    with memoryview(data) as mv:  # released even when a write fails
        total, written = len(mv), 0
        copy = getattr(os, "copy_file_range", None)  # Linux
        if src is not None and copy is not None and dev not in _NO_COPY_RANGE:
            src_fd, offset = src
            try:
                while written < total:  # bounded: each call makes progress or raises
                    n = copy(src_fd, fd, total - written, offset + written)
                    if n == 0:
                        raise InvalidPathError("the file being stored shrank while it was read")
                    written += n
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                if dev is not None:
                    _NO_COPY_RANGE.add(dev)
        while written < total:  # bounded: each write makes progress or raises
            with mv[written:] as rest:
                written += os.write(fd, rest)


def os_reason(exc: OSError) -> str:
    """A short reason for an OSError; a full disk says so plainly."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device (free some space and run the command again)"
    return exc.strerror or str(exc)


def fsync_dir(path: Path) -> None:
    """fsync a directory so the names created in it survive a crash."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def force_unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


#: bytes written between two calls of :func:`start_writeback` on one output
WRITEBACK_STEP = 32 << 20
#: ``FICLONE`` (``_IOW(0x94, 9, int)``): share the source's extents (btrfs, XFS, bcachefs)
_FICLONE = 0x40049409
_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range: list[Callable[[int, int, int, int], int] | None] = []  # loaded on first use


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing the dirty pages of ``[offset, offset + length)`` of ``fd`` back to disk
    (``sync_file_range(SYNC_FILE_RANGE_WRITE)``) without waiting for them, so that writeback
    overlaps writing and the fsync at the end finds little left; nothing where the call is
    unavailable (the fsync at the end is what makes the file durable, either way)."""
    if not _sync_file_range:
        _sync_file_range.append(_load_sync_file_range())
    call = _sync_file_range[0]
    if call is not None and length > 0:
        call(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # an error only means no early start


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    fn = _libc_function("sync_file_range")
    if fn is not None:
        import ctypes  # noqa: PLC0415 (loaded by _libc_function already)

        fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        fn.restype = ctypes.c_int
    return cast("Callable[[int, int, int, int], int] | None", fn)


_fallocate: list[Callable[[int, int, int, int], int] | None] = []  # loaded on first use


def preallocate(fd: int, length: int) -> bool:
    """Reserve the blocks of the first ``length`` bytes of ``fd`` (Linux ``fallocate``, mode
    0: the file's size becomes at least ``length``, the new blocks read as zeros), so that
    the writes that follow find their blocks allocated instead of the file system
    allocating them page by page; True if done. False where the file system or platform has
    no such call: nothing is written then (unlike ``posix_fallocate``, which falls back to
    writing zeros), and the writes allocate as they go."""
    if not _fallocate:
        _fallocate.append(_load_fallocate())
    call = _fallocate[0]
    return call is not None and length > 0 and call(fd, 0, 0, length) == 0


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    fn = _libc_function("fallocate64") or _libc_function("fallocate")
    if fn is not None:
        import ctypes  # noqa: PLC0415 (loaded by _libc_function already)

        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        fn.restype = ctypes.c_int
    return cast("Callable[[int, int, int, int], int] | None", fn)


def _libc_function(name: str) -> Any:
    """The C library's function ``name`` (a ``ctypes`` function), None where it is not
    there or this is not Linux."""
    if os.uname().sysname != "Linux":
        return None
    try:
        import ctypes  # noqa: PLC0415 (only once a large file is written)

        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None


def copy_file(src: int, dst: int, size: int, *, writeback: bool = False, reflink_only: bool = False) -> str:
    """Copy the first ``size`` bytes of ``src`` into the empty file ``dst`` (both open
    descriptors), the cheapest way the file system allows: a reflink (``ioctl FICLONE``: no
    byte copied, the extents shared copy-on-write), else ``copy_file_range`` (the kernel
    copies, or offloads), else reads and writes. With ``writeback``, writeback of what was
    copied is started every :data:`WRITEBACK_STEP` bytes. Which way was taken:
    ``"reflink"``, ``"kernel"`` or ``"read"``; with ``reflink_only``, ``"none"`` when no
    reflink could be made (nothing is copied then). A source shorter than ``size`` is an
    ``OSError`` (``EIO``)."""
    if size and _reflink(src, dst, size):
        return "reflink"
    if reflink_only:
        return "none"
    with contextlib.suppress(OSError, AttributeError):  # a hint: read the source ahead, in bulk
        os.posix_fadvise(src, 0, size, os.POSIX_FADV_WILLNEED)
    done, how = 0, "kernel"
    copy = getattr(os, "copy_file_range", None)
    while done < size:  # bounded: each pass copies bytes or raises
        n = min(WRITEBACK_STEP, size - done)
        moved = _copy_range(copy, src, dst, n, done) if copy is not None else 0
        if moved < 0 or copy is None:
            copy, how = None, "read"
            moved = _copy_read(src, dst, n, done)
        if moved == 0:
            raise OSError(errno.EIO, "the source file is shorter than expected")
        if writeback:
            start_writeback(dst, done, moved)
        done += moved
    return how


def _reflink(src: int, dst: int, size: int) -> bool:
    """True if ``dst`` now shares ``src``'s extents (and has its size)."""
    try:
        import fcntl  # noqa: PLC0415 (POSIX only)

        fcntl.ioctl(dst, _FICLONE, src)
    except (OSError, ImportError):
        return False
    if os.fstat(dst).st_size == size:
        return True
    os.ftruncate(dst, 0)  # the source is not the size expected: copied below, which says so
    return False


def _copy_range(copy: Callable[..., int], src: int, dst: int, n: int, offset: int) -> int:
    """Bytes ``copy_file_range`` moved at ``offset`` (up to ``n``); -1 where it is refused."""
    moved = 0
    while moved < n:  # bounded: each call makes progress, ends at EOF or raises
        try:
            got = copy(src, dst, n - moved, offset + moved, offset + moved)
        except OSError as exc:
            if moved == 0 and exc.errno in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                return -1
            raise
        if got == 0:
            break
        moved += got
    return moved


def _copy_read(src: int, dst: int, n: int, offset: int) -> int:
    """Bytes copied at ``offset`` (up to ``n``) with reads and writes, 1 MiB at a time."""
    moved = 0
    while moved < n:  # bounded: each pass copies bytes or ends at EOF
        data = os.pread(src, min(1 << 20, n - moved), offset + moved)
        if not data:
            break
        with memoryview(data) as view:
            written = 0
            while written < len(view):  # bounded: each write makes progress or raises
                written += os.pwrite(dst, view[written:], offset + moved + written)
        moved += len(data)
    return moved


def flock_within(fd: int, seconds: float, busy: str, poll: float = 0.05) -> None:
    """Lock ``fd`` exclusively (``flock``), waiting at most ``seconds``; then raise
    :class:`ConcurrencyError` with ``busy`` (what holds it) and how long was waited."""
    deadline = time.monotonic() + seconds
    while True:  # bounded by the deadline
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise ConcurrencyError(f"{busy} for more than {seconds:.0f}s") from None
            time.sleep(poll)


class StagedFile:
    """A complete, fsynced file without its final name yet (an unnamed ``O_TMPFILE`` inode,
    or a temporary file): :meth:`publish` names it, :meth:`close` discards whatever was not
    named (call it always)."""

    def __init__(self, fd: int, tmp: Path | None, final: Path) -> None:
        self.fd = fd
        self.final = final
        self._tmp = tmp

    def publish(self) -> bool:
        """Link the file as its final name; True if this call created it (an existing file
        of that name is left as it is: the first writer wins)."""
        try:
            if self._tmp is None:
                # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N (src_dir_fd makes os.link use linkat)
                os.link(f"/proc/self/fd/{self.fd}", self.final, src_dir_fd=self.fd, follow_symlinks=True)
            else:
                os.link(self._tmp, self.final)
        except FileExistsError:
            return False
        except OSError as exc:
            if self._tmp is None:
                _NO_TMPFILE.add(os.fstat(self.fd).st_dev)  # the next file takes the named way
                raise
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            os.replace(self._tmp, self.final)  # a filesystem without hard links: same bytes, same name
        return True

    def close(self) -> None:
        """Close the file; unless :meth:`publish` named it, nothing of it remains."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._tmp is not None:
            force_unlink(self._tmp)
            self._tmp = None


def stage_copy(
    final: Path, tmp_dir: Path, src: int, size: int, verify: Callable[[int], None], tmp_file: str
) -> StagedFile:
    """The first ``size`` bytes of the descriptor ``src`` copied (:func:`copy_file`: a reflink,
    a kernel copy, else reads and writes) into a new file that will be named ``final``: an
    unnamed inode in ``final``'s directory, or where that is refused ``tmp_dir / tmp_file``.
    ``verify(fd)`` then reads the copy back (an exception from it discards the copy), and the
    copy is fsynced. Name it with :meth:`StagedFile.publish`."""
    fd, tmp = _open_staged(final.parent, tmp_dir / tmp_file)
    staged = StagedFile(fd, tmp, final)
    try:
        copy_file(src, fd, size, writeback=True)
        verify(fd)
        os.fsync(fd)
    except BaseException:
        staged.close()
        raise
    return staged


def _open_staged(directory: Path, tmp: Path) -> tuple[int, Path | None]:
    """A new file open for reading and writing: an unnamed inode in ``directory`` (None), or
    where that is refused (or was refused before on that file system) the file ``tmp``."""
    flag = getattr(os, "O_TMPFILE", 0)
    if flag and os.path.isdir("/proc/self/fd"):
        try:
            fd = os.open(directory, flag | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444)
        except OSError as exc:
            if exc.errno not in _TMPFILE_UNSUPPORTED:
                raise
        else:
            if os.fstat(fd).st_dev not in _NO_TMPFILE:
                return fd, None
            os.close(fd)
    return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444), tmp
