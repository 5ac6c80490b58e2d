"""Pull a registry: fetch tags and lifecycles, validate them, integrate them, fetch chunks.

Tags and lifecycle refs are fetched (lifecycle refs into the remote's tracking refs
``refs/uniflow/remotes/<remote>/models/<model>``). Every incoming lifecycle commit is
validated straight from Git before a local ref moves; a model that fails is reported and
left alone while the others are integrated. Each local lifecycle ref is then moved by CAS
when it fast-forwards; local events the remote lacks are replayed on top of the remote's
when they touch other versions and stages (so ``git log`` shows both), and a real conflict
is a :class:`LifecycleConflictError` naming the model, with ``--ours`` / ``--theirs`` to
settle it. Stage pointers are recomputed, and chunks fetched for what was asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from .._errors import (
    ConcurrencyError,
    IntegrityError,
    LifecycleConflictError,
    NotFoundError,
    RemoteError,
    UsageError,
)
from .._lifecycle import promote_transition, register_transition
from .._naming import validate_model_name, validate_version
from .._refs import lifecycle_ref, tracking_prefix
from .._reports import PullOutcome, PullReport
from .._stages import StageLike
from .._versions import is_model_name
from .blobs import JOBS, TransferStats, download_chunks
from .gitcmd import fetch_refs, resolve_git_remote
from .push import blob_remote_for, chunks_of, no_blob_remote

if TYPE_CHECKING:
    from .._lifecycle import LifecycleState, Transition
    from .._repo import Repository

__all__ = ["PullOutcome", "PullReport", "Resolve", "pull"]

ProgressFn = Callable[[int, int], None]
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


def _event(repo: Repository, model: str, sha: str) -> dict[str, Any]:
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
        named = state.versions() | {v for v in (ev["version"], ev.get("displaced")) if v}
        missing = sorted(named - existing)
        if missing:
            raise IntegrityError(
                f"lifecycle commit {sha[:12]} of model {model!r} names version(s) {', '.join(missing[:5])} "
                "that have no tag"
            )


def _describe(ev: dict[str, Any]) -> str:
    return f"{ev.get('action')} {ev.get('version')} -> {ev.get('to')}"


def _touches(ev: dict[str, Any], single: Callable[[str], bool]) -> set[tuple[str, str]]:
    out = {("version", str(ev.get("version")))}
    if ev.get("displaced"):
        out.add(("version", str(ev["displaced"])))
    to = ev.get("to")
    if isinstance(to, str) and to not in ("development", "archived") and single(to):
        out.add(("stage", to))
    return out


def _replay_transition(ev: dict[str, Any], original: str, single: Callable[[str], bool]) -> Transition:
    """The transition that redoes event ``ev`` (from commit ``original``) on another state."""
    action, version, to = ev.get("action"), ev.get("version"), ev.get("to")
    if not isinstance(version, str):
        raise RemoteError(f"lifecycle commit {original[:12]} has no version")
    validate_version(version)
    base: Transition
    if action == "register":
        base = register_transition(version)
    elif action in ("promote", "archive", "rollback") and isinstance(to, str):
        base = promote_transition(version, to, single(to), action, ev.get("reason"), ev.get("extra") or None)
    else:
        raise RemoteError(f"lifecycle commit {original[:12]}: cannot replay action {action!r}")

    def run(state: LifecycleState) -> tuple[dict[str, Any], str]:
        if action == "rollback" and isinstance(to, str) and version in state.past.get(to, []):
            past = state.past[to]
            del past[len(past) - 1 - past[::-1].index(version)]
        event, summary = base(state)
        event["extra"] = {**(event.get("extra") or {}), "replayed_from": original}
        return event, summary

    return run


def _actor(ev: dict[str, Any], fallback: tuple[str, str]) -> tuple[str, str]:
    raw = str(ev.get("actor") or "")
    if "<" in raw and raw.endswith(">"):
        name, _, email = raw[:-1].partition("<")
        if name.strip() and email.strip():
            return name.strip(), email.strip()
    return fallback


def _integrate(
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
    mine = [(_event(repo, model, c), c) for c in _since(local_chain, base)]
    theirs = [_event(repo, model, c) for c in _since(remote_chain, base)]

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
        if ev.get("version") not in known:
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
            f"the lifecycle of model {model!r} changed during the pull; run `uniflow pull` again"
        )


# ---------------------------------------------------------------------- pull
def pull(
    repo: Repository,
    remote: str | None = None,
    names: Iterable[str] | None = None,
    *,
    all_versions: bool = False,
    stages: Iterable[StageLike] | None = None,
    resolve: Resolve = None,
    blob: str | None = None,
    force_tags: bool = False,
    fetch_chunks: bool = True,
    jobs: int = JOBS,
    progress: ProgressFn | None = None,
) -> PullReport:
    """Fetch tags and lifecycle refs, integrate them, recompute stage pointers, fetch chunks.

    Chunks are fetched for ``all_versions``, for the holders of ``stages``, or, when model
    ``names`` are given without either, for every version of those models; otherwise they
    are fetched on demand when a version is loaded. A lifecycle whose local and remote events
    both change the same version or stage raises :class:`LifecycleConflictError` naming the
    model (its ``result`` is the :class:`PullReport` of what was integrated);
    ``resolve="ours"`` replays the local events on top anyway, ``"theirs"`` drops them.

    Everything fetched is hostile until validated: each model's incoming lifecycle commits
    are checked (:func:`_check_incoming`) before its local ref moves. A model that fails is
    left as it was and listed in ``PullReport.rejected`` (``{model: reason}``; also ref names
    this fetch brought that name no valid model or version: they are ignored by every
    read); the other models are integrated, then :class:`IntegrityError` is raised with a
    one-line summary and the :class:`PullReport` as its ``result``.
    """
    if resolve not in (None, "ours", "theirs"):
        raise UsageError(f"resolve must be 'ours', 'theirs' or None, not {resolve!r}")
    wanted = list(names or [])
    for n in wanted:
        validate_model_name(n)
    git_remote = resolve_git_remote(repo.root, remote)
    junk_before = _junk_ref_names(repo, git_remote)
    fetch_refs(repo.root, git_remote, wanted or None, tags=True, force_tags=force_tags)
    rejected: dict[str, str] = {
        ref: "not a valid model or version name; ignored"
        for ref in sorted(_junk_ref_names(repo, git_remote) - junk_before)
    }
    prefix = tracking_prefix(git_remote)
    remote_heads = {k: v for k, v in repo.git.refs(prefix).items() if "/" not in k and is_model_name(k)}
    models = sorted(set(wanted)) if wanted else sorted(set(repo.index.models()) | set(remote_heads))
    outcomes: dict[str, PullOutcome] = {}
    conflicts: list[str] = []
    for m in models:
        try:
            if m in remote_heads:
                outcome, conflict = _integrate(repo, m, remote_heads[m], resolve, git_remote)
                outcomes[m] = outcome
                if conflict:
                    conflicts.append(conflict)
            if repo.lifecycle.head(m) is not None:
                repo.lifecycle.sync_pointers(m)
            elif m in wanted and not repo.index.version_names(m):
                raise NotFoundError(f"model {m!r} not found here nor on {git_remote!r}")
        except IntegrityError as exc:  # this model stays as it was; carry on with the others
            outcomes[m] = "rejected"
            rejected[m] = str(exc)

    stats = TransferStats()
    versions: list[tuple[str, str]] = []
    if fetch_chunks and (all_versions or stages or wanted):
        stage_names = [repo.stage(s) for s in stages or []]
        for m in models:
            if m in rejected or not repo.index.version_names(m):
                continue
            if stage_names:
                picked = {v for s in stage_names for v in repo.versions_in(m, s)}
            else:
                picked = set(repo.index.version_names(m))
            versions += [(m, v) for v in sorted(picked)]
    if versions:
        blob_remote = blob_remote_for(repo, blob, git_remote)
        if blob_remote is None:
            raise no_blob_remote(git_remote)
        digests: list[str] = []
        for m, v in versions:
            digests += chunks_of(repo, m, [v])[0]
        stats = download_chunks(repo.store, blob_remote, digests, jobs=jobs, progress=progress)
    result = PullReport(
        remote=git_remote,
        models=outcomes,
        versions=tuple(f"{m}/{v}" for m, v in versions),
        chunks=stats.frozen(),
        rejected=rejected,
    )
    summary = _rejected_summary(rejected, git_remote)
    if conflicts:
        diverged = [m for m in outcomes if outcomes[m] == "diverged"]
        raise LifecycleConflictError(
            "pull stopped: "
            + "; ".join(conflicts)
            + f". Keep yours on top with `uniflow pull --ours {' '.join(diverged)}`"
            + f" or take theirs with `uniflow pull --theirs {' '.join(diverged)}`"
            + (f". Also {summary}" if summary else ""),
            diverged,
            result=result,
        )
    if rejected:
        raise IntegrityError(summary, result=result)
    return result


def _junk_ref_names(repo: Repository, remote: str) -> set[str]:
    """Refs pull writes (version tags, the remote's lifecycle refs) whose names are no valid
    model or version: every read ignores them; pull reports the ones its fetch brought."""
    prefix = tracking_prefix(remote)
    junk = {r for r in repo.index.invalid_ref_names() if r.startswith("refs/tags/")}
    junk |= {f"{prefix}/{m}" for m in repo.git.ref_names(prefix) if not is_model_name(m)}
    return junk


def _rejected_summary(rejected: dict[str, str], remote: str) -> str:
    if not rejected:
        return ""
    models = [k for k in rejected if not k.startswith("refs/")]
    refs = [k for k in rejected if k.startswith("refs/")]
    parts = [f"model {m!r} ({rejected[m]})" for m in models]
    if refs:
        shown = ", ".join(refs[:5]) + (f" and {len(refs) - 5} more" if len(refs) > 5 else "")
        parts.append(f"ref(s) with invalid names ignored: {shown}")
    return (
        f"pull from {remote!r} rejected "
        + "; ".join(parts)
        + ("; the other models were integrated" if models else "")
    )
