"""Git records through dulwich: the only module that imports dulwich.

Everything here is plain Git: blobs, trees, commits, annotated tags and refs that
``git log``, ``git show`` and ``git fsck --strict`` read. Every ref update is a
compare-and-swap (``add_if_new`` / ``set_if_equals`` / ``remove_if_equals``); dulwich
fails at once when another writer holds ``<ref>.lock``, so each call here retries with
backoff for a bounded time before raising :class:`ConcurrencyError`.

Loose objects are written here, not by dulwich, with ``_storage.fsio.write_immutable``:
an unnamed ``O_TMPFILE`` inode in the fan-out directory (or, where that is refused, a
``tmp_obj_*`` file there, as git does), fsynced, then linked to its name; nothing
temporary outlives the write. A failed ref write (a full disk) has its ``.lock`` file removed before
the error is reported as one :class:`RepositoryError` line.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import re
import subprocess
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

from .._errors import ConcurrencyError, IntegrityError, RepositoryError
from .._storage.fsio import os_reason, write_immutable
from .paths import find_workdir
from .refs import EVENT_TAGS_PREFIX, STAGES_PREFIX, TAGS_PREFIX
from .refscan import git_dir_of, read_ref, scan_refs

if TYPE_CHECKING:  # dulwich loads on first object access, not at import (CLI start-up)
    from dulwich.objects import Blob, Commit, Tag, Tree
    from dulwich.repo import Repo

    from .._authority.signing import Signer

__all__ = [
    "LOCK_TIMEOUT",
    "MAX_BLOB_BYTES",
    "TAG_VALUED_PREFIXES",
    "GitRepo",
    "Identity",
    "inflate_loose",
    "object_sizes",
]

#: how long a ref or object write waits on another writer's lock before giving up (seconds)
LOCK_TIMEOUT = 30.0
#: a ``.lock`` file this old belongs to a writer that died (a ref write holds its lock for
#: microseconds); it is moved aside so a killed process never wedges the registry
STALE_LOCK_AGE = 10.0

log = logging.getLogger("uniflow")

#: refs whose value is an annotated tag: version tags and stage pointers. git reads every
#: reflog entry as a commit, so ``git gc`` reports "Object ... not a commit" and "is a
#: commit, not a tag" for each line of their reflogs; git keeps none for tags by default,
#: and uniflow never keeps one for these refs
TAG_VALUED_PREFIXES = (TAGS_PREFIX + "/", STAGES_PREFIX + "/", EVENT_TAGS_PREFIX + "/")
#: what git logs when ``core.logAllRefUpdates`` is true, its default in a work tree (and HEAD)
_LOGGED_BY_DEFAULT = ("refs/heads/", "refs/remotes/", "refs/notes/")

T = TypeVar("T")

Identity = tuple[str, str]  # (name, email)


def _with_lock_retry(what: str, fn: Callable[[], T], timeout: float = LOCK_TIMEOUT) -> T:
    from dulwich.file import FileLocked

    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:  # bounded by the deadline
        try:
            return fn()
        except FileExistsError:
            # dulwich creates reflog directories without exist_ok: a concurrent writer creating
            # the same directory aborts this write (lock released, ref untouched); try again.
            if time.monotonic() >= deadline:
                raise ConcurrencyError(
                    f"{what}: gave up after repeated concurrent directory creation"
                ) from None
            continue
        except OSError as exc:
            _release_git_files(exc)
            raise RepositoryError(f"cannot write {what} in the git repository: {os_reason(exc)}") from exc
        except FileLocked as exc:
            if _break_stale_lock(exc.lockfilename):
                continue
            if time.monotonic() >= deadline:
                raise ConcurrencyError(
                    f"{what} is locked by another process for more than {timeout:.0f}s "
                    "(if no git or uniflow process is running, remove the stale .lock file)"
                ) from exc
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.05)


def _release_git_files(exc: BaseException) -> None:
    """Close and remove the ``.lock`` of every dulwich lock file a failed write left open.

    dulwich's ``_GitFile`` keeps its lock when ``close()`` fails (a full disk fails the
    flush), and its ``__del__`` later fails the same way ("Exception ignored ..."), leaving
    the lock behind. The lock files are ours (created with O_EXCL by this very call), so
    they are closed quietly and removed here, while the failed frames are still at hand.
    """
    from dulwich.file import _GitFile

    seen: set[int] = set()
    err: BaseException | None = exc
    for _ in range(8):  # the exception and what it was raised during, bounded
        if err is None or id(err) in seen:
            break
        seen.add(id(err))
        tb = err.__traceback__
        while tb is not None:
            for value in list(tb.tb_frame.f_locals.values()):
                if isinstance(value, _GitFile) and not getattr(value, "_closed", True):
                    _discard_git_file(value)
            tb = tb.tb_next
        err = err.__context__


def _discard_git_file(f: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        f._file.close()  # the flush fails again on a full disk, but the descriptor is closed
    with contextlib.suppress(OSError):
        os.unlink(f._lockfilename)
    f._closed = True


def _break_stale_lock(lockfile: str | bytes) -> bool:
    """Move aside a lock older than STALE_LOCK_AGE; True if this call removed it.

    The rename is atomic, so of several waiters exactly one breaks a given lock; a fresh lock
    taken after that is young and is waited for as usual.
    """
    path = os.fsdecode(lockfile)
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return True  # released meanwhile: retry at once
    if age < STALE_LOCK_AGE:
        return False
    aside = f"{path}.stale-{os.getpid()}-{random.randrange(1 << 30)}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True
    os.unlink(aside)
    log.warning("uniflow: removed stale lock %s left by a writer that died %.0fs ago", path, age)
    return True


def _rmdir_quietly(path: Path) -> bool:
    """Remove ``path`` if it is an empty directory; False if it is not (or is gone)."""
    try:
        path.rmdir()
    except OSError:
        return False
    return True


def _write_loose(objects: Path, hexsha: str, data: bytes) -> None:
    """Store one loose object the way git does: ``tmp_obj_*`` in the fan-out directory
    (ignored by ``git fsck``), fsynced, linked to its name; nothing is left on failure."""
    final = objects / hexsha[:2] / hexsha[2:]
    final.parent.mkdir(exist_ok=True)
    write_immutable(final, final.parent, data, f"tmp_obj_uniflow_{os.getpid()}_{random.getrandbits(64):016x}")


#: the largest blob :meth:`GitRepo.read_path` returns unless its caller passes a cap (the
#: default ``max_manifest_bytes``): a bigger one is refused from its header, not inflated
MAX_BLOB_BYTES = 128 << 20
#: the longest delta chain whose sizes are checked before a packed object is read (git's
#: own ``pack.depth`` is at most 4095)
_MAX_DELTA_CHAIN = 4096
_OFS_DELTA, _REF_DELTA = 6, 7
_TYPE_NAMES = {1: "commit", 2: "tree", 3: "blob", 4: "tag"}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A delta header's size (little-endian base-128) at ``pos``: ``(value, next pos)``."""
    value = shift = 0
    while True:  # bounded by len(buf): a cut-off varint raises IndexError
        c = buf[pos]
        pos += 1
        value |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return value, pos


