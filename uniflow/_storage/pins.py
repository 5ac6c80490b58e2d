"""Pins and set-aside chunks: how ``gc`` and a register in flight never lose a chunk.

The protocol (argued in docs/design.md, "gc and registers in flight"):

* A register creates a **pin** file under the store's ``tmp/pins/`` (``.git/uniflow/``) and
  appends each chunk's digest to it *before* it checks whether that chunk exists or writes
  it. It removes the pin only once its tag ref exists (or the register failed).
* ``gc`` computes its candidates, **moves** each one aside into a set directory
  ``tmp/gc.<owner>.<id>/`` (one rename each), *then* reads every pin, *then*
  re-reads the refs, links back every candidate that a pin or a newly visible version names,
  and only then unlinks the rest.
* Anyone who misses a chunk in ``objects/`` looks in the set directories first and links it
  back, so a chunk that gc has moved but not yet decided on is never missing, and the sets
  of a gc that died are recovered (by readers, and wholly by the next gc).

Files written in flight carry an **owner token** (host, pid, process start time) in their
name, so gc can tell a live writer's pins and temporary files from a dead one's without
any lock. Nothing here blocks: neither side ever waits for the other.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path

from .. import _testhooks
from .fsio import fsync_dir

__all__ = [
    "AsideSet",
    "clean_tmp",
    "FOREIGN_STALE_AFTER",
    "Pin",
    "owner_alive",
    "owner_of",
    "owner_token",
    "read_pins",
    "recover",
    "restore_abandoned",
    "restore_pack",
    "set_aside_packs",
    "tmp_name",
]

#: a pin or temporary file written from another host cannot be checked for a live owner;
#: it is considered abandoned once untouched for this long (seconds)
FOREIGN_STALE_AFTER = 24 * 3600.0
PINS_DIR = "pins"
SET_PREFIX = "gc."

_OWNER_RE = re.compile(r"^[A-Za-z0-9-]{1,32}_[0-9]{1,10}_[0-9]{1,20}$")
_HEX64_LINE = re.compile(rb"^[0-9a-f]{64}$")
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname() or "host")[:32] or "host"
_token: tuple[int, str] | None = None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """``(state, start time in clock ticks)`` of a process from /proc, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data.rpartition(b")")[2].split()
    if len(fields) < 20:
        return None
    return fields[0].decode(), fields[19].decode()


def owner_token() -> str:
    """This process as ``<host>_<pid>_<start>``: unique among live processes, never reused."""
    global _token
    pid = os.getpid()
    if _token is None or _token[0] != pid:  # recomputed after a fork
        st = _proc_stat(pid)
        _token = (pid, f"{_HOST}_{pid}_{st[1] if st else 0}")
    return _token[1]


def owner_alive(token: str) -> bool | None:
    """True if the process named by ``token`` runs, False if it is gone, None if unknowable
    (another host)."""
    host, _, rest = token.partition("_")
    pid_s, _, start = rest.partition("_")
    if host != _HOST:
        return None
    pid = int(pid_s)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except OSError:
        return None
    st = _proc_stat(pid)
    if st is None:
        return True  # no /proc: the pid exists, trust it
    state, started = st
    return state != "Z" and (start == "0" or started == start)


def tmp_name(label: str) -> str:
    """A file name for something written in flight: ``<label>.<owner token>.<random>``."""
    return f"{label}.{owner_token()}.{uuid.uuid4().hex}"


def owner_of(name: str) -> str | None:
    """The owner token in a name made by :func:`tmp_name`, or None for any other name."""
    parts = name.split(".")
    if len(parts) >= 3 and _OWNER_RE.match(parts[-2]):
        return parts[-2]
    return None


