"""Reads that verify who put a version where: ``signatures="off" | "warn" | "require"``.

A consumer (``uniflow get URL NAME --stage S --require-signed``, ``ModelRegistry(url,
signatures="require")``, ``registry.load(..., signatures="require")``, or ``[signatures]
verify`` in a clone's ``.uniflow/config.toml``) asks :func:`check_read` about the version a
read resolved to, before any file is served:

* a stage's holder counts only if :meth:`~uniflow._ops.authority.LifecycleVerdicts.holder_verified`
  says so (the promotion chain satisfies the policy in force when each event was made);
* a version asked by name (or the newest) counts only if a policy is in force, its tag is
  signed by an allowed signer and is the tag the lifecycle recorded, and the lifecycle's
  head state follows from its events;
* **rollback** (invariant 9): the lifecycle head last verified for each model is recorded
  per registry (``<git common dir>/uniflow/lifecycle-seen.json``: a clone's, or the URL's
  mirror's). A later head that does not have the recorded one in its first-parent chain (the
  ref was reset to an older commit, or rewritten) is refused, however validly signed. The
  record carries a keyed MAC under the per-user key of the derived cache
  (:func:`uniflow._records.objcache.load_key`, kept outside the repository): a record that
  fails it (edited, written without the key, or by an older uniflow) is not trusted, so
  ``require`` refuses to read and ``warn`` warns and records nothing; so is a record that
  cannot be protected because there is no key. Writers hold a lock
  (``.lifecycle-seen.json.lock``) across read, merge and the atomic replace. A deleted
  record is a first use again (docs/governance.md, "Limits").

``require``: any problem is one line, :class:`IntegrityError` (a rollback, a bad signature)
or :class:`PolicyError` (the policy is not satisfied); nothing is served. ``warn``: a
:class:`UniflowWarning` naming the problem, then the read goes on. ``off``: nothing is
checked. Not set: ``warn`` once the default branch has ``.uniflow/policy.toml``, else ``off``.
A registry read by URL never takes the mode from the remote's config (the remote does not
get to lower it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import blake3

from .._authority.rotation import TrustRoot
from .._errors import (
    IntegrityError,
    NotFoundError,
    PolicyError,
    RepositoryError,
    UniflowError,
    UniflowWarning,
    UsageError,
)
from .._records.config import SIGNATURE_MODES
from .._records.lifecycle import walk_first_parents
from .._records.objcache import KEY_FILE, cache_home, keyed_mac, load_key
from .._records.paths import POLICY_PATH, store_dir
from .._records.policyfiles import default_branch, read_trust_root
from .._storage.fsio import flock_within, fsync_dir
from .authority import LifecycleVerdicts, verify_lifecycle

if TYPE_CHECKING:
    from .._records.git import GitRepo
    from .._repo import Repository

__all__ = ["SEEN_FILE", "check_read", "has_policy", "seen_path", "signature_mode"]

#: the per-registry record of the lifecycle head last verified per model
SEEN_FILE = "lifecycle-seen.json"
#: derived-cache kind of a read that verified (keyed by :func:`_verdict_key`; MAC-protected)
READ_KIND = "readok"
_READ_OK = b"verified read v1"
_MAX_SEEN = 8 << 20
_SHA = re.compile(r"[0-9a-f]{40}")
#: the most commits walked to tell a rollback from a rewrite
_MAX_WALK = 1_000_000
#: the format of the seen record, and the domain of its MAC
_SEEN_FORMAT = 2
_SEEN_DOMAIN = b"uniflow-lifecycle-seen-v2\x00"
#: how long a writer waits for another one recording a head
_SEEN_LOCK_WAIT = 60.0

TrustRootLike = str | os.PathLike[str] | TrustRoot | None


def has_policy(git: GitRepo) -> bool:
    """Whether the default branch's head holds ``.uniflow/policy.toml`` (trees only, no blob)."""
    try:
        _ref, tip = default_branch(git)
        tree = git.read_commit(tip).tree.decode()
        entry = git.tree_entries(tree).get(".uniflow")
        if entry is None:
            return False
        return POLICY_PATH.rsplit("/", 1)[1] in git.tree_entries(entry[1])
    except (UniflowError, KeyError, ValueError):
        return False


def signature_mode(repo: Repository, asked: str | None, *, remote: bool = False) -> str:
    """The mode a read uses: ``asked``, else (a clone only) ``[signatures] verify``, else
    ``warn`` when a policy exists, else ``off``. A value not in :data:`SIGNATURE_MODES` is a
    :class:`UsageError`."""
    if asked is not None and asked not in SIGNATURE_MODES:
        raise UsageError(f"signatures= must be one of {', '.join(map(repr, SIGNATURE_MODES))}, not {asked!r}")
    mode = asked
    if mode is None and not remote:
        mode = repo.config.verify_signatures
    if mode is None:
        mode = "warn" if has_policy(repo.git) else "off"
    return mode


