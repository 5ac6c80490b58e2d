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
from pathlib import Path

from ._naming import valid_ref_component

__all__ = ["git_dir_of", "scan_refs", "read_ref"]

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
    return _packed(git_dir).get(name)
