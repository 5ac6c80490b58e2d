"""The policy files as the default branch's history holds them, and the local trust root.

``.uniflow/policy.toml`` and ``.uniflow/allowed_signers`` count as they are on the repository's
*default branch* (:func:`default_branch`), whatever is checked out:

1. the branch ``refs/remotes/origin/HEAD`` points at (set by ``git clone``), else Git's
   ``init.defaultBranch``, else ``main``, else ``master``;
2. read from the local branch of that name, else from ``refs/remotes/origin/<name>`` (a CI
   checkout often has only the remote-tracking branch and a detached HEAD);
3. when no such branch exists, ``HEAD`` (a detached checkout whose branches were not fetched).

:func:`read_policy_history` walks that branch's *first-parent* history (what ``git log
--first-parent`` shows: the commits the branch itself went through, merges included, not the
commits of the branches merged into it), newest to oldest and bounded, and returns one
:class:`~uniflow._authority.rotation.PolicyRevision` per commit that changes either file,
oldest first. A shallow clone's history stops at its boundary, and says so. Each file read
is at most :data:`MAX_POLICY_FILE` bytes, refused from its header before it is inflated.
Each revision also carries the co-signature files of its tree (``*.sig`` directly in
:data:`SIGNATURES_DIR`, see :mod:`uniflow._authority.cosign`): at most
:data:`~uniflow._authority.cosign.MAX_COSIGNATURES`, each at most
:data:`~uniflow._authority.cosign.MAX_COSIGNATURE_BYTES`; a folder, symbolic link, submodule,
oversized or missing entry is carried with a one-line problem and never counts. Adding or
removing only signature files is not a revision.

:func:`signer_resolver` verifies who signed a revision's commit: the commit's raw bytes, read
from the object store and checked to hash to its id, against the allowed signers in force
before it (``ssh`` signatures in the ``git`` namespace, as ``git verify-commit`` checks them,
at the committer date).

The *trust root* of trust on first use is the commit of the first valid policy a clone saw,
recorded in ``<git common dir>/uniflow/trust-root`` (one commit id and a newline, written once,
atomically; validated whenever read: anything else there is an error naming the file).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .._authority.cosign import MAX_COSIGNATURE_BYTES, MAX_COSIGNATURES, CoSignature
from .._authority.rotation import PolicyRevision, SignerResolver
from .._errors import IntegrityError, PolicyError, RepositoryError, SignatureError
from .._naming import valid_ref_component
from .._storage.fsio import os_reason, write_immutable
from .git import GitRepo
from .paths import POLICY_PATH, SIGNERS_PATH, git_common_dir, store_dir

__all__ = [
    "MAX_COMMIT_BYTES",
    "MAX_HISTORY",
    "MAX_POLICY_FILE",
    "SIGNATURES_DIR",
    "TRUST_ROOT_FILE",
    "PolicyHistory",
    "commit_signers",
    "default_branch",
    "policy_blob_ids",
    "read_policy_history",
    "read_trust_root",
    "record_trust_root",
    "signer_resolver",
    "server_trust_root_path",
    "trust_root_path",
]

#: the folder of a revision's co-signatures (``<name>.sig``, armored SSH signatures)
SIGNATURES_DIR = ".uniflow/policy-signatures"
_SIGNATURES_NAME = SIGNATURES_DIR.split("/", 1)[1]
_FILE_MODES = (0o100644, 0o100755)
_ENTRY_KINDS = {
    0o040000: "a folder (nesting is refused)",
    0o120000: "a symbolic link",
    0o160000: "a submodule",
}
#: the largest policy file read from Git
MAX_POLICY_FILE = 1 << 20
#: the largest commit object whose signature is verified
MAX_COMMIT_BYTES = 1 << 20
#: the most commits of the default branch's first-parent history walked
MAX_HISTORY = 200_000
#: the trust-on-first-use record, in the chunk store's directory of the Git common dir
TRUST_ROOT_FILE = "trust-root"
_MAX_RECORD = 256
_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_ORIGIN = "refs/remotes/origin/"
_TREE_MODE = 0o040000


@dataclass(frozen=True)
class PolicyHistory:
    """The policy revisions of the default branch, oldest first.

    ``ref`` is what was read (``refs/heads/main``, ``refs/remotes/origin/main`` or ``HEAD``),
    ``tip`` its commit; ``shallow`` says the walk stopped at a shallow clone's boundary (its
    oldest revision then holds the files as at the boundary, changed there or earlier);
    ``stopped_at`` is the commit the walk was asked to stop at, when it was reached.
    """

    ref: str
    tip: str
    revisions: tuple[PolicyRevision, ...]
    shallow: bool = False
    stopped_at: str | None = None


# ---------------------------------------------------------------------- the default branch
def _symref_target(git: GitRepo, name: str) -> str | None:
    """Where the symbolic ref ``name`` (a loose file ``ref: TARGET``) points, or None."""
    try:
        with open(git_common_dir(git.git_dir) / name, "rb") as f:
            text = f.read(512).decode("utf-8", "replace").strip()
    except OSError:
        return None
    return text[len("ref:") :].strip() if text.startswith("ref:") else None


def _valid_branch(name: str | None) -> bool:
    return bool(name) and all(valid_ref_component(part) for part in str(name).split("/"))


def _branch_names(git: GitRepo) -> list[str]:
    """The default branch's name candidates, in the order of the module's rule."""
    names: list[str] = []
    target = _symref_target(git, _ORIGIN + "HEAD")
    if target is not None and target.startswith(_ORIGIN):
        names.append(target[len(_ORIGIN) :])
    names.append(git.config_value("init", "defaultBranch") or "")
    names += ["main", "master"]
    return [n for n in dict.fromkeys(names) if _valid_branch(n)]


def default_branch(git: GitRepo) -> tuple[str, str]:
    """``(ref, commit)`` of the default branch (see the module for the rule); a repository
    without any commit is a :class:`RepositoryError`."""
    for name in _branch_names(git):
        for ref in (f"refs/heads/{name}", _ORIGIN + name):
            sha = git.ref(ref)
            if sha is not None:
                return ref, sha
    head = git.head()
    if head is None:
        raise RepositoryError(
            f"{git.workdir} has no default branch and no HEAD commit to read {POLICY_PATH} from"
        )
    return "HEAD", head


# ---------------------------------------------------------------------- the history walk
def _shallow_commits(git: GitRepo) -> frozenset[str]:
    """The commits at a shallow clone's boundary (``<common dir>/shallow``); empty when complete."""
    try:
        with open(git_common_dir(git.git_dir) / "shallow", "rb") as f:
            text = f.read(64 << 20).decode("ascii", "replace")
    except OSError:
        return frozenset()
    return frozenset(line.strip() for line in text.splitlines() if _SHA_RE.fullmatch(line.strip()))


