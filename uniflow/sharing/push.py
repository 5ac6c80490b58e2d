"""Push a registry: the bytes of new versions to a blob remote, then the refs, atomically.

Ordering (invariant 1, across machines):

* a lifecycle the Git remote has and this clone lacks is fetched and integrated first, as
  ``uniflow pull`` would (a fresh ``git clone`` brings the version tags but no
  ``refs/uniflow/*``): a model with no local lifecycle takes the remote's, and local events
  begun without it (no commit in common) are replayed on top of it, so the remote's history
  is kept and nothing local is lost;
* lifecycle divergence is checked next: nothing is sent when the push would be refused;
* then the chunks of every version tag the Git remote lacks are uploaded (each re-hashed
  before it leaves), and only then are the tags, lifecycle refs and stage pointers pushed in
  one atomic ``git push``: a Git remote never shows a version whose bytes are missing;
* lifecycle refs move only by fast-forward (pushed without ``+``): Git refuses a push made
  stale by someone else's promotion, which is a :class:`PushRejectedError`;
* stage pointers are derived, never copied: the pointers pushed are computed from the
  lifecycle state of the very head being pushed (a crash between a lifecycle move and the
  pointer update may have left the local pointer refs stale; they are resynced on the way),
  and pushed with ``--force-with-lease`` on the value seen.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _testhooks
from .._errors import PushRejectedError, RemoteError, UniflowError
from .._naming import validate_model_name
from .._records.eventtags import event_tag_specs
from .._records.manifest import file_records
from .._records.refs import (
    TAGS_PREFIX,
    lifecycle_ref,
    parse_ref,
    stage_ref,
    stages_prefix,
    tag_name,
    tag_ref,
    tracking_ref,
)
from .._reports import PushReport
from .._types import ProgressFn
from .blobs import JOBS, TransferStats, get_remote_spec, upload_chunks
from .blobstore import BlobRemote, open_remote
from .gitcmd import IN_PUSH_ENV, fetch_refs, last_error, ls_remote, resolve_git_remote, run_git
from .merge import integrate, unrelated

if TYPE_CHECKING:
    from .._repo import Repository

__all__ = [
    "blob_remote_for",
    "chunks_of",
    "no_blob_remote",
    "push",
    "upload_versions",
    "version_chunks",
]


# ---------------------------------------------------------------------- chunks
def upload_versions(
    repo: Repository, blob_remote: Any, versions: list[tuple[str, str]], *, jobs: int, progress: Any
) -> TransferStats:
    """Upload the chunks of ``(model, version)`` pairs that the blob remote lacks."""
    digests, context = version_chunks(repo, versions)
    return upload_chunks(repo.store, blob_remote, digests, jobs=jobs, progress=progress, context=context)


def version_chunks(repo: Repository, versions: list[tuple[str, str]]) -> tuple[list[str], dict[str, str]]:
    """The chunk digests of ``(model, version)`` pairs, in order, and where each is first used
    (``model 'm' version 'v' file 'f'``, for errors)."""
    digests: list[str] = []
    context: dict[str, str] = {}
    for m, v in versions:
        d, c = chunks_of(repo, m, [v])
        digests += d
        for digest, where in c.items():
            context.setdefault(digest, where)
    return digests, context


def chunks_of(repo: Repository, model: str, versions: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    digests: list[str] = []
    context: dict[str, str] = {}
    for v in versions:
        _, m = repo.index.manifest(model, v)
        for rel, rec, _mode in file_records(m):
            for c in rec.chunks:
                digests.append(c.digest)
                context.setdefault(c.digest, f"model {model!r} version {v!r} file {rel!r}")
    return digests, context


def blob_remote_for(repo: Repository, name: str | None, git_remote: str | None) -> BlobRemote | None:
    if name is not None:
        spec = get_remote_spec(repo.config, name)
        if spec is None:
            raise RemoteError(f"no blob remote named {name!r} (add one with `uniflow remote add {name} URL`)")
    else:
        spec = get_remote_spec(repo.config, git_remote) if git_remote else None
        spec = spec or get_remote_spec(repo.config, None)
    return open_remote(spec, repo.root) if spec is not None else None


def no_blob_remote(git_remote: str) -> RemoteError:
    return RemoteError(
        f"no blob remote configured for {git_remote!r}: add one with `uniflow remote add {git_remote} URL` "
        "and commit .uniflow/config.toml"
    )


def _select(repo: Repository, names: Iterable[str] | None) -> list[str]:
    if names:
        return sorted({validate_model_name(n) for n in names})
    return repo.index.models()


# ---------------------------------------------------------------------- push
def push(
    repo: Repository,
    remote: str | None = None,
    names: Iterable[str] | None = None,
    *,
    blob: str | None = None,
    all_versions: bool = False,
    jobs: int = JOBS,
    progress: ProgressFn | None = None,
) -> PushReport:
    """Upload missing chunks to the blob remote, then push tags, lifecycle and stage refs.

    ``remote`` is the Git remote (default ``origin``); the blob remote is ``blob``, else the
    one named like the Git remote, else the only one. ``all_versions`` re-checks the chunks of
    every version, not only of tags the Git remote lacks. A remote lifecycle this clone
    lacks is integrated first (:func:`_adopt_lifecycles`). Raises :class:`PushRejectedError`
    when someone else moved a lifecycle ref meanwhile (run :func:`pull`, then push again).
    """
    wanted = list(names or [])
    models = _select(repo, wanted)
    for m in wanted:
        repo.require_model(m)
    git_remote = resolve_git_remote(repo.root, remote)
    remote_refs = ls_remote(repo.root, git_remote)
    git = repo.git
    # 1. version tags the Git remote lacks; one it holds with other content is refused
    new_tags = _new_tags(repo, models, remote_refs, git_remote)
    # 2. lifecycles: the remote's that this clone lacks are integrated (as pull would) ...
    _adopt_lifecycles(repo, models, remote_refs, git_remote)
    heads = {m: repo.lifecycle.head(m) for m in models}  # the lifecycle pushed, read once
    for m, head in heads.items():
        if head is not None:
            repo.lifecycle.sync_pointers(m)  # repair local pointers a crash left stale
    # ... then refuse before sending anything when a push would not fast-forward
    lifecycle, behind = _fast_forwards(repo, heads, remote_refs, git_remote)

    # 3. the bytes of the new versions (all versions with all_versions), before any ref
    upload = [
        (m, v)
        for m in models
        for v in repo.index.version_names(m)
        if all_versions or tag_ref(m, v) in new_tags
    ]
    blob_remote = blob_remote_for(repo, blob, git_remote)
    stats = _upload(repo, blob_remote, git_remote, upload, jobs, progress)

    # 4. refs, atomically: tags, lifecycle (fast-forward only), stage pointers (leased)
    specs, leases = _ref_updates(repo, models, new_tags, heads, lifecycle, behind, remote_refs)
    if specs:
        _push_refs(repo, git_remote, specs, leases, remote_refs, new_tags)
        for m, sha in lifecycle.items():
            track = tracking_ref(git_remote, m)
            git.cas_ref(track, git.ref(track), sha, message="uniflow: push")
    return PushReport(
        remote=git_remote,
        blob_remote=blob_remote.name if blob_remote is not None else None,
        models=tuple(models) if wanted else None,
        versions=tuple(sorted(r[len(TAGS_PREFIX) + 1 :] for r in new_tags)),
        lifecycle=tuple(sorted(lifecycle)),
        behind=tuple(behind),
        refs=len(specs),
        chunks=stats.frozen(),
        up_to_date=not specs and not stats.transferred,
    )


def _upload(
    repo: Repository,
    blob_remote: BlobRemote | None,
    git_remote: str,
    versions: list[tuple[str, str]],
    jobs: int,
    progress: ProgressFn | None,
) -> TransferStats:
    """Upload the chunks of ``versions`` (none: nothing to do, no blob remote needed)."""
    if not versions:
        return TransferStats()
    if blob_remote is None:
        raise no_blob_remote(git_remote)
    return upload_versions(repo, blob_remote, versions, jobs=jobs, progress=progress)


def _ref_updates(
    repo: Repository,
    models: list[str],
    new_tags: dict[str, str],
    heads: dict[str, str | None],
    lifecycle: dict[str, str],
    behind: list[str],
    remote_refs: dict[str, str],
) -> tuple[list[str], list[str]]:
    """The refspecs of one atomic push and the leases of its stage pointers: the new tags,
    each lifecycle that fast-forwards, and the stage pointers derived from the head pushed
    (those that differ on the remote, each leased on the value seen there)."""
    specs: list[str] = [f"{r}:{r}" for r in sorted(new_tags)]
    leases: list[str] = []
    for m in models:
        if m in behind:
            continue
        if m not in lifecycle and heads[m] != remote_refs.get(lifecycle_ref(m)):
            continue
        if m in lifecycle:
            specs.append(f"{lifecycle[m]}:{lifecycle_ref(m)}")  # the head the pointers derive from
            specs += event_tag_specs(repo, m, lifecycle[m], remote_refs.get(lifecycle_ref(m)))
        prefix = stages_prefix(m) + "/"
        mine = _derived_pointers(repo, m, heads[m])
        pointers = {r: s for r, s in remote_refs.items() if r.startswith(prefix)}
        for r, sha in sorted(mine.items()):
            if pointers.get(r) != sha:
                specs.append(f"{r}:{r}")
                leases.append(f"--force-with-lease={r}:{pointers.get(r, '')}")
        for r, sha in sorted(pointers.items()):
            if r not in mine:
                specs.append(f":{r}")
                leases.append(f"--force-with-lease={r}:{sha}")
    return specs, leases


def _push_refs(
    repo: Repository,
    git_remote: str,
    specs: list[str],
    leases: list[str],
    remote_refs: dict[str, str],
    new_tags: dict[str, str],
) -> None:
    """Push ``specs`` atomically; a refusal git gave no reason for is told as what moved on
    the remote meanwhile (:func:`_overtaken`), when something did."""
    _testhooks.point("push-before-git-push")  # test-only: a race after the checks in push()
    try:
        _git_push(repo, git_remote, specs, leases)
    except PushRejectedError:
        raise
    except RemoteError as exc:  # refused for a reason git did not name: was it overtaken?
        overtaken = _overtaken(repo, git_remote, specs, remote_refs, new_tags)
        if overtaken is None:
            raise
        raise overtaken from exc
    _testhooks.point("push-after-git-push")


def _fast_forwards(
    repo: Repository, heads: dict[str, str | None], remote_refs: dict[str, str], git_remote: str
) -> tuple[dict[str, str], list[str]]:
    """``({model: head to push}, [models behind the remote])``: a local head the remote
    lacks must descend from the remote's; when both moved, :class:`PushRejectedError`."""
    git = repo.git
    lifecycle: dict[str, str] = {}
    behind: list[str] = []
    diverged: list[str] = []
    fetched = False
    for m, local in heads.items():
        theirs = remote_refs.get(lifecycle_ref(m))
        if local is None or local == theirs:
            continue
        if theirs is None:
            lifecycle[m] = local
            continue
        if not git.has_object(theirs) and not fetched:
            fetch_refs(repo.root, git_remote, None, tags=False, force_tags=False)
            fetched = True
        if git.has_object(theirs) and theirs in repo.lifecycle.chain(local, m):
            lifecycle[m] = local
        elif git.has_object(theirs) and local in repo.lifecycle.chain(theirs, m):
            behind.append(m)
        else:
            diverged.append(m)
    if diverged:
        raise _rejected(diverged, git_remote)
    return lifecycle, behind


