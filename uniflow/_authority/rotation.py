"""The policy in force: the chain of policy revisions verified from a trust root, as TUF rotates
its root.

A *revision* is a commit of the default branch with its ``policy.toml`` and
``allowed_signers`` bytes (oldest first). A revision that changes either file takes effect only
when its commit is signed by ``threshold`` admins of the policy in force before it, their
signatures checked against the ``allowed_signers`` in force before it (never the one the commit
brings: a commit that adds its own key for an admin's name proves nothing). A rejected
revision does not take effect: the policy before it stays in force, and so does every later
revision's check against it, until a commit puts the files back or admins sign a change.
Deleting ``policy.toml`` never takes effect (write a permissive policy instead).

The chain starts at a :class:`TrustRoot` that whoever verifies pinned out of band:

- :meth:`TrustRoot.first_seen`: the commit of the first policy a clone saw (trust on first
  use). It must still be in the history, and revisions before it do not count.
- :meth:`TrustRoot.pinned`: an allowed-signers file naming the admins (``--trust-root FILE``).
  The first revision signed by ``threshold`` of them starts the chain; so a deployer pins the
  admins of the first policy, or of any later revision they signed, and follows rotations
  from there.

Who signed a commit is verified upstream: either each :class:`PolicyRevision` carries the
principals, or :func:`verify_chain` gets a ``resolve`` callable that verifies a revision's
signatures against the allowed-signers bytes in force and returns the principals.

A revision may also carry co-signatures (:mod:`uniflow._authority.cosign`): signatures over the
change's content and its base, committed with it, so that ``threshold`` > 1 admins can sign one
change and a squash or rebase merge keeps their signatures. The admins counted are the
distinct principals of the commit's own signature and of every co-signature that verifies
against the allowed signers in force before the revision, at its committer date.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .._errors import PolicyError
from .cosign import CoSignature, CoSigners, statement, verify_cosignatures
from .policy import Admins, Policy, parse_policy, valid_principal

__all__ = [
    "InForce",
    "PolicyChain",
    "PolicyRevision",
    "RevisionVerdict",
    "SignerResolver",
    "TrustRoot",
    "revision_statement",
    "verify_chain",
]


@dataclass(frozen=True)
class PolicyRevision:
    """One commit of the policy files, oldest first. ``policy`` and ``allowed_signers`` are the
    files' bytes at the commit (None: absent); ``signers`` the principals whose signatures on
    the commit verify against the allowed signers in force before it (ignored when
    :func:`verify_chain` gets ``resolve``); ``cosignatures`` the co-signature files committed
    in the revision's tree."""

    commit: str
    committed_at: datetime
    policy: bytes | None
    allowed_signers: bytes | None
    signers: frozenset[str] = frozenset()
    cosignatures: tuple[CoSignature, ...] = ()


class SignerResolver(Protocol):
    """Verifies ``revision``'s commit signatures against ``allowed_signers`` (the bytes in
    force before it) and returns the principals whose signatures verify."""

    def __call__(self, revision: PolicyRevision, allowed_signers: bytes) -> frozenset[str]: ...


@dataclass(frozen=True)
class TrustRoot:
    """Where the chain starts: a first-seen commit, or pinned admins (see the module)."""

    commit: str | None = None
    admins: tuple[str, ...] = ()
    threshold: int = 1
    allowed_signers: bytes = b""
    source: str = ""

    @classmethod
    def first_seen(cls, commit: str) -> TrustRoot:
        """Trust on first use: the commit of the first policy this clone saw."""
        if not isinstance(commit, str) or not commit:
            raise PolicyError(f"a trust root commit must be a commit id, not {commit!r}")
        return cls(commit=commit, source=f"first seen at {commit[:12]} (trust on first use)")

    @classmethod
    def pinned(
        cls, admins: Collection[str], allowed_signers: bytes, *, threshold: int = 1, source: str = "pinned"
    ) -> TrustRoot:
        """Pinned admins: the principals of an allowed-signers file (``allowed_signers``, its
        bytes, verifies their signatures) of whom ``threshold`` must sign the first revision."""
        names = tuple(sorted(set(admins)))
        if not names or not all(valid_principal(a) for a in names):
            raise PolicyError(f"{source}: a trust root must name at least one valid admin principal")
        if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= len(names):
            raise PolicyError(f"{source}: threshold must be from 1 to {len(names)}, not {threshold!r}")
        return cls(admins=names, threshold=threshold, allowed_signers=bytes(allowed_signers), source=source)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: how the root was pinned, and its commit or admins."""
        if self.commit is not None:
            return {"kind": "first-seen", "commit": self.commit, "source": self.source}
        return {
            "kind": "pinned",
            "admins": list(self.admins),
            "threshold": self.threshold,
            "source": self.source,
        }


@dataclass(frozen=True)
class InForce:
    """An accepted revision: the policy and allowed signers in force from ``commit`` on."""

    commit: str
    committed_at: datetime
    policy: Policy
    policy_bytes: bytes
    allowed_signers: bytes


@dataclass(frozen=True)
class RevisionVerdict:
    """Whether one revision took effect, why, and the admins whose signatures counted
    (``signers``). Who signed: ``committed_by``, the principals of the commit's own signature;
    ``cosigned_by``, the admins whose co-signatures verify; ``ignored``, one line for each
    co-signature file that does not count."""

    commit: str
    accepted: bool
    reason: str
    signers: tuple[str, ...] = ()
    committed_by: tuple[str, ...] = ()
    cosigned_by: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the verdict, the admins counted, and who signed how."""
        return {
            "commit": self.commit,
            "accepted": self.accepted,
            "reason": self.reason,
            "signers": list(self.signers),
            "committed_by": list(self.committed_by),
            "cosigned_by": list(self.cosigned_by),
            "ignored_cosignatures": list(self.ignored),
        }

    def describe_signers(self) -> str | None:
        """One line of who signed, when the revision has co-signature files (else None)."""
        if not self.cosigned_by and not self.ignored:
            return None
        parts = [f"commit signed by {', '.join(self.committed_by) or 'no allowed signer'}"]
        parts.append(f"co-signed by {', '.join(self.cosigned_by) or 'no admin'}")
        if self.ignored and self.accepted:  # a rejection's reason names them already
            parts.append(f"not counted: {'; '.join(self.ignored)}")
        return "; ".join(parts)


