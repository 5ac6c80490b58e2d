"""Push and pull a registry: refs through a Git remote, chunks through a blob remote.

Refs travel with the ``git`` binary (``git push`` / ``git fetch`` with explicit refspecs;
see docs/sharing.md for why), bytes with :mod:`uniflow._remote`.

Ordering (DESIGN invariant 1, across machines):

* **push**: lifecycle divergence is checked first (nothing is sent when the push would be
  refused), then the chunks of every version tag the Git remote lacks are uploaded, and only
  then are the tags, lifecycle refs and stage pointers pushed, in one atomic ``git push``.
  A Git remote therefore never shows a version whose bytes are not on the blob remote.
* **stage pointers are derived, never copied**: the pointers pushed are computed from the
  lifecycle state of the very head being pushed (and the version tags), not read from the
  local pointer refs, which a crash between a lifecycle move and the pointer update may
  have left stale; those local refs are resynced on the way.
* **lifecycle refs move only by fast-forward**: they are pushed without ``+``, so Git refuses
  a push made stale by someone else's promotion; that refusal is a :class:`PushRejectedError`.
  Stage pointers (derived, not ancestors of one another) are pushed with
  ``--force-with-lease`` on the value seen, in the same atomic push.
* **pull**: tags and lifecycle refs are fetched (lifecycle refs into
  ``refs/uniflow/remotes/<remote>/models/<model>``), each local lifecycle ref is moved by CAS
  when it fast-forwards; local events the remote lacks are replayed on top of the remote's
  when they touch other versions and stages (so ``git log`` shows both), and a real conflict
  is reported naming the model, with ``--ours`` / ``--theirs`` to settle it. Stage pointers
  are then recomputed, and chunks fetched for what was asked.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from . import _testhooks
from ._errors import (
    ConcurrencyError,
    IntegrityError,
    ModelNotFoundError,
    NotFoundError,
    PushRejectedError,
    RemoteError,
    RepositoryError,
    UsageError,
)
from ._lifecycle import lifecycle_ref, promote_transition, register_transition, stage_ref, tag_ref
from ._manifest import file_records
from ._naming import validate_model_name, validate_version
from ._versions import is_model_name
from ._remote import (
    JOBS,
    BlobRemote,
    TransferStats,
    attach_fetcher,
    download_chunks,
    get_remote_spec,
    open_remote,
    upload_chunks,
    validate_remote_name,
)

if TYPE_CHECKING:  # pragma: no cover
    from ._lifecycle import LifecycleState, Transition
    from ._registry import ModelRegistry

__all__ = [
    "GIT_TIMEOUT",
    "attach_fetcher",
    "blob_remote_for",
    "chunks_of",
    "git_remotes",
    "no_blob_remote",
    "pull",
    "push",
    "resolve_git_remote",
    "run_git",
    "split_remote_and_names",
    "tracking_ref",
]

log = logging.getLogger("uniflow.sharing")

#: seconds any one git network command may take
GIT_TIMEOUT = 900.0
ZERO = "0" * 40
IN_PUSH_ENV = "UNIFLOW_IN_PUSH"
ProgressFn = Callable[[int, int], None]
Resolve = Literal["ours", "theirs"] | None


# ---------------------------------------------------------------------- git binary
def run_git(
    root: os.PathLike[str] | str,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = GIT_TIMEOUT,
    check: bool = True,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``git`` in ``root``; a failure becomes :class:`RemoteError` with git's last error line."""
    full_env = {**os.environ, "LC_ALL": "C", "LANGUAGE": "C", **(env or {})}
    full_env.setdefault("GIT_TERMINAL_PROMPT", "0")
    try:
        proc = subprocess.run(
            ["git", *args], cwd=root, env=full_env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, check=False,
        )
    except FileNotFoundError as exc:
        raise RemoteError("the git executable was not found on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise RemoteError(f"{what or 'git ' + args[0]} timed out after {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        raise RemoteError(f"{what or 'git ' + args[0]} failed: {_last_error(proc.stderr)}")
    return proc


def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith(("fatal:", "error:"))]
    return (errors or lines or ["(no message)"])[-1]


def git_remotes(registry: ModelRegistry) -> list[str]:
    return run_git(registry.root, "remote").stdout.split()


def resolve_git_remote(registry: ModelRegistry, remote: str | None) -> str:
    """The Git remote to use: ``remote``, else ``origin``, else the only one."""
    remotes = git_remotes(registry)
    if remote is not None:
        validate_remote_name(remote)
        if remote not in remotes:
            raise RemoteError(f"no git remote named {remote!r} (add it with `git remote add {remote} URL`)")
        return remote
    if "origin" in remotes:
        return "origin"
    if len(remotes) == 1:
        return remotes[0]
    if not remotes:
        raise RemoteError("this repository has no git remote (add one with `git remote add origin URL`)")
    raise RemoteError(f"several git remotes ({', '.join(remotes)}) and none named origin: name the one to use")


def split_remote_and_names(registry: ModelRegistry, args: Iterable[str]) -> tuple[str | None, list[str]]:
    """``[REMOTE] [NAME...]``: the first word is a remote when a Git remote has that name."""
    words = list(args)
    if words and words[0] in git_remotes(registry):
        return words[0], words[1:]
    return None, words


def tracking_ref(remote: str, model: str) -> str:
    """Where the remote's lifecycle of ``model`` is kept locally (read by gc, compared by push)."""
    return f"refs/uniflow/remotes/{remote}/models/{model}"


def _ls_remote(registry: ModelRegistry, remote: str) -> dict[str, str]:
    out = run_git(
        registry.root, "ls-remote", "--refs", remote, "refs/tags/models/*", "refs/uniflow/models/*",
        "refs/uniflow/stages/*", what=f"listing refs of git remote {remote!r}",
    ).stdout
    refs: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if len(sha) == 40 and name.startswith(("refs/tags/models/", "refs/uniflow/models/", "refs/uniflow/stages/")):
            refs[name] = sha
    return refs


def _fetch(registry: ModelRegistry, remote: str, names: list[str] | None, *, tags: bool, force_tags: bool) -> None:
    specs = [f"+refs/uniflow/models/*:refs/uniflow/remotes/{remote}/models/*"]
    if tags:
        plus = "+" if force_tags else ""
        if names:
            specs += [f"{plus}refs/tags/models/{n}/*:refs/tags/models/{n}/*" for n in names]
        else:
            specs.append(f"{plus}refs/tags/models/*:refs/tags/models/*")
    proc = run_git(
        registry.root, "fetch", "--no-tags", "--no-prune", "--no-recurse-submodules", "--no-write-fetch-head",
        remote, *specs, check=False,
    )
    if proc.returncode != 0:
        clobber = [ln for ln in proc.stderr.splitlines() if "would clobber existing tag" in ln]
        if clobber:
            tags_hit = sorted({w for ln in clobber for w in ln.split() if w.startswith("models/")})
            raise RemoteError(
                f"version tags differ between this clone and {remote!r}: {', '.join(tags_hit[:5])}; a version was "
                "registered twice with the same number — rename yours (register it under a new version), "
                "delete the local tag, then pull again"
            )
        raise RemoteError(f"git fetch from {remote!r} failed: {_last_error(proc.stderr)}")


# ---------------------------------------------------------------------- lifecycle chains
def _chain(registry: ModelRegistry, head: str | None, limit: int = 1_000_000, model: str = "") -> list[str]:
    """First-parent chain from ``head`` back to the first event (newest first).

    A missing object or one that is not a commit is an :class:`IntegrityError` naming it.
    """
    out: list[str] = []
    sha = head
    whose = f" of model {model!r}" if model else ""
    while sha and len(out) < limit:
        out.append(sha)
        try:
            commit = registry.git.read_commit(sha)
        except KeyError as exc:
            raise IntegrityError(f"lifecycle commit {sha[:12]}{whose} is missing") from exc
        except RepositoryError as exc:
            raise IntegrityError(f"lifecycle{whose}: {exc}") from exc
        sha = commit.parents[0].decode("ascii", "replace") if commit.parents else None
    return out


def _since(chain: list[str], base: str | None) -> list[str]:
    """Commits of ``chain`` newer than ``base``, oldest first."""
    out = []
    for sha in chain:
        if sha == base:
            break
        out.append(sha)
    out.reverse()
    return out


def _event(registry: ModelRegistry, model: str, sha: str) -> dict[str, Any]:
    """The validated event of lifecycle commit ``sha`` (IntegrityError naming it otherwise)."""
    return registry.lifecycle.event(model, sha)


def _check_incoming(registry: ModelRegistry, model: str, incoming: list[str]) -> None:
    """Validate every remote lifecycle commit a pull would bring in, before any is used.

    Each commit's state and event must pass the read gate (types, version strings, stage
    names valid and declared here, one holder per single-holder stage), and every version
    they name must have a tag here (the fetch brought the remote's tags first). Raises
    :class:`IntegrityError` naming the model and the commit.
    """
    existing = set(registry.index.version_names(model))
    for sha in incoming:  # bounded by the chain's length limit
        state = registry.lifecycle.state(model, sha, from_git=True)  # history: not worth caching
        ev = _event(registry, model, sha)
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
    registry: ModelRegistry, model: str, remote_head: str, resolve: Resolve, remote: str
) -> tuple[str, str | None]:
    """Bring the local lifecycle of ``model`` up to ``remote_head``.

    Returns ``(outcome, conflict)``: outcome is one of ``unchanged``, ``created``,
    ``fast-forward``, ``ahead``, ``replayed``, ``reset``, ``diverged``.
    """
    git = registry.git
    ref = lifecycle_ref(model)
    local = git.ref(ref)
    if local == remote_head:
        return "unchanged", None
    # Validate what would come in (every remote commit the local chain lacks) before use.
    remote_chain = _chain(registry, remote_head, model=model)
    local_chain = _chain(registry, local, model=model) if local else []
    local_set = set(local_chain)
    _check_incoming(registry, model, [c for c in remote_chain if c not in local_set])
    if local is None:
        _cas(registry, model, None, remote_head)
        return "created", None
    if local in remote_chain:
        _cas(registry, model, local, remote_head)
        return "fast-forward", None
    if remote_head in local_set:
        return "ahead", None
    remote_set = set(remote_chain)
    base = next((c for c in local_chain if c in remote_set), None)
    mine = [(_event(registry, model, c), c) for c in _since(local_chain, base)]
    theirs = [_event(registry, model, c) for c in _since(remote_chain, base)]
    single = lambda s: registry.stages().get(s, True)
    if resolve == "theirs":
        _cas(registry, model, local, remote_head)
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
    known = set(registry.index.version_names(model))
    trial = registry.lifecycle.state(model, remote_head)
    transitions = []
    for ev, sha in mine:
        if ev.get("version") not in known:
            raise RemoteError(f"model {model!r}: cannot replay {_describe(ev)}: version tag missing locally")
        tr = _replay_transition(ev, sha, single)
        tr(trial)
        transitions.append((tr, _actor(ev, git.identity())))
    _cas(registry, model, local, remote_head)
    for tr, actor in transitions:
        registry.lifecycle.apply(model, tr, actor)
    return "replayed", None


