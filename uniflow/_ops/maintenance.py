"""``verify`` (re-hash everything) and ``gc`` (drop chunks nothing reaches).

verify also reports a version whose lifecycle has no register event (a register that died
between its tag and its event; the next register of the same version writes it).

gc never deletes a chunk that any version reachable from a ref reaches: every ref in the
repository is considered (tags, uniflow refs, remote-tracking refs, branches), an
annotated tag named ``models/...`` or a commit carrying a version card counts as a version.
Nor does it delete a chunk a register in flight relies on: candidates are moved aside, the
registers' pins and then the refs are read again, and only what neither names is deleted
(the protocol is in ``_storage.pins`` and docs/design.md, "gc and registers in flight"). It defaults
to a dry run and spares objects younger than a grace period.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import _testhooks
from .._errors import (
    CorruptChunkError,
    IntegrityError,
    MissingChunkError,
    NotFoundError,
    RepositoryError,
    UniflowError,
)
from .._records.lifecycle import MISMATCH, commit_context, untagged_versions
from .._records.listing import unreadable_reason
from .._records.manifest import MERKLE_FORMAT, Manifest, file_records, unpack
from .._records.refs import lifecycle_ref, tag_ref
from .._records.versions import MANIFEST_PATH
from .._reports import GcReport, VerifyProblem, VerifyReport
from .._storage.chunking import range_b3sum
from .._storage.fsio import os_reason
from .._storage.packs import raw_name
from .._storage.packwriter import recover_packs
from .._storage.repack import RepackPlan, decide_packs, plan_repack, remove_orphan_indexes, write_repacked

if TYPE_CHECKING:
    from .._repo import Repository

__all__ = [
    "FileB3sum",
    "file_b3sums",
    "verify",
    "repair",
    "gc",
    "reachable_manifests",
    "REGISTER_EVENT_WINDOW",
]

#: a register writes its event right after its tag; verify reports a tag without an event
#: only once the tag is older than this (seconds), so a register in flight is not flagged
REGISTER_EVENT_WINDOW = 60.0


def verify(repo: Repository, name: str | None = None) -> VerifyReport:
    """Every problem found, reading the Git objects themselves (never the derived caches):
    manifests through the validation gate, every chunk re-hashed, each lifecycle's state
    validated (and versions it names without a tag), lost register events, and refs under
    the registry's prefixes that name no valid model or version."""
    problems: list[VerifyProblem] = []
    models = [name] if name is not None else repo.index.models()
    if name is not None:
        repo.require_model(name)
    else:
        problems += [
            _problem(None, None, f"ignored ref with an invalid name: {ref}")
            for ref in repo.index.invalid_ref_names()
        ]
    for model in models:
        unreadable: set[str] = set()
        for version, sha in sorted(repo.index.versions(model).items()):
            try:
                _, m = repo.index.manifest(model, version, sha, from_git=True)
            except IntegrityError as exc:  # a bad record: every read skips it
                unreadable.add(version)
                text = f"unreadable version, skipped by every read: {tag_ref(model, version)}"
                problems.append(_problem(model, version, f"{text} ({unreadable_reason(exc)})"))
                continue
            except NotFoundError as exc:  # the tag went away meanwhile
                problems.append(_problem(model, version, str(exc)))
                continue
            for rel, rec, _mode in file_records(m):
                for c in rec.chunks:
                    try:
                        repo.store.read_chunk(c)
                    except (MissingChunkError, CorruptChunkError) as exc:
                        problem = "missing" if isinstance(exc, MissingChunkError) else "corrupted"
                        problems.append(VerifyProblem(model, version, rel, c.digest, problem))
        lifecycle = _lifecycle_problems(repo, model)
        problems += lifecycle
        if not any(p.version is None for p in lifecycle):  # its events are readable
            problems += _unrecorded(repo, model, unreadable)
    return VerifyReport(name, tuple(problems))


@dataclass(frozen=True)
class FileB3sum:
    """A stored file's ``b3sum`` (BLAKE3 of its bytes), computed from its chunks; for a
    version of manifest format 1 or 2, ``recorded`` is the digest its manifest holds (the
    same kind, so ``ok`` says whether they agree); for format 3 it is None (the manifest
    records the Merkle identity instead, and the b3sum is for information)."""

    model: str
    version: str
    path: str
    b3sum: str
    recorded: str | None

    @property
    def ok(self) -> bool:
        return self.recorded is None or self.recorded == self.b3sum

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "version": self.version,
            "path": self.path,
            "b3sum": self.b3sum,
            "recorded": self.recorded,
            "ok": self.ok,
        }


