"""Telling a Git URL from a local registry path, and naming it safely.

``ModelRegistry(x)`` and ``uniflow --repo x`` read a registry *without a clone* when ``x`` is
a Git URL (docs/remote.md):

* ``https://``, ``http://``, ``ssh://``, ``git+ssh://``, ``git://`` and ``file://`` URLs;
* scp-like ``user@host:path`` (and ``host:path`` when no such local path exists), as git reads them;
* a path to a **bare** repository (``core.bare = true``, no work tree).

Anything else is a local path (a work tree), handled as before. Pure standard library: the
command line calls this before it imports anything heavy.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .._errors import UsageError

__all__ = ["GitUrl", "is_git_url", "parse_git_url", "redact"]

_SCHEMES = ("https", "http", "ssh", "git+ssh", "ssh+git", "git", "file")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# [user@]host:path, with no slash before the colon (git's own rule for scp-like syntax)
_SCP_RE = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._~+-]+)@)?(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*):(?P<path>[^/].*|/.*)$"
)
_BARE_RE = re.compile(r"^\s*bare\s*=\s*true\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class GitUrl:
    """A Git URL as given (``raw``, handed to git), its normalised form (the cache key), a
    display form without any password, and, for local repositories, the directory."""

    raw: str
    normalized: str
    display: str
    local_path: Path | None

    @property
    def is_local(self) -> bool:
        return self.local_path is not None

    @property
    def key(self) -> str:
        """A stable file name for this URL's mirror: a readable stem and a hash."""
        digest = hashlib.sha256(self.normalized.encode()).hexdigest()[:24]
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", self.normalized.rstrip("/").rsplit("/", 1)[-1])
        stem = stem.removesuffix(".git").strip("-.")[:40] or "repo"
        return f"{stem}-{digest}"


def redact(url: str) -> str:
    """``url`` without the password of its user-info part (``https://user:***@host/x``)."""
    m = _SCHEME_RE.match(url)
    if not m:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _is_bare_repository(path: Path) -> bool:
    """True for a directory that is a bare Git repository (not the ``.git`` of a work tree)."""
    try:
        if not (path / "HEAD").is_file() or not (path / "objects").is_dir() or not (path / "refs").is_dir():
            return False
        text = (path / "config").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(_BARE_RE.search(text))


def _local(path: Path, raw: str) -> GitUrl:
    resolved = path.expanduser().resolve()
    normalized = "file://" + resolved.as_posix()
    return GitUrl(raw, normalized, raw, resolved)


def parse_git_url(text: str) -> GitUrl | None:
    """The :class:`GitUrl` that ``text`` names, or None when ``text`` is a local work-tree path.

    A string that looks like a URL but is not one git can use (an unknown scheme, control
    characters) is a :class:`UsageError`.
    """
    if not isinstance(text, str) or not text:
        return None
    m = _SCHEME_RE.match(text)
    if m:
        if any(ord(c) < 32 or c == "\x7f" for c in text):
            raise UsageError(f"invalid Git URL {redact(text)!r}: control characters")
        scheme = m.group(1).lower()
        if scheme not in _SCHEMES:
            raise UsageError(
                f"unsupported Git URL scheme {scheme!r} in {redact(text)!r} "
                "(use https://, ssh://, git://, file://, user@host:path or a path to a bare repository)"
            )
        if scheme == "file":
            file_path = urlsplit(text).path
            if not file_path:
                raise UsageError(f"invalid file URL {text!r}: no path")
            return _local(Path(file_path), text)
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        if not host:
            raise UsageError(f"invalid Git URL {redact(text)!r}: no host")
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
        normalized = f"{scheme}://{user}{host}{port}{parts.path.rstrip('/') or '/'}"
        return GitUrl(text, normalized, redact(text), None)
    if os.path.exists(text):
        path = Path(text)
        return _local(path, text) if path.is_dir() and _is_bare_repository(path) else None
    scp = _SCP_RE.match(text)
    if scp and not text.startswith(("./", "../", "/", "~")):
        if any(ord(c) < 32 or c == "\x7f" for c in text):
            raise UsageError(f"invalid Git URL {text!r}: control characters")
        user = f"{scp['user']}@" if scp["user"] else ""
        normalized = f"ssh://{user}{scp['host'].lower()}/{scp['path'].lstrip('/').rstrip('/')}"
        return GitUrl(text, normalized, text, None)
    return None


def is_git_url(text: str | os.PathLike[str]) -> bool:
    """True when ``text`` names a Git URL or a bare repository (see :func:`parse_git_url`)."""
    try:
        return parse_git_url(os.fspath(text)) is not None
    except UsageError:
        return True  # a malformed URL: the registry for URLs reports it
