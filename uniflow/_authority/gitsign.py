"""Signed Git commits and annotated tags, byte for byte as Git writes and reads them.

A signed commit carries its signature in a ``gpgsig`` header (``gpgsig-sha256`` in a
SHA-256 repository) placed after the other headers; each line of the armored signature
after the first is prefixed with one space. The signed payload is the commit without that
header. A signed tag has the signature appended to its message; the payload is everything
before the last line that starts a signature. Both are signed in the ``git`` namespace, so
``git verify-commit``/``git verify-tag`` (``gpg.format=ssh``, ``gpg.ssh.allowedSignersFile``)
verify what :func:`sign_commit`/:func:`sign_tag` make, and :func:`verify_commit`/
:func:`verify_tag` verify what ``git commit -S``/``git tag -s`` make.

Everything here works on raw object bytes (what ``git cat-file commit`` prints, without the
``commit <size>\\0`` object header); :mod:`uniflow._records.signed` adapts dulwich objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .._errors import SignatureError
from .allowed_signers import AllowedSigners, Verdict
from .signing import Signer
from .sshsig import GIT_NAMESPACE

__all__ = [
    "SIGNATURE_HEADERS",
    "SignedObject",
    "sign_commit",
    "sign_tag",
    "split_commit",
    "split_tag",
    "verify_commit",
    "verify_tag",
]

#: the commit header that holds the signature, per repository object format
SIGNATURE_HEADERS = {"sha1": b"gpgsig", "sha256": b"gpgsig-sha256"}
# the lines that start a signature in a tag message (Git's gpg-interface.c formats)
_SIGNATURE_STARTS = (
    b"-----BEGIN PGP SIGNATURE-----",
    b"-----BEGIN PGP MESSAGE-----",
    b"-----BEGIN SIGNED MESSAGE-----",
    b"-----BEGIN SSH SIGNATURE-----",
)


@dataclass(frozen=True)
class SignedObject:
    """A commit or tag split as Git splits it: the signed ``payload``, the armored
    ``signature`` (``None`` when unsigned), and the committer's or tagger's time."""

    payload: bytes
    signature: str | None
    timestamp: int | None


def _lines(raw: bytes) -> list[bytes]:
    return raw.splitlines(keepends=True)


def _header_time(raw: bytes, name: bytes) -> int | None:
    """The seconds of the ``committer``/``tagger`` header (``Name <email> SECONDS TZ``)."""
    for line in _lines(raw):
        if line in (b"\n", b""):
            break
        if line.startswith(name + b" "):
            fields = line.rsplit(b">", 1)[-1].split()
            if fields and fields[0].isdigit():
                return int(fields[0])
    return None


def _header(object_format: str) -> bytes:
    try:
        return SIGNATURE_HEADERS[object_format]
    except KeyError:
        raise SignatureError(f"unknown object format {object_format!r} (sha1 or sha256)") from None


def split_commit(raw: bytes, object_format: str = "sha1") -> SignedObject:
    """Split a commit into payload and signature exactly as Git's ``parse_signed_commit`` does."""
    header = _header(object_format) + b" "
    found = _split_plain(raw, header)
    if found is not None:
        return found
    payload: list[bytes] = []
    signature: list[bytes] = []
    in_signature = False
    lines = _lines(raw)
    for i, line in enumerate(lines):
        if line == b"\n":  # the end of the headers: the message follows verbatim
            payload.extend(lines[i:])
            break
        if in_signature and line.startswith(b" "):
            signature.append(line[1:])
        elif line.startswith(header):
            signature.append(line[len(header) :])
            in_signature = True
        else:
            payload.append(line)
            in_signature = False
    sig = b"".join(signature).decode("ascii", "replace") if signature else None
    return SignedObject(b"".join(payload), sig, _header_time(raw, b"committer"))


def _split_plain(raw: bytes, header: bytes) -> SignedObject | None:
    """:func:`split_commit` of a commit as Git writes one (lines ended by ``\\n`` alone, at
    most one signature header, not first), found with a few searches instead of a pass over
    every line; None for any other commit (the pass over its lines splits it)."""
    end = raw.find(b"\n\n")
    if end < 1 or raw.find(b"\r", 0, end) >= 0 or raw.startswith((header, b"committer ", b"\n")):
        return None
    start = raw.find(b"\n" + header, 0, end) + 1
    if start:  # the signature: its header line and the lines after it that start with a space
        stop = raw.find(b"\n", start)
        while raw.startswith(b" ", stop + 1):
            stop = raw.find(b"\n", stop + 1)
        if raw.find(b"\n" + header, stop, end) >= 0:
            return None
        block = raw[start + len(header) : stop + 1].replace(b"\n ", b"\n").decode("ascii", "replace")
        payload, signature = raw[:start] + raw[stop + 1 :], block
    else:
        payload, signature = raw, None
    line = raw.find(b"\ncommitter ", 0, end) + 1
    fields = raw[line : raw.find(b"\n", line)].rsplit(b">", 1)[-1].split() if line else []
    if fields and fields[0].isdigit():
        return SignedObject(payload, signature, int(fields[0]))
    return SignedObject(payload, signature, _header_time(raw, b"committer"))  # the first that has one


def sign_commit(raw: bytes, signer: Signer, object_format: str = "sha1") -> bytes:
    """The commit ``raw`` with a signature header, inserted as ``git commit -S`` inserts it."""
    if split_commit(raw, object_format).signature is not None:
        raise SignatureError("the commit is already signed")
    signature = signer.sign(raw, GIT_NAMESPACE).encode("ascii")
    end = raw.find(b"\n\n")
    at = len(raw) if end < 0 else end + 1
    lines = _lines(signature)
    block = _header(object_format) + b" " + lines[0] + b"".join(b" " + line for line in lines[1:])
    if not block.endswith(b"\n"):
        block += b"\n"
    return raw[:at] + block + raw[at:]


def split_tag(raw: bytes) -> SignedObject:
    """Split a tag at the last line that starts a signature, as Git's ``parse_signed_buffer``."""
    pos = 0
    match = len(raw)
    for line in _lines(raw):
        if line.startswith(_SIGNATURE_STARTS):
            match = pos
        pos += len(line)
    signature = raw[match:].decode("ascii", "replace") if match < len(raw) else None
    return SignedObject(raw[:match], signature, _header_time(raw, b"tagger"))


def sign_tag(raw: bytes, signer: Signer) -> bytes:
    """The tag ``raw`` with a signature appended to its message, as ``git tag -s`` writes it."""
    if split_tag(raw).signature is not None:
        raise SignatureError("the tag is already signed")
    if not raw.endswith(b"\n"):
        raw += b"\n"
    return raw + signer.sign(raw, GIT_NAMESPACE).encode("ascii")


def _verify(
    what: str,
    split: SignedObject,
    signers: AllowedSigners,
    principal: str | None,
    when: float | datetime | None,
) -> Verdict:
    if split.signature is None:
        return Verdict(False, f"the {what} is not signed", principal, None, GIT_NAMESPACE)
    at = when if when is not None else split.timestamp
    return signers.verify(
        split.signature, split.payload, namespace=GIT_NAMESPACE, principal=principal, when=at
    )


def verify_commit(
    raw: bytes,
    signers: AllowedSigners,
    *,
    principal: str | None = None,
    when: float | datetime | None = None,
    object_format: str = "sha1",
) -> Verdict:
    """Verify a commit's signature against ``signers``.

    ``when`` defaults to the committer date, as ``git verify-commit`` does (a time the signer
    chose; pass the time it was received to bound it). An unsigned commit fails.
    """
    return _verify("commit", split_commit(raw, object_format), signers, principal, when)


def verify_tag(
    raw: bytes,
    signers: AllowedSigners,
    *,
    principal: str | None = None,
    when: float | datetime | None = None,
) -> Verdict:
    """Verify an annotated tag's signature against ``signers`` (``when``: the tagger date by default)."""
    return _verify("tag", split_tag(raw), signers, principal, when)
