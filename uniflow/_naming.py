"""Validation of everything that names something: models, versions, paths, digests.

Untrusted input is checked here, at the edge, before it reaches a ref name or a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from ._errors import IntegrityError, InvalidNameError, InvalidPathError, InvalidVersionError

__all__ = [
    "validate_model_name",
    "SemVer",
    "parse_version",
    "validate_version",
    "next_version",
    "version_sort_key",
    "validate_digest",
    "validate_relpath",
    "DIGEST_HEX_LEN",
]

DIGEST_HEX_LEN = 64  # BLAKE3-256

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
_SEMVER_RE = re.compile(
    r"^(?P<v>v?)(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+(?P<build>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")


def validate_model_name(name: object) -> str:
    """Return ``name`` if it is a valid model name, else raise :class:`InvalidNameError`."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidNameError(
            f"invalid model name {name!r}: use 1-128 lowercase letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    if ".." in name or name.endswith(".") or name.endswith(".lock"):
        raise InvalidNameError(f"invalid model name {name!r}: no '..', and no trailing '.' or '.lock'")
    return name


@dataclass(frozen=True, order=False)
class SemVer:
    """A parsed semantic version; ``prefix`` is ``"v"`` or ``""`` as the user wrote it."""

    prefix: str
    major: int
    minor: int
    patch: int
    pre: tuple[str, ...] = ()
    build: str = ""

    def __str__(self) -> str:
        s = f"{self.prefix}{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            s += "-" + ".".join(self.pre)
        if self.build:
            s += "+" + self.build
        return s

    def sort_key(self) -> tuple[object, ...]:
        # SemVer 2.0 precedence: a pre-release sorts before its release; build is ignored
        # except as a last tie-breaker so the order is total.
        pre_key: tuple[object, ...]
        if self.pre:
            pre_key = (0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre))
        else:
            pre_key = (1, ())
        return (self.major, self.minor, self.patch, pre_key, self.build, self.prefix)


def parse_version(version: object) -> SemVer:
    """Parse ``v1.2.3`` / ``1.2.3-rc.1``; raise :class:`InvalidVersionError` otherwise."""
    if not isinstance(version, str):
        raise InvalidVersionError(f"invalid version {version!r}: expected a string like 'v1.0.0'")
    m = _SEMVER_RE.match(version)
    if not m or len(version) > 128:
        raise InvalidVersionError(
            f"invalid version {version!r}: expected a semantic version like 'v1.0.0' or '1.2.0-rc.1'"
        )
    return SemVer(
        prefix=m["v"],
        major=int(m["major"]),
        minor=int(m["minor"]),
        patch=int(m["patch"]),
        pre=tuple(m["pre"].split(".")) if m["pre"] else (),
        build=m["build"] or "",
    )


def validate_version(version: object) -> str:
    parse_version(version)
    assert isinstance(version, str)
    return version


def version_sort_key(version: str) -> tuple[object, ...]:
    # Fast path for plain releases (``v1.2.3``), the common case when sorting thousands of
    # tags; anything else goes through the full parser. Both give SemVer.sort_key's shape.
    prefix = "v" if version.startswith("v") else ""
    parts = version[len(prefix) :].split(".")
    if len(parts) == 3 and all(p.isdigit() and p.isascii() and (p == "0" or p[0] != "0") for p in parts):
        return (int(parts[0]), int(parts[1]), int(parts[2]), (1, ()), "", prefix)
    return parse_version(version).sort_key()


def next_version(existing: list[str]) -> str:
    """The version to use when the caller gives none: the newest one's patch bumped.

    A first version is ``v1.0.0``; a pre-release newest (``v2.0.0-rc.1``) bumps to its release.
    """
    if not existing:
        return "v1.0.0"
    newest = max((parse_version(v) for v in existing), key=SemVer.sort_key)
    if newest.pre:
        candidate = SemVer(newest.prefix, newest.major, newest.minor, newest.patch)
    else:
        candidate = SemVer(newest.prefix, newest.major, newest.minor, newest.patch + 1)
    taken = set(existing)
    while str(candidate) in taken:  # bounded by len(existing)
        candidate = SemVer(candidate.prefix, candidate.major, candidate.minor, candidate.patch + 1)
    return str(candidate)


def validate_digest(digest: object, what: str = "digest") -> str:
    if not isinstance(digest, str) or not _HEX_RE.match(digest):
        raise IntegrityError(f"invalid {what} {digest!r}: expected 64 lowercase hex characters")
    return digest


def validate_relpath(path: object) -> str:
    """A manifest path: relative, POSIX, no ``..``, no empty or ``.`` parts."""
    if not isinstance(path, str) or not path or "\\" in path or "\x00" in path:
        raise InvalidPathError(f"invalid file path in manifest: {path!r}")
    p = PurePosixPath(path)
    if p.is_absolute() or any(part in ("", ".", "..") for part in path.split("/")):
        raise InvalidPathError(f"invalid file path in manifest: {path!r} (must be relative, without '..')")
    return path
