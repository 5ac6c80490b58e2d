"""A cache of values derived from immutable Git objects, keyed by the object's sha.

A tag's manifest and a lifecycle commit's state never change for a given sha, so reading
them once through Git and keeping the bytes under ``.uniflow/cache/git/<kind>/`` lets
``uniflow models list`` answer without opening a single Git object. Each entry carries a
BLAKE3 digest of its payload and is dropped if it does not match (the cache can always be
deleted; a read-only store simply does not cache).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import blake3

__all__ = ["DerivedCache"]


class DerivedCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, kind: str, sha: str) -> Path:
        return self.root / kind / sha[:2] / sha

    def get(self, kind: str, sha: str) -> bytes | None:
        path = self._path(kind, sha)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        digest, payload = raw[:32], raw[32:]
        if blake3.blake3(payload).digest() != digest:
            try:
                path.unlink()
            except OSError:
                pass
            return None
        return payload

    def put(self, kind: str, sha: str, payload: bytes) -> None:
        path = self._path(kind, sha)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(blake3.blake3(payload).digest() + payload)
            os.replace(tmp, path)
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass
