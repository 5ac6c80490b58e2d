"""The staging directory of ``uniflow get``, and the clean-up of those a killed get left.

``uniflow get URL NAME -o DIR`` writes the files into ``DIR``'s parent first, in a directory
``.DIR.uniflow-get-<owner>.<random>`` (``<owner>`` is ``<host>_<pid>_<process start time>``,
:func:`uniflow._storage.pins.owner_token`), then renames its ``files/`` into ``DIR``. Next to
``files/`` the get writes a marker file, :data:`MARKER`, naming the same owner.

A get killed before the rename (SIGKILL, power loss) cannot remove its directory; the next
get into the same parent does (:func:`sweep`), and removes only a directory that is all of:
named by the pattern above; a real directory (not a symlink: never followed) owned by this
user; holding uniflow's marker (a regular file owned by this user, exactly the expected
text, the same owner as the name); older than the get that finds it; and whose owner
process is gone on this host (no such pid, or a pid reused by a younger process). A
directory of another host (a shared file system) is left alone: its owner cannot be checked.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .._errors import InvalidPathError
from .._storage.fsio import os_reason
from .._storage.pins import owner_alive, owner_token

__all__ = ["MARKER", "Staging", "begin", "sweep"]

INFIX = ".uniflow-get-"
MARKER = ".uniflow-get-owner"
PAYLOAD = "files"
_MAGIC = "uniflow get staging directory"
_NAME_RE = re.compile(
    r"^\.(?P<dest>.+)\.uniflow-get-(?P<owner>[A-Za-z0-9-]{1,32}_[0-9]{1,10}_[0-9]{1,20})\.[0-9a-f]{16}$",
    re.DOTALL,
)
_MAX_MARKER = 4096


@dataclass(frozen=True)
class Staging:
    """A get's staging directory ``root``; the download goes to ``files`` (created later)."""

    root: Path

    @property
    def files(self) -> Path:
        return self.root / PAYLOAD


def _marker_text(owner: str) -> bytes:
    return f"{_MAGIC}\nowner {owner}\n".encode()


def begin(dest: Path) -> Staging:
    """Remove what killed gets left beside ``dest`` (:func:`sweep`), then create this get's
    staging directory and its marker."""
    sweep(dest.parent, time.time())
    owner = owner_token()
    root = dest.parent / f".{dest.name}{INFIX}{owner}.{uuid.uuid4().hex[:16]}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        os.mkdir(root, 0o700)
        fd = os.open(root / MARKER, flags, 0o600)
        try:
            os.write(fd, _marker_text(owner))
        finally:
            os.close(fd)
    except OSError as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise InvalidPathError(
            f"cannot create a staging directory in {dest.parent}: {os_reason(exc)}"
        ) from exc
    return Staging(root)


def sweep(parent: Path, started: float) -> list[Path]:
    """Remove the staging directories in ``parent`` that a killed get left (see the module
    docstring for every condition); returns those removed. Never raises for one it cannot
    read or remove: it is left as it is."""
    removed: list[Path] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        m = _NAME_RE.match(name)
        if m is None or not _abandoned(parent, name, m["owner"], started):
            continue
        path = parent / name
        with contextlib.suppress(OSError):
            shutil.rmtree(path)  # fd-based: a symlink swapped in meanwhile is refused, not followed
            removed.append(path)
    return removed


def _abandoned(parent: Path, name: str, owner: str, started: float) -> bool:
    """True when ``parent/name`` is a staging directory uniflow made whose get is gone."""
    uid = os.getuid()
    try:
        st = os.lstat(parent / name)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            return False  # a symlink, a file, or another user's
        dfd = os.open(parent / name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if (os.fstat(dfd).st_dev, os.fstat(dfd).st_ino) != (st.st_dev, st.st_ino):
            return False  # replaced meanwhile
        mfd = os.open(MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        try:
            mst = os.fstat(mfd)
            if not stat.S_ISREG(mst.st_mode) or mst.st_uid != uid or mst.st_size > _MAX_MARKER:
                return False
            text = os.read(mfd, _MAX_MARKER + 1)
        finally:
            os.close(mfd)
    except OSError:
        return False  # no marker: not a directory uniflow made
    finally:
        os.close(dfd)
    if text != _marker_text(owner) or mst.st_mtime >= started:
        return False
    return owner_alive(owner) is False  # None: another host's, unknowable; left alone