def _file_ids(git: GitRepo, tree: str) -> tuple[tuple[str | None, str | None], tuple[int, str] | None]:
    """The blob ids of ``policy.toml`` and ``allowed_signers`` in the root tree ``tree``, and
    the ``(mode, id)`` of its signatures folder entry (None: absent)."""
    entry = git.tree_entries(tree).get(".uniflow")
    if entry is None or entry[0] != _TREE_MODE:
        return (None, None), None
    files = git.tree_entries(entry[1])
    ids = []
    for name in ("policy.toml", "allowed_signers"):
        found = files.get(name)
        ids.append(found[1] if found is not None and found[0] != _TREE_MODE else None)
    return (ids[0], ids[1]), files.get(_SIGNATURES_NAME)


def _signature_entries(git: GitRepo, folder: tuple[int, str] | None) -> list[tuple[str, int, str]] | str:
    """The ``(name, mode, id)`` of the ``*.sig`` entries of the signatures folder, by name, or
    why the folder is unusable; entries past the most read are cut (see the module)."""
    if folder is None:
        return []
    if folder[0] != _TREE_MODE:
        return f"{SIGNATURES_DIR} is not a folder"
    try:
        entries = git.tree_entries(folder[1])
    except KeyError:
        return f"{SIGNATURES_DIR} is not in this clone"
    return sorted((n, mode, sha) for n, (mode, sha) in entries.items() if n.endswith(".sig"))


