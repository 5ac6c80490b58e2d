"""Versions as uniflow wrote them before manifest format 3, for tests of mixed repositories.

The registry of today writes format 3 (Merkle identities). :func:`register_as` registers
through today's code and, just before the version is published, rewrites its manifest as
an older uniflow wrote it: format 2 with BLAKE3 of the bytes as the file and tensor
digests (computed from the stored chunks), or format 1 without tensor lists. The chunks
are today's (tensor-aligned); an older register's cut points may differ, which no reader
relies on.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from uniflow import ModelRegistry
from uniflow._records.manifest import FileEntry, Manifest, content_digest
from uniflow._storage.chunking import ChunkRef, range_b3sum
from uniflow._types import ChunkDigest


def b3sum_entry(store: Any, f: FileEntry, tensors: bool) -> FileEntry:
    """``f`` with its digests as format 2 recorded them (BLAKE3 of the bytes)."""
    chunks = [ChunkRef(ChunkDigest(d.hex()), n) for d, n in f.chunks]
    rows = None
    if tensors and f.tensors is not None:
        rows = tuple(
            replace(t, digest=range_b3sum(chunks, store.read_chunk, t.begin, t.end)) for t in f.tensors
        )
    return replace(f, digest=range_b3sum(chunks, store.read_chunk), tensors=rows)


def as_format(store: Any, m: Manifest, fmt: int) -> Manifest:
    """Manifest ``m`` (format 3) as format ``fmt`` (1 or 2) recorded it."""
    files = tuple(b3sum_entry(store, f, tensors=fmt >= 2) for f in m.files)
    return replace(m, format=fmt, files=files, content_digest=content_digest(files))


def register_as(
    fmt: int, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch, *args: Any, **kwargs: Any
) -> Any:
    """``registry.register(*args, **kwargs)``, the manifest written in format ``fmt``."""
    from uniflow._ops import register as _register

    original = _register._publish

    def publish(repo: Any, manifest: Manifest, *rest: Any) -> str:
        return original(repo, as_format(repo.store, manifest, fmt), *rest)

    with monkeypatch.context() as mp:
        mp.setattr(_register, "_publish", publish)
        return registry.register(*args, **kwargs)