# ---------------------------------------------------------------------- the check
def check_read(
    repo: Repository,
    name: str,
    version: str,
    stage: str | None,
    *,
    mode: str,
    trust_root: TrustRootLike = None,
) -> None:
    """Refuse (``require``) or warn about (``warn``) serving ``version`` of ``name`` (the
    holder of ``stage``, when the read asked for a stage) unless its signatures and the
    policy vouch for it and its lifecycle did not go back (see the module)."""
    if mode == "off":
        return
    seen: dict[str, str] | None
    try:
        seen = _read_seen(repo.git)
    except IntegrityError as exc:  # an untrusted record: never read as "nothing seen"
        if mode == "require":
            raise
        warnings.warn(f"{exc} (rollback protection is off for this read)", UniflowWarning, stacklevel=4)
        seen = None
    problem, error = _problem(repo, (name, version, stage), trust_root, seen)
    if problem is None:
        return
    if mode == "require":
        raise error(problem)
    warnings.warn(
        f"{problem} (served anyway: signatures are only warned about)", UniflowWarning, stacklevel=4
    )


def _problem(
    repo: Repository,
    asked: tuple[str, str, str | None],
    trust_root: TrustRootLike,
    seen: dict[str, str] | None,
) -> tuple[str | None, type[UniflowError]]:
    """``(why the read of ``asked`` (name, version, stage) may not be served, the error
    class)``; ``(None, _)`` when it may be, and then its lifecycle head is recorded as seen.
    ``seen``: the trusted record of heads verified before (None: untrusted, so neither
    compared nor written)."""
    name, version, stage = asked
    key = _verdict_key(repo, asked, trust_root, seen)
    cache = repo.lifecycle.cache
    if key is not None and cache is not None and cache.get(READ_KIND, key) == _READ_OK:
        return None, PolicyError  # the same inputs verified before, with its head recorded
    try:
        verdicts = verify_lifecycle(repo, name, trust_root=trust_root, focus=version)
    except (PolicyError, NotFoundError, RepositoryError) as exc:
        return f"{name}: cannot verify signatures: {exc}", PolicyError
    except IntegrityError as exc:
        return f"{name}: cannot verify signatures: {exc}", IntegrityError
    back = _went_back(repo, name, verdicts, seen or {})
    if back is not None:
        return back, IntegrityError
    why = (
        verdicts.holder_problem(stage, version) if stage is not None else _version_problem(verdicts, version)
    )
    if why is not None:
        return why, PolicyError
    if verdicts.head is not None and seen is not None:
        _record_seen(repo.git, name, verdicts.head)
        if key is not None and cache is not None:
            cache.put(READ_KIND, key, _READ_OK)
    return None, PolicyError


def _verdict_key(
    repo: Repository,
    asked: tuple[str, str, str | None],
    trust_root: TrustRootLike,
    seen: dict[str, str] | None,
) -> str | None:
    """A digest of everything a read's verdict depends on: the lifecycle head (which must be
    the one ``seen`` records), the model's version tags, the default branch's head (the policy
    history), the trust root, the stage table and what was asked. Git objects never change
    under their ids, so the same digest is the same verdict. None: not to be kept (no head
    seen yet, a first use, an untrusted record, an unreadable trust root)."""
    name, version, stage = asked
    head = repo.lifecycle.head(name)
    if head is None or seen is None or seen.get(name) != head:
        return None
    if trust_root is None:
        root = read_trust_root(repo.git)
        if root is None:
            return None
    elif isinstance(trust_root, TrustRoot):
        return None
    else:
        try:
            root = blake3.blake3(Path(trust_root).read_bytes()).hexdigest()
        except OSError:
            return None
    try:
        branch = default_branch(repo.git)
    except UniflowError:
        return None
    tags = {v: str(sha) for v, sha in repo.index.versions(name).items()}  # one scan of the tag refs
    stages = sorted(repo.stages().items())
    inputs = [name, version, stage, head, sorted(tags.items()), list(branch), root, stages]
    return blake3.blake3(json.dumps(inputs).encode()).hexdigest()


def _version_problem(verdicts: LifecycleVerdicts, version: str) -> str | None:
    """Why ``version`` asked by name does not count as verified (None: it does)."""
    model = verdicts.model
    if not verdicts.policy:
        return f"{model} {version}: no policy is in force (nothing vouches for its signer)"
    if verdicts.problems:
        return f"{model}: {verdicts.problems[0]}"
    tag = verdicts.tags.get(version)
    if tag is None or not tag.ok:
        return f"{model} {version}: its tag fails: {tag.reason if tag else 'no tag'}"
    for e in verdicts.events:
        if e.version == version and not e.ok:
            return f"{model} {version}: {e.action} ({e.commit[:12]}) fails: {e.reason}"
    return None


# ---------------------------------------------------------------------- rollback
def seen_path(git: GitRepo) -> Path:
    """Where the lifecycle heads last verified are recorded (shared by all work trees)."""
    return store_dir(git.git_dir) / SEEN_FILE


