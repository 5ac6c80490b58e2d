"""Co-signatures of a policy change: what lets ``threshold`` > 1 admins sign one change.

A Git commit carries one signature, and a hosting service's squash or rebase merge replaces it
with its own. So an admin can also sign the *content* of a change: an SSH signature
(``PROTOCOL.sshsig``, namespace :data:`COSIGN_NAMESPACE`) over the canonical
:func:`statement`::

    uniflow policy change v1
    previous <commit id of the revision in force, or "none">
    previous policy.toml <blake3 hex of its policy.toml>
    previous allowed_signers <blake3 hex of its allowed_signers>
    policy.toml <blake3 hex of the new policy.toml>
    allowed_signers <blake3 hex of the new allowed_signers>

The signature names the change (the new files) and its base (the revision in force and its
files), never the commit that carries it, so it survives a squash or a rebase. The base is a
commit already on the default branch, which neither merge style rewrites; naming it (not only
its content) means a signature cannot be replayed onto another base, nor onto the same
transition made again later (A to B, back to A, then A to B once more needs new signatures).

Co-signatures are committed with the change as files (:class:`CoSignature`, read by
:mod:`uniflow._records.policyfiles`); :func:`verify_cosignatures` counts those that verify
against the allowed signers in force before the change, at the revision's committer date.
Anything else (another change's signature, a foreign key, garbage) is not counted, with a
one-line reason, and never raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import blake3

from .._errors import SignatureError
from .allowed_signers import AllowedSigners
from .sshsig import MAX_ARMOR

__all__ = [
    "COSIGN_NAMESPACE",
    "MAX_COSIGNATURES",
    "MAX_COSIGNATURE_BYTES",
    "STATEMENT_HEADER",
    "CoSignature",
    "CoSigners",
    "content_hash",
    "statement",
    "verify_cosignatures",
]

#: the SSHSIG namespace of a co-signature (an allowed-signers line must allow it)
COSIGN_NAMESPACE = "uniflow-policy"
#: the first line of every statement
STATEMENT_HEADER = "uniflow policy change v1"
#: the most co-signature files read from one revision (the others are not counted)
MAX_COSIGNATURES = 64
#: the largest co-signature file read (an armored signature)
MAX_COSIGNATURE_BYTES = MAX_ARMOR


@dataclass(frozen=True)
class CoSignature:
    """One co-signature file of a revision: its ``name`` in the signatures folder and its
    bytes, or ``problem`` (one line) when it could not be read (not a file, too large)."""

    name: str
    data: bytes | None = None
    problem: str | None = None


@dataclass(frozen=True)
class CoSigners:
    """What the co-signature files of one revision show: the principals of every signature
    that verifies (``principals``; each with the file that showed it in ``files``), and why
    each other file does not count (``ignored``, one line each)."""

    principals: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    ignored: tuple[str, ...] = ()


def content_hash(data: bytes | None) -> str:
    """The blake3 hex digest of a policy file's bytes (an absent file hashes as empty)."""
    return blake3.blake3(data or b"").hexdigest()


def statement(
    previous: str | None,
    previous_policy: bytes | None,
    previous_signers: bytes | None,
    policy: bytes | None,
    allowed_signers: bytes | None,
) -> bytes:
    """The canonical statement a co-signature signs: the change from the revision in force
    (``previous``, its commit id, None before any; its two files' bytes) to ``policy`` and
    ``allowed_signers`` (see the module)."""
    lines = [
        STATEMENT_HEADER,
        f"previous {previous or 'none'}",
        f"previous policy.toml {content_hash(previous_policy)}",
        f"previous allowed_signers {content_hash(previous_signers)}",
        f"policy.toml {content_hash(policy)}",
        f"allowed_signers {content_hash(allowed_signers)}",
    ]
    return ("\n".join(lines) + "\n").encode("ascii")


def _exact(names: Sequence[str]) -> list[str]:
    """The exact principals of a verdict (no patterns: a wildcard line names nobody)."""
    return [n for n in names if n and "*" not in n and "?" not in n and not n.startswith("!")]


def _one(
    cosig: CoSignature, message: bytes, signers: AllowedSigners, when: datetime
) -> tuple[list[str], str | None]:
    """The exact principals one co-signature shows, or why it shows none."""
    if cosig.problem is not None or cosig.data is None:
        return [], cosig.problem or "not readable"
    verdict = signers.verify(cosig.data, message, namespace=COSIGN_NAMESPACE, when=when)
    if not verdict.ok:
        if "does not match the signed data" in verdict.reason:
            return [], "signs another change or another base, not this one (run 'uniflow policy sign' again)"
        return [], verdict.reason
    names = _exact(verdict.principals)
    return names, None if names else "its key's lines name no exact principal"


def verify_cosignatures(
    cosignatures: Sequence[CoSignature],
    message: bytes,
    allowed_signers: bytes,
    when: datetime,
    admins: Sequence[str] | None = None,
) -> CoSigners:
    """Verify each co-signature over ``message`` (a :func:`statement`) against
    ``allowed_signers`` (the bytes in force before the change) at ``when`` (the revision's
    committer date). With ``admins``, a verifying signature whose principals are none of
    them is not counted either. Never raises for a bad file: it is ``ignored`` with a reason."""
    try:
        signers = AllowedSigners.parse(allowed_signers, source="the allowed signers in force")
    except SignatureError as exc:
        return CoSigners(ignored=tuple(f"{c.name}: {exc}" for c in cosignatures))
    principals: dict[str, None] = {}
    files: list[tuple[str, str]] = []
    ignored: list[str] = []
    # a reader gives at most MAX_COSIGNATURES files and one line for the rest
    for cosig in cosignatures[: MAX_COSIGNATURES + 1]:
        names, problem = _one(cosig, message, signers, when)
        if admins is not None and names and not set(names) & set(admins):
            problem = f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} not an admin"
        if problem is not None:
            ignored.append(f"{cosig.name}: {problem}")
            continue
        for name in names:
            if admins is None or name in admins:
                principals.setdefault(name)
                files.append((name, cosig.name))
    if len(cosignatures) > MAX_COSIGNATURES + 1:
        ignored.append(f"{len(cosignatures) - MAX_COSIGNATURES - 1} more files: not read")
    return CoSigners(tuple(principals), tuple(files), tuple(ignored))
