"""Whether one lifecycle event obeys the policy in force when it was made.

Pure logic over typed records: who signed what was verified upstream (a signature that does
not verify, a key that is unknown, revoked or outside its validity all give ``signer=None``),
so this module only needs the :class:`Signed` protocol: the verified principal and the time.

:func:`evaluate` checks a promote, archive or rollback against the :class:`~.policy.StageRule`
of its target stage, in this order, and names every rule that fails in one line:

- signed: ``require_signed``, or any ``promoters`` (a signer must be known to be checked);
  ``require_signed`` also needs the version's tag signed (the registrant known), since a
  signed event names a version whose bytes only a signed tag binds;
- the signer's rights: a promoter of the stage;
- stage order: the version comes from one of ``from`` (a rollback instead restores an
  earlier holder of the stage);
- approvals: ``count`` signed approvals for the same model, version and stage, made no later
  than the event, by distinct members of the group, never the promoter or the registrant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from .._errors import PolicyError, UsageError
from .policy import ApprovalRule, Policy, StageRule

__all__ = ["ACTIONS", "Approval", "LifecycleEvent", "Signed", "EventVerdict", "evaluate", "index_approvals"]

#: the lifecycle actions a policy governs (a register is governed by the version tag's signature)
ACTIONS = ("promote", "archive", "rollback")
#: how many discounted approvals a refusal names (``not counted: ...``)
_SHOWN = 3


class Signed(Protocol):
    """Anything signed: the principal whose signature verified (None: unsigned, or a signature
    that did not verify against the allowed signers) and when it was made (aware)."""

    @property
    def signer(self) -> str | None: ...

    @property
    def signed_at(self) -> datetime: ...


def _aware(when: datetime, what: str) -> None:
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise UsageError(f"{what}: signed_at must be a timezone-aware datetime, not {when!r}")


@dataclass(frozen=True)
class LifecycleEvent:
    """A promote / archive / rollback of ``model`` ``version`` from ``from_stage`` (what it held
    before: ``"development"`` when nothing) to ``to_stage``. ``past_holder``: for a rollback,
    whether the lifecycle shows ``version`` held ``to_stage`` before."""

    action: str
    model: str
    version: str
    from_stage: str
    to_stage: str
    signer: str | None
    signed_at: datetime
    past_holder: bool = False

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise UsageError(f"a policy governs {', '.join(ACTIONS)}, not {self.action!r}")
        _aware(self.signed_at, f"{self.action} of {self.model} {self.version}")


@dataclass(frozen=True)
class Approval:
    """A signed approval of ``model`` ``version`` for ``stage`` (``uniflow models approve``)."""

    model: str
    version: str
    stage: str
    signer: str | None
    signed_at: datetime

    def __post_init__(self) -> None:
        _aware(self.signed_at, f"approval of {self.model} {self.version}")


@dataclass(frozen=True)
class EventVerdict:
    """The decision on one event: ``allowed``, the failed rules (``reasons``; empty when
    allowed) and the approvers who counted."""

    allowed: bool
    reasons: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()
    rule: StageRule | None = field(default=None, compare=False)

    @property
    def reason(self) -> str:
        """One line: every failed rule, or what allowed the event."""
        if self.reasons:
            return "; ".join(self.reasons)
        return "allowed" if self.rule else "allowed: the policy sets no rule for this stage"

    def check(self) -> None:
        """Raise :class:`PolicyError` with :attr:`reason` when the event is refused."""
        if not self.allowed:
            raise PolicyError(self.reason)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"allowed", "reason", "reasons", "approvers"}``."""
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "reasons": list(self.reasons),
            "approvers": list(self.approvers),
        }


def _signature(rule: StageRule, event: LifecycleEvent, promoters: frozenset[str] | None) -> str | None:
    if event.signer is not None or not (rule.require_signed or promoters is not None):
        return None
    why = "requires signed events" if rule.require_signed else "names its promoters"
    return (
        f"the {event.action} of {event.version} to {rule.stage} is unsigned or its key is not an "
        f"allowed signer; {rule.stage} {why}"
    )


def _version_signed(rule: StageRule, event: LifecycleEvent, registrant: str | None) -> str | None:
    if registrant is not None or not rule.require_signed:
        return None
    return (
        f"the tag of {event.model} {event.version} is unsigned or its key is not an allowed signer; "
        f"{rule.stage} requires signed versions"
    )


