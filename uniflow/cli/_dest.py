"""The all-or-nothing DIR of ``uniflow get`` and ``uniflow oci pull``: refuse an existing DIR
early (unless ``--force``; never a symlink), and rename the complete download into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from .._errors import InvalidPathError, RepositoryError

__all__ = ["check_dest", "move_into_place"]


def check_dest(dest: Path, force: bool) -> None:
    """Refuse early (before any download) a DIR that exists, unless --force."""
    if os.path.lexists(dest) and not force:
        raise InvalidPathError(f"{dest} already exists; choose another -o DIR or pass --force to replace it")
    if os.path.lexists(dest) and (dest.is_symlink() or not dest.is_dir()):
        raise InvalidPathError(f"{dest} exists and is not a directory; remove it first")
    if not dest.parent.is_dir():
        raise InvalidPathError(f"{dest.parent} is not a directory")


def move_into_place(tmp: Path, dest: Path, force: bool) -> None:
    """Rename the complete download to DIR; with --force an existing DIR is set aside first
    and removed only after the rename."""
    from .._storage.fsio import fsync_dir  # not at import: `uniflow --help` stays light

    aside: Path | None = None
    try:
        if force and os.path.lexists(dest):
            aside = dest.parent / f".{dest.name}.uniflow-old-{uuid.uuid4().hex[:16]}"
            os.rename(dest, aside)
        os.rename(tmp, dest)
        fsync_dir(dest.parent)
    except OSError as exc:
        if aside is not None and not os.path.lexists(dest):
            with contextlib.suppress(OSError):
                os.rename(aside, dest)
        raise RepositoryError(f"cannot move the files into {dest}: {exc.strerror}") from exc
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