def abandoned(path: Path, name: str, older_than: float) -> bool:
    """True when the writer of ``path`` is gone: its owner is dead, or (owner unknown) it is
    older than ``older_than`` seconds (``FOREIGN_STALE_AFTER`` for another host's files)."""
    token = owner_of(name)
    alive = owner_alive(token) if token else None
    if alive is not None:
        return not alive
    limit = FOREIGN_STALE_AFTER if token else older_than
    try:
        return path.lstat().st_mtime < time.time() - limit
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------------- pins
class Pin:
    """A register's promise to gc: every digest :meth:`add`-ed stays until :meth:`release`."""

    def __init__(self, tmp: Path) -> None:
        directory = tmp / PINS_DIR
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / tmp_name("pin")
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)

    def add(self, digest: str) -> None:
        """Pin ``digest``; call it *before* looking for or writing the chunk (raises OSError)."""
        if self._fd is None:
            raise ValueError("pin already released")
        line = (digest + "\n").encode()
        if os.write(self._fd, line) != len(line):  # O_APPEND: one small write, whole or refused
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    def release(self) -> None:
        """Drop the pin (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self) -> Pin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_pins(tmp: Path, remove_stale: bool = True) -> set[str]:
    """Digests named by the pins of live registers; pins of dead ones are removed."""
    directory = tmp / PINS_DIR
    out: set[str] = set()
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return out
    for entry in entries:
        path = Path(entry.path)
        if abandoned(path, entry.name, FOREIGN_STALE_AFTER):
            if remove_stale:
                _unlink(path)
            continue
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # released meanwhile: its tag exists, the refs read after this see it
        # A line torn by a write still in progress belongs to a chunk not yet looked for.
        out.update(line.decode() for line in data.split(b"\n") if _HEX64_LINE.match(line))
    return out


# ---------------------------------------------------------------------- set-aside chunks
def _object_path(objects: Path, digest: str) -> Path:
    return objects / digest[:2] / digest[2:]


def _link_back(src: Path, objects: Path, digest: str) -> bool:
    """Link a set-aside chunk back into ``objects``; True if it is there afterwards."""
    final = _object_path(objects, digest)
    try:
        final.parent.mkdir(exist_ok=True)
        try:
            os.link(src, final)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            os.rename(src, final)  # no hard links here: same bytes, same name
    except FileExistsError:
        return True  # a writer stored the same bytes meanwhile
    except FileNotFoundError:
        return final.exists()  # someone else moved it back (or gc dropped it) first
    except OSError:
        return False  # kept in the set; restored by a later run
    return True


class AsideSet:
    """Chunks one gc run has moved out of ``objects/`` and not yet decided on."""

    def __init__(self, tmp: Path, objects: Path) -> None:
        self.objects = objects
        self.dir = tmp / tmp_name(SET_PREFIX.rstrip("."))
        self.dir.mkdir(parents=True)
        self.sizes: dict[str, int] = {}

    def take(self, digest: str) -> bool:
        """Move ``digest`` out of ``objects/`` (one rename); False if it was gone already."""
        src = _object_path(self.objects, digest)
        dst = self.dir / digest
        try:
            size = src.stat().st_size
            os.rename(src, dst)
        except FileNotFoundError:
            return False
        self.sizes[digest] = size
        return True

    def restore(self, digest: str) -> None:
        if _link_back(self.dir / digest, self.objects, digest):
            _unlink(self.dir / digest)

    def drop(self, digest: str) -> int:
        """Delete a set-aside chunk for good; the bytes freed."""
        _unlink(self.dir / digest)
        return self.sizes.get(digest, 0)

    # A pack is set aside whole: its ``.pack`` first, then its ``.idx`` (a reader that finds
    # the index without its pack looks in the sets, as for a missing loose chunk), and put
    # back in the same order, so a complete pair reappears only with both files in place.
    def take_pack(self, name: str) -> bool:
        """Move pack ``name`` (its ``.pack``, then its ``.idx``) out of ``packs/``; False if
        its ``.pack`` was gone already."""
        packs = _packs_dir(self.objects)
        try:
            size = (packs / f"{name}.pack").stat().st_size
            os.rename(packs / f"{name}.pack", self.dir / f"{name}.pack")
        except FileNotFoundError:
            return False
        self.sizes[name] = size
        _testhooks.point("gc-pack-aside")
        with contextlib.suppress(FileNotFoundError):  # rebuilt from the pack's tail if put back
            os.rename(packs / f"{name}.idx", self.dir / f"{name}.idx")
        return True

    def restore_pack(self, name: str) -> None:
        """Put pack ``name`` back into ``packs/``."""
        _restore_pack(self.dir, _packs_dir(self.objects), name)

    def drop_pack(self, name: str) -> int:
        """Delete a set-aside pack for good (its ``.idx``, then its ``.pack``); the bytes freed."""
        _unlink(self.dir / f"{name}.idx")
        _unlink(self.dir / f"{name}.pack")
        return self.sizes.get(name, 0)

    def close(self) -> None:
        """Restore whatever is still set aside (an interrupted run keeps everything), remove the set."""
        _restore_all(self.dir, self.objects)


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of ``directory``; none when it does not exist."""
    try:
        return list(os.scandir(directory))
    except FileNotFoundError:
        return []


