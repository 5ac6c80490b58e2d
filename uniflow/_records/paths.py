"""Finding the Git work tree around a path, where a repository keeps its chunk store, and
where its policy files are, without importing any Git library (or the policy readers: the
mirror's sync looks for the policy on every read by URL)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "POLICY_PATH",
    "SIGNERS_PATH",
    "STORE_DIR",
    "find_workdir",
    "git_common_dir",
    "store_dir",
    "work_trees",
]

#: the chunk store's directory inside the common Git directory (as git-lfs keeps ``lfs/``)
STORE_DIR = "uniflow"
#: the two policy files, relative to the repository root (docs/governance.md)
POLICY_PATH = ".uniflow/policy.toml"
SIGNERS_PATH = ".uniflow/allowed_signers"


def find_workdir(start: Path) -> Path | None:
    """The work tree enclosing ``start`` (the nearest directory holding ``.git``), or None."""
    try:
        cur = Path(start).resolve()
    except OSError:
        return None
    for candidate in (cur, *cur.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def git_common_dir(git_dir: Path) -> Path:
    """The Git directory every work tree of the repository shares (``git rev-parse
    --git-common-dir``): where a linked work tree's ``commondir`` file points, else
    ``git_dir`` itself; resolved, so the store below it is named the same from every work tree."""
    common = git_dir / "commondir"
    try:
        text = common.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return git_dir.resolve()
    return (git_dir / text).resolve() if text else git_dir.resolve()


def store_dir(git_dir: Path) -> Path:
    """The chunk store of the repository whose Git directory is ``git_dir``:
    ``<common Git directory>/uniflow``, shared by all its work trees."""
    return git_common_dir(git_dir) / STORE_DIR


def work_trees(git_dir: Path) -> list[Path]:
    """The work trees of the repository whose Git directory is ``git_dir``, as Git records
    them (what ``git worktree list`` shows, where it can be told without running Git): the
    main one, ``<common dir>/..`` when the common directory is its ``.git``, and each linked
    one, named by ``<common dir>/worktrees/<id>/gitdir``; those that no longer exist are left
    out. A main work tree whose Git directory lies elsewhere (``--separate-git-dir``) is not
    found from here."""
    common = git_common_dir(git_dir)
    found: list[Path] = []
    if common.name == ".git" and (common.parent / ".git").resolve() == common:
        found.append(common.parent)
    try:
        ids = sorted(e.name for e in os.scandir(common / "worktrees") if e.is_dir(follow_symlinks=False))
    except OSError:
        ids = []
    for wid in ids:
        admin = common / "worktrees" / wid
        try:
            text = (admin / "gitdir").read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            continue
        # absolute, or relative to the admin directory (``worktree.useRelativePaths``)
        dotgit = Path(os.path.normpath(admin / text)) if text else None
        if dotgit is not None and dotgit.name == ".git" and dotgit.is_file():
            found.append(dotgit.parent)
    return found
