"""A version's files on disk: reading a directory model, materializing a version, exporting one.

Reading (register)
    A model given as a path must be a regular file or a directory (a symlink the caller
    names is followed: it is their choice). Inside a directory model only regular files and
    directories are taken; a symlink, FIFO, socket or device is an :class:`InvalidPathError`
    naming the entry (a symlink is never read through). ``.git`` and ``.uniflow`` are skipped.

Materializing (load, load_path, export)
    ``<store>/cache/versions/<content digest>/<path>`` (the store: ``<common Git
    directory>/uniflow``, ``_records.paths.store_dir``) is built from parts checked here again, at the
    write site (a digest is 64 hex characters; paths are relative, normalised, unique, free of
    file/directory clashes), and walked without following any symlink: a symlink or file
    found where a cache directory belongs is a forged cache entry and is replaced; the store
    directory itself must be a real directory. Nothing outside the store is ever written or
    unlinked.

Exporting (``export NAME DEST``)
    DEST and its parents are taken as the caller names them (symlinks there are followed).
    Below DEST nothing is followed: a symlink, FIFO, socket or device where a model file or
    directory goes is refused with an :class:`InvalidPathError` naming it, or with ``force``
    the entry itself (never its target) is replaced. A regular file in a directory's place
    and a directory in a file's place are always refused. Each file is written to a temporary
    name in its directory (``O_EXCL|O_NOFOLLOW``), fsynced and renamed into place with mode
    0o755 (any execute bit in the manifest) or 0o644, minus the umask.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import IntegrityError, InvalidPathError, RepositoryError, UniflowError
from .._naming import validate_digest, validate_relpath
from .._records.manifest import Manifest, file_records
from .._storage.chunking import FileRecord
from .._storage.fsio import os_reason
from .._storage.safefs import DirTree, describe_mode, entry_mode, link_file, open_root, replace_file

if TYPE_CHECKING:  # pragma: no cover
    from .._repo import Repository
    from .._types import ProgressFn

__all__ = ["export_files", "materialize", "model_path_kind", "safe_mode", "walk_model"]

#: (path in the version, verified source file, mode from the manifest)
Source = tuple[str, Path, Any]
_SKIPPED_DIRS = (".git", ".uniflow")


# ---------------------------------------------------------------------- reading a model path
def model_path_kind(src: Path) -> str:
    """``"file"`` or ``"dir"`` for a model path; anything else is an InvalidPathError."""
    try:
        mode = os.stat(src).st_mode  # a symlink the caller names is followed
    except FileNotFoundError:
        raise InvalidPathError(f"model path {src} does not exist") from None
    except OSError as exc:
        raise InvalidPathError(f"cannot read model path {src}: {os_reason(exc)}") from exc
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    raise InvalidPathError(f"model path {src} is a {describe_mode(mode)}, not a regular file or a directory")


def _special_entry(root: Path, path: Path, mode: int) -> InvalidPathError:
    kind = describe_mode(mode)
    why = "symlinks are never followed; copy the file in" if kind == "symlink" else "it has no bytes to store"
    return InvalidPathError(
        f"model directory {root} contains a {kind}: {path} "
        f"({why}; only regular files and directories are registered)"
    )


def walk_model(root: Path) -> list[tuple[str, Path]]:
    """Every regular file under ``root`` as ``(relative POSIX path, path)``, in a stable order."""

    def fail(exc: OSError) -> None:
        raise InvalidPathError(f"cannot read {exc.filename}: {os_reason(exc)}") from exc

    out = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        here = Path(dirpath)
        keep = []
        for name in sorted(dirnames + filenames):
            path = here / name
            try:
                mode = os.lstat(path).st_mode
            except OSError as exc:
                fail(exc)
            if stat.S_ISREG(mode):
                out.append((path.relative_to(root).as_posix(), path))
            elif name in _SKIPPED_DIRS and (stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                continue
            elif stat.S_ISDIR(mode):
                keep.append(name)
            else:
                raise _special_entry(root, path, mode)
        dirnames[:] = keep
    return out


# ---------------------------------------------------------------------- materializing
def _checked_records(m: Manifest, context: str) -> tuple[str, list[tuple[str, FileRecord, Any]]]:
    """The content digest and file records of ``m``, re-checked where they become a path."""
    try:
        digest = validate_digest(m.content_digest, "content digest")
        records = file_records(m)
        files: set[str] = set()
        dirs: set[str] = set()
        for rel, _rec, _mode in records:
            validate_relpath(rel)
            if rel in files:
                raise IntegrityError(f"file path {rel!r} appears twice")
            files.add(rel)
            parts = rel.split("/")
            dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    except UniflowError as exc:
        raise IntegrityError(f"{context}: manifest rejected: {exc}") from exc
    clash = files & dirs
    if clash:
        raise IntegrityError(f"{context}: manifest rejected: file path {min(clash)!r} is also a directory")
    return digest, records


def materialize(
    reg: Repository, name: str, version: str, m: Manifest, progress: ProgressFn | None = None
) -> tuple[Path, list[Source]]:
    """Verified files of a version, hard-linked under ``<store>/cache/versions/<digest>``;
    returns that directory and ``[(path, verified cache file, manifest mode)]``."""
    context = f"model {name!r} version {version!r}"
    digest, records = _checked_records(m, context)
    store_root = reg.store.root  # <common Git directory>/uniflow, or the cache of URL reads
    parent = store_root.parent
    vparts = (store_root.name, "cache", "versions", digest)
    registry_dir = f"{str(parent).rstrip('/')}/{store_root.name}"

    def cache_policy(display: str, mode: int) -> None:
        if display == registry_dir:
            kind = describe_mode(mode)
            raise RepositoryError(f"{display} is a {kind}, not a directory; refusing to write through it")
        # anything else in the way below the store's cache is a forged cache entry: replaced

    total = sum(r.size for _, r, _ in records)
    done = 0
    sources: list[Source] = []
    try:
        store_root.mkdir(exist_ok=True)  # with the mode every store write gives it, not DirTree's
        with DirTree(open_root(parent), str(parent), cache_policy) as tree:
            tree.open(vparts)  # before anything is written below the store's cache
            for rel, rec, mode in records:
                base = done
                cb = (lambda d, _t, b=base: progress(b + d, total)) if progress else None
                *dirs, leaf = rel.split("/")

                def link(path: Path, where: tuple[str, ...] = vparts + tuple(dirs), name: str = leaf) -> None:
                    link_file(tree.open(where), name, path)

                # linked before its stamp is recorded: a new link changes the file's ctime
                src = reg.store.materialize(rec, f"{context} file {rel!r}", cb, link)
                done += rec.size
                sources.append((rel, src, mode))
    except OSError as exc:
        raise RepositoryError(f"cannot materialize {context}: {os_reason(exc)}") from exc
    return store_root / "cache" / "versions" / digest, sources


# ---------------------------------------------------------------------- exporting
def safe_mode(mode: object) -> int:
    """0o755 if the manifest's mode has any execute bit, else 0o644: never setuid, setgid,
    sticky or writable by others, whatever the manifest says."""
    return 0o755 if isinstance(mode, int) and not isinstance(mode, bool) and mode & 0o111 else 0o644


def _refusal(display: str, mode: int, want_dir: bool, force: bool) -> str | None:
    """Why the entry ``display`` (``mode``) may not be written, or None."""
    kind = describe_mode(mode)
    if want_dir and stat.S_ISDIR(mode) or not want_dir and stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        wanted = "directory" if want_dir else "file"
        return f"cannot export to {display}: it is a {kind} where the model has a {wanted}; move it away"
    if force:
        return None
    return (
        f"refusing to export through {kind} {display}; use --force (force=True) to replace the {kind} "
        "itself (never its target)"
    )


def _precheck(dest: Path, rels: list[str], force: bool) -> None:
    """Refuse before writing anything if any entry on the way cannot be written."""
    seen: set[str] = set()
    for rel in rels:
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub in seen:
                continue
            seen.add(sub)
            display = f"{str(dest).rstrip('/')}/{sub}"
            try:
                mode = os.lstat(display).st_mode
            except FileNotFoundError:
                break  # nothing exists below this point
            except OSError as exc:
                raise InvalidPathError(f"cannot export to {display}: {os_reason(exc)}") from exc
            problem = _refusal(display, mode, i < len(parts), force)
            if problem:
                raise InvalidPathError(problem)
            if not stat.S_ISDIR(mode):
                break  # replaced (force): nothing of it is used


def export_files(dest: Path, sources: list[Source], *, force: bool = False) -> None:
    """Write copies of ``sources`` below ``dest`` following the rules of the module docstring."""
    _precheck(dest, [rel for rel, _, _ in sources], force)

    def policy(display: str, mode: int) -> None:
        problem = _refusal(display, mode, True, force)
        if problem:
            raise InvalidPathError(problem)

    try:
        dest.mkdir(parents=True, exist_ok=True)  # DEST is what the caller named: followed
        with DirTree(open_root(dest), str(dest), policy) as tree:
            for rel, src, mode in sources:
                *dirs, leaf = rel.split("/")
                fd = tree.open(tuple(dirs))
                current = entry_mode(fd, leaf)
                display = tree.display((*dirs, leaf))
                problem = None if current is None else _refusal(display, current, False, force)
                if problem:
                    raise InvalidPathError(problem)
                replace_file(fd, leaf, src, safe_mode(mode))
            for fd in tree.fds():
                os.fsync(fd)
    except OSError as exc:
        raise InvalidPathError(f"cannot export to {dest}: {os_reason(exc)}") from exc