def file_b3sums(repo: Repository, name: str | None = None) -> list[FileB3sum]:
    """The ``b3sum`` of every file of every readable version (of model ``name``), each read
    from its stored chunks (every chunk verified as it is read; a file with a missing or
    damaged chunk is skipped: verify reports it). What ``uniflow verify --b3sum`` prints."""
    out: list[FileB3sum] = []
    models = [name] if name is not None else repo.index.models()
    for model in models:
        for version, sha in sorted(repo.index.versions(model).items()):
            try:
                _, m = repo.index.manifest(model, version, sha, from_git=True)
            except (IntegrityError, NotFoundError):  # reported by verify
                continue
            recorded = m.format < MERKLE_FORMAT
            for rel, rec, _mode in file_records(m):
                try:
                    b3 = range_b3sum(rec.chunks, repo.store.read_chunk)
                except (MissingChunkError, CorruptChunkError):  # reported by verify
                    continue
                out.append(FileB3sum(model, version, rel, b3, rec.digest if recorded else None))
    return out


def repair(repo: Repository) -> list[str]:
    """What ``uniflow verify --repair`` fixes, one line per fix: the reflogs of version tags
    and stage pointers that uniflow up to 0.2.0 wrote (git keeps none for a tag, and
    ``git gc`` reports an error for each of their lines)."""
    return [f"removed the reflog of {ref}" for ref in repo.git.remove_tag_reflogs()]


def _problem(model: str | None, version: str | None, text: str) -> VerifyProblem:
    return VerifyProblem(model, version, None, None, text)


def _lifecycle_problems(repo: Repository, model: str) -> list[VerifyProblem]:
    """The lifecycle state read straight from Git: invalid, or naming versions without a tag."""
    try:
        state, _when = repo.lifecycle.state_at(model, from_git=True)
    except UniflowError as exc:
        return [_problem(model, None, f"lifecycle unreadable ({lifecycle_ref(model)}), reads skip it: {exc}")]
    try:
        mismatched = repo.lifecycle.mismatched_events(model)
    except UniflowError as exc:
        return [_problem(model, None, f"lifecycle unreadable ({lifecycle_ref(model)}): {exc}")]
    return [
        _problem(model, v, "the lifecycle names this version but its tag is missing (ignored by reads)")
        for v in untagged_versions(state, repo.index.version_names(model))
    ] + [_problem(model, None, f"{commit_context(sha, '')}: {MISMATCH}") for sha in mismatched]


def _unrecorded(repo: Repository, model: str, unreadable: set[str]) -> list[VerifyProblem]:
    """Problems for the versions of ``model`` whose register event is missing (``unreadable``:
    tags that are no version, already reported)."""
    try:
        registered = {
            ev.version for ev in repo.lifecycle.events(model) if ev is not None and ev.action == "register"
        }
    except UniflowError as exc:
        return [_problem(model, None, f"lifecycle unreadable ({lifecycle_ref(model)}): {exc}")]
    out = []
    cutoff = time.time() - REGISTER_EVENT_WINDOW
    for version, sha in sorted(repo.index.versions(model).items()):
        if version in registered or version in unreadable:
            continue
        try:
            young = repo.git.read_tag(sha).tag_time > cutoff
        except (UniflowError, KeyError):  # KeyError: the tag object is missing
            young = False
        if not young:
            out.append(
                _problem(model, version, "no register event (register the same files again to record it)")
            )
    return out


def reachable_manifests(repo: Repository, commits: Iterable[str] | None = None) -> list[Manifest]:
    """Manifests of every version any ref reaches (tags, remote-tracking refs, others),
    or of the version commits among ``commits``."""
    out = []
    for commit in repo.git.version_candidates() if commits is None else commits:
        try:
            data = repo.git.read_path(commit, MANIFEST_PATH)
        except KeyError as exc:  # a version whose manifest cannot be read: delete nothing
            raise IntegrityError(
                f"git objects of commit {commit[:12]} are missing; gc stops (run 'git fsck')"
            ) from exc
        if data is not None:
            try:
                out.append(unpack(data))
            except IntegrityError:
                continue
    return out


class _Live:
    """What the versions reachable from a set of commits need."""

    def __init__(self) -> None:
        self.chunks: set[str] = set()
        self.files: set[str] = set()
        self.versions: set[str] = set()

    def add(self, manifests: list[Manifest]) -> _Live:
        for m in manifests:
            self.versions.add(m.content_digest)
            for _rel, rec, _mode in file_records(m):
                self.files.add(rec.digest)
                self.chunks.update(c.digest for c in rec.chunks)
        return self


@dataclass
class _Outcome:
    """What a real gc run did (the counts of :class:`GcReport` it fills in)."""

    kept: int = 0
    deleted: int = 0
    freed: int = 0
    packs_removed: int = 0
    packs_written: int = 0
    loose_packed: int = 0


@dataclass
class _Loose:
    """The chunk files: candidates for deletion (digest -> size), the unreachable ones, the
    young ones among them, and every chunk file seen."""

    candidates: dict[str, int] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)
    young: set[str] = field(default_factory=set)
    seen: list[str] = field(default_factory=list)


def _loose(repo: Repository, live: _Live, cutoff: float) -> _Loose:
    out = _Loose()
    for digest, path in list(repo.store.iter_objects()):
        out.seen.append(digest)
        if digest in live.chunks:
            continue
        out.unreachable.add(digest)
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if st.st_mtime > cutoff:
            out.young.add(digest)
            continue
        out.candidates[digest] = st.st_size
    return out


