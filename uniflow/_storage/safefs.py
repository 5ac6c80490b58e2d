"""Writing below a root without ever following a symlink: the primitives behind
materializing a version (``.git/uniflow/cache/versions/<content digest>/<path>``) and exporting
one (``DEST/<path>``).

Paths built from data are walked one component at a time from an open directory
descriptor of the root, each component opened with ``O_NOFOLLOW | O_DIRECTORY``, so no
symlink is followed, even one planted between a check and a use. What is found where a
directory is needed is handed to a policy callback (materialize replaces forged cache
entries; export refuses, or with ``force`` replaces only the link itself). Every unlink and
rename is relative to such a descriptor, so nothing outside the root is ever removed.

Test-only injection point (:mod:`uniflow._testhooks`): ``export-write``, after the first
block of an exported file is written to its temporary name (``UNIFLOW_TEST_KILL_AT=export-write``
proves no torn file is ever left under the final name).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

from .. import _testhooks
from .fsio import copy_file

__all__ = [
    "DirTree",
    "NotRegularFile",
    "first_link",
    "describe_mode",
    "entry_mode",
    "link_file",
    "open_regular",
    "open_root",
    "replace_file",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_ATTEMPTS = 4  # a component replaced under us is retried, a bounded number of times

#: ``policy(display_path, st_mode)`` for an entry that is not a real directory where one is
#: needed: raise to refuse, return to have the entry (never its target) unlinked and replaced
DirPolicy = Callable[[str, int], None]


def first_link(root: Path, path: Path) -> Path | None:
    """The first of ``root`` and the directories from it down to ``path`` (inclusive) that is a
    symlink or not a directory, or None. Components that do not exist yet end the walk: they
    will be created as real directories. Used by the store and the derived cache, which work
    on plain paths, to refuse a layout a clone or a user planted links in."""
    current = root
    rel = path.relative_to(root).parts
    for part in ("", *rel):
        current = current / part if part else current
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(st.st_mode):  # lstat: a symlink is never S_ISDIR
            return current
    return None


def describe_mode(mode: int) -> str:
    """What a file is, for messages: ``symlink``, ``FIFO``, ``socket``, ``character device`` ..."""
    for test, word in (
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISREG, "regular file"),
    ):
        if test(mode):
            return word
    return "special file"


def entry_mode(dir_fd: int, name: str) -> int | None:
    """``st_mode`` of ``name`` in ``dir_fd`` (a symlink is not followed), or None if absent."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None


class NotRegularFile(ValueError):
    """What :func:`open_regular` found instead of a regular file (``what``: a symlink, FIFO ...)."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(f"{path} is a {what}, not a regular file")
        self.what = what


def open_regular(path: Path) -> int | None:
    """A read-only descriptor of ``path`` if it is a regular file itself; None if nothing is
    there. A symlink is not followed (even to a regular file), and a FIFO or device is
    neither waited on nor read (``O_NONBLOCK``, then ``fstat``): :class:`NotRegularFile`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(path, "symlink") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFile(path, describe_mode(mode))
    return fd


def open_root(path: Path) -> int:
    """An ``O_DIRECTORY`` descriptor of ``path``; the root itself may be reached through
    symlinks (it is what the caller chose)."""
    return os.open(path, _DIR_FLAGS)


class DirTree:
    """Directories below one root, opened without following symlinks and cached by path.

    Use as a context manager; every descriptor is closed on exit.
    """

    def __init__(self, root_fd: int, root_display: str, policy: DirPolicy, *, create: bool = True) -> None:
        self._fds: dict[tuple[str, ...], int] = {(): root_fd}
        self._display = root_display.rstrip("/")
        self._policy = policy
        self._create = create

    def __enter__(self) -> DirTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def display(self, parts: tuple[str, ...]) -> str:
        return "/".join((self._display, *parts))

    def fds(self) -> list[int]:
        return list(self._fds.values())

    def open(self, parts: tuple[str, ...]) -> int:
        """The descriptor of directory ``root/parts...``, created as needed."""
        fd = self._fds.get(parts)
        if fd is None:
            parent = self.open(parts[:-1])
            fd = self._open_one(parent, parts)
            self._fds[parts] = fd
        return fd

    def _open_one(self, parent: int, parts: tuple[str, ...]) -> int:
        name = parts[-1]
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"not a single path component: {name!r}")
        for _ in range(_ATTEMPTS):
            try:
                return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
            except FileNotFoundError:
                if not self._create:
                    raise
                with contextlib.suppress(FileExistsError):  # made concurrently: opened next round
                    os.mkdir(name, 0o755, dir_fd=parent)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                mode = entry_mode(parent, name)
                if mode is None or stat.S_ISDIR(mode):
                    continue  # changed under us: look again
                self._policy(self.display(parts), mode)
                os.unlink(name, dir_fd=parent)  # the entry itself, never what it points to
        raise OSError(errno.EAGAIN, f"{self.display(parts)} keeps changing")


def link_file(dir_fd: int, name: str, src: Path) -> None:
    """Make ``name`` in ``dir_fd`` a hard link to ``src``; an existing link to the same
    file is kept, any other non-directory entry there (file, symlink) is unlinked first."""
    src_st = os.stat(src)
    for _ in range(_ATTEMPTS):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, "a directory is in the way", name)
            if (st.st_dev, st.st_ino) == (src_st.st_dev, src_st.st_ino):
                return
            os.unlink(name, dir_fd=dir_fd)
        try:
            os.link(src, name, dst_dir_fd=dir_fd)
            return
        except FileExistsError:
            continue  # linked concurrently: compare again
    raise OSError(errno.EAGAIN, "keeps changing", name)


def replace_file(dir_fd: int, name: str, src: Path, mode: int) -> None:
    """Write a copy of ``src`` as ``name`` in ``dir_fd``: a new file (``O_EXCL|O_NOFOLLOW``,
    ``mode`` minus the umask) under a temporary name in the same directory, fsynced, then
    renamed over ``name``. The rename replaces the directory entry itself, so whatever was
    there (a file, a hard link to a file elsewhere, a symlink) is never written through."""
    tmp = f".uniflow-tmp-{uuid.uuid4().hex}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    out = os.open(tmp, flags, mode, dir_fd=dir_fd)
    try:
        try:
            with open(src, "rb") as fin:
                _copy(fin.fileno(), out)
            os.fsync(out)
        finally:
            os.close(out)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _copy(fin: int, fout: int) -> None:
    """Copy all of ``fin`` to ``fout`` (a reflink, else a kernel copy: ``fsio.copy_file``),
    starting writeback as it goes."""
    copy_file(fin, fout, os.fstat(fin).st_size, writeback=True)
    _testhooks.point("export-write")
