"""Signed commits and tags as dulwich objects: a thin adapter over :mod:`uniflow._authority.gitsign`.

The signing core works on raw object bytes; here a dulwich ``Commit`` or ``Tag`` goes in and
one comes out (its ``id`` is the signed object's). dulwich is not imported: any object with
``as_raw_string()`` and a ``from_string()`` class method fits.

Verify what was read from the object store, not a re-serialized object: dulwich writes the
headers it knows in its own order, so ``as_raw_string()`` of an object parsed from unusual
bytes may differ from what was signed (the verdict then fails, it never passes wrongly).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, TypeVar

from .._authority import gitsign
from .._authority.allowed_signers import AllowedSigners, Verdict
from .._authority.signing import Signer

__all__ = ["sign_commit_object", "sign_tag_object", "verify_commit_object", "verify_tag_object"]


class GitObject(Protocol):
    """What the adapter needs of a dulwich object."""

    def as_raw_string(self) -> bytes: ...


T = TypeVar("T", bound=GitObject)


def _rebuild(obj: T, raw: bytes) -> T:
    rebuilt: T = type(obj).from_string(raw)  # type: ignore[attr-defined]
    return rebuilt


def sign_commit_object(commit: T, signer: Signer, object_format: str = "sha1") -> T:
    """A signed copy of a dulwich ``Commit`` (the ``gpgsig`` header Git writes)."""
    return _rebuild(commit, gitsign.sign_commit(commit.as_raw_string(), signer, object_format))


def sign_tag_object(tag: T, signer: Signer) -> T:
    """A signed copy of a dulwich ``Tag`` (the signature appended to its message)."""
    return _rebuild(tag, gitsign.sign_tag(tag.as_raw_string(), signer))


def verify_commit_object(
    commit: GitObject,
    signers: AllowedSigners,
    *,
    principal: str | None = None,
    when: float | datetime | None = None,
    object_format: str = "sha1",
) -> Verdict:
    """:func:`uniflow._authority.gitsign.verify_commit` of a dulwich ``Commit``."""
    raw = commit.as_raw_string()
    return gitsign.verify_commit(raw, signers, principal=principal, when=when, object_format=object_format)


def verify_tag_object(
    tag: GitObject,
    signers: AllowedSigners,
    *,
    principal: str | None = None,
    when: float | datetime | None = None,
) -> Verdict:
    """:func:`uniflow._authority.gitsign.verify_tag` of a dulwich ``Tag``."""
    return gitsign.verify_tag(tag.as_raw_string(), signers, principal=principal, when=when)