def _read_cosignature(git: GitRepo, name: str, mode: int, blob: str, commit: str) -> CoSignature:
    """One co-signature file, or why it cannot count (never raises for hostile content)."""
    if mode not in _FILE_MODES:
        return CoSignature(name, problem=f"{_ENTRY_KINDS.get(mode, f'mode {mode:o}')}, not a file")
    what = f"{SIGNATURES_DIR}/{name} of commit {commit[:12]}"
    try:
        data = git.read_blob(blob, MAX_COSIGNATURE_BYTES, what, "the co-signature limit")
    except KeyError:
        return CoSignature(name, problem="not in this clone")
    except IntegrityError as exc:
        return CoSignature(name, problem=str(exc).replace(what, "it", 1))
    return CoSignature(name, data) if data is not None else CoSignature(name, problem="not a file")


def _read_cosignatures(git: GitRepo, folder: tuple[int, str] | None, commit: str) -> tuple[CoSignature, ...]:
    """The co-signature files of a revision (see the module)."""
    entries = _signature_entries(git, folder)
    if isinstance(entries, str):
        return (CoSignature(SIGNATURES_DIR, problem=entries),)
    found = [_read_cosignature(git, *entry, commit) for entry in entries[:MAX_COSIGNATURES]]
    if len(entries) > MAX_COSIGNATURES:
        extra = len(entries) - MAX_COSIGNATURES
        found.append(CoSignature(f"{extra} more", problem=f"more than {MAX_COSIGNATURES} co-signature files"))
    return tuple(found)


def _read_file(git: GitRepo, blob: str | None, path: str, commit: str) -> bytes | None:
    if blob is None:
        return None
    data = git.read_blob(blob, MAX_POLICY_FILE, f"{path} of commit {commit[:12]}", "the policy file limit")
    if data is None:
        raise PolicyError(f"{path} of commit {commit[:12]} is not a file")
    return data


def _committed_at(commit: Any) -> datetime:
    offset = timezone(timedelta(seconds=int(commit.commit_timezone)))
    return datetime.fromtimestamp(int(commit.commit_time), UTC).astimezone(offset)


@dataclass(frozen=True)
class _Step:
    sha: str
    committed_at: datetime
    ids: tuple[str | None, str | None]
    signatures: tuple[int, str] | None = None


def _walk(git: GitRepo, tip: str, stop_at: str | None, max_commits: int) -> tuple[list[_Step], bool, bool]:
    """The first-parent line from ``tip``, newest first; whether it ended at a shallow
    boundary; whether it reached ``stop_at``."""
    shallow = _shallow_commits(git)
    steps: list[_Step] = []
    sha: str | None = tip
    while sha is not None:  # bounded by max_commits
        if len(steps) >= max_commits:
            raise PolicyError(
                f"the first-parent history of {tip[:12]} is longer than {max_commits} commits, "
                "the most read for the policy files"
            )
        try:
            commit = git.read_commit(sha)
        except KeyError:  # a parent this clone does not have: as good as a shallow boundary
            return steps, True, False
        steps.append(_Step(sha, _committed_at(commit), *_file_ids(git, commit.tree.decode())))
        if sha == stop_at:
            return steps, False, True
        if sha in shallow:
            return steps, True, False
        sha = commit.parents[0].decode() if commit.parents else None
    return steps, False, False


def read_policy_history(
    git: GitRepo,
    *,
    ref: str | None = None,
    stop_at: str | None = None,
    max_commits: int = MAX_HISTORY,
) -> PolicyHistory:
    """The policy revisions of the default branch (or of ``ref``), oldest first.

    A revision is a commit whose files differ from its first parent's; the oldest commit
    walked counts as one when it holds either file (the root commit, or a shallow boundary).
    ``stop_at`` (a recorded trust root) ends the walk at that commit, which then counts as a
    revision. More than ``max_commits`` commits is a :class:`PolicyError`.
    """
    if ref is None:
        ref, tip = default_branch(git)
    else:
        found = git.head() if ref == "HEAD" else git.ref(ref)
        if found is None:
            raise RepositoryError(f"no such ref: {ref}")
        tip = found
    steps, shallow, stopped = _walk(git, tip, stop_at, max_commits)
    revisions: list[PolicyRevision] = []
    for i, step in enumerate(reversed(steps)):
        oldest = i == 0
        parent_ids = (None, None) if oldest else steps[len(steps) - i].ids
        forced = oldest and (stopped or step.ids != (None, None))
        if not forced and step.ids == parent_ids:
            continue
        revisions.append(
            PolicyRevision(
                step.sha,
                step.committed_at,
                _read_file(git, step.ids[0], POLICY_PATH, step.sha),
                _read_file(git, step.ids[1], SIGNERS_PATH, step.sha),
                cosignatures=_read_cosignatures(git, step.signatures, step.sha),
            )
        )
    return PolicyHistory(ref, tip, tuple(revisions), shallow, stop_at if stopped else None)


def policy_blob_ids(git: GitRepo, tip: str, max_commits: int = MAX_HISTORY) -> tuple[bool, list[str]]:
    """``(whether the first-parent history of tip is complete here, the blob ids of the two
    files and of the co-signature files along it)``: what a mirror fetches before
    :func:`read_policy_history` can run."""
    steps, cut, _stopped = _walk(git, tip, None, max_commits)
    ids = dict.fromkeys(i for step in steps for i in step.ids if i is not None)
    for folder in dict.fromkeys(step.signatures for step in steps if step.signatures is not None):
        entries = _signature_entries(git, folder)
        if not isinstance(entries, str):
            ids.update(
                dict.fromkeys(sha for _, mode, sha in entries[:MAX_COSIGNATURES] if mode in _FILE_MODES)
            )
    return not cut, list(ids)


# ---------------------------------------------------------------------- who signed
def commit_signers(git: GitRepo, commit: str, allowed_signers: bytes) -> frozenset[str]:
    """The principals whose signature on ``commit`` (its raw bytes from the object store)
    verifies against ``allowed_signers`` at the committer date; empty when unsigned, not
    verifying, or when ``allowed_signers`` cannot be parsed."""
    from .._authority.allowed_signers import AllowedSigners
    from .._authority.gitsign import verify_commit

    try:
        signers = AllowedSigners.parse(allowed_signers, source=SIGNERS_PATH)
    except SignatureError:
        return frozenset()
    raw = git.read_raw(commit, "commit", MAX_COMMIT_BYTES)
    object_format = "sha256" if len(commit) == 64 else "sha1"
    verdict = verify_commit(raw, signers, object_format=object_format)
    if not verdict.ok:
        return frozenset()
    return frozenset(p for p in verdict.principals if "*" not in p and "?" not in p)


def signer_resolver(git: GitRepo) -> SignerResolver:
    """The ``resolve`` callable of :func:`~uniflow._authority.rotation.verify_chain`: who
    signed a revision, by :func:`commit_signers`."""

    def resolve(revision: PolicyRevision, allowed_signers: bytes) -> frozenset[str]:
        return commit_signers(git, revision.commit, allowed_signers)

    return resolve


# ---------------------------------------------------------------------- trust on first use
def trust_root_path(git: GitRepo) -> Path:
    """Where the trust-on-first-use record of this repository is kept (all its work trees share it)."""
    return store_dir(git.git_dir) / TRUST_ROOT_FILE


#: a server repository's pinned trust root (``hooks install --server --trust-root FILE``)
SERVER_TRUST_ROOT_FILE = "server-trust-root.allowed_signers"


def server_trust_root_path(git_dir: Path) -> Path:
    """Where ``hooks install --server --trust-root FILE`` keeps FILE in a bare repository."""
    return store_dir(git_dir) / SERVER_TRUST_ROOT_FILE


def read_trust_root(git: GitRepo) -> str | None:
    """The recorded first-seen commit, or None when nothing is recorded yet. Anything but
    one commit id in the file is an :class:`IntegrityError` naming it."""
    path = trust_root_path(git)
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_RECORD + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RepositoryError(f"cannot read the trust root {path}: {os_reason(exc)}") from exc
    text = data.decode("ascii", "replace").strip()
    if len(data) > _MAX_RECORD or not _SHA_RE.fullmatch(text):
        raise IntegrityError(
            f"the trust root {path} is not one commit id; remove it to trust the current policy again"
        )
    return text


def record_trust_root(git: GitRepo, commit: str) -> bool:
    """Record ``commit`` as the first-seen trust root, atomically and only if none is
    recorded (the first writer wins). True if this call recorded it."""
    if not _SHA_RE.fullmatch(commit):
        raise PolicyError(f"a trust root must be a commit id, not {commit[:80]!r}")
    path = trust_root_path(git)
    try:
        os.makedirs(path.parent, exist_ok=True)
        return write_immutable(path, path.parent, (commit + "\n").encode())
    except OSError as exc:
        raise RepositoryError(f"cannot record the trust root {path}: {os_reason(exc)}") from exc
