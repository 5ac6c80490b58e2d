"""Finding the Git work tree around a path, without importing any Git library."""

from __future__ import annotations

from pathlib import Path

__all__ = ["find_workdir"]


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