def _read_seen(git: GitRepo) -> dict[str, str]:
    """The trusted record of lifecycle heads verified before (empty: nothing recorded, a
    first use). :class:`IntegrityError` naming the file when it is there but cannot be
    trusted (not a record, its MAC fails) or no record could be protected (no per-user key);
    :class:`RepositoryError` when it cannot be read."""
    path = seen_path(git)
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_SEEN + 1)
    except FileNotFoundError:
        _seen_key(path)  # nothing recorded yet, but a record must be possible
        return {}
    except OSError as exc:
        raise RepositoryError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        doc = json.loads(data) if len(data) <= _MAX_SEEN else None
    except (ValueError, UnicodeDecodeError):
        doc = None
    heads = doc.get("heads") if isinstance(doc, dict) and doc.get("format") == _SEEN_FORMAT else None
    mac = doc.get("mac") if isinstance(doc, dict) else None
    if not (
        isinstance(heads, dict)
        and isinstance(mac, str)
        and all(isinstance(k, str) and isinstance(v, str) and _SHA.fullmatch(v) for k, v in heads.items())
    ):
        raise _untrusted(path, "it is not a record of lifecycle heads (or one an older uniflow wrote)")
    if not secrets.compare_digest(mac, _seen_mac(_seen_key(path), heads)):
        raise _untrusted(path, "its MAC does not verify (edited, or written under another key)")
    return heads


def _untrusted(path: Path, why: str) -> IntegrityError:
    return IntegrityError(
        f"{path} cannot be trusted: {why}; check it, then remove it (the next verified read "
        "records afresh, as on first use)"
    )


def _seen_key(path: Path) -> bytes:
    """The per-user MAC key of the derived cache, or :class:`IntegrityError`: without it the
    record would be as writable as the repository, so rollbacks could not be refused."""
    key = load_key()
    if key is None:
        home = cache_home()
        where = home / KEY_FILE if home is not None else "a private cache directory"
        raise IntegrityError(
            f"cannot protect {path}: the per-user key {where} cannot be read or created "
            "(set UNIFLOW_CACHE_DIR to a private directory this user owns)"
        )
    return key


def _seen_mac(key: bytes, heads: dict[str, str]) -> str:
    payload = json.dumps(heads, sort_keys=True, separators=(",", ":")).encode()
    return keyed_mac(key, _SEEN_DOMAIN, payload).hex()


def _record_seen(git: GitRepo, name: str, head: str) -> None:
    """Record ``head`` as the last verified lifecycle head of ``name``: under the lock, the
    trusted record is read again, updated and replaced atomically (written, fsynced, renamed),
    so two processes recording other models both keep theirs."""
    path = seen_path(git)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise RepositoryError(f"cannot record the verified lifecycle head in {path}: {exc.strerror}") from exc
    with _seen_lock(path):
        seen = _read_seen(git)
        if seen.get(name) == head:
            return
        seen[name] = head
        body = {"format": _SEEN_FORMAT, "heads": seen, "mac": _seen_mac(_seen_key(path), seen)}
        _replace(path, (json.dumps(body, sort_keys=True, indent=0) + "\n").encode("ascii"))


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file next to ``path``, fsync it, rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RepositoryError(f"cannot record the verified lifecycle head in {path}: {exc.strerror}") from exc


@contextlib.contextmanager
def _seen_lock(path: Path) -> Iterator[None]:
    """Hold ``.<record>.lock`` next to the record (``flock``), waiting a bounded time."""
    lock = path.with_name(f".{path.name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise RepositoryError(f"cannot lock {lock}: {exc.strerror}") from exc
    try:
        flock_within(fd, _SEEN_LOCK_WAIT, f"another process has held {lock}", poll=0.02)
        yield
    finally:
        os.close(fd)  # releases the lock


def _went_back(repo: Repository, name: str, verdicts: LifecycleVerdicts, seen: dict[str, str]) -> str | None:
    """Why the lifecycle head is not a descendant of the one last verified, as ``seen``
    records it (None: it is)."""
    old = seen.get(name)
    head = verdicts.head
    if old is None or old == head:
        return None
    if any(e.commit == old for e in verdicts.events):
        return None  # moved forward
    where = seen_path(repo.git)
    if head is None:
        return f"{name}: the lifecycle is gone, but {old[:12]} was verified before (recorded in {where})"
    try:
        behind = any(sha == head for sha, _c in walk_first_parents(repo.git, old, name, _MAX_WALK))
    except IntegrityError:
        behind = False  # the old head is no longer here: it was rewritten, at least
    how = "rolled back to an older commit" if behind else "rewritten"
    return (
        f"{name}: the lifecycle head {head[:12]} is {how}: {old[:12]} was verified before "
        f"(recorded in {where}); a consumer never goes back to an older lifecycle"
    )