def _rights(rule: StageRule, event: LifecycleEvent, promoters: frozenset[str] | None) -> str | None:
    if event.signer is None or promoters is None or event.signer in promoters:
        return None
    return f"{event.signer} is not a promoter of {rule.stage} (promoters: {', '.join(rule.promoters)})"


def _order(rule: StageRule, event: LifecycleEvent) -> str | None:
    if event.action == "rollback":
        if event.past_holder:
            return None
        return f"{event.version} never held {rule.stage}; a rollback may only restore an earlier holder"
    if not rule.from_stages or event.from_stage in rule.from_stages:
        return None
    return (
        f"{rule.stage} may only be promoted from {' or '.join(rule.from_stages)}; "
        f"{event.version} is in {event.from_stage}"
    )


def _why_not(
    a: Approval, event: LifecycleEvent, registrant: str | None, policy: Policy, group: str, seen: set[str]
) -> str | None:
    """Why approval ``a`` does not count for ``event`` (None: it counts)."""
    target = (event.model, event.version, event.to_stage)
    if a.signer is None:
        return "an unsigned approval"
    if (a.model, a.version, a.stage) != target:
        return f"{a.signer} approved {a.model} {a.version} for {a.stage}"
    if a.signed_at > event.signed_at:
        return f"{a.signer} approved after the {event.action}"
    if a.signer == event.signer:
        return f"{a.signer} is the promoter"
    if a.signer == registrant:
        return f"{a.signer} registered {event.version}"
    if a.signer not in policy.members(group):
        return f"{a.signer} is not in group {group}"
    if a.signer in seen:
        return None  # a second approval by the same signer: neither counted nor worth naming
    seen.add(a.signer)
    return None


def _approvals(
    rule: ApprovalRule,
    event: LifecycleEvent,
    registrant: str | None,
    approvals: Iterable[Approval],
    policy: Policy,
) -> tuple[str | None, tuple[str, ...]]:
    counted: set[str] = set()
    discounted: list[str] = []
    for a in approvals:
        why = _why_not(a, event, registrant, policy, rule.group, counted)
        if why is not None and why not in discounted:
            discounted.append(why)
    if len(counted) >= rule.count:
        return None, tuple(sorted(counted))
    plural = "approval" if rule.count == 1 else "approvals"
    text = (
        f"{event.to_stage} needs {rule.count} {plural} of {event.model} {event.version} from group "
        f"{rule.group}; has {len(counted)}"
    )
    if discounted:
        more = f", and {len(discounted) - _SHOWN} more" if len(discounted) > _SHOWN else ""
        text += f" (not counted: {', '.join(discounted[:_SHOWN])}{more})"
    return text, tuple(sorted(counted))


def index_approvals(approvals: Iterable[Approval]) -> dict[tuple[str, str, str], tuple[Approval, ...]]:
    """Approvals by ``(model, version, stage)``: a verifier of a long lifecycle passes each event
    only ``index.get((model, version, to_stage), ())`` instead of every approval."""
    index: dict[tuple[str, str, str], list[Approval]] = {}
    for a in approvals:
        index.setdefault((a.model, a.version, a.stage), []).append(a)
    return {key: tuple(found) for key, found in index.items()}


def evaluate(
    policy: Policy, event: LifecycleEvent, *, registrant: str | None, approvals: Iterable[Approval] = ()
) -> EventVerdict:
    """Decide whether ``event`` obeys ``policy`` (the policy in force when it was made).

    ``registrant`` is the principal who signed the version's tag (None: unsigned, or a key that
    is not an allowed signer);
    ``approvals`` are every approval seen for the model (the ones for another version, stage
    or model, unsigned, later than the event, by the promoter, the registrant or a non-member
    do not count; the refusal names them). A stage the policy has no rule for allows anything.
    """
    rule = policy.rule(event.to_stage)
    if rule is None:
        return EventVerdict(True)
    promoters = policy.promoters(rule.stage)
    reasons = [
        r
        for r in (
            _signature(rule, event, promoters),
            _version_signed(rule, event, registrant),
            _rights(rule, event, promoters),
            _order(rule, event),
        )
        if r
    ]
    approvers: tuple[str, ...] = ()
    if rule.approvals is not None and rule.approvals.count > 0:
        missing, approvers = _approvals(rule.approvals, event, registrant, approvals, policy)
        if missing:
            reasons.append(missing)
    return EventVerdict(not reasons, tuple(reasons), approvers, rule)