def _new_tags(
    repo: Repository, models: list[str], remote_refs: dict[str, str], git_remote: str
) -> dict[str, str]:
    """``{tag ref: sha}`` of the versions the Git remote lacks; a version it holds with other
    content is a :class:`PushRejectedError` (versions are immutable)."""
    new_tags: dict[str, str] = {}
    for m in models:
        for v, sha in repo.index.versions(m).items():
            theirs = remote_refs.get(tag_ref(m, v))
            if theirs is None:
                new_tags[tag_ref(m, v)] = sha
            elif theirs != sha:
                raise PushRejectedError(
                    f"version {m} {v} exists on {git_remote!r} with different content; versions are "
                    f"immutable: "
                    "register yours under a new version"
                )
    return new_tags


def _adopt_lifecycles(
    repo: Repository, models: list[str], remote_refs: dict[str, str], git_remote: str
) -> list[str]:
    """Integrate the Git remote's lifecycle of each model whose local lifecycle is missing or
    shares no commit with it (begun in a clone that never had the remote's), replaying the
    local events on top (``merge.integrate`` with ``"ours"``, what ``uniflow pull --ours``
    does): the remote's history is kept and no local event is lost. Lifecycles that share
    history are left to the fast-forward check. Returns the models integrated."""
    git = repo.git
    wanted = {m: remote_refs[lifecycle_ref(m)] for m in models if lifecycle_ref(m) in remote_refs}
    wanted = {m: sha for m, sha in wanted.items() if repo.lifecycle.head(m) != sha}

    def lacking(m: str) -> bool:
        local = repo.lifecycle.head(m)
        return local is None or unrelated(repo, m, local, wanted[m])

    todo = [m for m, sha in wanted.items() if git.has_object(sha) and lacking(m)]
    if todo or any(not git.has_object(sha) for sha in wanted.values()):
        # the remote's lifecycle commits and the tags they name (refused if one differs)
        fetch_refs(repo.root, git_remote, sorted(wanted), tags=True, force_tags=False)
        todo = [m for m, sha in wanted.items() if git.has_object(sha) and lacking(m)]
    for m in todo:
        integrate(repo, m, wanted[m], "ours", git_remote)
    return todo


