"""Signed writes and the policy at promote time: what ``promote``, ``archive``, ``rollback`` and
``approve`` go through.

Signing: a configured key (Git's ``gpg.format=ssh`` + ``user.signingKey``) signs every version
tag and lifecycle commit uniflow writes, in Git's own format. A stage whose rule requires
signed events (``require_signed``, or named ``promoters``) refuses a move when no key is
configured, in one :class:`~uniflow.SigningError` line.

Enforcement: when a policy is in force (:func:`uniflow._ops.authority.policy_chain`), the
event about to be written is checked by :func:`uniflow._authority.rules.evaluate` before
anything is written: the signer is the configured key's principal in the allowed signers in
force, the registrant the verified signer of the version's tag, the approvals the verified
``approve`` events of the lifecycle (:func:`uniflow._ops.authority.verify_lifecycle`). A
refusal is a :class:`~uniflow.PolicyError` naming every failed rule. Without a policy, writes
are as before (signed when a key is configured).

Importers are exempt: they record history another registry already decided (their events are
written unsigned and unchecked, and verify against the policy in force when they were
written, so import before adopting a policy).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .._authority.rules import ACTIONS, Approval, evaluate
from .._authority.rules import LifecycleEvent as RuleEvent
from .._authority.signing import Signer, read_signing_config, signer_from_config
from .._errors import PolicyError, SigningError
from .._records.lifecycle import LifecycleEvent, LifecycleState, approve_transition
from .._stages import ModelStage, StageLike
from .authority import LifecycleVerdicts, Signers, pick, policy_chain, verify_lifecycle

if TYPE_CHECKING:
    from .._authority.rotation import PolicyChain, TrustRoot
    from .._repo import Guard, Repository

__all__ = ["approve", "archive", "configured_signer", "promote", "rollback"]

_HOW = "git config gpg.format ssh && git config user.signingKey ~/.ssh/id_ed25519.pub"


def configured_signer(repo: Repository) -> Signer | None:
    """The signer Git's settings name in ``repo`` (``gpg.format=ssh`` and a key), else None."""
    config = read_signing_config(repo.root)
    return signer_from_config(config) if config.configured else None


def _signer_for(repo: Repository, chain: PolicyChain | None, stage: str, action: str) -> Signer | None:
    signer = configured_signer(repo)
    if signer is not None or chain is None:
        return signer
    policy = chain.in_force.policy
    rule = policy.rule(stage)
    if rule is not None and (rule.require_signed or policy.promoters(stage) is not None):
        why = "requires signed events" if rule.require_signed else "names its promoters"
        raise SigningError(
            f"cannot {action} to {stage}: {stage} {why} and no signing key is configured ({_HOW})"
        )
    return signer


def _principals(signer: Signer | None, signers: Signers, now: datetime) -> tuple[tuple[str, ...], str]:
    if signer is None:
        return (), "unsigned"
    key = signer.public_key
    if key is None:
        raise SigningError("the signing key's public half is unknown: set user.signingKey to its .pub file")
    return signers.who(key, "", int(now.timestamp()))


def _guard(
    repo: Repository, name: str, chain: PolicyChain | None, signer: Signer | None
) -> Callable[[dict[str, Any], LifecycleState], dict[str, Any]]:
    """Records the version's tag in the event and, under a policy, refuses what it forbids."""
    verdicts: list[LifecycleVerdicts] = []

    def guard(event: dict[str, Any], before: LifecycleState) -> dict[str, Any]:
        version, to, action = event["version"], event["to"], event["action"]
        tag = repo.index.tag_sha(name, version)
        if tag:
            event["tag"] = tag
        if chain is None or action not in ACTIONS:
            return event
        if not verdicts:  # once per write, not per compare-and-swap retry
            verdicts.append(verify_lifecycle(repo, name, chain=chain))
        found = verdicts[0]
        now = datetime.now(UTC)
        signers = Signers(chain)
        names, line = _principals(signer, signers, now)
        policy = chain.in_force.policy
        checked = RuleEvent(
            action,
            name,
            version,
            before.stage(version),
            to,
            pick(names, policy.promoters(to)),
            now,
            past_holder=action == "rollback",
        )
        approvals = [
            Approval(name, e.version, e.for_stage or "", e.signer, e.at)
            for e in found.events  # every approval: the refusal names those that do not count
            if e.action == "approve"
        ]
        registrant = found.tags[version].signer if version in found.tags else None
        verdict = evaluate(policy, checked, registrant=registrant, approvals=approvals)
        if not verdict.allowed:
            key = "" if names or signer is None else f" (your key: {line})"
            raise PolicyError(f"cannot {action} {name} {version} to {to}: {verdict.reason}{key}")
        return event

    return guard