def _packs_dir(objects: Path) -> Path:
    """The ``packs/`` beside a store's ``objects/``."""
    return objects.parent / "packs"


def _restore_pack(directory: Path, packs: Path, name: str) -> bool:
    """Link pack ``name`` from a set ``directory`` back into ``packs`` (``.pack`` first, then
    ``.idx``) and drop the set's names; True once the pack is back (or already was)."""
    for ext in ("pack", "idx"):
        src, final = directory / f"{name}.{ext}", packs / f"{name}.{ext}"
        try:
            packs.mkdir(exist_ok=True)
            os.link(src, final)
        except FileExistsError:
            pass  # put back by another reader, or rewritten: the same bytes
        except FileNotFoundError:
            if ext == "pack" and not final.exists():
                return False  # neither here nor there: another process moved it back first
        except OSError:
            return False  # kept in the set; restored by a later run
    fsync_dir(packs)
    _unlink(directory / f"{name}.idx")
    _unlink(directory / f"{name}.pack")
    return True


def set_aside_packs(tmp: Path) -> dict[str, Path]:
    """Every pack some gc set holds (live or dead), by name: the set holding it."""
    found: dict[str, Path] = {}
    for d in _set_dirs(tmp):
        for entry in _entries(d):
            if entry.name.endswith(".pack") and len(entry.name) == 69:
                found.setdefault(entry.name[:64], d)
    return found


def restore_pack(tmp: Path, objects: Path, name: str) -> bool:
    """Put back pack ``name`` from whichever gc set holds it; True if it is back."""
    where = set_aside_packs(tmp).get(name)
    return where is not None and _restore_pack(where, _packs_dir(objects), name)


def _restore_all(directory: Path, objects: Path) -> int:
    restored = 0
    for entry in _entries(directory):
        if entry.name.endswith(".pack") and len(entry.name) == 69:
            restored += _restore_pack(directory, _packs_dir(objects), entry.name[:64])
            continue
        if len(entry.name) != 64:
            continue
        if _link_back(Path(entry.path), objects, entry.name):
            _unlink(Path(entry.path))
            restored += 1
    with contextlib.suppress(OSError):
        os.rmdir(directory)
    return restored


def _set_dirs(tmp: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(tmp) if e.name.startswith(SET_PREFIX) and e.is_dir()]
    except OSError:
        return []


def recover(tmp: Path, objects: Path, digests: list[str]) -> None:
    """Link ``digests`` back from any gc set (live or dead) holding them."""
    sets = _set_dirs(tmp)
    if not sets:
        return
    for digest in digests:
        for d in sets:
            if (d / digest).exists() and _link_back(d / digest, objects, digest):
                break


def restore_abandoned(tmp: Path, objects: Path) -> int:
    """Put back every chunk set aside by a gc that died; the count restored."""
    restored = 0
    for d in _set_dirs(tmp):
        if abandoned(d, d.name, FOREIGN_STALE_AFTER):
            restored += _restore_all(d, objects)
    return restored


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def clean_tmp(tmp: Path, older_than: float) -> int:
    """Remove what dead writers left in the store's ``tmp``; the count removed.

    A name carrying an owner token (:func:`tmp_name`) is removed once its owner has exited,
    whatever its age, and never while the owner runs; any other name once older than
    ``older_than`` seconds. Pins and gc sets are left to :func:`read_pins` and
    :func:`restore_abandoned`.
    """
    removed = 0
    for entry in _entries(tmp):
        if entry.name == "pins" or entry.name.startswith("gc."):
            continue
        path = Path(entry.path)
        if not abandoned(path, entry.name, older_than):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            _unlink(path)
        removed += 1
    return removed
