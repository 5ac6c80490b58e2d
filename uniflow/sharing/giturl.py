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
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from .._errors import UsageError

__all__ = ["GitUrl", "canonical", "is_git_url", "parse_git_url", "redact"]

_SCHEMES = ("https", "http", "ssh", "git+ssh", "ssh+git", "git", "file")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# [user@]host:path, with no slash before the colon (git's own rule for scp-like syntax)
_SCP_RE = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._~+-]+)@)?(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*):(?P<path>[^/].*|/.*)$"
)
_BARE_RE = re.compile(r"^\s*bare\s*=\s*true\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class GitUrl:
    """A Git URL as given (``raw``, handed to git), its canonical form (``normalized``, what
    the cache key hashes: see :func:`canonical`), a display form without any secret, and,
    for local repositories, the directory."""

    raw: str
    normalized: str
    display: str
    local_path: Path | None

    @property
    def is_local(self) -> bool:
        return self.local_path is not None

    @property
    def key(self) -> str:
        """A stable file name for this URL's mirror: a readable stem and a hash of the
        canonical form (no secret is in either)."""
        digest = hashlib.sha256(self.normalized.encode()).hexdigest()[:32]
        path = json.loads(self.normalized)[-1]
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.rstrip("/").rsplit("/", 1)[-1])
        stem = stem.removesuffix(".git").strip("-.")[:40] or "repo"
        return f"{stem}-{digest}"


#: ports git uses when a URL names none (ssh has none here: ~/.ssh/config may set another)
_DEFAULT_PORTS = {"https": 443, "http": 80, "git": 9418}
#: transports git reads the same way (``transport.c``/``connect.c``)
_TRANSPORT = {"git+ssh": "ssh", "ssh+git": "ssh"}


def canonical(transport: str, user: str, host: str, port: int | None, path: str) -> str:
    """The canonical form of a repository address, the text the cache key hashes: a JSON
    array ``[transport, user, host, port, path]``, one field each, so no two addresses
    share it by accident of concatenation. Only what provably names the same repository is
    merged (docs/remote.md, "Which mirror a URL uses"): the host's case, a port equal to the
    transport's default (not for ssh), trailing slashes, ``git+ssh``/``ssh+git`` as ``ssh``."""
    port = None if port == _DEFAULT_PORTS.get(transport) else port
    path = path.rstrip("/") or "/"
    return json.dumps([transport, user, host.lower(), port, path], separators=(",", ":"))


def redact(url: str) -> str:
    """``url`` without its secrets: the password of its user-info part
    (``https://user:***@host/x``); for HTTP(S) also a lone user name, which forges accept as
    a token (``https://***@host/x``), and a query string (``?***``)."""
    m = _SCHEME_RE.match(url)
    if not m:
        return url
    parts = urlsplit(url)
    http = m.group(1).lower() in ("http", "https")
    query = "***" if parts.query and http else parts.query
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if parts.password is not None:
        netloc = f"{parts.username}:***@{hostport}"
    elif at and http:
        netloc = f"***@{hostport}"
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


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
    return GitUrl(raw, canonical("file", "", "", None, resolved.as_posix()), redact(raw), resolved)


def _file_path(text: str) -> str:
    """The path git reads from a ``file://`` URL: everything after the host, query and
    fragment included (they are part of a file name for git), percent-decoded like git does."""
    rest = text.split("://", 1)[1]
    slash = rest.find("/")
    return unquote(rest[slash:]) if slash >= 0 else ""


def _network(text: str, scheme: str) -> GitUrl:
    """A URL of another machine: https, http, git or ssh (see :func:`canonical`)."""
    parts = urlsplit(text)
    host = parts.hostname or ""
    if not host:
        raise UsageError(f"invalid Git URL {redact(text)!r}: no host")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"invalid Git URL {redact(text)!r}: bad port") from None
    transport = _TRANSPORT.get(scheme, scheme)
    if transport in ("http", "https"):
        # user-info is credentials only (sent as Basic auth; forges take a token as the user
        # name), a query may carry a token and a fragment never reaches the server: none of
        # them names the repository, none is keyed
        user, path = "", parts.path
    else:
        if parts.password is not None:
            raise UsageError(
                f"invalid Git URL {redact(text)!r}: a password in an {transport}:// URL "
                "(use an SSH key or a credential helper)"
            )
        # the account selects the repository (its home directory, its keys); the rest of the
        # URL after the host, query and fragment included, is the path git sends
        user = parts.username or ""
        path = text.split("://", 1)[1]
        slash = path.find("/")
        path = path[slash:] if slash >= 0 else "/"
    return GitUrl(text, canonical(transport, user, host, port, path), redact(text), None)


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
            file_path = _file_path(text)
            if not file_path:
                raise UsageError(f"invalid file URL {text!r}: no path")
            return _local(Path(file_path), text)
        return _network(text, scheme)
    if os.path.exists(text):
        path = Path(text)
        return _local(path, text) if path.is_dir() and _is_bare_repository(path) else None
    scp = _SCP_RE.match(text)
    if scp and not text.startswith(("./", "../", "/", "~")):
        if any(ord(c) < 32 or c == "\x7f" for c in text):
            raise UsageError(f"invalid Git URL {text!r}: control characters")
        # ssh with no port; the path verbatim: "srv/x" is relative to the account's home
        # directory, "/srv/x" is absolute (the same as ssh://host/srv/x)
        normalized = canonical("ssh", scp["user"] or "", scp["host"], None, scp["path"])
        return GitUrl(text, normalized, text, None)
    return None


def is_git_url(text: str | os.PathLike[str]) -> bool:
    """True when ``text`` names a Git URL or a bare repository (see :func:`parse_git_url`)."""
    try:
        return parse_git_url(os.fspath(text)) is not None
    except UsageError:
        return True  # a malformed URL: the registry for URLs reports it