def gc(
    repo: Repository, *, dry_run: bool = True, grace_seconds: float = 3600.0, repack: bool = False
) -> GcReport:
    """Delete unreachable chunks older than the grace period that no register in flight pinned,
    and rewrite the packs whose live share fell below ``_storage.repack.REPACK_THRESHOLD``;
    with ``repack``, chunk files (stores of formats 1 and 2) are moved into packs too.

    Order (docs/design.md, "gc and registers in flight", "gc and packs"): refs -> candidates
    -> the packs to rewrite -> their live chunks written to new packs, durable -> move each
    candidate and each such pack aside -> read the pins -> read the refs again -> restore
    what a pin or a newly visible version names -> delete the rest -> unlink the chunk files
    now in packs.
    """
    store = repo.store
    restored = 0
    if not dry_run:
        restored = store.restore_abandoned()
        recover_packs(store.root)  # a pack a killed writer left without its index
    seen = set(repo.git.version_candidates())
    live = _Live().add(reachable_manifests(repo, seen))
    cutoff = time.time() - grace_seconds
    loose = _loose(repo, live, cutoff)
    pinned = store.pinned(remove_stale=not dry_run)
    to_pack = [d for d in loose.seen if d not in loose.candidates] if repack else []
    plan = plan_repack(store.packs, live.chunks, pinned, cutoff, to_pack)
    if dry_run:
        out = _Outcome(kept=sum(d in pinned for d in loose.candidates))
        out.freed = sum(size for d, size in loose.candidates.items() if d not in pinned)
        out.freed += sum(plan.dead(pack, live.chunks)[1] for pack in plan.rewrite)
        out.packs_removed, out.loose_packed = len(plan.rewrite), len(plan.loose)
    else:
        out = _collect(repo, loose.candidates, seen, live, plan)
    tmp_removed = 0 if dry_run else store.clean_tmp(grace_seconds) + remove_orphan_indexes(store.root, cutoff)
    cache_removed = 0 if dry_run else store.clean_cache(live.files, live.versions, grace_seconds)
    return GcReport(
        dry_run=dry_run,
        live_chunks=len(live.chunks),
        unreachable_chunks=len(loose.unreachable | plan.unreachable),
        spared_young=len(loose.young | plan.young),
        spared_in_flight=out.kept + len(plan.pinned),
        deleted_chunks=out.deleted,
        bytes_freed=out.freed,
        tmp_removed=tmp_removed,
        cache_removed=cache_removed,
        restored_chunks=restored,
        grace_seconds=grace_seconds,
        packs_removed=out.packs_removed,
        packs_written=out.packs_written,
        loose_packed=out.loose_packed,
    )


def _collect(
    repo: Repository, candidates: dict[str, int], seen: set[str], live: _Live, plan: RepackPlan
) -> _Outcome:
    """Write the live chunks of the packs to rewrite into new packs, move the candidates and
    those packs aside, then keep what a pin or a version created meanwhile names.

    ``live`` grows by the new versions."""
    store = repo.store
    out = _Outcome()
    new: set[str] = set()
    if plan.rewrite or plan.loose:
        new, out.packs_written = write_repacked(store.root, plan, store.read_loose, durable=store.durable)
    try:
        aside = store.set_aside()
    except OSError as exc:
        raise RepositoryError(f"gc cannot write in {store.tmp}: {os_reason(exc)}") from exc
    try:
        moved = [d for d in candidates if aside.take(d)]
        moved_packs = [p for p in sorted(plan.rewrite) if aside.take_pack(p)]
        _testhooks.point("gc-after-set-aside")
        pinned = store.pinned()  # 1. the pins, strictly after every move ...
        later = set(repo.git.version_candidates()) - seen  # 2. ... and only then the refs again
        live.add(reachable_manifests(repo, sorted(later)))
        for digest in moved:
            if digest in pinned or digest in live.chunks:
                aside.restore(digest)
                out.kept += 1
            else:
                out.freed += aside.drop(digest)
                out.deleted += 1
        _restored, removed = decide_packs(aside, moved_packs, plan, pinned, live.chunks, new)
        for pack in removed:
            chunks, size = plan.dead(pack, live.chunks)
            out.deleted, out.freed, out.packs_removed = (
                out.deleted + chunks,
                out.freed + size,
                out.packs_removed + 1,
            )
    except OSError as exc:
        raise RepositoryError(f"gc cannot move chunks in {store.root}: {os_reason(exc)}") from exc
    finally:
        aside.close()  # puts back anything not yet decided (an error above keeps everything)
    out.loose_packed = _unlink_packed(repo, plan, new)
    return out


def _unlink_packed(repo: Repository, plan: RepackPlan, new: set[str]) -> int:
    """``gc --repack``'s last step: unlink the chunk files whose bytes a durable pack holds
    (a new one, or one gc kept); the count."""
    done = 0
    for digest in [*plan.loose_redundant, *plan.loose]:
        if digest in new or raw_name(digest) in plan.kept:
            repo.store.delete_object(digest)
            done += 1
    if done:
        repo.store.sync_dirs(plan.loose_redundant + plan.loose)
        _testhooks.point("gc-loose-packed")
    return done
