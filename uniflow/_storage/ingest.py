"""Reading a file that is being stored, and hashing it in order.

A file handed to ``ObjectStore.put_file`` belongs to the user and may change while it is
read: a training job still writing its checkpoint, a copy in progress, a hostile file system.
So it is never mapped (a mapping of a file truncated meanwhile kills the process with
SIGBUS); :class:`FileSource` reads it a window at a time into this process's own memory
(``_storage.cutting.cut_file`` asks for the windows), and every chunk is hashed from those
bytes and appended to the register's pack from the same bytes (``ObjectStore.batch``), so
a stored chunk always holds what its name says. The
file's stamp (size, mtime, ctime, inode) is compared before and after, and a byte past the
recorded end means it grew: a file that changed is refused, never recorded as a mix of its
old and new bytes (the chunks already appended are garbage for gc).

The file is read once: its identity and its tensors' are built from the chunk names
(``_storage.chunking.store_chunks``). :func:`fd_digest` hashes an open file whole, for
the readers that check a copy against a ``b3sum`` digest.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3

from .. import _testhooks
from .._errors import InvalidPathError

__all__ = ["WINDOW", "FileSource", "fd_digest", "fd_stamp", "read_full"]

#: bytes :func:`fd_digest` reads from a file at a time
WINDOW = 8 << 20


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def fd_stamp(fd: int) -> tuple[int, ...]:
    """What changes when the file open as ``fd`` is written, truncated or replaced in place
    (device, inode, size, mtime, ctime; Linux 6.13 and later give a change a new ctime even
    within one clock tick once the old one was read)."""
    return _stamp(os.fstat(fd))


def _pread_into(fd: int, view: memoryview, pos: int) -> int:
    preadv = getattr(os, "preadv", None)
    if preadv is not None:
        return int(preadv(fd, [view], pos))
    data = os.pread(fd, len(view), pos)  # platforms without preadv: one copy more
    view[: len(data)] = data
    return len(data)


def fd_digest(fd: int, size: int) -> str | None:
    """BLAKE3 of the open file ``fd`` (what ``b3sum`` prints), which should hold ``size``
    bytes; None if it holds fewer or more (cut short or grown meanwhile: the caller's copy is
    damaged). Read, never mapped, so a file truncated meanwhile cannot kill the process; the
    next window is read on a thread of its own while this one is hashed with BLAKE3's
    threads, so reading overlaps hashing (``docs/benchmarks.md`` compares it with a mapping)."""
    _testhooks.point("whole-digest")
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    bufs = [memoryview(bytearray(min(WINDOW, size))) for _ in range(2 if size > WINDOW else 1)]

    def read(i: int, pos: int) -> bool:
        with bufs[i][: min(WINDOW, size - pos)] as view:
            return read_full(fd, view, pos) == len(view)

    with ThreadPoolExecutor(1, thread_name_prefix="uniflow-read") as reader:
        pos, i = 0, 0
        ahead = reader.submit(read, 0, 0) if size else None
        while ahead is not None:  # bounded: each pass advances by a window
            if not ahead.result():
                return None
            n = min(WINDOW, size - pos)
            ahead = reader.submit(read, 1 - i, pos + n) if pos + n < size else None
            with bufs[i][:n] as view:
                h.update(view)
            pos, i = pos + n, (i + 1) % len(bufs)
    return None if os.pread(fd, 1, size) else h.hexdigest()


def read_full(fd: int, view: memoryview, pos: int = 0) -> int:
    """Read the bytes of ``fd`` at ``pos`` into ``view`` until it is full or the file ends
    (the descriptor's own position is left alone); how many bytes were read."""
    got = 0
    while got < len(view):  # bounded: each read makes progress or ends the loop
        with view[got:] as rest:
            n = _pread_into(fd, rest, pos + got)
        if n == 0:
            break
        got += n
    return got


class FileSource:
    """A regular file open for reading (``fd``, not owned), read in windows; see the module doc."""

    def __init__(self, fd: int, path: Path) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidPathError(f"cannot store {path}: not a regular file")
        self.fd, self.path, self.size = fd, path, st.st_size
        self._stamp = _stamp(st)

    def changed(self) -> InvalidPathError:
        return InvalidPathError(
            f"{self.path} changed while it was being registered (is something still writing it?); "
            "register it again once it is complete"
        )

    def read_into(self, view: memoryview, pos: int) -> None:
        """Fill ``view`` with the bytes at ``pos``; a file now shorter than that is changed."""
        if read_full(self.fd, view, pos) < len(view):
            raise self.changed()

    def head(self, n: int) -> memoryview:
        """The file's first ``n`` bytes (at most its size), for a header parser."""
        view = memoryview(bytearray(min(n, self.size)))
        self.read_into(view, 0)
        return view

    def check_unchanged(self) -> None:
        """Raise :meth:`changed` unless the file is as it was when opened: the same stamp and
        nothing past its end. Called once every byte that was stored has been read."""
        if _stamp(os.fstat(self.fd)) != self._stamp or os.pread(self.fd, 1, self.size):
            raise self.changed()
