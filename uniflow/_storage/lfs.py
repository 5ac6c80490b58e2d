"""Recognising Git LFS pointer files, so that register never stores one as a model silently.

A clone made with ``GIT_LFS_SKIP_SMUDGE=1`` (or without git-lfs) holds, instead of each LFS
file, a small text file (git-lfs ``docs/spec.md``)::

    version https://git-lfs.github.com/spec/v1
    oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393
    size 12345

Registering it would store 130 bytes as "the model". The recogniser follows git-lfs's own
decoder: files of 1024 bytes or more are never pointers (its ``blobSizeCutoff``), the text is
UTF-8 ``key value`` lines, the first key is ``version`` with one of the spec's v1 URLs, and
``oid sha256:<64 hex>`` and ``size <digits>`` are present. Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["POINTER_MAX", "LfsPointer", "describe", "lfs_pointer", "lfs_pointers"]

#: git-lfs scans only blobs smaller than this for pointers
POINTER_MAX = 1024
#: the version URLs git-lfs reads as spec v1 (alpha, pre-release, public launch)
_VERSIONS = frozenset(
    {"http://git-media.io/v/2", "https://hawser.github.com/spec/v1", "https://git-lfs.github.com/spec/v1"}
)
_KEY = re.compile(r"[a-z0-9.-]+\Z")
_OID = re.compile(r"sha256:([0-9a-f]{64})\Z")
_SIZE = re.compile(r"[0-9]{1,20}\Z")


@dataclass(frozen=True)
class LfsPointer:
    """A file of a model that is a Git LFS pointer: its path in the model, the LFS object id
    (sha256 hex) and the size of the content it stands for."""

    path: str
    oid: str
    size: int


def lfs_pointer(data: bytes) -> tuple[str, int] | None:
    """``(oid, size)`` if ``data`` is a Git LFS pointer file, else None."""
    if len(data) >= POINTER_MAX:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
    fields: dict[str, str] = {}
    for i, line in enumerate(lines):
        key, sep, value = line.partition(" ")
        if not sep or not _KEY.match(key) or "\r" in value or (i == 0) != (key == "version"):
            return None
        fields[key] = value
    oid, size = _OID.match(fields.get("oid", "")), fields.get("size", "")
    if fields.get("version") not in _VERSIONS or oid is None or not _SIZE.match(size):
        return None
    return oid.group(1), int(size)


def lfs_pointers(files: list[tuple[str, Path]]) -> list[LfsPointer]:
    """The files among ``(path in the model, file on disk)`` that are Git LFS pointers (only
    files under :data:`POINTER_MAX` bytes are read)."""
    found = []
    for rel, path in files:
        try:
            if path.stat().st_size >= POINTER_MAX:
                continue
            data = path.read_bytes()
        except OSError:
            continue  # storing the file reports it
        parsed = lfs_pointer(data)
        if parsed is not None:
            found.append(LfsPointer(rel, *parsed))
    return found


def describe(pointers: list[LfsPointer]) -> str:
    """One line naming the pointer files (the first five) and what they stand for."""
    if len(pointers) == 1:
        p = pointers[0]
        return (
            f"{p.path!r} is a Git LFS pointer file (oid sha256:{p.oid[:12]}…, {p.size} bytes of content), "
            "not the file's content"
        )
    names = ", ".join(repr(p.path) for p in pointers[:5]) + (", …" if len(pointers) > 5 else "")
    return f"{len(pointers)} files are Git LFS pointer files, not their content: {names}"