def _cas(registry: ModelRegistry, model: str, old: str | None, new: str) -> None:
    if not registry.git.cas_ref(lifecycle_ref(model), old, new, message="uniflow: pull"):
        raise ConcurrencyError(f"the lifecycle of model {model!r} changed during the pull; run `uniflow pull` again")


# ---------------------------------------------------------------------- chunks
def upload_versions(
    registry: ModelRegistry, blob_remote: Any, versions: list[tuple[str, str]], *, jobs: int, progress: Any
) -> TransferStats:
    """Upload the chunks of ``(model, version)`` pairs that the blob remote lacks."""
    digests: list[str] = []
    context: dict[str, str] = {}
    for m, v in versions:
        d, c = chunks_of(registry, m, [v])
        digests += d
        context.update(c)
    return upload_chunks(registry.store, blob_remote, digests, jobs=jobs, progress=progress, context=context)


def chunks_of(registry: ModelRegistry, model: str, versions: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    digests: list[str] = []
    context: dict[str, str] = {}
    for v in versions:
        _, m = registry.index.manifest(model, v)
        for rel, rec, _mode in file_records(m):
            for c in rec.chunks:
                digests.append(c.digest)
                context.setdefault(c.digest, f"model {model!r} version {v!r} file {rel!r}")
    return digests, context


def blob_remote_for(registry: ModelRegistry, name: str | None, git_remote: str | None) -> BlobRemote | None:
    if name is not None:
        spec = get_remote_spec(registry, name)
        if spec is None:
            raise RemoteError(f"no blob remote named {name!r} (add one with `uniflow remote add {name} URL`)")
    else:
        spec = get_remote_spec(registry, git_remote) if git_remote else None
        spec = spec or get_remote_spec(registry, None)
    return open_remote(spec, registry.root) if spec is not None else None


def no_blob_remote(git_remote: str) -> RemoteError:
    return RemoteError(
        f"no blob remote configured for {git_remote!r}: add one with `uniflow remote add {git_remote} URL` "
        "and commit .uniflow/config.toml"
    )


def _select(registry: ModelRegistry, names: Iterable[str] | None) -> list[str]:
    if names:
        return sorted({validate_model_name(n) for n in names})
    return registry.index.models()


# ---------------------------------------------------------------------- push
def push(
    registry: ModelRegistry,
    remote: str | None = None,
    names: Iterable[str] | None = None,
    *,
    blob: str | None = None,
    all_versions: bool = False,
    jobs: int = JOBS,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Upload missing chunks to the blob remote, then push tags, lifecycle and stage refs.

    ``remote`` is the Git remote (default ``origin``); the blob remote is ``blob``, else the
    one named like the Git remote, else the only one. ``all_versions`` re-checks the chunks of
    every version, not only of tags the Git remote lacks. Raises :class:`PushRejectedError`
    when someone else moved a lifecycle ref meanwhile (run :func:`pull`, then push again).
    """
    wanted = list(names or [])
    models = _select(registry, wanted)
    for m in wanted:
        if not registry.index.version_names(m) and registry.lifecycle.head(m) is None:
            raise ModelNotFoundError(m)
    git_remote = resolve_git_remote(registry, remote)
    remote_refs = _ls_remote(registry, git_remote)
    git = registry.git
    heads = {m: registry.lifecycle.head(m) for m in models}  # the lifecycle pushed, read once
    for m, head in heads.items():
        if head is not None:
            registry.lifecycle.sync_pointers(m)  # repair local pointers a crash left stale

    # 1. version tags the Git remote lacks; one it holds with other content is refused
    new_tags: dict[str, str] = {}
    for m in models:
        for v, sha in registry.index.versions(m).items():
            theirs = remote_refs.get(tag_ref(m, v))
            if theirs is None:
                new_tags[tag_ref(m, v)] = sha
            elif theirs != sha:
                raise PushRejectedError(
                    f"version {m} {v} exists on {git_remote!r} with different content; versions are immutable: "
                    "register yours under a new version"
                )
    # 2. lifecycle refs: refuse before sending anything when a push would not fast-forward
    lifecycle: dict[str, str] = {}
    behind: list[str] = []
    diverged: list[str] = []
    fetched = False
    for m in models:
        local, theirs = heads[m], remote_refs.get(lifecycle_ref(m))
        if local is None or local == theirs:
            continue
        if theirs is None:
            lifecycle[m] = local
            continue
        if not git.has_object(theirs) and not fetched:
            _fetch(registry, git_remote, None, tags=False, force_tags=False)
            fetched = True
        if git.has_object(theirs) and theirs in _chain(registry, local):
            lifecycle[m] = local
        elif git.has_object(theirs) and local in _chain(registry, theirs):
            behind.append(m)
        else:
            diverged.append(m)
    if diverged:
        raise _rejected(diverged, git_remote)

    # 3. the bytes of the new versions (all versions with all_versions), before any ref
    upload: list[tuple[str, str]] = []
    for m in models:
        for v in registry.index.version_names(m):
            if all_versions or tag_ref(m, v) in new_tags:
                upload.append((m, v))
    stats = TransferStats()
    blob_remote = blob_remote_for(registry, blob, git_remote)
    if upload:
        if blob_remote is None:
            raise no_blob_remote(git_remote)
        stats = upload_versions(registry, blob_remote, upload, jobs=jobs, progress=progress)

    # 4. refs, atomically: tags, lifecycle (fast-forward only), stage pointers (leased)
    specs: list[str] = [f"{r}:{r}" for r in sorted(new_tags)]
    leases: list[str] = []
    for m in models:
        if m in behind:
            continue
        if m not in lifecycle and heads[m] != remote_refs.get(lifecycle_ref(m)):
            continue
        if m in lifecycle:
            specs.append(f"{lifecycle[m]}:{lifecycle_ref(m)}")  # the head the pointers derive from
        prefix = f"refs/uniflow/stages/{m}/"
        mine = _derived_pointers(registry, m, heads[m])
        pointers = {r: s for r, s in remote_refs.items() if r.startswith(prefix)}
        for r, sha in sorted(mine.items()):
            if pointers.get(r) != sha:
                specs.append(f"{r}:{r}")
                leases.append(f"--force-with-lease={r}:{pointers.get(r, '')}")
        for r, sha in sorted(pointers.items()):
            if r not in mine:
                specs.append(f":{r}")
                leases.append(f"--force-with-lease={r}:{sha}")
    if specs:
        _git_push(registry, git_remote, specs, leases)
        _testhooks.point("push-after-git-push")
        for m, sha in lifecycle.items():
            track = tracking_ref(git_remote, m)
            git.cas_ref(track, git.ref(track), sha, message="uniflow: push")
    return {
        "remote": git_remote,
        "blob_remote": blob_remote.name if blob_remote is not None else None,
        "models": models if wanted else None,
        "versions": sorted(r[len("refs/tags/models/") :] for r in new_tags),
        "lifecycle": sorted(lifecycle),
        "behind": behind,
        "refs": len(specs),
        "chunks": stats.to_dict(),
        "up_to_date": not specs and not stats.transferred,
    }


def _derived_pointers(registry: ModelRegistry, model: str, head: str | None) -> dict[str, str]:
    """``{stage ref: tag sha}`` that the lifecycle state at ``head`` implies: each stage
    holding a single version points at that version's tag (as ``sync_pointers`` sets them)."""
    if head is None:
        return {}
    state = registry.lifecycle.state(model, head)
    out: dict[str, str] = {}
    for version, stage in sorted(state.stage_of.items()):
        if registry.lifecycle.single_holder(stage):
            tag = registry.index.tag_sha(model, version)
            if tag:
                out[stage_ref(model, stage)] = tag
    return out


def _rejected(models: list[str], remote: str) -> PushRejectedError:
    names = ", ".join(repr(m) for m in models)
    return PushRejectedError(
        f"push rejected: {remote!r} has lifecycle events for model {names} that you do not have "
        "(someone promoted meanwhile); run `uniflow pull`, then push again"
    )


def _git_push(registry: ModelRegistry, remote: str, specs: list[str], leases: list[str]) -> None:
    env = {IN_PUSH_ENV: "1"}

    def run(refspecs: list[str], atomic: bool) -> subprocess.CompletedProcess[str]:
        flags = ["--porcelain", "--no-follow-tags", *(["--atomic"] if atomic else []), *leases]
        return run_git(registry.root, "push", *flags, remote, *refspecs, env=env, check=False)

    proc = run(specs, True)
    if proc.returncode != 0 and "atomic" in proc.stderr and "support" in proc.stderr:
        # A server without atomic pushes: tags (their bytes are already there) first, then the rest.
        tags = [s for s in specs if s.startswith("refs/tags/")]
        rest = [s for s in specs if not s.startswith("refs/tags/")]
        proc = run(tags, False) if tags else proc
        if rest and (not tags or proc.returncode == 0):
            proc = run(rest, False)
    if proc.returncode == 0:
        return
    rejected: list[tuple[str, str]] = []
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0] == "!":
            rejected.append((parts[1].rpartition(":")[2], parts[2]))
    stale = sorted(
        {r.split("/")[3]
         for r, why in rejected
         if r.startswith("refs/uniflow/") and any(k in why for k in ("non-fast-forward", "fetch first", "stale"))}
    )
    if stale:
        raise _rejected(stale, remote)
    tags = [r for r, why in rejected if r.startswith("refs/tags/") and "atomic" not in why]
    if tags:
        raise PushRejectedError(
            f"{remote!r} refused version tag(s) {', '.join(t[len('refs/tags/'):] for t in tags)}: they exist there "
            "with different content; register yours under a new version"
        )
    why = next((w for _r, w in rejected if "atomic" not in w), None)
    raise RemoteError(f"git push to {remote!r} failed: {why or _last_error(proc.stderr)}")


# ---------------------------------------------------------------------- pull
def pull(
    registry: ModelRegistry,
    remote: str | None = None,
    names: Iterable[str] | None = None,
    *,
    all_versions: bool = False,
    stages: Iterable[str] | None = None,
    resolve: Resolve = None,
    blob: str | None = None,
    force_tags: bool = False,
    fetch_chunks: bool = True,
    jobs: int = JOBS,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Fetch tags and lifecycle refs, integrate them, recompute stage pointers, fetch chunks.

    Chunks are fetched for ``all_versions``, for the holders of ``stages``, or, when model
    ``names`` are given without either, for every version of those models; otherwise they
    are fetched on demand when a version is loaded. A lifecycle whose local and remote events
    both change the same version or stage raises :class:`RemoteError` naming the model;
    ``resolve="ours"`` replays the local events on top anyway, ``"theirs"`` drops them.

    Everything fetched is hostile until validated: each model's incoming lifecycle commits
    are checked (:func:`_check_incoming`) before its local ref moves. A model that fails is
    left as it was and listed in ``result["rejected"]`` (``{model: reason}``; also ref names
    this fetch brought that name no valid model or version: they are ignored by every
    read); the other models are integrated, then :class:`IntegrityError` is raised with a
    one-line summary and the result dict as its ``result`` attribute.
    """
    if resolve not in (None, "ours", "theirs"):
        raise UsageError(f"resolve must be 'ours', 'theirs' or None, not {resolve!r}")
    wanted = list(names or [])
    for n in wanted:
        validate_model_name(n)
    git_remote = resolve_git_remote(registry, remote)
    junk_before = _junk_ref_names(registry, git_remote)
    _fetch(registry, git_remote, wanted or None, tags=True, force_tags=force_tags)
    rejected: dict[str, str] = {
        ref: "not a valid model or version name; ignored"
        for ref in sorted(_junk_ref_names(registry, git_remote) - junk_before)
    }
    prefix = f"refs/uniflow/remotes/{git_remote}/models"
    remote_heads = {k: v for k, v in registry.git.refs(prefix).items() if "/" not in k and is_model_name(k)}
    models = sorted(set(wanted)) if wanted else sorted(set(registry.index.models()) | set(remote_heads))
    outcomes: dict[str, str] = {}
    conflicts: list[str] = []
    for m in models:
        try:
            if m in remote_heads:
                outcome, conflict = _integrate(registry, m, remote_heads[m], resolve, git_remote)
                outcomes[m] = outcome
                if conflict:
                    conflicts.append(conflict)
            if registry.lifecycle.head(m) is not None:
                registry.lifecycle.sync_pointers(m)
            elif m in wanted and not registry.index.version_names(m):
                raise NotFoundError(f"model {m!r} not found here nor on {git_remote!r}")
        except IntegrityError as exc:  # this model stays as it was; carry on with the others
            outcomes[m] = "rejected"
            rejected[m] = str(exc)

    stats = TransferStats()
    versions: list[tuple[str, str]] = []
    if fetch_chunks and (all_versions or stages or wanted):
        stage_names = [registry._stage(s) for s in stages or []]
        for m in models:
            if m in rejected or not registry.index.version_names(m):
                continue
            if stage_names:
                picked = {mv.version for s in stage_names for mv in registry.list_versions(m, stage=s)}
            else:
                picked = set(registry.index.version_names(m))
            versions += [(m, v) for v in sorted(picked)]
    if versions:
        blob_remote = blob_remote_for(registry, blob, git_remote)
        if blob_remote is None:
            raise no_blob_remote(git_remote)
        digests: list[str] = []
        for m, v in versions:
            digests += chunks_of(registry, m, [v])[0]
        stats = download_chunks(registry.store, blob_remote, digests, jobs=jobs, progress=progress)
    attach_fetcher(registry)
    result = {
        "remote": git_remote,
        "models": outcomes,
        "versions": [f"{m}/{v}" for m, v in versions],
        "chunks": stats.to_dict(),
        "rejected": rejected,
    }
    summary = _rejected_summary(rejected, git_remote)
    if conflicts:
        err: RemoteError = RemoteError(
            "pull stopped: " + "; ".join(conflicts) + ". Keep yours on top with `uniflow pull --ours "
            + " ".join(m for m in outcomes if outcomes[m] == "diverged")
            + "` or take theirs with `uniflow pull --theirs "
            + " ".join(m for m in outcomes if outcomes[m] == "diverged") + "`" + (f". Also {summary}" if summary else "")
        )
        err.result = result  # type: ignore[attr-defined]
        raise err
    if rejected:
        bad = IntegrityError(summary)
        bad.result = result  # type: ignore[attr-defined]
        raise bad
    return result


def _junk_ref_names(registry: ModelRegistry, remote: str) -> set[str]:
    """Refs pull writes (version tags, the remote's lifecycle refs) whose names are no valid
    model or version: every read ignores them; pull reports the ones its fetch brought."""
    prefix = f"refs/uniflow/remotes/{remote}/models"
    junk = {r for r in registry.index.invalid_ref_names() if r.startswith("refs/tags/")}
    junk |= {f"{prefix}/{m}" for m in registry.git.ref_names(prefix) if not is_model_name(m)}
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
    return f"pull from {remote!r} rejected " + "; ".join(parts) + (
        "; the other models were integrated" if models else ""
    )