def _derived_pointers(repo: Repository, model: str, head: str | None) -> dict[str, str]:
    """``{stage ref: tag sha}`` that the lifecycle state at ``head`` implies: each stage
    holding a single version points at that version's tag (as ``sync_pointers`` sets them)."""
    if head is None:
        return {}
    state = repo.lifecycle.state(model, head)
    out: dict[str, str] = {}
    for version, stage in sorted(state.stage_of.items()):
        if repo.lifecycle.single_holder(stage):
            tag = repo.index.tag_sha(model, version)
            if tag:
                out[stage_ref(model, stage)] = tag
    return out


def _rejected(models: list[str], remote: str) -> PushRejectedError:
    """The one-line refusal of a push whose lifecycle refs someone else moved meanwhile,
    naming each model and its lifecycle ref."""
    names = ", ".join(repr(m) for m in models)
    refs = ", ".join(lifecycle_ref(m) for m in models)
    return PushRejectedError(
        f"push rejected: {remote!r} has lifecycle events for model {names} that you do not have "
        f"(someone promoted meanwhile: {refs}); run `uniflow pull`, then push again"
    )


def _git_push(repo: Repository, remote: str, specs: list[str], leases: list[str]) -> None:
    """``git push --atomic`` of ``specs``; to a server that does not advertise the ``atomic``
    capability (:func:`_receive_capabilities`), the tags first (their bytes are already on
    the blob remote), then the rest. A refusal is :func:`_push_refusal`'s error."""

    def run(refspecs: list[str], atomic: bool) -> subprocess.CompletedProcess[str]:
        flags = ["--porcelain", "--no-follow-tags", *(["--atomic"] if atomic else []), *leases]
        return run_git(repo.root, "push", *flags, remote, *refspecs, env={IN_PUSH_ENV: "1"}, check=False)

    proc = run(specs, True)
    # git refuses --atomic before any ref is sent (no porcelain status line) when the server
    # lacks the capability: ask the server which capabilities it has, not git's message
    if proc.returncode != 0 and not _status_lines(proc.stdout):
        capabilities = _receive_capabilities(repo, remote, specs)
        if capabilities is not None and "atomic" not in capabilities:
            tags = [s for s in specs if _is_tag(s)]
            rest = [s for s in specs if not _is_tag(s)]
            proc = run(tags, False) if tags else proc
            if rest and (not tags or proc.returncode == 0):
                proc = run(rest, False)
    if proc.returncode != 0:
        raise _push_refusal(proc, remote)


