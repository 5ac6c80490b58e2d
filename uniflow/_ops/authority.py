"""Who made each version and lifecycle event, checked against the policy in force when it was made.

:func:`verify_lifecycle` is the one verification of a model: it walks the lifecycle
(``refs/uniflow/models/<model>``, first parents, raw bytes; :mod:`uniflow._records.signedchain`),
and for every event finds who signed it (the signature over the commit's exact bytes, its key
looked up in the ``allowed_signers`` of the policy revision in force at the commit time,
:meth:`~uniflow._authority.rotation.PolicyChain.at`), who signed the version's tag, and
whether the event obeys that policy (:func:`uniflow._authority.rules.evaluate`, with the
approvals recorded before it). It replays the events to check that the lifecycle's head state
follows from them, and that each event's recorded tag is the version's tag today. The
result, :class:`LifecycleVerdicts`, answers :meth:`~LifecycleVerdicts.holder_verified`:
whether a stage's holder got there by events that satisfy the policy, which is what a
consumer with ``signatures="require"`` asks.

:func:`verify_signatures` runs it over every model; :func:`audit` answers "which version held
each stage at a time, who promoted it and who approved it". Writes live in
:mod:`uniflow._ops.enforce`.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgpack

from .._authority.allowed_signers import AllowedSigner as AllowedSignerLine
from .._authority.allowed_signers import AllowedSigners
from .._authority.policy import Policy
from .._authority.rotation import InForce, PolicyChain, TrustRoot
from .._authority.rules import ACTIONS, Approval, evaluate
from .._authority.rules import LifecycleEvent as RuleEvent
from .._authority.sshsig import GIT_NAMESPACE, PublicKey
from .._errors import IntegrityError, NotFoundError, SignatureError
from .._records.lifecycle import LifecycleEvent, commit_context, parse_event
from .._records.objcache import DerivedCache
from .._records.paths import SIGNERS_PATH
from .._records.signedchain import SignedCommit, SignedTag, read_signed_chain, read_signed_tag
from .._stages import SHARED_STAGES, ModelStage
from .policy import policy_check

if TYPE_CHECKING:
    from .._repo import Repository

__all__ = [
    "EventCheck",
    "LifecycleVerdicts",
    "Signers",
    "TagCheck",
    "audit",
    "pick",
    "policy_chain",
    "verify_lifecycle",
    "verify_signatures",
]

_DEV = ModelStage.DEVELOPMENT.value


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# ---------------------------------------------------------------------- who signed
class Signers:
    """The allowed signers of each accepted policy revision of ``chain``, parsed once, and who
    a verified key is at a time. ``chain`` None: no policy, nobody is known."""

    def __init__(self, chain: PolicyChain | None) -> None:
        self.chain = chain
        self._parsed: dict[str, AllowedSigners | None] = {}
        self._lines: dict[tuple[str, PublicKey], list[AllowedSignerLine]] = {}
        # who a key is under a revision, kept when no line of the key has a validity window
        self._who: dict[tuple[str, PublicKey], tuple[tuple[str, ...], str]] = {}
        self._times = [r.committed_at for r in chain.history] if chain is not None else []
        # commit times are the signer's clock: bisect only when they never go back
        self._ordered = all(a <= b for a, b in zip(self._times, self._times[1:], strict=False))
        self._last: tuple[int, InForce | None] | None = None  # an event asks twice for its time

    def in_force(self, when: int) -> InForce | None:
        """The policy revision in force at ``when`` (seconds), or None
        (:meth:`PolicyChain.at`, by bisection when the revisions' times are in order)."""
        if self.chain is None:
            return None
        if self._last is not None and self._last[0] == when:
            return self._last[1]
        if not self._ordered:
            revision = self.chain.at(_utc(when))
        else:
            found = bisect.bisect_right(self._times, _utc(when))
            revision = self.chain.history[found - 1] if found else None
        self._last = (when, revision)
        return revision

    def _signers(self, revision: InForce) -> AllowedSigners | None:
        if revision.commit not in self._parsed:
            try:
                parsed: AllowedSigners | None = AllowedSigners.parse(revision.allowed_signers, SIGNERS_PATH)
            except SignatureError:
                parsed = None
            self._parsed[revision.commit] = parsed
        return self._parsed[revision.commit]

    def who(
        self, key: PublicKey | None, line: str, when: int, *, earliest: bool = False
    ) -> tuple[tuple[str, ...], str]:
        """``(principals, one line)`` for a key whose signature verified (``key``) at ``when``;
        no principals when unsigned, not verifying, or not an allowed signer then. With
        ``earliest``, a signature made before the first policy is checked against the first
        policy's allowed signers (a version registered, or approved, before the policy)."""
        if key is None:
            return (), line
        revision = self.in_force(when)
        if revision is None and earliest and self.chain is not None:
            revision = self.chain.history[0]
        signers = self._signers(revision) if revision is not None else None
        if revision is None or signers is None:
            return (), f"{line}; no allowed signers in force"
        memo = (revision.commit, key)
        if memo in self._who:
            return self._who[memo]
        if memo not in self._lines:
            self._lines[memo] = [e for e in signers.entries if e.key == key and not e.cert_authority]
        lines = self._lines[memo]
        found = self._named(key, lines, when)
        if all(e.valid_after is None and e.valid_before is None for e in lines):
            self._who[memo] = found  # the same at any time
        return found

    @staticmethod
    def _named(key: PublicKey, lines: list[AllowedSignerLine], when: int) -> tuple[tuple[str, ...], str]:
        """:meth:`who` of ``key`` by its allowed-signers ``lines`` at ``when``."""
        fields = [e.principals for e in lines if e.refusal(GIT_NAMESPACE, when) is None]
        names = tuple(
            dict.fromkeys(
                n for f in fields for n in f.split(",") if n and n[0] != "!" and "*" not in n and "?" not in n
            )
        )
        if names:
            return names, f"signed by {names[0]} ({key.fingerprint})"
        if not lines:
            return (), f"key {key.fingerprint} is not an allowed signer"
        refusal = lines[0].refusal(GIT_NAMESPACE, when) or "not allowed"
        return (), f"key {key.fingerprint} of {lines[0].principals}: {refusal}"


def pick(names: tuple[str, ...], wanted: Iterable[str] | None) -> str | None:
    """The principal a signature counts as: the first of ``names`` in ``wanted`` (a stage's
    promoters, a group), else the first."""
    if not names:
        return None
    if wanted is not None:
        allowed = set(wanted)
        for n in names:
            if n in allowed:
                return n
    return names[0]


# ---------------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class EventCheck:
    """The verdict on one lifecycle event: who signed it (``signer``; None: unsigned or not an
    allowed signer), ``signature`` (one line on it), ``ok`` and ``reason`` (the policy's
    decision, or what else is wrong), the ``approvers`` who counted and the ``policy``
    revision in force (its commit; None: no policy yet, so nothing was required)."""

    commit: str
    at: datetime
    action: str
    version: str
    seq: int | None
    from_stage: str | None
    to_stage: str | None
    for_stage: str | None
    actor: str | None
    signer: str | None
    signature: str
    ok: bool
    reason: str
    approvers: tuple[str, ...] = ()
    policy: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return {
            "commit": self.commit,
            "at": self.at.isoformat(),
            "action": self.action,
            "version": self.version,
            "seq": self.seq,
            "from": self.from_stage,
            "to": self.to_stage,
            "for": self.for_stage,
            "actor": self.actor,
            "signer": self.signer,
            "signature": self.signature,
            "ok": self.ok,
            "reason": self.reason,
            "approvers": list(self.approvers),
            "policy": self.policy,
        }


@dataclass(frozen=True)
class TagCheck:
    """The verdict on one version tag: its id, who signed it (``signer``), ``ok`` (a signature
    that does not verify, or a tag that is not the one the lifecycle recorded, fails) and why."""

    version: str
    tag: str
    at: datetime
    signer: str | None
    signature: str
    ok: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return {
            "version": self.version,
            "tag": self.tag,
            "at": self.at.isoformat(),
            "signer": self.signer,
            "signature": self.signature,
            "ok": self.ok,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class LifecycleVerdicts:
    """Every event of one model's lifecycle (``events``, oldest first) and every version tag
    (``tags``) with its verdict; ``holders`` (stage -> versions) as the events replay to, and
    ``problems`` with the lifecycle as a whole (a head state the events do not explain)."""

    model: str
    head: str | None
    events: tuple[EventCheck, ...]
    tags: Mapping[str, TagCheck]
    holders: Mapping[str, tuple[str, ...]]
    problems: tuple[str, ...] = ()
    policy: bool = False  #: whether a policy was ever in force
    placed: Mapping[tuple[str, str], int] = field(default_factory=dict)  #: (stage, version) -> event index

    @property
    def ok(self) -> bool:
        """No failing event, tag or problem."""
        return not self.failures()

    def failures(self) -> list[str]:
        """One line per failing event, tag or problem."""
        out = [f"{self.model}: {p}" for p in self.problems]
        out += [
            f"{self.model} {t.version}: tag {t.tag[:12]}: {t.reason}" for t in self.tags.values() if not t.ok
        ]
        out += [
            f"{self.model}: {e.action} {e.version} ({commit_context(e.commit, '')}): {e.reason}"
            for e in self.events
            if not e.ok
        ]
        return out

    def holder(self, stage: str) -> str | None:
        """The newest version ``stage`` holds, as the events replay (None: empty)."""
        held = self.holders.get(stage, ())
        return held[-1] if held else None

    def holder_problem(self, stage: str, version: str | None = None) -> str | None:
        """Why ``version`` (default: the holder of ``stage``) does not count as verified there;
        None when it does. See :meth:`holder_verified`."""
        version = version if version is not None else self.holder(stage)
        if version is None:
            return f"{self.model}: {stage} holds no version"
        if self.problems:
            return f"{self.model}: {self.problems[0]}"
        where = self.placed.get((stage, version))
        if where is None:
            return f"{self.model} {version} does not hold {stage}"
        moved = self.events[where]
        if moved.policy is None:
            return f"{self.model} {version}: no policy was in force when it was moved to {stage}"
        if moved.signer is None:
            why = moved.signature
            return f"{self.model} {version}: the move to {stage} is not signed by an allowed signer ({why})"
        for e in self.events[: where + 1]:
            if e.version == version and not e.ok:
                return f"{self.model} {version}: {e.action} ({e.commit[:12]}) fails: {e.reason}"
        tag = self.tags.get(version)
        if tag is None or not tag.ok:
            return f"{self.model} {version}: its tag fails: {tag.reason if tag else 'no tag'}"
        return None

    def holder_verified(self, stage: str, version: str | None = None) -> bool:
        """Whether the holder of ``stage`` (or ``version``, one of its holders) got there by a
        chain that satisfies the policy: the event that moved it there was signed by an allowed
        signer under a policy, every event of that version up to it obeys the policy in force
        when it was made, its tag verifies and is the one the lifecycle recorded, and the
        lifecycle's head state is what its events replay to."""
        return self.holder_problem(stage, version) is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"model", "head", "ok", "policy", "problems", "tags", "events"}``."""
        return {
            "model": self.model,
            "head": self.head,
            "ok": self.ok,
            "policy": self.policy,
            "problems": list(self.problems),
            "tags": [t.to_dict() for t in self.tags.values()],
            "events": [e.to_dict() for e in self.events],
        }


# ---------------------------------------------------------------------- the walk
def policy_chain(
    repo: Repository, trust_root: str | os.PathLike[str] | TrustRoot | None = None
) -> PolicyChain | None:
    """The verified policy chain (:func:`~uniflow._ops.policy.policy_check`); None without a policy."""
    try:
        return policy_check(repo, trust_root)
    except NotFoundError:
        return None


def _check_tag(signers: Signers, version: str, tag: SignedTag) -> TagCheck:
    names, line = signers.who(tag.public_key(), tag.signature, tag.time, earliest=True)
    bad = tag.signature.startswith("bad signature")
    if tag.key is not None and not names and signers.chain is not None:
        bad = True
    reason = line if bad else ("signed" if names else line)
    return TagCheck(version, tag.sha, _utc(tag.time), pick(names, None), tag.signature, not bad, reason)


@dataclass
class _Replay:
    """The state the events replay to, and what the checks need from before each event."""

    single: Mapping[str, bool]
    stage_of: dict[str, str] = field(default_factory=dict)
    held: dict[str, set[str]] = field(default_factory=dict)  # stage -> every version that held it
    placed: dict[tuple[str, str], int] = field(default_factory=dict)
    approvals: dict[tuple[str, str], list[Approval]] = field(default_factory=dict)
    registers: dict[str, tuple[str, str]] = field(default_factory=dict)  # version -> (commit, tag)

    def move(self, index: int, ev: LifecycleEvent, commit: str) -> None:
        version, to = ev.version, ev.to_stage
        if ev.action == "register":
            self.stage_of.pop(version, None)
            if ev.tag:
                self.registers[version] = (commit, ev.tag)
            return
        if ev.action not in ACTIONS:
            return
        forced = ev.action == "rollback"
        if to not in SHARED_STAGES and (forced or self.single.get(to, True)):
            for other, stage in list(self.stage_of.items()):
                if stage == to and other != version:
                    self.stage_of[other] = ModelStage.ARCHIVED.value
        if to == _DEV:
            self.stage_of.pop(version, None)
        else:
            self.stage_of[version] = to
            self.held.setdefault(to, set()).add(version)
            self.placed[(to, version)] = index


def _event_check(
    model: str,
    entry: SignedCommit,
    ev: LifecycleEvent,
    signers: Signers,
    replay: _Replay,
    tags: Mapping[str, TagCheck],
    current: Mapping[str, str],
) -> EventCheck:
    revision = signers.in_force(entry.time)
    at = _utc(entry.time)
    policy = revision.policy if revision is not None else None
    stage = ev.for_stage if ev.action == "approve" else ev.to_stage
    names, line = signers.who(
        entry.public_key(), entry.signature, entry.time, earliest=ev.action == "approve"
    )
    wanted = _wanted(policy, ev.action, stage)
    signer = pick(names, wanted)
    before = replay.stage_of.get(ev.version, _DEV)
    approvers: tuple[str, ...] = ()
    ok, reason = True, "no policy in force" if policy is None else "allowed"
    if entry.signature.startswith("bad signature"):
        ok, reason = False, entry.signature
    elif (
        entry.key is not None
        and not names
        and (policy is not None or (ev.action == "approve" and signers.chain))
    ):
        ok, reason = False, f"signed, but {line}"
    elif ev.tag is not None and current.get(ev.version) not in (None, ev.tag):
        ok, reason = False, f"the tag of {ev.version} is no longer {ev.tag[:12]}, the one this event recorded"
    elif policy is not None and ev.action == "approve":
        ok, reason = (True, "recorded") if signer else (False, f"an approval must be signed: {line}")
    elif policy is not None and ev.action in ACTIONS:
        tag = tags.get(ev.version)
        rule_event = RuleEvent(
            ev.action,
            model,
            ev.version,
            before,
            ev.to_stage,
            signer,
            at,
            past_holder=ev.version in replay.held.get(ev.to_stage, set()),
        )
        found = replay.approvals.get((ev.version, ev.to_stage), [])
        verdict = evaluate(policy, rule_event, registrant=tag.signer if tag else None, approvals=found)
        ok, reason, approvers = verdict.allowed, verdict.reason, verdict.approvers
    if ev.action == "approve" and signer is not None and ev.for_stage is not None:
        approval = Approval(model, ev.version, ev.for_stage, signer, at)
        replay.approvals.setdefault((ev.version, ev.for_stage), []).append(approval)
    return EventCheck(
        entry.sha,
        at,
        ev.action,
        ev.version,
        ev.seq,
        before if ev.action != "register" else None,
        ev.to_stage,
        ev.for_stage,
        ev.actor,
        signer,
        line,
        ok,
        reason,
        approvers,
        revision.commit if revision is not None else None,
    )


def _wanted(policy: Policy | None, action: str, stage: str | None) -> Iterable[str] | None:
    """The principals a signature should count as, if it can: a stage's promoters, or for an
    approval the members of the stage's approval group."""
    if policy is None or stage is None:
        return None
    if action == "approve":
        rule = policy.rule(stage)
        return policy.members(rule.approvals.group) if rule and rule.approvals else None
    return policy.promoters(stage)


def _unreadable(entry: SignedCommit, exc: IntegrityError | None) -> EventCheck:
    why = str(exc) if exc is not None else "no event.json"
    return EventCheck(
        entry.sha, _utc(entry.time), "?", "?", None, None, None, None, None, None, entry.signature, False, why
    )


def _unchecked(entry: SignedCommit, ev: LifecycleEvent, focus: str) -> EventCheck:
    """The event of another version than ``focus``, not judged (see :func:`verify_lifecycle`)."""
    stage = ev.to_stage if ev.action != "approve" else None
    return EventCheck(
        entry.sha, _utc(entry.time), ev.action, ev.version, ev.seq, None, stage, ev.for_stage, ev.actor,
        None, entry.signature, True, f"not checked (a read of {focus})",
    )  # fmt: skip


def _tag_checks(
    repo: Repository, model: str, signers: Signers, focus: str | None
) -> tuple[dict[str, TagCheck], dict[str, str]]:
    """Every version tag of ``model`` checked (with ``focus``: that version's alone, the others
    :func:`_unchecked_tag`), and every version's tag id."""
    current = {v: str(sha) for v, sha in repo.index.versions(model).items()}  # one scan of the tag refs
    cache = repo.lifecycle.cache
    checks = {}
    for version, sha in sorted(current.items()):
        if focus is not None and version != focus:
            checks[version] = _unchecked_tag(version, sha, focus)
            continue
        try:
            checks[version] = _check_tag(signers, version, read_signed_tag(repo.git, sha, cache))
        except IntegrityError as exc:
            checks[version] = TagCheck(version, sha, _utc(0), None, "unreadable", False, str(exc))
    return checks, current


def _unchecked_tag(version: str, sha: str, focus: str) -> TagCheck:
    """The tag of a version a read of ``focus`` does not judge (see :func:`verify_lifecycle`)."""
    return TagCheck(version, sha, _utc(0), None, "not checked", True, f"not checked (a read of {focus})")


def _bind_tags(tags: dict[str, TagCheck], registers: Mapping[str, tuple[str, str]]) -> None:
    """Fail a tag that is not the one the (newest) register event of its version recorded."""
    for version, (commit, recorded) in registers.items():
        check = tags.get(version)
        if check is not None and check.tag != recorded and check.ok:
            why = f"not the tag its register event ({commit[:12]}) recorded ({recorded[:12]}): replaced"
            tags[version] = TagCheck(
                check.version, check.tag, check.at, check.signer, check.signature, False, why
            )


def verify_lifecycle(
    repo: Repository,
    model: str,
    *,
    trust_root: str | os.PathLike[str] | TrustRoot | None = None,
    chain: PolicyChain | None = None,
    head: str | None = None,
    focus: str | None = None,
) -> LifecycleVerdicts:
    """Verify every event and version tag of ``model`` (see the module).

    ``trust_root`` pins the admins (``--trust-root FILE``; default: the clone's first-seen
    root, recorded on first use); ``chain`` passes a policy chain already verified (then
    ``trust_root`` is not used); ``head`` verifies the lifecycle ending at that commit
    instead of the local ref's (what a pull or a push would bring in). Without a policy every
    event is ``ok`` unless its signature is bad or its tag was replaced, and no holder counts
    as verified.

    ``focus`` (a read of one version): only that version's tag and events are judged, which
    is all :meth:`LifecycleVerdicts.holder_problem` of it reads. The events of other versions
    are still read, their signatures verified and replayed (the head state, the stage
    order, the approvals and a rollback depend on them), but not judged against the policy:
    their checks and tags say ``not checked`` and count as ``ok``. Such verdicts are kept
    apart from full ones.
    """
    if chain is None:
        chain = policy_chain(repo, trust_root)
    signers = Signers(chain)
    if head is None:
        head = repo.lifecycle.head(model)
    tags, current = _tag_checks(repo, model, signers, focus)
    kept = _Kept(
        repo.lifecycle.cache,
        VERDICTS_KIND if focus is None else FOCUSED_KIND,
        model,
        _context(chain, current, repo.stages(), focus),
        repo.stages(),
    )
    found = kept.load(head) if head else None
    if found is None:
        start = _Checker(model, signers, tags, current, {}, [], focus, _Replay(repo.stages()))
        checks, replay = _evaluate(repo, head, start, kept)
    else:
        checks, replay = found
    _bind_tags(tags, replay.registers)
    problems = _state_problems(repo, model, head, replay)
    holders: dict[str, list[str]] = {}
    for version, stage in replay.stage_of.items():
        holders.setdefault(stage, []).append(version)
    return LifecycleVerdicts(
        model,
        head,
        tuple(checks),
        tags,
        {s: tuple(sorted(v, key=lambda x: replay.placed.get((s, x), -1))) for s, v in holders.items()},
        problems,
        chain is not None,
        dict(replay.placed),
    )


def _evaluate(
    repo: Repository, head: str | None, start: _Checker, kept: _Kept
) -> tuple[list[EventCheck], _Replay]:
    """Check the events from the newest kept verdicts (or the first event) up to ``head``,
    and keep the result under ``head``. Without kept verdicts on the chain, the events are
    checked as their verdicts come in (:class:`_Early`, by ``start``, a checker with nothing
    checked yet), in the same order."""
    model, cache = start.model, repo.lifecycle.cache
    early = _Early(start, kept)
    commits = read_signed_chain(
        repo.git,
        head,
        model,
        cache,
        meanwhile=lambda found: _parse_events(model, found, start.parsed),
        verified=early,
    )
    checker, first = early.checker, early.resumable(commits)
    if first is None:
        checks, replay, first = kept.newest_on(commits)
        checker = dataclasses.replace(start, checks=checks, replay=replay)
    for i in range(first, len(commits)):
        checker.check(i, commits[i])
    checks, replay = checker.checks, checker.replay
    if head and commits:
        kept.keep(head, checks, replay)
        if first and commits[first - 1].sha != head:
            kept.drop(commits[first - 1].sha)  # superseded: one entry per model
    return checks, replay


@dataclass
class _Checker:
    """The events of one lifecycle checked in order, oldest first: ``checks`` so far, and
    the state they replay to."""

    model: str
    signers: Signers
    tags: Mapping[str, TagCheck]
    current: Mapping[str, str]
    parsed: dict[str, LifecycleEvent | IntegrityError]  #: events parsed ahead, by commit
    checks: list[EventCheck]
    focus: str | None  #: the one version judged (None: all; see verify_lifecycle)
    replay: _Replay

    def check(self, i: int, entry: SignedCommit) -> None:
        """Check ``entry``, the ``i``-th commit of the chain, and replay its event."""
        parsed = self.parsed
        ev = parsed[entry.sha] if entry.sha in parsed else _parse(self.model, entry.sha, entry.event)
        if not isinstance(ev, LifecycleEvent):
            self.checks.append(_unreadable(entry, ev))
            return
        if self.focus is not None and ev.version != self.focus:
            self.checks.append(_unchecked(entry, ev, self.focus))
            self.replay.move(i, ev, entry.sha)
            return
        check = _event_check(self.model, entry, ev, self.signers, self.replay, self.tags, self.current)
        if entry.problem is not None:  # replayed as the tree says, as every reader reads it
            check = dataclasses.replace(check, ok=False, reason=entry.problem)
        self.checks.append(check)
        self.replay.move(i, ev, entry.sha)


class _Early:
    """A :class:`_Checker` fed the commits of a chain as their verdicts come in (oldest
    first, :func:`read_signed_chain`'s ``verified``) while the newer ones still verify. It
    stops at a commit with kept verdicts: those are resumed from instead (:func:`_resume`)."""

    def __init__(self, checker: _Checker, kept: _Kept) -> None:
        self.checker = checker
        self.kept = kept.keys()
        self.done: list[str] = []  # the commits checked, oldest first
        self.stopped = False

    def __call__(self, commits: list[SignedCommit]) -> None:
        if self.stopped or any(c.sha in self.kept for c in commits):
            self.stopped = True
            return
        for entry in commits:
            self.checker.check(len(self.done), entry)
            self.done.append(entry.sha)

    def resumable(self, commits: list[SignedCommit]) -> int | None:
        """How many of ``commits`` (the whole chain) this checked, when the rest is to be
        checked after them; None when the chain is to be checked as :func:`_resume` says
        (nothing checked here, or kept verdicts on it)."""
        n = len(self.done)
        if not n or self.stopped or [c.sha for c in commits[:n]] != self.done:
            return None
        return None if any(c.sha in self.kept for c in commits[n:]) else n


def _parse(model: str, sha: str, data: bytes | None) -> LifecycleEvent | IntegrityError | None:
    """The event of commit ``sha`` parsed from its ``event.json`` bytes, why it does not
    parse, or None when it has none (absent or empty)."""
    if not data:
        return None
    try:
        return parse_event(data, commit_context(sha, model))
    except IntegrityError as bad:
        return bad


def _parse_events(
    model: str, found: list[tuple[str, bytes | None]], into: dict[str, LifecycleEvent | IntegrityError]
) -> None:
    """:func:`_parse` of each ``(commit, event.json bytes)`` of ``found`` into ``into``."""
    for sha, data in found:
        if (ev := _parse(model, sha, data)) is not None:
            into[sha] = ev


# ---------------------------------------------------------------------- kept verdicts
#: derived-cache kind of a model's verdicts, kept under the lifecycle head they reach
VERDICTS_KIND = "verdicts"
#: the same, for the verdicts of a read judging one version (``focus``)
FOCUSED_KIND = "readverdicts"
_VERDICTS_FORMAT = 1
_CHECK_FIELDS = 15


def _context(
    chain: PolicyChain | None, tags: Mapping[str, str], single: Mapping[str, bool], focus: str | None
) -> str:
    """What every verdict depends on besides the chain of events: the accepted policy
    revisions, the version tags, the stage table and the version judged (None: all). Kept
    verdicts count only under the same."""
    revisions = [r.commit for r in chain.history] if chain is not None else []
    text = json.dumps([revisions, sorted(tags.items()), sorted(single.items()), focus])
    return hashlib.sha256(text.encode()).hexdigest()


def _check_row(c: EventCheck) -> list[Any]:
    return [
        c.commit, int(c.at.timestamp()), c.action, c.version, c.seq, c.from_stage, c.to_stage, c.for_stage,
        c.actor, c.signer, c.signature, c.ok, c.reason, list(c.approvers), c.policy,
    ]  # fmt: skip


def _check_from(row: Any) -> EventCheck:
    if not (isinstance(row, list) and len(row) == _CHECK_FIELDS and isinstance(row[1], int)):
        raise ValueError("not a kept event verdict")
    texts = (row[0], row[2], row[3], row[10], row[12])
    optional = (row[5], row[6], row[7], row[8], row[9], row[14])
    if not all(isinstance(t, str) for t in texts) or not all(
        t is None or isinstance(t, str) for t in optional
    ):
        raise ValueError("not a kept event verdict")
    if not (
        isinstance(row[11], bool) and isinstance(row[13], list) and all(isinstance(a, str) for a in row[13])
    ):
        raise ValueError("not a kept event verdict")
    seq = row[4] if isinstance(row[4], int) else None
    return EventCheck(
        row[0], _utc(row[1]), row[2], row[3], seq, row[5], row[6], row[7], row[8], row[9], row[10],
        row[11], row[12], tuple(row[13]), row[14],
    )  # fmt: skip


def _replay_record(r: _Replay) -> dict[str, Any]:
    approvals = [a for found in r.approvals.values() for a in found]
    return {
        "stage_of": r.stage_of,
        "held": {k: sorted(v) for k, v in r.held.items()},
        "placed": [[s, v, i] for (s, v), i in r.placed.items()],
        "approvals": [[a.version, a.stage, a.signer, int(a.signed_at.timestamp())] for a in approvals],
        "registers": {v: list(pair) for v, pair in r.registers.items()},
    }


def _replay_from(model: str, d: Any, single: Mapping[str, bool]) -> _Replay:
    r = _Replay(single)
    r.stage_of = {str(k): str(v) for k, v in d["stage_of"].items()}
    r.held = {str(k): {str(v) for v in vs} for k, vs in d["held"].items()}
    r.placed = {(str(s), str(v)): int(i) for s, v, i in d["placed"]}
    for version, stage, signer, when in d["approvals"]:
        approval = Approval(model, str(version), str(stage), signer and str(signer), _utc(int(when)))
        r.approvals.setdefault((approval.version, approval.stage), []).append(approval)
    r.registers = {str(v): (str(c), str(t)) for v, (c, t) in d["registers"].items()}
    return r


@dataclass(frozen=True)
class _Kept:
    """Where a model's verdicts are kept (``kind``: a read's focused verdicts apart from full
    ones), and the ``context`` they count under."""

    cache: DerivedCache | None
    kind: str
    model: str
    context: str
    single: Mapping[str, bool]

    def keys(self) -> set[str]:
        """The commits with kept verdicts of this kind (unverified)."""
        return self.cache.keys(self.kind) if self.cache is not None else set()

    def load(self, sha: str) -> tuple[list[EventCheck], _Replay] | None:
        """The verdicts kept under ``sha`` in the same context, or None."""
        if self.cache is None:
            return None
        d = self.cache.get_record(self.kind, sha, _VERDICTS_FORMAT, self.model, 5)
        if d is None or d[2] != self.context or not isinstance(d[3], list) or not d[3]:
            return None
        try:
            checks = [_check_from(row) for row in d[3]]
            replay = _replay_from(self.model, d[4], self.single)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None  # forged under a valid MAC is impossible; an older layout is not
        return (checks, replay) if checks[-1].commit == sha else None

    def newest_on(self, commits: list[SignedCommit]) -> tuple[list[EventCheck], _Replay, int]:
        """The newest kept verdicts on ``commits`` (the same events, the same context) and how
        many commits they cover; nothing kept: ``([], fresh replay, 0)``."""
        listed = self.keys()
        for i in range(len(commits) - 1, -1, -1):
            if commits[i].sha not in listed:
                continue
            found = self.load(commits[i].sha)
            if (
                found is not None
                and len(found[0]) == i + 1
                and all(c.commit == e.sha for c, e in zip(found[0], commits, strict=False))
            ):
                return found[0], found[1], i + 1
        return [], _Replay(self.single), 0

    def keep(self, head: str, checks: list[EventCheck], replay: _Replay) -> None:
        """Keep ``checks`` and ``replay`` under ``head``."""
        if self.cache is None:
            return
        rows = [_check_row(c) for c in checks]
        record = [_VERDICTS_FORMAT, self.model, self.context, rows, _replay_record(replay)]
        self.cache.put(self.kind, head, msgpack.packb(record, use_bin_type=True))

    def drop(self, sha: str) -> None:
        """Remove the verdicts kept under ``sha``."""
        if self.cache is not None:
            self.cache.delete(self.kind, sha)


def _state_problems(repo: Repository, model: str, head: str | None, replay: _Replay) -> tuple[str, ...]:
    if head is None:
        return ()
    try:
        state = repo.lifecycle.state(model, head)
    except IntegrityError as exc:
        return (str(exc),)
    if state.stage_of == replay.stage_of:
        return ()
    wrong = sorted(
        v
        for v in set(state.stage_of) | set(replay.stage_of)
        if state.stage_of.get(v) != replay.stage_of.get(v)
    )
    shown = ", ".join(
        f"{v} in {state.stage_of.get(v, _DEV)} (events say {replay.stage_of.get(v, _DEV)})" for v in wrong[:3]
    )
    return (f"the head state {head[:12]} does not follow from its events: {shown}",)


# ---------------------------------------------------------------------- every model, a time
def verify_signatures(
    repo: Repository, trust_root: str | os.PathLike[str] | TrustRoot | None = None
) -> list[LifecycleVerdicts]:
    """:func:`verify_lifecycle` of every model with a version or a lifecycle, by name."""
    chain = policy_chain(repo, trust_root)
    return [verify_lifecycle(repo, name, chain=chain) for name, *_rest in repo.overview()]


def audit(verdicts: LifecycleVerdicts, at: datetime) -> list[dict[str, Any]]:
    """Which version held each stage at ``at`` (aware), who moved it there (the signer, the
    recorded actor), who approved it, and the verdict of that move: one dict per stage and
    holder, by stage name. Built from the verified events made no later than ``at``."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    held: dict[tuple[str, str], EventCheck] = {}  # (stage, version) -> the move that put it there
    for e in verdicts.events:
        if e.at > at:
            break
        if e.action in ACTIONS and e.to_stage:
            for stage, version in list(held):
                if version == e.version or (stage == e.to_stage and stage not in SHARED_STAGES):
                    del held[(stage, version)]
            if e.to_stage not in (_DEV, ModelStage.ARCHIVED.value):
                held[(e.to_stage, e.version)] = e
    rows = []
    for stage, version in sorted(held):
        e = held[(stage, version)]
        rows.append(
            {
                "stage": stage,
                "version": version,
                "since": e.at.isoformat(),
                "promoted_by": e.signer,
                "actor": e.actor,
                "approved_by": list(e.approvers),
                "ok": e.ok,
                "verdict": e.reason,
                "commit": e.commit,
            }
        )
    return rows