@dataclass(frozen=True)
class PolicyChain:
    """The verified chain: every accepted revision (``history``, oldest first) and a verdict
    per revision given."""

    root: TrustRoot
    history: tuple[InForce, ...]
    revisions: tuple[RevisionVerdict, ...]

    @property
    def in_force(self) -> InForce:
        """The policy in force now (the last accepted revision)."""
        return self.history[-1]

    def at(self, when: datetime) -> InForce | None:
        """The policy in force at ``when``: the last accepted revision committed no later
        (commit times are the signer's clock); None before the first."""
        found = None
        for entry in self.history:
            if entry.committed_at <= when:
                found = entry
        return found

    def rejected(self) -> tuple[RevisionVerdict, ...]:
        """The revisions that did not take effect."""
        return tuple(v for v in self.revisions if not v.accepted)

    def keyless(self, keyed: Collection[str]) -> tuple[str, ...]:
        """The principals the policy in force names that are not in ``keyed`` (the principals
        of its allowed signers): nothing they sign can verify."""
        return tuple(sorted(self.in_force.policy.principals() - set(keyed)))

    def to_dict(self, keyed: Collection[str] | None = None) -> dict[str, Any]:
        """JSON-able (``uniflow policy check --json``): root, policy in force, every verdict,
        and with ``keyed`` (see :meth:`keyless`) the principals without a key."""
        now = self.in_force
        extra = {} if keyed is None else {"keyless": list(self.keyless(keyed))}
        return {
            **extra,
            "trust_root": self.root.to_dict(),
            "in_force": {
                "commit": now.commit,
                "committed_at": now.committed_at.isoformat(),
                "policy": now.policy.to_dict(),
            },
            "revisions": [v.to_dict() for v in self.revisions],
        }

    def describe(self, keyed: Collection[str] | None = None) -> str:
        """Text (``uniflow policy check``): the trust root, the policy in force, each verdict,
        and with ``keyed`` (see :meth:`keyless`) the principals without a key."""
        now = self.in_force
        lines = [f"trust root: {self.root.source}"]
        if self.root.commit is None:
            lines[0] += f" (admins {', '.join(self.root.admins)}; {self.root.threshold} must sign)"
        lines.append(f"policy in force: {now.commit[:12]} of {now.committed_at.isoformat()}")
        lines += ["  " + line for line in now.policy.describe().splitlines()]
        if keyed is not None and (missing := self.keyless(keyed)):
            lines.append(f"  no key in allowed_signers: {', '.join(missing)}")
        lines.append("revisions:")
        for v in self.revisions:
            lines.append(f"  {v.commit[:12]} {'accepted' if v.accepted else 'REJECTED'}: {v.reason}")
            if (who := v.describe_signers()) is not None:
                lines.append(f"    {who}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Signed:
    """Who signed one revision: the admins counted, the commit's signers, the co-signers."""

    counted: tuple[str, ...]
    committed_by: tuple[str, ...]
    cosigners: CoSigners
    missing: str | None


def revision_statement(revision: PolicyRevision, current: InForce | None) -> bytes:
    """The statement co-signatures of ``revision`` must sign: its change from ``current``
    (the revision in force before it; None: none yet, a pinned root)."""
    if current is None:
        return statement(None, None, None, revision.policy, revision.allowed_signers)
    return statement(
        current.commit,
        current.policy_bytes,
        current.allowed_signers,
        revision.policy,
        revision.allowed_signers,
    )


def _signed_by(
    revision: PolicyRevision,
    admins: Admins,
    current: InForce | None,
    keys: bytes,
    resolve: SignerResolver | None,
    whose: str,
) -> _Signed:
    """The admins whose signatures count (the commit's and the co-signatures'), and why they
    are not enough (``missing``; None: enough)."""
    signers = resolve(revision, keys) if resolve is not None else revision.signers
    cosigners = CoSigners()
    if revision.cosignatures:
        message = revision_statement(revision, current)
        cosigners = verify_cosignatures(
            revision.cosignatures, message, keys, revision.committed_at, admins.principals
        )
    counted = tuple(sorted(set(s for s in signers if s in admins.principals) | set(cosigners.principals)))
    committed_by = tuple(sorted(signers))
    if len(counted) >= admins.threshold:
        return _Signed(counted, committed_by, cosigners, None)
    details = [*counted, *(f"{other} is not an admin" for other in sorted(set(signers) - set(counted)))]
    who = f"signed by {len(counted) or 'no'} admin{'s' if len(counted) > 1 else ''} of {whose}"
    if details:
        who += f" ({', '.join(details)})"
    missing = f"{who}; a change needs {admins.threshold} of {', '.join(admins.principals)}"
    if cosigners.ignored:
        missing += f"; co-signatures not counted: {'; '.join(cosigners.ignored)}"
    return _Signed(counted, committed_by, cosigners, missing)


def _anchor_index(revisions: Sequence[PolicyRevision], root: TrustRoot) -> int:
    for i, revision in enumerate(revisions):
        if revision.commit == root.commit:
            return i
    raise PolicyError(
        f"the trust root {root.source} is not in the policy history: it was rewritten "
        "(check it, then reset the recorded root)"
    )


def _parse(revision: PolicyRevision, stages: Collection[str] | None) -> Policy:
    if revision.policy is None:
        raise PolicyError(f"policy.toml is missing at {revision.commit[:12]}")
    return parse_policy(revision.policy, f".uniflow/policy.toml at {revision.commit[:12]}", stages=stages)


def _accept(revision: PolicyRevision, policy: Policy) -> InForce:
    return InForce(
        revision.commit,
        revision.committed_at,
        policy,
        bytes(revision.policy or b""),
        bytes(revision.allowed_signers or b""),
    )


def _step(
    revision: PolicyRevision,
    current: InForce | None,
    root: TrustRoot,
    resolve: SignerResolver | None,
    stages: Collection[str] | None,
) -> tuple[RevisionVerdict, InForce | None]:
    """The verdict on one revision after the anchor (or, pinned, before it) and what it puts in force."""
    if current is not None and (revision.policy, bytes(revision.allowed_signers or b"")) == (
        current.policy_bytes,
        current.allowed_signers,
    ):
        return RevisionVerdict(revision.commit, True, "unchanged"), None
    if revision.policy is None:
        reason = (
            "policy.toml was removed; removing it does not take effect (the policy before stays in force)"
        )
        return RevisionVerdict(revision.commit, False, reason), None
    if current is None:  # pinned root, no revision accepted yet
        admins, keys, whose = Admins(root.admins, root.threshold), root.allowed_signers, "the trust root"
    else:
        admins, keys, whose = current.policy.admins, current.allowed_signers, "the policy in force"
    signed = _signed_by(revision, admins, current, keys, resolve, whose)
    who = (signed.committed_by, signed.cosigners.principals, signed.cosigners.ignored)
    if signed.missing is not None:
        return RevisionVerdict(revision.commit, False, signed.missing, signed.counted, *who), None
    try:
        policy = _parse(revision, stages)
    except PolicyError as exc:
        return RevisionVerdict(revision.commit, False, f"invalid: {exc}", signed.counted, *who), None
    reason = f"signed by {', '.join(signed.counted)} ({admins.threshold} needed)"
    return RevisionVerdict(revision.commit, True, reason, signed.counted, *who), _accept(revision, policy)


def verify_chain(
    revisions: Sequence[PolicyRevision],
    root: TrustRoot,
    *,
    resolve: SignerResolver | None = None,
    stages: Collection[str] | None = None,
) -> PolicyChain:
    """Verify ``revisions`` (oldest first) from ``root``; return the :class:`PolicyChain`.

    ``resolve`` verifies a revision's signatures against the allowed signers in force (else
    each revision's ``signers`` is used); ``stages`` is every stage the registry declares.
    Raises :class:`PolicyError` when no policy can be in force: a first-seen root missing from
    the history or invalid, or no revision signed by a pinned root's admins.
    """
    verdicts: list[RevisionVerdict] = []
    history: list[InForce] = []
    start = 0
    if root.commit is not None:
        start = _anchor_index(revisions, root)
        anchor = revisions[start]
        verdicts += [RevisionVerdict(r.commit, False, "before the trust root") for r in revisions[:start]]
        history.append(_accept(anchor, _parse(anchor, stages)))
        verdicts.append(RevisionVerdict(anchor.commit, True, f"the trust root: {root.source}"))
        start += 1
    for revision in revisions[start:]:
        verdict, accepted = _step(revision, history[-1] if history else None, root, resolve, stages)
        verdicts.append(verdict)
        if accepted is not None:
            history.append(accepted)
    if not history:
        raise PolicyError(
            f"no policy revision is signed by {root.threshold} of the trust root's admins "
            f"({', '.join(root.admins)}; {root.source})"
        )
    return PolicyChain(root, tuple(history), tuple(verdicts))
