"""A cache of values derived from immutable Git objects, keyed by the object's sha.

A tag's manifest and a lifecycle commit's state never change for a given sha, so reading
them once through Git and keeping the bytes under ``.git/uniflow/cache/git/<kind>/`` lets
``uniflow models list`` answer without opening a single Git object.

The cache can only cost time, never correctness. Anyone who can write the repository
directory can write these files, so each entry carries a keyed BLAKE3 MAC over its kind,
its sha and its payload, with a per-user secret key kept *outside* the repository
(``$UNIFLOW_CACHE_DIR/derived-cache.key``, default ``$XDG_CACHE_HOME/uniflow`` or
``~/.cache/uniflow``; 32 random bytes, created 0600 with ``O_EXCL``). An entry whose MAC
does not verify (forged, damaged, written under another key or by an older format, or
moved to another sha) is ignored, deleted and rebuilt from Git. When the key cannot be
created or read, the cache is simply off. Callers still validate what they read from the
cache exactly as what they read from Git.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import uuid
from pathlib import Path
from typing import Any

import blake3

from .._storage.safefs import first_link

__all__ = ["DerivedCache", "KEY_FILE", "cache_home", "keyed_mac", "load_key"]

#: name of the per-user key file inside :func:`cache_home`
KEY_FILE = "derived-cache.key"
_KEY_LEN = 32
_MAC_LEN = 32
_DOMAIN = b"uniflow-derived-cache-v2\x00"
_KIND_RE = re.compile(r"[a-z]{1,32}")
_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def cache_home() -> Path | None:
    """``$UNIFLOW_CACHE_DIR``, else ``$XDG_CACHE_HOME/uniflow``, else ``~/.cache/uniflow``."""
    explicit = os.environ.get("UNIFLOW_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "uniflow"
    try:
        return Path.home() / ".cache" / "uniflow"
    except (RuntimeError, KeyError):  # no home directory to speak of
        return None


def _read_key(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077 or st.st_uid != os.getuid():
            return None  # shared with, or writable by, someone else: not a secret
        data = os.read(fd, _KEY_LEN + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) == _KEY_LEN else None


def load_key(directory: Path | None = None) -> bytes | None:
    """The per-user MAC key, created on first use; None when it cannot be had.

    The key is written to a private temporary file (``O_EXCL``, 0600) and published with
    ``link``, which fails if the file exists: of several processes creating it at once,
    one wins and every one reads the same complete key.
    """
    home = directory if directory is not None else cache_home()
    if home is None:
        return None
    path = home / KEY_FILE
    key = _read_key(path)
    if key is not None:
        return key
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = home / f".{KEY_FILE}.{os.getpid()}.{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.write(fd, secrets.token_bytes(_KEY_LEN))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process published its key first: use that one
        finally:
            os.unlink(tmp)
    except OSError:
        return None
    return _read_key(path)


def keyed_mac(key: bytes, domain: bytes, payload: bytes) -> bytes:
    """The 32-byte keyed BLAKE3 MAC of ``payload`` under ``key`` (the per-user key of
    :func:`load_key`), separated by ``domain`` (each kind of record names its own, so a MAC
    made for one never verifies another)."""
    h = blake3.blake3(domain, key=key)
    h.update(payload)
    return h.digest()


class DerivedCache:
    """Entries ``<root>/<kind>/<sha[:2]>/<sha>``: a 32-byte keyed MAC, then the payload.

    ``key`` defaults to the per-user key (:func:`load_key`), read on first use.
    """

    def __init__(self, root: Path, key: bytes | None = None) -> None:
        self.root = root
        self._key = key
        self._loaded = key is not None

    @property
    def key(self) -> bytes | None:
        """The MAC key, or None when the cache is off."""
        if not self._loaded:
            self._key = load_key()
            self._loaded = True
        return self._key

    def _path(self, kind: str, sha: str) -> Path | None:
        """The entry's path, or None for a bad key or when a directory on the way (from the
        repository down) is a symlink: the cache is then off rather than written through it."""
        if not (_KIND_RE.fullmatch(kind) and _SHA_RE.fullmatch(sha)):
            return None
        path = self.root / kind / sha[:2] / sha
        top = self.root.parents[2] if len(self.root.parents) > 2 else self.root
        if first_link(top, path.parent) is not None:
            return None
        return path

    def _mac(self, key: bytes, kind: str, sha: str, payload: bytes) -> bytes:
        return keyed_mac(key, _DOMAIN + f"{kind}\x00{sha}\x00".encode(), payload)

    def get(self, kind: str, sha: str) -> bytes | None:
        """The payload stored for ``(kind, sha)`` if its MAC verifies, else None."""
        key = self.key
        path = self._path(kind, sha)
        if key is None or path is None:
            return None
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        mac, payload = raw[:_MAC_LEN], raw[_MAC_LEN:]
        if len(mac) != _MAC_LEN or not secrets.compare_digest(mac, self._mac(key, kind, sha, payload)):
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return payload

    def get_record(self, kind: str, sha: str, fmt: int, owner: str, fields: int) -> list[Any] | None:
        """The msgpack list stored under ``(kind, sha)`` if it is ``[fmt, owner, ...]`` with
        exactly ``fields`` items, else None (absent, forged, undecodable, another format or
        another owner's). The caller still checks the types of the other items."""
        import msgpack

        raw = self.get(kind, sha)
        if raw is None:
            return None
        try:
            d = msgpack.unpackb(raw, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        if not (isinstance(d, list) and len(d) == fields and d[0] == fmt and d[1] == owner):
            return None
        return d

    def keys(self, kind: str) -> set[str]:
        """The shas with an entry of ``kind`` (unverified: :meth:`get` checks each), listed
        without opening them; empty when the cache is off or has none."""
        if not _KIND_RE.fullmatch(kind) or self.key is None:
            return set()
        try:
            with os.scandir(self.root / kind) as fans:
                dirs = [d.path for d in fans if len(d.name) == 2 and d.is_dir(follow_symlinks=False)]
            return {name for d in dirs for name in os.listdir(d) if _SHA_RE.fullmatch(name)}
        except OSError:
            return set()

    def delete(self, kind: str, sha: str) -> None:
        """Remove the entry for ``(kind, sha)`` if there is one (failures are ignored)."""
        path = self._path(kind, sha)
        if path is None:
            return
        with contextlib.suppress(OSError):
            path.unlink()

    def put(self, kind: str, sha: str, payload: bytes) -> None:
        """Store ``payload`` for ``(kind, sha)``; failures are ignored (the cache is optional)."""
        key = self.key
        path = self._path(kind, sha)
        if key is None or path is None:
            return
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(self._mac(key, kind, sha, payload) + payload)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