def _inflate_head(f: Any, want: int) -> bytes:
    """At most the first ``want`` inflated bytes of the zlib stream at ``f``'s position."""
    d = zlib.decompressobj()
    out = b""
    while len(out) < want and not d.eof:  # each turn reads 4 KiB more (bounded by the file)
        data = d.unconsumed_tail or f.read(4096)
        if not data:
            break
        out += d.decompress(data, want - len(out))
    return out


def _loose_header(path: str) -> tuple[str, int] | None:
    """``(type, size)`` a loose object's header states, from its first inflated bytes;
    None if there is no such file."""
    try:
        with open(path, "rb") as f:
            head = _inflate_head(f, 64)
    except FileNotFoundError:
        return None
    except zlib.error as exc:
        raise IntegrityError(f"loose object {path[-41:]} is damaged ({exc}); run 'git fsck'") from exc
    kind, _, rest = head.partition(b" ")
    size, nul, _ = rest.partition(b"\0")
    if not nul or not size.isdigit() or kind.decode("ascii", "replace") not in _TYPE_NAMES.values():
        raise IntegrityError(f"loose object {path[-41:]} is damaged (no valid header); run 'git fsck'")
    return kind.decode(), int(size)


def _pack_entry(f: Any, offset: int) -> tuple[int, int, int | bytes | None, bytes]:
    """``(type, size, base, first inflated bytes)`` of the entry at ``offset`` of the pack
    open as ``f``: the size its header states (a delta's: the delta's own), the base of a
    delta (an offset in the same pack, or a binary object id), and a delta's first bytes (its
    size headers)."""
    f.seek(offset)
    head = f.read(32)
    c = head[0]
    kind, size, shift, pos = (c >> 4) & 7, c & 0x0F, 4, 1
    while c & 0x80:  # the size goes on in base 128 after its first 4 bits
        c = head[pos]
        pos += 1
        size |= (c & 0x7F) << shift
        shift += 7
    base: int | bytes | None = None
    if kind == _OFS_DELTA:
        c = head[pos]
        pos += 1
        back = c & 0x7F
        while c & 0x80:
            c = head[pos]
            pos += 1
            back = ((back + 1) << 7) | (c & 0x7F)
        base = offset - back
    elif kind == _REF_DELTA:
        base, pos = head[pos : pos + 20], pos + 20
    if base is None:
        return kind, size, None, b""
    f.seek(offset + pos)
    return kind, size, base, _inflate_head(f, 32)


def _loose_path(objects: str | os.PathLike[str], hexsha: str) -> str:
    """Where the loose object ``hexsha`` (40 or 64 lowercase hex digits) lives in ``objects``."""
    if len(hexsha) not in (40, 64) or not all(c in "0123456789abcdef" for c in hexsha):
        raise RepositoryError(f"{hexsha[:80]!r} is not an object id")
    return os.path.join(os.fspath(objects), hexsha[:2], hexsha[2:])


def _stores(store: Any) -> list[Any]:
    """The object store and its alternates' (each read once, at most 64)."""
    out: list[Any] = []
    todo = [store]
    while todo and len(out) < 64:
        s = todo.pop(0)
        if any(s is o for o in out):
            continue
        out.append(s)
        todo.extend(getattr(s, "alternates", []))
    return out


def object_sizes(store: Any, hexsha: str) -> tuple[str, int, int] | None:
    """``(type, size, largest object on its delta chain)`` of object ``hexsha``, read from
    headers alone (nothing inflated but a few bytes); None if no store here holds it.

    A loose object's header states its size; a packed one's entry header states it, or for
    a delta its result size is in the delta's first bytes, and the chain is followed to its
    end, across packs (dulwich materialises every object on it to read the last)."""
    found = _sized_place(store, hexsha)
    return None if found is None else found[0]


def _sized_place(store: Any, hexsha: str) -> tuple[tuple[str, int, int], tuple[Any, int, str]] | None:
    """:func:`object_sizes` of ``hexsha`` and where it is (see :func:`_locate`); None if no
    store here holds it. The packs listed before are searched first; where they do not hold
    it, or one of them is gone, the packs are listed again and searched once more."""
    from dulwich.pack import PackFileDisappeared

    for fresh in (False, True):
        places = _places(store, fresh=fresh)
        try:
            where = _locate(places, hexsha)
            if where is None:
                continue
            with contextlib.ExitStack() as files:
                return _chain_sizes(places, hexsha, where, files), where
        except (FileNotFoundError, PackFileDisappeared):
            if fresh:
                raise
    return None


def _chain_sizes(
    places: list[tuple[str, list[Any]]], hexsha: str, where: tuple[Any, int, str], files: contextlib.ExitStack
) -> tuple[str, int, int]:
    """:func:`object_sizes` of ``hexsha`` from its place ``where`` (see :func:`_locate`)
    along its delta chain; each pack on the chain is opened once, into ``files``."""
    opened: dict[str, Any] = {}
    size: int | None = None
    largest = 0
    for _ in range(_MAX_DELTA_CHAIN):  # each turn follows one delta to its base
        pack, offset, loose_kind = where
        if pack is None:  # a loose object (``offset`` is its size): the chain's end
            return loose_kind, offset if size is None else size, max(largest, offset)
        path = pack._data_path
        name = os.path.basename(path)
        if path not in opened:
            opened[path] = files.enter_context(open(path, "rb"))  # noqa: SIM115 (closed by files)
        try:
            kind, stated, base, head = _pack_entry(opened[path], offset)
            largest = max(largest, stated)
            if base is None:
                if kind not in _TYPE_NAMES:
                    raise IntegrityError(f"pack {name} has an entry of type {kind}; run 'git fsck'")
                return _TYPE_NAMES[kind], stated if size is None else size, largest
            src, pos = _varint(head, 0)
            dest, _ = _varint(head, pos)
        except (IndexError, zlib.error) as exc:
            raise IntegrityError(f"pack {name} has a damaged entry at {offset}; run 'git fsck'") from exc
        size = dest if size is None else size
        largest = max(largest, src, dest)
        if isinstance(base, bytes):
            found = _locate(places, base.hex())
            if found is None:
                raise KeyError(base.hex())
            where = found
        else:
            where = (pack, base, "")
    raise IntegrityError(
        f"object {hexsha[:12]} has a delta chain longer than {_MAX_DELTA_CHAIN}; run 'git fsck'"
    )


#: per object store: the stamps of its pack directories and the places listed under them
_LISTED: weakref.WeakKeyDictionary[Any, tuple[tuple[int, ...], list[tuple[str, list[Any]]]]] = (
    weakref.WeakKeyDictionary()
)


def _places(store: Any, *, fresh: bool = False) -> list[tuple[str, list[Any]]]:
    """``(objects directory, packs)`` of the store and of each alternate with a directory:
    where :func:`_locate` looks. The list is kept per store while no pack directory's
    modification time changes (a pack added or removed changes it), so a read of many
    objects lists the packs once instead of once per object; ``fresh`` lists them anyway."""
    stores = [s for s in _stores(store) if getattr(s, "path", None) is not None]
    stamp = tuple(_mtime_ns(getattr(s, "pack_dir", s.path)) for s in stores)
    kept = None if fresh else _LISTED.get(store)
    if kept is not None and kept[0] == stamp:
        return kept[1]
    places = [(s.path, list(s.packs)) for s in stores]
    with contextlib.suppress(TypeError):  # a store that cannot be weakly referenced: not kept
        _LISTED[store] = (stamp, places)
    return places


