"""Lifecycle commits and version tags that come from elsewhere, checked against the policy
before they count: what ``uniflow pull`` asks per model, and what the server's ``pre-receive``
hook asks of every pushed registry ref.

Both verify the incoming lifecycle (:func:`uniflow._ops.authority.verify_lifecycle` from the
incoming head, against the policy chain in force here); an event fails on an unknown or
revoked key, missing approvals, a skipped stage, an unsigned event where the stage requires a
signature. Events already accepted here are not judged again.

A pull takes the longest valid prefix (:func:`admitted_prefix`): the incoming commits before
the first one that fails come in, that one and every later one (each builds on it) are
refused, one line each. :func:`pull_check` is the callable :func:`uniflow.sharing.pull.pull`
takes (``check=``): sharing cannot import this layer, so the facade and the CLI pass it in,
as promote-on-merge gets :func:`uniflow._ops.enforce.promote`. A push is atomic, so the
server refuses a ref update as a whole when any event it brings fails (:func:`check_push`).

:func:`check_push` is the pre-receive check. Git runs ``pre-receive`` before any ref moves,
with the pushed objects in a quarantine directory (``GIT_OBJECT_DIRECTORY``, the repository's
own objects in ``GIT_ALTERNATE_OBJECT_DIRECTORIES``). The check builds an *overlay*: a
temporary bare repository whose object store is those directories (``objects/info/alternates``)
and whose refs are the repository's with the pushed updates applied, and verifies there, so
a push that brings a new policy on the default branch and a promotion together is judged as
the repository would be after it. The trust root is the one ``uniflow hooks install --server``
pinned in the repository (``--trust-root FILE``, kept where
:func:`~uniflow._records.policyfiles.server_trust_root_path` says), else the
first policy the repository held (trust on first use, recorded in the bare repository).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import RepositoryError, UsageError
from .._records.git import GitRepo
from .._records.paths import store_dir
from .._records.policyfiles import (
    default_branch,
    read_trust_root,
    record_trust_root,
    server_trust_root_path,
    trust_root_path,
)
from .._records.refs import LIFECYCLE_PREFIX, TAGS_PREFIX
from .._records.versions import is_model_name, is_version
from .authority import EventCheck, LifecycleVerdicts, policy_chain, verify_lifecycle
from .policy import load_trust_root

if TYPE_CHECKING:
    from .._authority.rotation import PolicyChain, TrustRoot
    from .._repo import Repository

__all__ = [
    "RefUpdate",
    "admitted_prefix",
    "check_push",
    "incoming_failures",
    "pull_check",
    "server_root",
    "server_trust_root",
]

#: incoming failures named per model (the rest are counted)
_SHOWN = 20


def _none(sha: str) -> bool:
    """Git's "no object" id in a ref update (all zeros, SHA-1 or SHA-256)."""
    return not sha.strip("0")


def incoming_failures(
    repo: Repository, model: str, head: str, chain: PolicyChain, known: Iterable[str] = ()
) -> list[str]:
    """One line per event of the lifecycle ending at ``head`` that fails the policy and is
    not among ``known`` (commits already accepted), plus any problem with the lifecycle as a
    whole (a head state its events do not explain). Empty: the lifecycle may come in."""
    seen = set(known)
    failures = _new_failures(verify_lifecycle(repo, model, chain=chain, head=head), seen)
    if len(failures) > _SHOWN:
        failures = [*failures[:_SHOWN], f"and {len(failures) - _SHOWN} more failing event(s)"]
    return failures


def _new_failures(verdicts: LifecycleVerdicts, seen: set[str]) -> list[str]:
    out = [f"{verdicts.model}: {p}" for p in verdicts.problems]
    out += [_event_line(e, e.reason) for e in verdicts.events if not e.ok and e.commit not in seen]
    return out


def _event_line(e: EventCheck, why: str) -> str:
    """``ACTION VERSION (lifecycle commit SHA12, signed by WHO): WHY``."""
    signed = f", signed by {e.signer}" if e.signer else ", not signed by an allowed signer"
    return f"{e.action} {e.version} (lifecycle commit {e.commit[:12]}{signed}): {why}"


def admitted_prefix(
    repo: Repository, model: str, head: str, chain: PolicyChain, known: Iterable[str] = ()
) -> tuple[str | None, tuple[str, ...]]:
    """What a pull may take of the lifecycle ending at ``head``: ``(newest, refused)``.

    ``newest`` is the newest commit of the longest valid prefix: every commit up to it that
    is not among ``known`` (commits already accepted here) obeys the policy, and the
    lifecycle ending there has no problem as a whole. It is ``head`` when all of it may come
    in, None when not one new commit may. ``refused`` has one line per commit after
    ``newest``, oldest first: the first one's own failure, and for each later one that it
    comes after the refused commit (and its own failure, if it has one)."""
    seen = set(known)
    lines: dict[str, str] = {}
    candidate = head
    while True:  # each round cuts at least one commit off: bounded by the chain's length
        verdicts = verify_lifecycle(repo, model, chain=chain, head=candidate)
        events = verdicts.events
        new = [i for i, e in enumerate(events) if e.commit not in seen]
        bad = next((i for i in new if not events[i].ok), None)
        if bad is None and new and verdicts.problems:
            bad = new[-1]  # the head's state is not what its events replay to
        if bad is None:
            return candidate, _shown(lines)
        lines = {**_refused_lines(events, bad, verdicts.problems), **lines}
        if bad == 0 or events[bad - 1].commit in seen:
            return None, _shown(lines)
        candidate = events[bad - 1].commit


def _refused_lines(events: tuple[EventCheck, ...], bad: int, problems: tuple[str, ...]) -> dict[str, str]:
    """``{commit: line}`` for ``events[bad:]``: the refused one, then those after it."""
    first = events[bad]
    out = {first.commit: _event_line(first, first.reason if not first.ok else problems[0])}
    after = f"comes after the refused lifecycle commit {first.commit[:12]}"
    for e in events[bad + 1 :]:
        out[e.commit] = _event_line(e, after if e.ok else f"{after}; and on its own: {e.reason}")
    return out


def _shown(lines: dict[str, str]) -> tuple[str, ...]:
    out = list(lines.values())
    if len(out) > _SHOWN:
        out = [*out[:_SHOWN], f"and {len(out) - _SHOWN} more refused lifecycle commit(s)"]
    return tuple(out)


def pull_check(
    repo: Repository, trust_root: str | os.PathLike[str] | TrustRoot | None = None
) -> Callable[[str, str], tuple[str | None, tuple[str, ...]]] | None:
    """The policy check ``pull`` runs on each model's remote head before integrating it:
    ``check(model, remote_head)`` is ``(newest, refused)`` of :func:`admitted_prefix`, judged
    against what the local lifecycle already holds. None when no policy is in force here:
    pull then integrates as it always did."""
    chain = policy_chain(repo, trust_root)
    if chain is None:
        return None
    policy = chain

    def check(model: str, remote_head: str) -> tuple[str | None, tuple[str, ...]]:
        local = repo.lifecycle.head(model)
        known = repo.lifecycle.chain(local, model) if local else []
        return admitted_prefix(repo, model, remote_head, policy, known)

    return check


# ---------------------------------------------------------------------- pre-receive
@dataclass(frozen=True)
class RefUpdate:
    """One line git gives ``pre-receive``: ``old`` and ``new`` commit ids (zeros: none), ``ref``."""

    old: str
    new: str
    ref: str

    @classmethod
    def parse(cls, line: str) -> RefUpdate:
        parts = line.split()
        if len(parts) != 3:
            raise UsageError(f"pre-receive: not an 'OLD NEW REF' line: {line[:200]!r}")
        return cls(*parts)


def _objects_dirs(bare: Path, env: Mapping[str, str]) -> list[str]:
    """The object directories a pushed ref's objects can be in: the quarantine directory git
    made for this push, its alternates (the repository's own store), the repository's store."""
    dirs = []
    quarantine = env.get("GIT_OBJECT_DIRECTORY")
    if quarantine:
        dirs.append(quarantine)
    dirs += [d for d in env.get("GIT_ALTERNATE_OBJECT_DIRECTORIES", "").split(os.pathsep) if d]
    dirs.append(str(bare / "objects"))
    return [str((bare / d).resolve()) for d in dict.fromkeys(dirs)]


def _overlay(bare: Path, updates: list[RefUpdate], env: Mapping[str, str], where: Path) -> Path:
    """A bare repository at ``where`` that reads ``bare``'s objects (and the pushed ones) and
    holds ``bare``'s refs with ``updates`` applied (see the module)."""
    real = GitRepo(bare, bare=True)
    refs = {f"refs/{name}": sha for name, sha in real.refs("refs").items()}
    head_target = _head_target(bare)
    real.close()
    for u in updates:
        if _none(u.new):
            refs.pop(u.ref, None)
        else:
            refs[u.ref] = u.new
    (where / "objects" / "info").mkdir(parents=True)
    (where / "refs" / "heads").mkdir(parents=True)
    (where / "refs" / "tags").mkdir(parents=True)
    (where / "objects" / "info" / "alternates").write_text(
        "".join(d + "\n" for d in _objects_dirs(bare, env))
    )
    (where / "packed-refs").write_text("".join(f"{sha} {ref}\n" for ref, sha in sorted(refs.items())))
    (where / "HEAD").write_text(f"ref: {head_target}\n")
    branch = head_target.removeprefix("refs/heads/")
    (where / "config").write_text(
        f"[core]\n\trepositoryformatversion = 0\n\tbare = true\n[init]\n\tdefaultBranch = {branch}\n"
    )
    recorded = trust_root_path(real)
    if recorded.is_file():
        target = store_dir(where) / recorded.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(recorded, target)
    return where


def _head_target(bare: Path) -> str:
    try:
        text = (bare / "HEAD").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "refs/heads/main"
    target = text[len("ref:") :].strip() if text.startswith("ref:") else ""
    return target if target.startswith("refs/heads/") else "refs/heads/main"


def server_trust_root(bare: Path) -> TrustRoot | None:
    """The trust root ``hooks install --server --trust-root FILE`` pinned in ``bare``, or None
    (then the first policy the repository held is the root, recorded on first use)."""
    pinned = server_trust_root_path(bare)
    return load_trust_root(pinned) if pinned.is_file() else None


def server_root(bare: str | os.PathLike[str]) -> str | None:
    """The trust root the server hook of ``bare`` verifies from, as one line: the pinned
    file, else the first-seen policy (recorded now if the default branch has a policy and
    nothing was recorded); None when there is no policy yet (recorded on the first push
    that brings one)."""
    from .._repo import Repository

    root = Path(bare).resolve()
    chain = _server_chain(Repository(GitRepo(root, bare=True)), root)
    return chain.root.source if chain is not None else None


def _server_chain(repo: Repository, bare: Path) -> PolicyChain | None:
    """The policy chain a server repository is held to; None without a policy (or without
    any commit on its default branch yet)."""
    try:
        default_branch(repo.git)
    except RepositoryError:
        return None  # an empty repository: nothing to read a policy from
    return policy_chain(repo, server_trust_root(bare))


def check_push(bare: str | os.PathLike[str], lines: Iterable[str], env: Mapping[str, str]) -> list[str]:
    """What ``pre-receive`` refuses in a push to the bare repository ``bare``: one line per
    refused ref and reason (empty: accept). ``lines`` are git's ``OLD NEW REF`` lines, ``env``
    the hook's environment (the quarantine directories). Without a policy on the default
    branch (after the push) nothing is refused."""
    from .._repo import Repository

    root = Path(bare).resolve()
    updates = [RefUpdate.parse(line) for line in lines if line.strip()]
    watched = [u for u in updates if u.ref.startswith((f"{LIFECYCLE_PREFIX}/", f"{TAGS_PREFIX}/"))]
    if not watched:
        return []
    with tempfile.TemporaryDirectory(prefix="uniflow-pre-receive-") as tmp:
        where = _overlay(root, updates, env, Path(tmp) / "overlay.git")
        repo = Repository(GitRepo(where, bare=True))
        chain = _server_chain(repo, root)
        if chain is None:
            return []
        _keep_first_use(root, where)
        return _refusals(repo, chain, watched)


def _keep_first_use(bare: Path, overlay: Path) -> None:
    """Record in ``bare`` the first-seen trust root the overlay recorded (trust on first use)."""
    real = GitRepo(bare, bare=True)
    try:
        seen = read_trust_root(GitRepo(overlay, bare=True))
        if seen is not None and read_trust_root(real) is None:
            record_trust_root(real, seen)
    finally:
        real.close()


def _refusals(repo: Repository, chain: PolicyChain, updates: list[RefUpdate]) -> list[str]:
    out: list[str] = []
    verdicts: dict[str, LifecycleVerdicts] = {}

    def verdicts_of(model: str) -> LifecycleVerdicts:
        if model not in verdicts:
            verdicts[model] = verify_lifecycle(repo, model, chain=chain)
        return verdicts[model]

    for u in updates:
        if u.ref.startswith(f"{LIFECYCLE_PREFIX}/"):
            out += [f"{u.ref}: {why}" for why in _lifecycle_refusals(repo, chain, u)]
            continue
        model, _, version = u.ref[len(TAGS_PREFIX) + 1 :].partition("/")
        if not (is_model_name(model) and is_version(version)):
            continue  # not a version tag: every read ignores it
        if not _none(u.old):
            out.append(f"{u.ref}: a version tag never moves or goes away under a policy")
            continue
        tag = verdicts_of(model).tags.get(version)
        if tag is not None and not tag.ok:
            out.append(f"{u.ref}: {tag.reason}")
    return out


def _lifecycle_refusals(repo: Repository, chain: PolicyChain, u: RefUpdate) -> list[str]:
    model = u.ref[len(LIFECYCLE_PREFIX) + 1 :]
    if not is_model_name(model):
        return []
    if _none(u.new):
        return ["a lifecycle is never deleted under a policy"]
    known: list[str] = []
    if not _none(u.old):
        known = repo.lifecycle.chain(u.old, model)
        if u.old not in repo.lifecycle.chain(u.new, model):
            return [f"rewrites the lifecycle: {u.old[:12]} is not in the history of {u.new[:12]}"]
    return incoming_failures(repo, model, u.new, chain, known)
