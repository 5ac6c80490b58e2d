"""Reading Git refs straight from the file system, without importing any Git library.

Loose refs (``<git dir>/refs/...``) override ``packed-refs``, as in Git. Used for every
read of the registry's refs (fast: one ``scandir`` per directory, no per-ref validation
layer) and by shell completion, which must never import dulwich.

A file or directory whose name Git would not accept as a ref component (``x.lock``,
``.hidden``, names with control characters ...) is not a ref and is skipped, like Git does.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._naming import valid_ref_component

__all__ = [
    "git_dir_of",
    "scan_refs",
    "read_ref",
    "dir_stamp",
    "is_racy",
    "refs_stamp",
    "RACY_NS",
    "PackedRefs",
    "packed_section",
    "parse_packed",
    "loose_dirs_in",
    "loose_refs_in",
]

_SHA_RE = re.compile(r"[0-9a-f]{40}")


def git_dir_of(workdir: Path) -> Path | None:
    """The git directory of a work tree (``.git``, or where a ``gitdir:`` file points)."""
    dotgit = workdir / ".git"
    if dotgit.is_dir():
        return dotgit
    if dotgit.is_file():
        text = dotgit.read_text(encoding="utf-8", errors="replace").strip()
        if text.startswith("gitdir:"):
            return (workdir / text[len("gitdir:") :].strip()).resolve()
    return None


def _common_dir(git_dir: Path) -> Path:
    common = git_dir / "commondir"
    if common.is_file():
        return (git_dir / common.read_text(encoding="utf-8").strip()).resolve()
    return git_dir


def _packed(git_dir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open(_common_dir(git_dir) / "packed-refs", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("#", "^")):
                    continue
                parts = line.split()
                if len(parts) == 2 and _SHA_RE.fullmatch(parts[0]):
                    out[parts[1]] = parts[0]
    except FileNotFoundError:
        pass
    return out


def _read_loose(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            value = fh.read(64).strip()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return value if _SHA_RE.fullmatch(value) else None


def scan_refs(git_dir: Path, prefix: str, names_only: bool = False) -> dict[str, str]:
    """``{name relative to prefix: sha}`` for every ref under ``prefix`` (e.g. ``refs/tags/models``).

    ``names_only`` skips reading loose ref files (their value is then ``""``): listing
    10,000 version names costs one ``scandir`` per model instead of 10,000 file reads.
    """
    prefix = prefix.rstrip("/") + "/"
    found = {
        name[len(prefix) :]: sha
        for name, sha in _packed(git_dir).items()
        if name.startswith(prefix) and all(valid_ref_component(c) for c in name[len(prefix) :].split("/"))
    }
    base = _common_dir(git_dir) / prefix
    stack = [(str(base), "")]
    while stack:  # bounded by the directory tree
        path, rel = stack.pop()
        try:
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if not valid_ref_component(entry.name):  # x.lock, .tmp files, control characters ...
                continue
            name = f"{rel}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, name + "/"))
            elif names_only:
                found.setdefault(name, "")
            else:
                sha = _read_loose(entry.path)
                if sha is not None:
                    found[name] = sha
    return found


def read_ref(git_dir: Path, name: str) -> str | None:
    """The sha a (non-symbolic) ref points at, or None."""
    sha = _read_loose(str(_common_dir(git_dir) / name))
    if sha is not None:
        return sha
    return _packed_one(git_dir, name)


def _packed_one(git_dir: Path, name: str) -> str | None:
    """``_packed(git_dir).get(name)`` without parsing every line (see :class:`PackedRefs`):
    after ``git pack-refs`` a 100,000-ref file is searched in milliseconds per lookup."""
    return PackedRefs(git_dir).get(name)


# ---------------------------------------------------------------------- did the refs change?
# The one home of ref-change detection: what the per-model listing index
# (uniflow/_records/listing.py) checks itself against (the stamp of a loose-ref directory and
# the bytes of the packed-refs lines under a prefix) and what the web UI's cache
# (uniflow/ui/cache.py) compares before it asks git (:func:`refs_stamp`). Git and dulwich
# write a loose ref only by creating ``<ref>.lock`` in its directory and renaming or
# unlinking it (a new directory entry, a new inode), and packed refs only by rewriting
# ``packed-refs``, so equal stats mean equal refs, unless the stats are "racy".

#: a file or directory changed less than this long before it was read is not trusted to
#: show a second change made in the same clock tick (as Git's racily clean index entries)
RACY_NS = 2_000_000_000


def is_racy(mtime_ns: int, ctime_ns: int, now_ns: int, racy_ns: int = RACY_NS) -> bool:
    """Whether stats with these times, read at ``now_ns``, could hide a later change."""
    return now_ns - mtime_ns < racy_ns or now_ns - ctime_ns < racy_ns


def refs_stamp(
    git_dir: Path,
    prefixes: Iterable[str],
    *,
    entries: bool = False,
    extra: Iterable[Path] = (),
    racy_ns: int = RACY_NS,
) -> tuple[Any, ...] | None:
    """The stats of everywhere the refs under ``prefixes`` live: ``packed-refs``, each
    prefix's directory or loose ref file, with ``entries`` every entry directly in those
    directories, and the files ``extra`` (say, a config the caller derives from too). Two
    equal stamps mean the refs did not change in between. None when a stamp proves nothing:
    a reftable repository, a path that cannot be read, or a stat younger than ``racy_ns``."""
    common = _common_dir(git_dir)
    if (common / "reftable").exists():
        return None
    now = time.time_ns()
    dirs = [common / p.rstrip("/") for p in prefixes]
    paths = [common / "packed-refs", *extra, *dirs]
    stamp: list[Any] = []
    try:
        if entries:
            for d in dirs:
                if d.is_dir():
                    paths += [Path(e.path) for e in sorted(os.scandir(d), key=lambda e: e.name)]
        for path in paths:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                stamp.append((str(path), None))
                continue
            if is_racy(st.st_mtime_ns, st.st_ctime_ns, now, racy_ns):
                return None
            stamp.append((str(path), st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_size))
    except OSError:
        return None
    return tuple(stamp)


# ---------------------------------------------------------------------- one directory of refs


def dir_stamp(git_dir: Path, prefix: str) -> tuple[int, int, int, int] | None:
    """``(st_dev, st_ino, st_mtime_ns, st_ctime_ns)`` of the loose-ref directory ``prefix``
    (e.g. ``refs/tags/models/<model>``), or None when there is none.

    Git and dulwich create, replace and delete a loose ref by creating ``<ref>.lock`` in that
    directory and renaming or unlinking, so every ref change there moves the directory's
    mtime and ctime (a change in the same clock tick as the stamp is the caller's "racy" case).
    """
    try:
        st = os.stat(_common_dir(git_dir) / prefix.rstrip("/"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


class PackedRefs:
    """One read of ``packed-refs``, searched (never split into lines) for many lookups."""

    def __init__(self, git_dir: Path) -> None:
        try:
            with open(_common_dir(git_dir) / "packed-refs", "rb") as fh:
                data = fh.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            data = b""
        self.data = data if not data or data.endswith(b"\n") else data + b"\n"

    def get(self, name: str) -> str | None:
        """The sha of the line ``<sha> <name>`` (the last such line, as a parse would keep)."""
        data = self.data
        tail = b" " + name.encode("utf-8", "surrogateescape")
        needle = tail + b"\n"
        end = len(data)
        while True:  # bounded: each step moves left
            pos = data.rfind(needle, 0, end)
            if pos < 0:
                return None
            start = pos - 40
            if start >= 0 and (start == 0 or data[start - 1] == 0x0A):
                sha = data[start:pos].decode("ascii", "replace")
                if _SHA_RE.fullmatch(sha):
                    return sha
            end = pos + len(tail) - 1

    def section(self, prefix: str) -> bytes:
        """The bytes from the first line naming a ref under ``prefix`` to the last such line
        (and its peeled ``^`` lines): ``b""`` when there is none.

        Every line of a ref under ``prefix`` lies inside it, sorted file or not (a ref name
        holds no space, so ``" <prefix>/"`` only matches where a name starts), so equal
        sections mean equal refs under ``prefix``.
        """
        needle = b" " + prefix.rstrip("/").encode("utf-8", "surrogateescape") + b"/"
        first = self.data.find(needle)
        if first < 0:
            return b""
        return self._span(first, self.data.rfind(needle))

    def sections(self, root: str) -> dict[str, bytes]:
        """``{child: section(root/child)}`` for every ``child`` with a ref under it, in one pass."""
        pattern = re.compile(rb" " + re.escape(root.rstrip("/").encode()) + rb"/([^/\s]+)/")
        spans: dict[bytes, list[int]] = {}
        for m in pattern.finditer(self.data):
            span = spans.get(m.group(1))
            if span is None:
                spans[m.group(1)] = [m.start(), m.start()]
            else:
                span[1] = m.start()
        return {k.decode("utf-8", "surrogateescape"): self._span(a, b) for k, (a, b) in spans.items()}

    def _span(self, first: int, last: int) -> bytes:
        data = self.data
        start = data.rfind(b"\n", 0, first) + 1
        end = data.find(b"\n", last)
        end = len(data) if end < 0 else end + 1
        while data.startswith(b"^", end):  # bounded by the file
            nl = data.find(b"\n", end)
            end = len(data) if nl < 0 else nl + 1
        return data[start:end]


def packed_section(git_dir: Path, prefix: str) -> bytes:
    """:meth:`PackedRefs.section` of a fresh read of ``packed-refs``."""
    return PackedRefs(git_dir).section(prefix)


def parse_packed(section: bytes, prefix: str, *, check: bool = True) -> dict[str, str]:
    """``{name relative to prefix: sha}`` of the direct children of ``prefix`` in a
    :meth:`PackedRefs.section` (nested names and malformed lines are skipped). ``check=False``
    leaves :func:`valid_ref_component` to a caller that validates the names itself."""
    pattern = re.compile(
        rb"^([0-9a-f]{40}) "
        + re.escape(prefix.rstrip("/").encode("utf-8", "surrogateescape"))
        + rb"/([^/\s]+)[ \t\r]*$",
        re.M,
    )
    out = {name.decode("utf-8", "replace"): sha.decode("ascii") for sha, name in pattern.findall(section)}
    if check:
        out = {k: v for k, v in out.items() if valid_ref_component(k)}
    return out


def loose_dirs_in(git_dir: Path, prefix: str) -> list[str]:
    """Names of the directories directly in the loose-ref directory ``prefix``."""
    try:
        entries = list(os.scandir(_common_dir(git_dir) / prefix.rstrip("/")))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [e.name for e in entries if valid_ref_component(e.name) and e.is_dir(follow_symlinks=False)]


def loose_refs_in(git_dir: Path, prefix: str) -> dict[str, str]:
    """``{name: sha}`` of the loose refs directly in the directory ``prefix`` (no recursion)."""
    out: dict[str, str] = {}
    try:
        entries = list(os.scandir(_common_dir(git_dir) / prefix.rstrip("/")))
    except (FileNotFoundError, NotADirectoryError):
        return out
    for entry in entries:
        if valid_ref_component(entry.name) and not entry.is_dir(follow_symlinks=False):
            sha = _read_loose(entry.path)
            if sha is not None:
                out[entry.name] = sha
    return out