def _mtime_ns(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def _locate(places: list[tuple[str, list[Any]]], hexsha: str) -> tuple[Any, int, str] | None:
    """``(None, size, type)`` of loose object ``hexsha`` from its header, or ``(pack,
    offset, "")`` of its pack entry, or None; the :func:`_places` of a store are searched
    in order (the store, then its alternates)."""
    for path, packs in places:
        loose = _loose_header(_loose_path(path, hexsha))
        if loose is not None:
            return None, loose[1], loose[0]
        for pack in packs:
            try:
                return pack, pack.index.object_offset(bytes.fromhex(hexsha)), ""
            except KeyError:
                continue
    return None


def inflate_loose(path: str, cap: int) -> bytes | None:
    """The body of the loose object at ``path``, inflated incrementally and never past
    ``cap`` bytes plus its header whatever the header says; None if there is no such file.
    A body longer or shorter than its header states is an :class:`IntegrityError`."""
    found = _inflate_object(path, cap)
    return found[0][found[1] :] if found is not None else None


def _inflate_object(path: str, cap: int) -> tuple[bytes, int] | None:
    """The whole loose object at ``path`` inflated (header, NUL, body: the bytes its id is
    the hash of) and where its body starts, checked and bounded as :func:`inflate_loose`
    says; None if there is no such file. A small object takes one read and one inflate."""
    try:  # a bare descriptor: no buffer object, no fstat or isatty per object
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    except FileNotFoundError:
        return None
    limit = cap + 64  # the header and the body
    d = zlib.decompressobj()
    try:
        out = d.decompress(os.read(fd, 1 << 16), limit + 1)
        if not d.eof and len(out) <= limit:
            out = _inflate_rest(fd, d, out, limit)
    except zlib.error as exc:
        raise IntegrityError(f"loose object {path[-41:]} is damaged ({exc}); run 'git fsck'") from exc
    finally:
        os.close(fd)
    nul = out.find(b"\0")
    stated = out[:nul].partition(b" ")[2]
    if nul < 0 or not stated.isdigit() or int(stated) != len(out) - nul - 1 or not d.eof:
        raise IntegrityError(
            f"loose object {path[-41:]} is damaged (not the size its header states); run 'git fsck'"
        )
    return out, nul + 1


def _inflate_rest(fd: int, d: Any, head: bytes, limit: int) -> bytes:
    """The rest of the zlib stream ``d`` (which inflated ``head`` so far) read from ``fd``,
    never more than ``limit`` + 1 bytes in all."""
    out = bytearray(head)
    while not d.eof and len(out) <= limit:  # each turn inflates at most what ``limit`` leaves
        data = d.unconsumed_tail or os.read(fd, 1 << 16)
        if not data:
            break
        out += d.decompress(data, limit + 1 - len(out))
    return bytes(out)


_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


#: an object id as the bulk readers accept it (40 or 64 lowercase hex digits)
_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
#: misses in a row after which :meth:`GitRepo.read_raw_many` stops looking for loose objects
_LOOSE_MISSES = 32
#: environment variables that would point a git process at other objects or replacements
_BULK_UNSET = ("GIT_DIR", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_REPLACE_REF_BASE")


def _bulk_env() -> dict[str, str]:
    """The environment of a git process that reads objects in bulk: no replace objects, no
    prompts, no object directory but the repository's own."""
    env = {k: v for k, v in os.environ.items() if k not in _BULK_UNSET}
    env.update(GIT_NO_REPLACE_OBJECTS="1", GIT_TERMINAL_PROMPT="0")
    return env


def _feed(stdin: IO[bytes], ids: Sequence[str]) -> None:
    """Write one object id a line to a ``git cat-file --batch`` (on its own thread, so a full
    pipe never blocks the reader); a reader that stopped early closes the pipe."""
    with contextlib.suppress(OSError, ValueError), stdin:
        for i in range(0, len(ids), 512):
            stdin.write("".join(f"{x}\n" for x in ids[i : i + 512]).encode("ascii"))


def _read_batch(out: IO[bytes], ids: Sequence[str], kind: str, max_bytes: int) -> list[bytes] | None:
    """The bodies ``git cat-file --batch`` prints for ``ids``, each checked as
    :meth:`GitRepo.read_raw` checks one (its kind, its size, its hash); None at the first
    that is not, before its body is read when its header already says so."""
    name = kind.encode("ascii")
    found: list[bytes] = []
    for hexsha in ids:
        header = out.readline().split()
        if len(header) != 3 or header[0] != hexsha.encode() or header[1] != name or not header[2].isdigit():
            return None
        size = int(header[2])
        if size > max_bytes:
            return None
        body = out.read(size + 1)
        if len(body) != size + 1 or body[-1:] != b"\n":
            return None
        body = body[:-1]
        digest = hashlib.sha256 if len(hexsha) == 64 else hashlib.sha1
        if digest(b"%s %d\0" % (name, size) + body).hexdigest() != hexsha:
            return None
        found.append(body)
    return found


class GitRepo:
    """A Git repository opened through dulwich, with CAS ref helpers."""

    def __init__(self, workdir: Path, *, bare: bool = False) -> None:
        # bare=True: ``workdir`` is a bare repository (no work tree), e.g. the mirror of a Git URL
        git_dir = Path(workdir).resolve() if bare else git_dir_of(Path(workdir))
        if git_dir is None or bare and not (git_dir / "HEAD").is_file():
            raise RepositoryError(f"{workdir} is not a git repository")
        self.workdir = Path(workdir).resolve()
        self.git_dir = git_dir
        self._dulwich: Repo | None = None
        self._closer: weakref.finalize[Any, Any] | None = None

    @property
    def _repo(self) -> Any:  # dulwich.repo.Repo; its NewType refs (Ref, ObjectID) are plain bytes here
        if self._dulwich is None:
            from dulwich.errors import NotGitRepository
            from dulwich.repo import Repo

            try:
                repo = Repo(str(self.workdir))
            except NotGitRepository as exc:
                raise RepositoryError(f"{self.workdir} is not a git repository") from exc
            # Git objects are part of a durable version: fsync them as they are written.
            store: Any = repo.object_store
            if hasattr(store, "fsync_object_files"):
                store.fsync_object_files = True
            # The pack files are closed when this object is collected, or at exit (finalizers
            # run before the interpreter tears its modules down): never by dulwich's __del__
            # at shutdown, which cannot import what it needs then and prints "Exception
            # ignored ... sys.meta_path is None" for every pack, index and store.
            self._closer = weakref.finalize(self, repo.close)
            self._dulwich = repo
        return self._dulwich

    def close(self) -> None:
        """Close dulwich's open pack files; the repository reopens on next use."""
        if self._closer is not None:
            self._closer()  # calls repo.close() once and detaches the finalizer
            self._closer = None
        self._dulwich = None

    # ------------------------------------------------------------------ discovery
    find_workdir = staticmethod(find_workdir)

    @classmethod
    def init(cls, path: Path) -> GitRepo:
        from dulwich.repo import Repo

        path.mkdir(parents=True, exist_ok=True)
        try:
            Repo.init(str(path)).close()
        except OSError as exc:
            raise RepositoryError(f"cannot create a git repository in {path}: {exc.strerror}") from exc
        return cls(path)

    # ------------------------------------------------------------------ working tree
    def head(self) -> str | None:
        try:
            return str(self._repo.head().decode())
        except KeyError:
            return None

    def branch(self) -> str | None:
        try:
            target = self._repo.refs.follow(b"HEAD")[0][-1]
        except (KeyError, IndexError):
            return None
        if target.startswith(b"refs/heads/"):
            return str(target[len(b"refs/heads/") :].decode())
        return None

    def is_dirty(self) -> bool:
        """True when tracked files differ from HEAD (untracked files do not count)."""
        try:
            out = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=self.workdir,
                capture_output=True,
                timeout=60,
                check=True,
            ).stdout
            return bool(out.strip())
        except (OSError, subprocess.SubprocessError):  # no git binary, or git refused (damaged objects)
            from dulwich import porcelain

            try:
                st = porcelain.status(self._repo, untracked_files="no")
            except KeyError as exc:
                raise IntegrityError(
                    "git objects of the code commit (HEAD) are missing; run 'git fsck'"
                ) from exc
            return bool(st.unstaged) or any(st.staged.values())

    def identity(self) -> Identity:
        """Who is acting: GIT_AUTHOR_* / git config user.* / a neutral fallback."""
        env = (os.environ.get("GIT_AUTHOR_NAME"), os.environ.get("GIT_AUTHOR_EMAIL"))
        cached = getattr(self, "_identity", None)
        if cached is not None and cached[0] == env:
            ident: Identity = cached[1]  # git config is read once per repository object
            return ident
        ident = self._identity_uncached()
        self._identity = (env, ident)
        return ident

    def _identity_uncached(self) -> Identity:
        name = os.environ.get("GIT_AUTHOR_NAME") or os.environ.get("GIT_COMMITTER_NAME")
        email = os.environ.get("GIT_AUTHOR_EMAIL") or os.environ.get("GIT_COMMITTER_EMAIL")
        if not name or not email:
            try:
                cfg = self._repo.get_config_stack()
                name = name or cfg.get((b"user",), b"name").decode()
                email = email or cfg.get((b"user",), b"email").decode()
            except (KeyError, OSError):  # unset, or an unreadable ~/.gitconfig
                pass
        return (name or "uniflow", email or "uniflow@localhost")

    # ------------------------------------------------------------------ objects
    def _add(self, obj: Blob | Tree | Commit | Tag) -> str:
        store = self._repo.object_store
        sha = obj.id
        hexsha = sha.decode()

        def add() -> None:
            if sha not in store:
                level = getattr(store, "loose_compression_level", -1)
                _write_loose(Path(store.path), hexsha, obj.as_legacy_object(compression_level=level))

        _with_lock_retry(f"object {hexsha[:12]}", add)
        return hexsha

    def write_blob(self, data: bytes) -> str:
        from dulwich.objects import Blob

        return self._add(Blob.from_string(data))

    def write_tree(self, entries: dict[str, tuple[int, str]]) -> str:
        """``entries`` maps a name to ``(mode, sha)``; modes: 0o100644 file, 0o040000 tree."""
        from dulwich.objects import Tree

        tree = Tree()
        for name, (mode, sha) in entries.items():
            tree.add(name.encode(), mode, cast(Any, sha.encode()))
        return self._add(tree)

    def tree_entries(self, tree_sha: str) -> dict[str, tuple[int, str]]:
        from dulwich.objects import Tree

        tree = self._object(tree_sha.encode())
        assert isinstance(tree, Tree)
        return {e.path.decode(): (e.mode, e.sha.decode()) for e in tree.iteritems()}

    def tree_with_files(self, base_tree: str | None, folder: tuple[str, ...], files: dict[str, bytes]) -> str:
        """A copy of ``base_tree`` (or an empty tree) with ``files`` placed under ``folder``."""
        blobs = {name: (0o100644, self.write_blob(data)) for name, data in files.items()}
        return self._graft(base_tree, folder, blobs)

    def _graft(self, tree_sha: str | None, folder: tuple[str, ...], leaf: dict[str, tuple[int, str]]) -> str:
        entries = self.tree_entries(tree_sha) if tree_sha else {}
        if not folder:
            entries.update(leaf)
            return self.write_tree(entries)
        head, rest = folder[0], folder[1:]
        sub = entries.get(head)
        sub_sha = sub[1] if sub and sub[0] == 0o040000 else None
        entries[head] = (0o040000, self._graft(sub_sha, rest, leaf))
        return self.write_tree(entries)

    def write_commit(
        self,
        tree: str,
        parents: list[str],
        message: str,
        author: Identity,
        when: int | None = None,
        *,
        signer: Signer | None = None,
    ) -> str:
        """Write a commit; with ``signer``, signed as ``git commit -S`` signs it (``gpgsig``)."""
        from dulwich.objects import Commit

        c = Commit()
        c.tree = tree.encode()
        c.parents = [cast(Any, p.encode()) for p in parents]
        ident = f"{author[0]} <{author[1]}>".encode()
        c.author = c.committer = ident
        c.author_time = c.commit_time = int(time.time() if when is None else when)
        c.author_timezone = c.commit_timezone = 0
        c.encoding = b"UTF-8"
        c.message = message.encode()
        if signer is not None:
            from .signed import sign_commit_object

            c = sign_commit_object(c, signer)
        return self._add(c)

    def write_tag(
        self,
        short_name: str,
        target: str,
        message: str,
        tagger: Identity,
        when: int | None = None,
        *,
        signer: Signer | None = None,
    ) -> str:
        """Write an annotated tag; with ``signer``, signed as ``git tag -s`` signs it."""
        from dulwich.objects import Commit, Tag

        t = Tag()
        t.name = short_name.encode()
        t.object = (Commit, target.encode())
        t.tagger = f"{tagger[0]} <{tagger[1]}>".encode()
        t.tag_time = int(time.time() if when is None else when)
        t.tag_timezone = 0
        t.message = message.encode()
        if signer is not None:
            from .signed import sign_tag_object

            t = sign_tag_object(t, signer)
        return self._add(t)

    def _object(self, sha: bytes) -> Any:
        """Read one Git object; a damaged one is an IntegrityError (missing stays KeyError)."""
        import zlib

        from dulwich.errors import ChecksumMismatch, ObjectFormatException

        try:
            return self._repo[sha]
        except KeyError:
            raise
        except (zlib.error, ChecksumMismatch, ObjectFormatException, ValueError) as exc:
            raise IntegrityError(
                f"git object {sha.decode(errors='replace')[:12]} is damaged ({exc}); run 'git fsck'"
            ) from exc

    def has_object(self, sha: str) -> bool:
        return sha.encode() in self._repo.object_store

    def read_tag(self, sha: str) -> Tag:
        from dulwich.objects import Tag

        obj = self._object(sha.encode())
        if not isinstance(obj, Tag):
            raise RepositoryError(f"object {sha[:12]} is not an annotated tag")
        return obj

    def read_commit(self, sha: str) -> Commit:
        from dulwich.objects import Commit

        obj = self._object(sha.encode())
        if not isinstance(obj, Commit):
            raise RepositoryError(f"object {sha[:12]} is not a commit")
        return obj

    def read_path(
        self, commit_sha: str, path: str, max_bytes: int = MAX_BLOB_BYTES, limit: str = "the limit"
    ) -> bytes | None:
        """The blob at ``path`` in a commit's tree, or None (no such path, or not a blob).

        A blob larger than ``max_bytes`` is an :class:`IntegrityError` raised from its
        header, before it is inflated (see :meth:`read_blob`)."""
        from dulwich.errors import NotTreeError
        from dulwich.object_store import tree_lookup_path

        commit = self.read_commit(commit_sha)
        try:
            _mode, sha = tree_lookup_path(self._object, commit.tree, path.encode())
        except (KeyError, NotTreeError):  # no such path, or a file where a directory should be
            return None
        return self.read_blob(sha.decode(), max_bytes, f"{path} of commit {commit_sha[:12]}", limit)

    def read_blob(
        self, hexsha: str, max_bytes: int, what: str = "", limit: str = "the limit"
    ) -> bytes | None:
        """Blob ``hexsha`` if it holds at most ``max_bytes`` (None: not a blob; missing: KeyError).

        Its size is read from its header first (a loose object's, or a pack entry's and each
        delta's on its chain) and a larger one is refused without inflating it; a loose blob
        is then inflated incrementally, never past ``max_bytes``, so a header that lies cannot
        force more. (A pack's entry sizes were checked by ``git index-pack`` when it arrived.)"""
        from dulwich.objects import Blob

        what = what or f"git object {hexsha[:12]}"
        sizes = object_sizes(self._repo.object_store, hexsha)
        if sizes is None:  # in no loose object or pack of ours: dulwich finds it (or KeyError)
            obj = self._object(hexsha.encode())
            sizes = (obj.type_name.decode(), len(obj.as_raw_string()), 0)
        kind, size, largest = sizes
        if kind != "blob":
            return None
        if max(size, largest) > max_bytes:
            chain = f" on a delta chain holding {largest}" if largest > size else ""
            raise IntegrityError(
                f"{what} is {size} bytes{chain}, more than {limit} ({max_bytes}); refused before inflating it"
            )
        for s in _stores(self._repo.object_store):
            path = getattr(s, "path", None)
            body = inflate_loose(_loose_path(path, hexsha), max_bytes) if path is not None else None
            if body is not None:
                return body
        blob = self._object(hexsha.encode())  # packed: sizes checked above
        return blob.data if isinstance(blob, Blob) else None

    def read_raw(self, hexsha: str, kind: str, max_bytes: int) -> bytes:
        """The bytes of object ``hexsha`` exactly as stored (what ``git cat-file KIND`` prints),
        never re-serialised: what a signature covers. Refused from its header when larger than
        ``max_bytes``; checked to hash to ``hexsha``; not a ``kind``: :class:`RepositoryError`;
        missing: KeyError."""
        import hashlib

        located = _sized_place(self._repo.object_store, hexsha)
        sizes = located[0] if located is not None else None
        if sizes is not None and max(sizes[1], sizes[2]) > max_bytes:
            raise IntegrityError(f"git object {hexsha[:12]} is {sizes[1]} bytes, more than {max_bytes}")
        body = None
        if located is None or located[1][0] is None:  # loose (or not found here): read the file
            for s in _stores(self._repo.object_store):
                path = getattr(s, "path", None)
                body = inflate_loose(_loose_path(path, hexsha), max_bytes) if path is not None else None
                if body is not None:
                    break
        if body is None:
            type_num, body = self._packed_raw(hexsha, located[1][0] if located is not None else None)
            found = _TYPE_NAMES.get(type_num, "")
        else:
            found = sizes[0] if sizes is not None else ""
        if found != kind:
            raise RepositoryError(f"object {hexsha[:12]} is not a {kind}")
        digest = hashlib.sha256 if len(hexsha) == 64 else hashlib.sha1
        if digest(f"{kind} {len(body)}\0".encode() + body).hexdigest() != hexsha:
            raise IntegrityError(f"git object {hexsha[:12]} does not hash to its name; run 'git fsck'")
        return body

    def _packed_raw(self, hexsha: str, pack: Any) -> tuple[int, bytes]:
        """``(type number, bytes)`` of a packed object: from ``pack``, where it was found,
        else (or if that pack cannot give it) from wherever dulwich finds it (KeyError if
        nowhere)."""
        from dulwich.pack import PackFileDisappeared

        try:
            if pack is not None:
                with contextlib.suppress(KeyError, OSError, PackFileDisappeared):
                    type_num, raw = pack.get_raw(bytes.fromhex(hexsha))
                    return type_num, bytes(raw)
            type_num, raw = self._repo.object_store.get_raw(hexsha.encode())  # KeyError: nowhere
        except (zlib.error, ValueError, AssertionError) as exc:
            raise IntegrityError(f"git object {hexsha[:12]} is damaged ({exc}); run 'git fsck'") from exc
        return type_num, bytes(raw)

    def first_parents(self, head: str, limit: int) -> list[str] | None:
        """The first-parent chain from commit ``head``, newest first, at most ``limit``
        commits, as one ``git rev-list`` lists it; None when git cannot say (no git binary,
        a missing object). A hint only: the caller checks it against the parent headers of
        the objects it reads (:meth:`read_raw_many`)."""
        if not _OBJECT_ID.fullmatch(head) or limit < 1:
            return None
        cmd = ["git", f"--git-dir={self.git_dir}", "rev-list", "--first-parent", f"--max-count={limit}", head]
        try:
            out = subprocess.run(cmd, capture_output=True, timeout=600, check=True, env=_bulk_env()).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        ids = out.decode("ascii", "replace").split()
        return ids if all(_OBJECT_ID.fullmatch(x) for x in ids) else None

    def read_raw_many(self, ids: Sequence[str], kind: str, max_bytes: int) -> list[bytes] | None:
        """The raw bytes of each object of ``ids`` in order: loose ones read here
        (:meth:`read_loose`), the others by one ``git cat-file --batch``, each checked as
        :meth:`read_raw` checks one (a ``kind``, at most ``max_bytes``, hashing to its id, so
        git is trusted with nothing). None when any fails a check, is missing or git cannot
        run: the caller then reads them with :meth:`read_raw`, which says what is wrong."""
        if not ids:
            return []
        if not all(_OBJECT_ID.fullmatch(x) for x in ids):
            return None
        try:
            found = self._read_loose_many(ids, kind, max_bytes)
        except IntegrityError:
            return None
        packed = [x for x, body in zip(ids, found, strict=True) if body is None]
        rest = iter((self._cat_file_many(packed, kind, max_bytes) or []) if packed else [])
        out: list[bytes] = []
        for body in found:
            body = body if body is not None else next(rest, None)
            if body is None:
                return None
            out.append(body)
        return out

    def _read_loose_many(self, ids: Sequence[str], kind: str, max_bytes: int) -> list[bytes | None]:
        """:meth:`read_loose` of each of ``ids`` (None for those not stored loose). After
        :data:`_LOOSE_MISSES` misses in a row the rest are taken as packed (None) unread:
        objects written together are packed together, and a miss costs a failed open."""
        out: list[bytes | None] = []
        misses = 0
        for hexsha in ids:
            body = self.read_loose(hexsha, kind, max_bytes) if misses < _LOOSE_MISSES else None
            misses = 0 if body is not None else misses + 1
            out.append(body)
        return out

    def read_loose(self, hexsha: str, kind: str, max_bytes: int) -> bytes | None:
        """The body of object ``hexsha`` if it is stored loose in this repository's own object
        directory (else None), inflated as :func:`inflate_loose` does (never past
        ``max_bytes``); one that is damaged or does not hash to its id as a ``kind`` is an
        :class:`IntegrityError`."""
        objects = getattr(self._repo.object_store, "path", None)
        if objects is None or not _OBJECT_ID.fullmatch(hexsha):
            return None
        found = _inflate_object(f"{objects}{os.sep}{hexsha[:2]}{os.sep}{hexsha[2:]}", max_bytes)
        if found is None:
            return None
        whole, start = found
        body = whole[start:]
        header = b"%s %d\0" % (kind.encode("ascii"), len(body))
        digest = hashlib.sha256 if len(hexsha) == 64 else hashlib.sha1
        # the stored bytes are hashed as they are when their header is the one expected
        if digest(whole if whole.startswith(header) else header + body).hexdigest() != hexsha:
            raise IntegrityError(f"git object {hexsha[:12]} is not a {kind} that hashes to its name")
        return body

    def _cat_file_many(self, ids: Sequence[str], kind: str, max_bytes: int) -> list[bytes] | None:
        """:meth:`read_raw_many` of ``ids`` by one ``git cat-file --batch`` (packs, alternates)."""
        cmd = ["git", f"--git-dir={self.git_dir}", "cat-file", "--batch"]
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_bulk_env()
            )
        except OSError:
            return None
        assert proc.stdin is not None and proc.stdout is not None
        writer = threading.Thread(target=_feed, args=(proc.stdin, ids), name="uniflow-cat-file", daemon=True)
        writer.start()
        try:
            return _read_batch(proc.stdout, ids, kind, max_bytes)
        except (OSError, ValueError):
            return None
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            writer.join()
            proc.wait()

    def config_value(self, section: str, name: str) -> str | None:
        """One value of Git's configuration (repository, user and system files, as dulwich
        reads them), or None when unset or unreadable."""
        try:
            value = self._repo.get_config_stack().get((section.encode(),), name.encode())
        except (KeyError, OSError):
            return None
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None

    # ------------------------------------------------------------------ refs
    def ref(self, name: str) -> str | None:
        return read_ref(self.git_dir, name)

    def ref_names(self, prefix: str) -> list[str]:
        """Names of refs under ``prefix`` (relative to it), without reading their values."""
        return sorted(scan_refs(self.git_dir, prefix, names_only=True))

    def refs(self, prefix: str) -> dict[str, str]:
        """``{name relative to prefix: sha}`` for every ref under ``prefix``."""
        return scan_refs(self.git_dir, prefix)

    def create_ref(self, name: str, sha: str, message: str = "uniflow") -> bool:
        """Create ``name`` only if it does not exist (``add_if_new``)."""
        ident, msg = self._reflog_ident(), self._reflog_message(name, message)
        return bool(
            _with_lock_retry(
                f"ref {name}",
                lambda: self._repo.refs.add_if_new(name.encode(), sha.encode(), committer=ident, message=msg),
            )
        )

    def cas_ref(self, name: str, old: str | None, new: str, message: str = "uniflow") -> bool:
        """Move ``name`` from ``old`` to ``new``; ``old=None`` means the ref must not exist."""
        if old is None:
            return self.create_ref(name, new, message)
        ident, msg = self._reflog_ident(), self._reflog_message(name, message)
        return bool(
            _with_lock_retry(
                f"ref {name}",
                lambda: self._repo.refs.set_if_equals(
                    name.encode(), old.encode(), new.encode(), committer=ident, message=msg
                ),
            )
        )

    def delete_ref(self, name: str, old: str) -> bool:
        """Delete ``name`` if it still points at ``old``; its reflog goes with it (as in git)."""
        self._sweep_tag_reflogs()
        deleted = bool(
            _with_lock_retry(
                f"ref {name}", lambda: self._repo.refs.remove_if_equals(name.encode(), old.encode())
            )
        )
        if deleted:
            self._remove_reflog(name)
        return deleted

    def remote_names(self) -> list[str]:
        """The Git remotes configured in this repository (what ``git remote`` lists), read
        from its config without running git."""
        cfg = self._repo.get_config()
        return sorted(
            sec[1].decode(errors="replace") for sec in cfg.sections() if len(sec) == 2 and sec[0] == b"remote"
        )

    # ------------------------------------------------------------------ reflogs
    def _reflog_message(self, name: str, message: str) -> bytes | None:
        """The reflog message of a write to ``name``; None writes no reflog line (dulwich logs
        only when given a message). A reflog is kept where git would keep one: never for a
        ref holding a tag (see TAG_VALUED_PREFIXES); else when ``core.logAllRefUpdates`` is
        ``always``, or ``true`` (git's default in a work tree) and ``name`` is a branch,
        remote-tracking ref or note, or when the ref already has a reflog (git appends to it)."""
        self._sweep_tag_reflogs()
        if name.startswith(TAG_VALUED_PREFIXES):
            return None
        mode = self._log_all_ref_updates()
        if mode == "always" or mode == "true" and name.startswith(_LOGGED_BY_DEFAULT):
            return message.encode()
        return message.encode() if (self.git_dir / "logs" / name).is_file() else None

    def _log_all_ref_updates(self) -> str:
        """git's ``core.logAllRefUpdates``: ``always``, ``true`` or ``false`` (unset or not
        understood: ``false`` in a bare repository, else ``true``, as git reads it)."""
        cached: str | None = getattr(self, "_log_mode", None)
        if cached is not None:
            return cached
        try:
            raw = self._repo.get_config_stack().get((b"core",), b"logAllRefUpdates").decode().strip().lower()
        except (KeyError, OSError, UnicodeDecodeError):
            raw = ""
        if raw == "always":
            mode = "always"
        elif raw in ("true", "yes", "on", "1"):
            mode = "true"
        elif raw in ("false", "no", "off", "0"):
            mode = "false"
        else:
            mode = "false" if self._repo.bare else "true"
        self._log_mode = mode
        return mode

    def remove_tag_reflogs(self) -> list[str]:
        """Remove every reflog of a version tag or stage pointer (uniflow up to 0.2.0 wrote
        them; ``git gc`` reports an error for each of their lines). Returns the names of the
        refs whose reflog was removed. An unremovable one is a :class:`RepositoryError`."""
        logs = self.git_dir / "logs"
        removed: list[str] = []
        for prefix in TAG_VALUED_PREFIXES:
            top = logs / prefix.rstrip("/")
            if top.is_symlink() or not top.is_dir():
                continue
            for dirpath, _dirs, files in os.walk(top, topdown=False):  # never follows links
                for f in files:
                    path = Path(dirpath, f)
                    try:
                        path.unlink(missing_ok=True)
                    except OSError as exc:
                        raise RepositoryError(f"cannot remove the reflog {path}: {os_reason(exc)}") from exc
                    removed.append(path.relative_to(logs).as_posix())
                _rmdir_quietly(Path(dirpath))
        return sorted(removed)

    def _sweep_tag_reflogs(self) -> None:
        """Before this object's first ref write: remove the tag reflogs older uniflow wrote."""
        if getattr(self, "_swept", False):
            return
        self._swept = True
        try:
            removed = self.remove_tag_reflogs()
        except RepositoryError as exc:  # hygiene only: the write itself goes ahead
            log.warning("uniflow: %s", exc)
            return
        if removed:
            log.info("uniflow: removed %d reflog(s) of version tags and stage pointers", len(removed))

    def _remove_reflog(self, name: str) -> None:
        """Remove the reflog of deleted ref ``name`` and the directories it leaves empty."""
        logs = self.git_dir / "logs"
        path = logs / name
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("uniflow: cannot remove the reflog %s: %s", path, os_reason(exc))
            return
        parent = path.parent
        while parent != logs / "refs" and logs in parent.parents:  # bounded by the name's depth
            if not _rmdir_quietly(parent):
                break
            parent = parent.parent

    def _reflog_ident(self) -> bytes:
        name, email = self.identity()
        return f"{name} <{email}>".encode()

    def version_candidates(self) -> list[str]:
        """Commits reached by every ref except branches and HEAD, tags peeled (for gc)."""
        from dulwich.objects import Commit, Tag

        repo = self._repo
        seen: set[bytes] = set()
        for ref, sha in repo.refs.as_dict().items():
            if ref == b"HEAD" or ref.startswith(b"refs/heads/"):
                continue
            try:
                obj = repo[sha]
                hops = 0
                while isinstance(obj, Tag) and hops < 10:
                    obj = repo[obj.object[1]]
                    hops += 1
            except KeyError:
                continue
            if isinstance(obj, Commit):
                seen.add(obj.id)
        return sorted(s.decode() for s in seen)
