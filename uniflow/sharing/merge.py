"""Integrate a Git remote's lifecycle of one model into the local one: what ``uniflow pull``
does per model, and what ``uniflow push`` does for a lifecycle this clone lacks.

Every remote lifecycle commit the local chain lacks is validated before a local ref moves.
The local ref then fast-forwards; or, when both sides have events, the local ones are
replayed on top of the remote's when they touch other versions and stages (so ``git log``
shows both), ``resolve="ours"`` replays them anyway, ``"theirs"`` drops them, and a real
conflict is reported (``diverged``) for the caller to raise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from .._errors import ConcurrencyError, IntegrityError, RemoteError
from .._records.lifecycle import LifecycleEvent, approve_transition, promote_transition, register_transition
from .._records.refs import lifecycle_ref
from .._reports import PullOutcome
from .._stages import SHARED_STAGES

if TYPE_CHECKING:
    from .._records.lifecycle import LifecycleState, Transition
    from .._repo import Repository

__all__ = ["Resolve", "integrate", "unrelated"]

Resolve = Literal["ours", "theirs"] | None


# ---------------------------------------------------------------------- lifecycle chains
def _since(chain: list[str], base: str | None) -> list[str]:
    """Commits of ``chain`` newer than ``base``, oldest first."""
    out = []
    for sha in chain:
        if sha == base:
            break
        out.append(sha)
    out.reverse()
    return out


def _event(repo: Repository, model: str, sha: str) -> LifecycleEvent:
    """The validated event of lifecycle commit ``sha`` (IntegrityError naming it otherwise)."""
    return repo.lifecycle.event(model, sha)


def _check_incoming(repo: Repository, model: str, incoming: list[str]) -> None:
    """Validate every remote lifecycle commit a pull would bring in, before any is used.

    Each commit's state and event must pass the read gate (types, version strings, stage
    names valid and declared here, one holder per single-holder stage), and every version
    they name must have a tag here (the fetch brought the remote's tags first). Raises
    :class:`IntegrityError` naming the model and the commit.
    """
    existing = set(repo.index.version_names(model))
    for sha in incoming:  # bounded by the chain's length limit
        state = repo.lifecycle.state(model, sha, from_git=True)  # history: not worth caching
        ev = _event(repo, model, sha)
        named = state.versions() | {v for v in (ev.version, ev.displaced) if v}
        missing = sorted(named - existing)
        if missing:
            raise IntegrityError(
                f"lifecycle commit {sha[:12]} of model {model!r} names version(s) {', '.join(missing[:5])} "
                "that have no tag"
            )


def _describe(ev: LifecycleEvent) -> str:
    return f"{ev.action} {ev.version} -> {ev.to_stage}"


def _touches(ev: LifecycleEvent, single: Callable[[str], bool]) -> set[tuple[str, str]]:
    out = {("version", ev.version)}
    if ev.displaced:
        out.add(("version", ev.displaced))
    to = ev.to_stage
    if to not in SHARED_STAGES and single(to):
        out.add(("stage", to))
    return out


def _replay_transition(ev: LifecycleEvent, original: str, single: Callable[[str], bool]) -> Transition:
    """The transition that redoes event ``ev`` (from commit ``original``) on another state."""
    action, version, to = ev.action, ev.version, ev.to_stage
    base: Transition
    if action == "register":
        base = register_transition(version)
    elif action in ("promote", "archive", "rollback"):
        base = promote_transition(version, to, single(to), action, ev.reason, ev.extra or None)
    elif action == "approve" and ev.for_stage and ev.tag:  # replayed unsigned: it no longer counts
        base = approve_transition(version, ev.for_stage, ev.tag, ev.reason)
    else:
        raise RemoteError(f"lifecycle commit {original[:12]}: cannot replay action {action!r}")

    def run(state: LifecycleState) -> tuple[dict[str, Any], str]:
        if action == "rollback" and version in state.past.get(to, []):
            past = state.past[to]
            del past[len(past) - 1 - past[::-1].index(version)]
        event, summary = base(state)
        event["extra"] = {**(event.get("extra") or {}), "replayed_from": original}
        return event, summary

    return run


def _actor(ev: LifecycleEvent, fallback: tuple[str, str]) -> tuple[str, str]:
    raw = ev.actor or ""
    if "<" in raw and raw.endswith(">"):
        name, _, email = raw[:-1].partition("<")
        if name.strip() and email.strip():
            return name.strip(), email.strip()
    return fallback


def integrate(
    repo: Repository, model: str, remote_head: str, resolve: Resolve, remote: str
) -> tuple[PullOutcome, str | None]:
    """Bring the local lifecycle of ``model`` up to ``remote_head``.

    Returns ``(outcome, conflict)``: outcome is one of ``unchanged``, ``created``,
    ``fast-forward``, ``ahead``, ``replayed``, ``reset``, ``diverged``.
    """
    git = repo.git
    ref = lifecycle_ref(model)
    local = git.ref(ref)
    if local == remote_head:
        return "unchanged", None
    # Validate what would come in (every remote commit the local chain lacks) before use.
    remote_chain = repo.lifecycle.chain(remote_head, model)
    local_chain = repo.lifecycle.chain(local, model) if local else []
    local_set = set(local_chain)
    _check_incoming(repo, model, [c for c in remote_chain if c not in local_set])
    if local is None:
        _cas(repo, model, None, remote_head)
        return "created", None
    if local in remote_chain:
        _cas(repo, model, local, remote_head)
        return "fast-forward", None
    if remote_head in local_set:
        return "ahead", None
    remote_set = set(remote_chain)
    base = next((c for c in local_chain if c in remote_set), None)
    theirs = [_event(repo, model, c) for c in _since(remote_chain, base)]
    # A version both sides registered (one tag: a differing one stops the fetch) is registered
    # once: replaying our register event would send it back to development from its stage.
    registered = {e.version for e in theirs if e.action == "register"}
    mine = [
        (ev, c)
        for ev, c in ((_event(repo, model, c), c) for c in _since(local_chain, base))
        if not (ev.action == "register" and ev.version in registered)
    ]

    def single(stage: str) -> bool:
        return repo.stages().get(stage, True)

    if resolve == "theirs":
        _cas(repo, model, local, remote_head)
        return "reset", None
    if resolve is None:
        clash = set().union(*(_touches(e, single) for e, _ in mine)) & set().union(
            *(_touches(e, single) for e in theirs)
        )
        if clash:
            what = ", ".join(sorted(f"{k} {v}" for k, v in clash))
            return "diverged", (
                f"model {model!r}: your lifecycle events ({'; '.join(_describe(e) for e, _ in mine)}) and "
                f"{remote}'s ({'; '.join(_describe(e) for e in theirs)}) both change {what}"
            )
    # Replay: check every event applies to the remote state before touching the ref.
    known = set(repo.index.version_names(model))
    trial = repo.lifecycle.state(model, remote_head)
    transitions = []
    for ev, sha in mine:
        if ev.version not in known:
            raise RemoteError(f"model {model!r}: cannot replay {_describe(ev)}: version tag missing locally")
        tr = _replay_transition(ev, sha, single)
        tr(trial)
        transitions.append((tr, _actor(ev, git.identity())))
    _cas(repo, model, local, remote_head)
    for tr, actor in transitions:
        repo.lifecycle.apply(model, tr, actor)
    return "replayed", None


def _cas(repo: Repository, model: str, old: str | None, new: str) -> None:
    if not repo.git.cas_ref(lifecycle_ref(model), old, new, message="uniflow: pull"):
        raise ConcurrencyError(
            f"the lifecycle of model {model!r} changed meanwhile (another uniflow process); "
            "run `uniflow pull` again"
        )


def unrelated(repo: Repository, model: str, local: str, remote_head: str) -> bool:
    """True when the two lifecycle chains share no commit: the local one was begun without
    the remote's (a fresh ``git clone`` brings no ``refs/uniflow/*``), so none of the
    remote's events was ever seen here. Both heads' objects must be present."""
    local_chain = set(repo.lifecycle.chain(local, model))
    if remote_head in local_chain:  # the common case (ours is ahead): one chain walked
        return False
    return not any(c in local_chain for c in repo.lifecycle.chain(remote_head, model))