def _prepare(
    repo: Repository,
    name: str,
    stage: str,
    action: str,
    trust_root: str | os.PathLike[str] | TrustRoot | None,
) -> tuple[Signer | None, Guard]:
    chain = policy_chain(repo, trust_root)
    signer = _signer_for(repo, chain, stage, action)
    return signer, _guard(repo, name, chain, signer)


def promote(
    repo: Repository,
    name: str,
    version: str,
    stage: StageLike,
    *,
    reason: str | None = None,
    extra: dict[str, Any] | None = None,
    trust_root: str | os.PathLike[str] | TrustRoot | None = None,
) -> LifecycleEvent:
    """:meth:`Repository.promote`, signed when a key is configured and checked against the
    policy in force (see the module); returns the event recorded."""
    st = repo.stage(stage)
    action = "archive" if st == ModelStage.ARCHIVED else "promote"
    signer, guard = _prepare(repo, name, st, action, trust_root)
    return repo.promote(name, version, st, reason=reason, extra=extra, signer=signer, guard=guard)


def archive(repo: Repository, name: str, version: str, *, reason: str | None = None) -> LifecycleEvent:
    """:meth:`Repository.archive`, signed and checked as :func:`promote`."""
    return promote(repo, name, version, ModelStage.ARCHIVED, reason=reason)


def rollback(repo: Repository, name: str, stage: StageLike, *, reason: str | None = None) -> LifecycleEvent:
    """:meth:`Repository.rollback`, signed and checked as :func:`promote`."""
    st = repo.stage(stage)
    signer, guard = _prepare(repo, name, st, "rollback", None)
    return repo.rollback(name, st, reason=reason, signer=signer, guard=guard)


def approve(
    repo: Repository,
    name: str,
    version: str,
    for_stage: StageLike,
    *,
    message: str | None = None,
    trust_root: str | os.PathLike[str] | TrustRoot | None = None,
) -> LifecycleEvent:
    """Record a signed approval of ``name`` ``version`` for ``for_stage`` (an ``approve`` event:
    no stage changes). Refused unless a signing key is configured; under a policy, also when
    the key is not an allowed signer, or when its principal registered the version or is not
    in the stage's approval group (such an approval could never count)."""
    stage = repo.stage(for_stage)
    repo.resolve(name, version, None)
    signer = configured_signer(repo)
    if signer is None:
        raise SigningError(f"an approval must be signed and no signing key is configured ({_HOW})")
    tag = repo.index.tag_sha(name, version)
    assert tag is not None  # resolve found it
    chain = policy_chain(repo, trust_root)
    if chain is not None:
        _approvable(repo, name, version, stage, chain, signer)
    transition = approve_transition(version, stage, tag, message)
    return repo.lifecycle.apply(name, transition, repo.git.identity(), signer=signer)[1]


def _approvable(
    repo: Repository, name: str, version: str, stage: str, chain: PolicyChain, signer: Signer
) -> None:
    policy = chain.in_force.policy
    rule = policy.rule(stage)
    group = rule.approvals.group if rule is not None and rule.approvals is not None else None
    names, line = _principals(signer, Signers(chain), datetime.now(UTC))
    if not names:
        raise PolicyError(f"cannot approve {name} {version}: {line}, so the approval could not count")
    who = pick(names, policy.members(group) if group else None)
    found = verify_lifecycle(repo, name, chain=chain)
    tag = found.tags.get(version)
    if tag is not None and tag.signer is not None and tag.signer in names:
        raise PolicyError(
            f"cannot approve {name} {version}: {tag.signer} registered it "
            "(a registrant's approval never counts)"
        )
    if group is not None and who not in policy.members(group):
        raise PolicyError(f"cannot approve {name} {version} for {stage}: {who} is not in group {group}")
