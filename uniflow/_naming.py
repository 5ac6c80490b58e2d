"""Validation of everything that names something: models, versions, paths, digests, keys.

Untrusted input is checked here, at the edge, before it reaches a ref name or a path.
Every pattern is matched against the *whole* string (``fullmatch``): ``"v1.0.0\n"`` is not
a version. Anything that becomes a Git ref component (model, version, stage, remote names)
also passes :func:`valid_ref_component`, Git's own ``check-ref-format`` rules for one
component, so it can never fail later inside the Git layer after objects were written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from ._errors import IntegrityError, InvalidNameError, InvalidPathError, InvalidVersionError, UsageError

__all__ = [
    "validate_model_name",
    "SemVer",
    "parse_version",
    "validate_version",
    "next_version",
    "version_sort_key",
    "validate_digest",
    "validate_relpath",
    "validate_key",
    "valid_ref_component",
    "DIGEST_HEX_LEN",
    "MAX_KEY_LEN",
]

DIGEST_HEX_LEN = 64  # BLAKE3-256

#: longest metric / param / tag key accepted
MAX_KEY_LEN = 256
#: longest manifest path, and longest component of one (bytes, as most file systems count)
_MAX_PATH = 4096
_MAX_PART = 255
#: path components a registered model never has (``_walk`` skips them) and a manifest must not
#: name: exporting them would write into a Git directory or a registry store.
_RESERVED_PARTS = frozenset({".git", ".uniflow"})

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")
_SEMVER_RE = re.compile(
    r"^(?P<v>v?)(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+(?P<build>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
_HEX_RE = re.compile(r"[0-9a-f]{64}")
# Characters Git forbids in a ref name (``git check-ref-format``): controls, space, ~ ^ : ? * [ \\
_REF_BAD_RE = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def valid_ref_component(text: str) -> bool:
    """True when ``text`` is usable as one component of a Git ref name.

    Git's rules for a component: not empty, no ``/``, does not start with ``.``, does not
    end with ``.`` or ``.lock``, no ``..``, no ``@{``, not ``@``, and none of the control
    characters, space, ``~ ^ : ? * [ \\``.
    """
    return (
        isinstance(text, str)
        and bool(text)
        and "/" not in text
        and not text.startswith(".")
        and not text.endswith((".", ".lock"))
        and ".." not in text
        and "@{" not in text
        and text != "@"
        and _REF_BAD_RE.search(text) is None
    )


def validate_model_name(name: object) -> str:
    """Return ``name`` if it is a valid model name, else raise :class:`InvalidNameError`."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidNameError(
            f"invalid model name {name!r}: use 1-128 lowercase letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    if not valid_ref_component(name):
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
    m = _SEMVER_RE.fullmatch(version)
    if not m or len(version) > 128:
        raise InvalidVersionError(
            f"invalid version {version!r}: expected a semantic version like 'v1.0.0' or '1.2.0-rc.1'"
        )
    if not valid_ref_component(version):  # e.g. a pre-release or build part ending in ".lock"
        raise InvalidVersionError(
            f"invalid version {version!r}: it must also be a valid Git ref name (no trailing '.lock')"
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
    """Return ``version`` if it is a valid version string, else raise :class:`InvalidVersionError`."""
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
    """Return ``digest`` if it is 64 lowercase hex characters, else raise :class:`IntegrityError`."""
    if not isinstance(digest, str) or not _HEX_RE.fullmatch(digest):
        raise IntegrityError(f"invalid {what} {digest!r}: expected 64 lowercase hex characters")
    return digest


def validate_relpath(path: object) -> str:
    """A manifest path: relative, POSIX, normalised (no empty, ``.`` or ``..`` parts), no
    backslash or control character, no ``.git`` / ``.uniflow`` part, bounded length."""
    if not isinstance(path, str) or not path or "\\" in path or _CONTROL_RE.search(path):
        raise InvalidPathError(f"invalid file path in manifest: {path!r}")
    parts = path.split("/")
    if PurePosixPath(path).is_absolute() or any(part in ("", ".", "..") for part in parts):
        raise InvalidPathError(
            f"invalid file path in manifest: {path!r} (must be relative and normalised, without '..')"
        )
    try:
        too_long = len(path.encode()) > _MAX_PATH or any(len(p.encode()) > _MAX_PART for p in parts)
    except UnicodeEncodeError:  # lone surrogates: not a file name any file system takes
        raise InvalidPathError(f"invalid file path in manifest: {path!r}") from None
    if too_long:
        raise InvalidPathError(f"invalid file path in manifest: {path[:80]!r}... (too long)")
    if any(p in _RESERVED_PARTS for p in parts):
        raise InvalidPathError(
            f"invalid file path in manifest: {path!r} (names a .git or .uniflow directory)"
        )
    return path


def validate_key(key: object, what: str = "key") -> str:
    """A metric, param or tag key: a printable one-line string of 1-256 characters.

    Keys end up in commit messages, model cards and tables; a newline or control character
    in one could forge lines there. Raises :class:`UsageError`.
    """
    if not isinstance(key, str):
        raise UsageError(f"invalid {what} key {key!r}: keys must be strings")
    if not key or len(key) > MAX_KEY_LEN or not key.isprintable():
        shown = key if len(key) <= 80 else key[:80] + "..."
        raise UsageError(
            f"invalid {what} key {shown!r}: use 1-{MAX_KEY_LEN} printable characters (no newline or "
            f"control characters)"
        )
    return key