def _status_lines(stdout: str) -> list[list[str]]:
    """The per-ref status lines of ``git push --porcelain`` (``<flag>\t<from>:<to>\t<summary>``)."""
    return [
        parts for line in stdout.splitlines() if len(parts := line.split("\t")) >= 3 and len(parts[0]) == 1
    ]


#: the first ref of a receive-pack advertisement as git's packet trace shows it: ``<sha>
#: <ref>\0<capabilities>`` (the NUL written as ``\0``), after the process's name and ``<``
_ADVERTISED = re.compile(r"< [0-9a-f]{40}(?:[0-9a-f]{24})? \S+\\0(?P<caps>.*)$")


def _receive_capabilities(repo: Repository, remote: str, specs: list[str]) -> frozenset[str] | None:
    """The capabilities ``remote``'s receive-pack advertises (``atomic``, ``report-status``
    ...), read from git's packet trace (``GIT_TRACE_PACKET``, never translated) of a
    ``--dry-run`` push of ``specs``: nothing is sent. None when the trace shows none (the
    remote could not be reached)."""
    with tempfile.TemporaryDirectory(prefix="uniflow-push-") as tmp:
        trace = Path(tmp) / "packets"
        env = {IN_PUSH_ENV: "1", "GIT_TRACE_PACKET": str(trace)}
        try:
            run_git(
                repo.root,
                "push",
                "--dry-run",
                "--porcelain",
                "--no-follow-tags",
                remote,
                *specs,
                env=env,
                check=False,
            )
        except RemoteError:
            return None
        try:
            with open(trace, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    found = _ADVERTISED.search(line.rstrip("\n"))
                    if found:
                        return frozenset(found["caps"].split())
        except FileNotFoundError:
            return None
    return None


#: why git (``--porcelain``) says a ref was refused because the remote moved meanwhile: it
#: is not an ancestor (non-fast-forward; fetch first: we lack the remote's commit) or the
#: remote no longer holds the value leased (stale info)
_MOVED_REASONS = ("non-fast-forward", "fetch first", "stale info")


def _push_refusal(proc: subprocess.CompletedProcess[str], remote: str) -> UniflowError:
    """The error for a failed ``git push --porcelain``: version tags the remote holds with
    other content, else lifecycle or stage refs git says the remote moved meanwhile, give
    the documented :class:`PushRejectedError`; anything else is a :class:`RemoteError`."""
    # (remote ref, git's reason) per porcelain "!" line
    rejected = [(p[1].rpartition(":")[2], p[2]) for p in _status_lines(proc.stdout) if p[0] == "!"]
    tags = sorted({r for r, why in rejected if _is_tag(r) and "atomic" not in why})
    if tags:  # first: a version taken is not fixed by a pull
        return _tags_refused(tags, remote)
    moved = {r for r, why in rejected if any(k in why for k in _MOVED_REASONS)}
    stale = sorted({m for m in map(_model_of, moved) if m is not None})
    if stale:
        return _rejected(stale, remote)
    why = next((w for _r, w in rejected if "atomic" not in w), None)
    return RemoteError(f"git push to {remote!r} failed: {why or last_error(proc.stderr)}")


def _overtaken(
    repo: Repository, remote: str, specs: list[str], seen: dict[str, str], new_tags: dict[str, str]
) -> PushRejectedError | None:
    """After a push the remote refused for a reason git did not name (``[remote rejected]
    (atomic transaction failed)``: another push landed between the remote's ref
    advertisement and our update, and the remote's ``cannot lock ref`` is on stderr, or not
    relayed at all): list the remote again. A version tag that appeared there with other
    content is the version-tag refusal; else a lifecycle or stage ref we pushed that moved
    since ``seen`` is the documented "someone promoted meanwhile"; else None."""
    try:
        now = ls_remote(repo.root, remote)
    except UniflowError:
        return None  # the remote cannot be listed: the push's own error says more
    pushed = [spec.rpartition(":")[2] for spec in specs]
    tags = sorted(r for r in pushed if r in new_tags and now.get(r) not in (None, new_tags[r]))
    if tags:  # first: a version taken is not fixed by a pull
        return _tags_refused(tags, remote)
    moved = sorted({m for r in pushed if now.get(r) != seen.get(r) and (m := _model_of(r)) is not None})
    return _rejected(moved, remote) if moved else None


def _model_of(ref: str) -> str | None:
    """The model of a lifecycle or stage ref (``refs/uniflow/models/<m>``,
    ``refs/uniflow/stages/<m>/<stage>``); None for any other ref."""
    parsed = parse_ref(ref)
    return parsed.model if parsed is not None and parsed.kind in ("lifecycle", "stage") else None


def _is_tag(spec: str) -> bool:
    """Whether the refspec or ref ``spec`` names a version tag (its source side, if any)."""
    return spec.startswith(f"{TAGS_PREFIX}/")


def _tags_refused(tags: list[str], remote: str) -> PushRejectedError:
    return PushRejectedError(
        f"{remote!r} refused version tag(s) {', '.join(_tag_names(tags))}: "
        "they exist there with different content; register yours under a new version"
    )


def _tag_names(refs: list[str]) -> list[str]:
    """The short names (``models/<m>/<v>``) of version tag refs."""
    out = []
    for ref in refs:
        parsed = parse_ref(ref)
        out.append(tag_name(parsed.model, parsed.version or "") if parsed is not None else ref)
    return out
