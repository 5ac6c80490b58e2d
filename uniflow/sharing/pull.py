"""Pull a registry: fetch tags and lifecycles, validate them, integrate them, fetch chunks.

Tags and lifecycle refs are fetched (lifecycle refs into the remote's tracking refs
``refs/uniflow/remotes/<remote>/models/<model>``). Every incoming lifecycle commit is
validated straight from Git before a local ref moves; a model that fails is reported and
left alone while the others are integrated. When a policy is in force, a model's incoming
commits before the first one that breaks it are integrated, and that one and every later
one are refused and named. Each local lifecycle ref is then moved by CAS
when it fast-forwards; local events the remote lacks are replayed on top of the remote's
when they touch other versions and stages (so ``git log`` shows both), and a real conflict
is a :class:`LifecycleConflictError` naming the model, with ``--ours`` / ``--theirs`` to
settle it. Stage pointers are recomputed, and chunks fetched for what was asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .._errors import IntegrityError, LifecycleConflictError, NotFoundError, UsageError
from .._naming import validate_model_name
from .._records.listing import unreadable_reason
from .._records.refs import TAGS_PREFIX, tracking_prefix
from .._records.versions import is_model_name, is_version
from .._reports import PullOutcome, PullReport
from .._stages import StageLike
from .._types import ProgressFn
from .blobs import JOBS, TransferStats, download_chunks
from .gitcmd import fetch_refs, resolve_git_remote
from .merge import Resolve, integrate
from .push import blob_remote_for, no_blob_remote, version_chunks

if TYPE_CHECKING:
    from .._repo import Repository

__all__ = ["PolicyCheck", "pull"]

#: ``check(model, remote_head)`` -> ``(newest, refused)``: the newest remote lifecycle commit
#: that may come in (``remote_head``: all of it; None: none of what is new), and one line per
#: commit after it, refused because it breaks the policy in force or comes after one that
#: does; :func:`uniflow._ops.incoming.pull_check` makes one
PolicyCheck = Callable[[str, str], tuple[str | None, tuple[str, ...]]]

#: bad refs named in pull's one-line error (all of them are in ``PullReport.rejected``)
_SHOWN = 10


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
    check: PolicyCheck | None = None,
) -> PullReport:
    """Fetch tags and lifecycle refs, integrate them, recompute stage pointers, fetch chunks.

    Chunks are fetched for ``all_versions``, for the holders of ``stages``, or, when model
    ``names`` are given without either, for every version of those models; otherwise they
    are fetched on demand when a version is loaded. A lifecycle whose local and remote events
    both change the same version or stage raises :class:`LifecycleConflictError` naming the
    model (its ``result`` is the :class:`PullReport` of what was integrated);
    ``resolve="ours"`` replays the local events on top anyway, ``"theirs"`` drops them.

    Everything fetched is hostile until validated: each model's incoming lifecycle commits
    are checked (``merge._check_incoming``) before its local ref moves. A model that fails is
    left as it was and listed in ``PullReport.rejected`` (``{model: reason}``; also ref names
    this fetch brought that name no valid model or version: they are ignored by every
    read); the other models are integrated, then :class:`IntegrityError` is raised with a
    one-line summary and the :class:`PullReport` as its ``result``.

    ``check`` (given when a policy is in force) judges each model's remote lifecycle before
    it is integrated: the incoming commits before the first one that breaks the policy are
    integrated (the model's outcome says how; ``rejected`` when none of them may come in),
    that commit and every later one are refused: the model is listed in ``rejected`` and
    the refused commits, one line each, in ``refused``.
    """
    if resolve not in (None, "ours", "theirs"):
        raise UsageError(f"resolve must be 'ours', 'theirs' or None, not {resolve!r}")
    wanted = list(names or [])
    for n in wanted:
        validate_model_name(n)
    git_remote = resolve_git_remote(repo.root, remote)
    rejected = _fetch_refs_checked(repo, git_remote, wanted, force_tags)
    prefix = tracking_prefix(git_remote)
    remote_heads = {k: v for k, v in repo.git.refs(prefix).items() if "/" not in k and is_model_name(k)}
    models = sorted(set(wanted)) if wanted else sorted(set(repo.index.models()) | set(remote_heads))
    refused: dict[str, tuple[str, ...]] = {}
    outcomes, conflicts = _integrate_models(
        repo, models, remote_heads, (resolve, check), git_remote, wanted, (rejected, refused)
    )
    stats = TransferStats()
    versions: list[tuple[str, str]] = []
    if fetch_chunks and (all_versions or stages or wanted):
        left = {m for m, outcome in outcomes.items() if outcome == "rejected"}
        versions = _versions_to_fetch(repo, models, [repo.stage(s) for s in stages or []], left)
    if versions:
        stats = _download(repo, blob, git_remote, versions, jobs, progress)
    result = PullReport(
        remote=git_remote,
        models=outcomes,
        versions=tuple(f"{m}/{v}" for m, v in versions),
        chunks=stats.frozen(),
        rejected=rejected,
        refused=refused,
    )
    _raise_if_stopped(result, conflicts)
    return result


def _download(
    repo: Repository,
    blob: str | None,
    git_remote: str,
    versions: list[tuple[str, str]],
    jobs: int,
    progress: ProgressFn | None,
) -> TransferStats:
    """Fetch the chunks of ``versions`` missing here from the blob remote (``blob``, else
    the one named like ``git_remote``, else the only one)."""
    blob_remote = blob_remote_for(repo, blob, git_remote)
    if blob_remote is None:
        raise no_blob_remote(git_remote)
    digests, _where = version_chunks(repo, versions)
    return download_chunks(repo.store, blob_remote, digests, jobs=jobs, progress=progress)


def _fetch_refs_checked(
    repo: Repository, git_remote: str, wanted: list[str], force_tags: bool
) -> dict[str, str]:
    """Fetch the remote's version tags and lifecycle refs; ``{ref or model: reason}`` for
    the ref names this fetch brought that name nothing valid and the new tags no read accepts."""
    junk_before = _junk_ref_names(repo, git_remote)
    tags_before = repo.git.refs(TAGS_PREFIX)
    fetch_refs(repo.root, git_remote, wanted or None, tags=True, force_tags=force_tags)
    rejected: dict[str, str] = {
        ref: "not a valid model or version name; ignored"
        for ref in sorted(_junk_ref_names(repo, git_remote) - junk_before)
    }
    rejected.update(_unreadable_new_tags(repo, tags_before))
    return rejected


def _integrate_models(
    repo: Repository,
    models: list[str],
    remote_heads: dict[str, str],
    how: tuple[Resolve, PolicyCheck | None],
    git_remote: str,
    wanted: list[str],
    found: tuple[dict[str, str], dict[str, tuple[str, ...]]],
) -> tuple[dict[str, PullOutcome], list[str]]:
    """Integrate each model's remote lifecycle (up to what the policy ``check`` admits) and
    recompute its stage pointers. A model that fails validation stays as it was and is added
    to ``rejected``; one whose incoming commits the policy refuses, from some commit on, is
    added to ``rejected`` and its refused commits to ``refused``, after the commits before
    them were integrated. Returns the outcomes and the conflicts found."""
    resolve, check = how
    rejected, refused = found
    outcomes: dict[str, PullOutcome] = {}
    conflicts: list[str] = []
    for m in models:
        try:
            if m in remote_heads:
                target = _admitted_head(repo, m, remote_heads[m], check, (rejected, refused))
                if target is None:
                    outcomes[m] = "rejected"
                    continue
                outcome, conflict = integrate(repo, m, target, resolve, git_remote)
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
    return outcomes, conflicts


def _admitted_head(
    repo: Repository,
    model: str,
    head: str,
    check: PolicyCheck | None,
    found: tuple[dict[str, str], dict[str, tuple[str, ...]]],
) -> str | None:
    """The remote lifecycle commit to integrate ``model`` up to: the remote ``head``, or the
    newest commit ``check`` admits (then what it refused is added to ``found``); None when
    nothing new may come in."""
    if check is None or head == repo.lifecycle.head(model):
        return head
    newest, lines = check(model, head)
    if not lines:
        return head if newest is None else newest
    rejected, refused = found
    refused[model] = lines
    more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
    came = f"; the lifecycle was integrated up to {newest[:12]}" if newest is not None else ""
    rejected[model] = f"breaks the policy: {lines[0]}{more}{came}"
    return newest


def _versions_to_fetch(
    repo: Repository, models: list[str], stage_names: list[str], rejected: set[str]
) -> list[tuple[str, str]]:
    """``(model, version)`` whose chunks to fetch: the holders of ``stage_names``, or every
    readable version; never of a model left as it was (``rejected``), never an unreadable
    version."""
    versions: list[tuple[str, str]] = []
    for m in models:
        readable = set(repo.listings.listing(m).versions)  # a bad tag spoils only itself
        if m in rejected or not readable:
            continue
        if stage_names:
            picked = {v for s in stage_names for v in repo.versions_in(m, s)} & readable
        else:
            picked = readable
        versions += [(m, v) for v in sorted(picked)]
    return versions


def _raise_if_stopped(result: PullReport, conflicts: list[str]) -> None:
    """Raise :class:`LifecycleConflictError` for diverged lifecycles, else
    :class:`IntegrityError` for anything rejected, each carrying ``result``."""
    summary = _rejected_summary(dict(result.rejected), result.remote)
    if conflicts:
        diverged = [m for m, outcome in result.models.items() if outcome == "diverged"]
        raise LifecycleConflictError(
            "pull stopped: "
            + "; ".join(conflicts)
            + f". Keep yours on top with `uniflow pull --ours {' '.join(diverged)}`"
            + f" or take theirs with `uniflow pull --theirs {' '.join(diverged)}`"
            + (f". Also {summary}" if summary else ""),
            diverged,
            result=result,
        )
    if result.rejected:
        raise IntegrityError(summary, result=result)


def _junk_ref_names(repo: Repository, remote: str) -> set[str]:
    """Refs pull writes (version tags, the remote's lifecycle refs) whose names are no valid
    model or version: every read ignores them; pull reports the ones its fetch brought."""
    prefix = tracking_prefix(remote)
    junk = {r for r in repo.index.invalid_ref_names() if r.startswith(f"{TAGS_PREFIX}/")}
    junk |= {f"{prefix}/{m}" for m in repo.git.ref_names(prefix) if not is_model_name(m)}
    return junk


def _unreadable_new_tags(repo: Repository, before: dict[str, str]) -> dict[str, str]:
    """``{ref: reason}`` of the version tags (valid names) this fetch created or moved that
    the manifest gate refuses: a lightweight tag, a tag on a blob, tree or a commit without
    a manifest, a manifest that fails the gate. Every listing skips them; pull names them."""
    out: dict[str, str] = {}
    for rel, sha in sorted(repo.git.refs(TAGS_PREFIX).items()):
        model, _, version = rel.partition("/")
        if before.get(rel) == sha or not (is_model_name(model) and is_version(version)):
            continue  # unchanged, or already reported as an invalid name
        try:
            repo.index.manifest(model, version, sha, memo=False)  # cached: the next listing reuses it
        except IntegrityError as exc:
            out[f"{TAGS_PREFIX}/{rel}"] = unreadable_reason(exc)
    return out


def _rejected_summary(rejected: dict[str, str], remote: str) -> str:
    if not rejected:
        return ""
    models = [k for k in rejected if not k.startswith("refs/")]
    refs = [k for k in rejected if k.startswith("refs/")]
    parts = [f"model {m!r} ({rejected[m]})" for m in models]
    if refs:
        shown = ", ".join(f"{r} ({rejected[r]})" for r in refs[:_SHOWN])
        shown += f" and {len(refs) - _SHOWN} more (see --json)" if len(refs) > _SHOWN else ""
        parts.append(f"unreadable or invalid ref(s), skipped by every read: {shown}")
    return (
        f"pull from {remote!r} rejected "
        + "; ".join(parts)
        + ("; the other models were integrated" if models else "")
    )
