"""What every importer shares: the plan, its replay, the name rule and the report.

An importer (MLflow, GTO) reads its source into a list of :class:`Step` — versions to
register and lifecycle events to record, each with the time and actor the source gives —
and :func:`run_plan` replays it in time order through the registry's own register and
lifecycle writes. Everything read from a source is untrusted: names go through
:func:`map_model_name` (one documented rule, else refused), versions and stages are
validated, files are stored as files (nothing is unpickled).

Idempotence: a version whose tag exists is registered again only to compare bytes (same
bytes: ``skipped``; other bytes: ``conflict``, never overwritten); a version whose manifest
says it was imported from the same source key is ``skipped`` without fetching anything. Each
imported event carries ``extra = {"imported_from": SOURCE, "import_key": KEY}``; an event
whose key the model's history already holds is ``skipped``.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .._errors import InvalidPathError, NotFoundError, UniflowError, UsageError, VersionExistsError
from .._naming import validate_model_name
from .._records.git import Identity
from .._records.lifecycle import move_transition
from .._repo import Repository
from .._stages import SHARED_STAGES, SINGLE_HOLDER_DEFAULT, ModelStage, valid_custom_stage_name
from .._storage.safefs import DirTree, describe_mode, open_root
from .._types import ModelVersion, ProgressFn, Provenance

__all__ = [
    "EmptiedStage",
    "EventResult",
    "ImportReport",
    "RegisterFn",
    "Step",
    "VersionResult",
    "copy_confined",
    "identity_of",
    "map_model_name",
    "map_stage_name",
    "run_plan",
]

_BAD_CHARS = re.compile(r"[^a-z0-9_.-]+")
_EMAIL = re.compile(r"[^<>\s]{1,200}@[^<>\s]{1,200}")


def map_model_name(source: str, what: str = "model") -> str:
    """The uniflow name of a source model/artifact name (the rule of docs/migrate.md).

    Lower-case it; replace every run of characters outside ``a-z 0-9 _ . -`` by ``-``;
    drop leading characters that are not a letter or digit and trailing ``.`` and ``-``;
    cut to 128 characters. A result that is still not a valid model name is refused with
    an :class:`InvalidNameError`.
    """
    text = _BAD_CHARS.sub("-", str(source).lower())
    text = re.sub(r"^[^a-z0-9]+", "", text)[:128].rstrip(".-")
    try:
        return validate_model_name(text)
    except UsageError as exc:
        raise type(exc)(f"cannot map {what} name {source!r} to a uniflow model name ({exc})") from exc


def map_stage_name(source: str) -> str:
    """The uniflow stage for a source stage or alias: a built-in stage as it is, else the
    lower-cased name, which must be a valid custom stage name (else UsageError)."""
    name = str(source).strip().lower()
    if name in SINGLE_HOLDER_DEFAULT or valid_custom_stage_name(name):
        return name
    raise UsageError(
        f"cannot map stage {source!r} to a uniflow stage (1-64 of a-z 0-9 _ -, starting with a letter)"
    )


def identity_of(name: str | None, email: str | None = None, fallback: str = "unknown") -> Identity:
    """An identity ``(name, email)`` safe for a commit header, from untrusted text."""
    clean = " ".join(re.sub(r"[<>\x00-\x1f\x7f]", " ", name or "").split())[:200] or fallback
    mail = email if email and _EMAIL.fullmatch(email) else None
    if mail is None and name and _EMAIL.fullmatch(name):
        mail = name
    return clean, mail or f"{re.sub(r'[^A-Za-z0-9_.-]', '-', clean)[:60] or 'unknown'}@imported.invalid"


_NOFOLLOW_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def copy_confined(root: Path, parts: tuple[str, ...], dest: Path, shown: str) -> Path:
    """Copy ``root/parts...`` (a file or a directory) to ``dest/<last part>`` without ever
    following a symlink: each component below ``root`` is opened ``O_NOFOLLOW`` from ``root``'s
    descriptor, so nothing outside ``root`` is read. A symlink, FIFO or device on the way or
    inside is refused (:class:`InvalidPathError` naming ``shown``); the copy's path is returned."""

    def refuse(where: str, mode: int) -> None:
        raise InvalidPathError(f"refused: download URI {shown}: {where} is a {describe_mode(mode)}")

    try:
        with DirTree(open_root(root), "", refuse, create=False) as tree:
            parent = tree.open(parts[:-1]) if parts else None
            target = dest / (parts[-1] if parts else (root.name or "model"))
            if parent is None:
                _copy_dir(os.open(root, _NOFOLLOW_DIR), target, shown, "", refuse)
                return target
            mode = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                _copy_dir(os.open(parts[-1], _NOFOLLOW_DIR, dir_fd=parent), target, shown, parts[-1], refuse)
            elif stat.S_ISREG(mode):
                _copy_file(parent, parts[-1], target, "/".join(parts), refuse)
            else:
                refuse("/".join(parts), mode)
            return target
    except FileNotFoundError as exc:
        raise NotFoundError(f"the files of download URI {shown} are not there") from exc


def _copy_dir(fd: int, target: Path, shown: str, rel: str, refuse: Callable[[str, int], None]) -> None:
    """Copy the directory open as ``fd`` (closed here) to ``target``, entries not followed."""
    try:
        target.mkdir(parents=True)
        for name in sorted(os.listdir(fd)):
            where = f"{rel}/{name}" if rel else name
            mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                _copy_dir(os.open(name, _NOFOLLOW_DIR, dir_fd=fd), target / name, shown, where, refuse)
            elif stat.S_ISREG(mode):
                _copy_file(fd, name, target / name, where, refuse)
            else:
                refuse(where, mode)
    finally:
        os.close(fd)


def _copy_file(dir_fd: int, name: str, target: Path, where: str, refuse: Callable[[str, int], None]) -> None:
    try:
        fd = os.open(name, _NOFOLLOW_FILE, dir_fd=dir_fd)
    except OSError as exc:  # replaced by a symlink (ELOOP) or something else since the stat
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        refuse(where, mode)
        raise exc
    with open(fd, "rb") as fin:
        mode = os.fstat(fin.fileno()).st_mode
        if not stat.S_ISREG(mode):
            refuse(where, mode)
        with open(target, "xb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    target.chmod(0o755 if mode & 0o111 else 0o644)


class RegisterFn(Protocol):
    """``ModelRegistry.register``, as the registry hands it down."""

    def __call__(
        self,
        model: Any,
        name: str,
        *,
        version: str | None = ...,
        metrics: dict[str, Any] | None = ...,
        tags: dict[str, Any] | None = ...,
        params: dict[str, Any] | None = ...,
        description: str | None = ...,
        lineage: dict[str, Any] | None = ...,
        progress: ProgressFn | None = ...,
        provenance: Provenance | None = ...,
    ) -> ModelVersion: ...


@dataclass
class Step:
    """One thing to replay: a version (``fetch`` set) or a lifecycle event (``stage`` set)."""

    model: str
    version: str
    at: datetime
    actor: Identity
    key: str  #: unique within the source; recorded as ``import_key``
    order: int = 0  #: tie-break among steps of the same time
    stage: str | None = None
    reason: str | None = None
    fetch: Callable[[Path], Path] | None = (
        None  #: writes the files below the dir given; returns the model path
    )
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    lineage: dict[str, Any] = field(default_factory=dict)
    code_commit: str | None = None
    #: the source itself takes the version out of its stage here (GTO unassign, deregister,
    #: deprecate): a stage this empties is not reported as left without a holder
    releases: bool = False


@dataclass(frozen=True)
class VersionResult:
    model: str
    version: str
    key: str
    status: str  #: imported, would-import, skipped, conflict, failed
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "source": self.key,
            "status": self.status,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class EventResult:
    model: str
    version: str
    stage: str
    at: str
    actor: str
    key: str
    status: str  #: applied, would-apply, skipped, failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "stage": self.stage,
            "at": self.at,
            "actor": self.actor,
            "source": self.key,
            "status": self.status,
        }


@dataclass(frozen=True)
class EmptiedStage:
    """A stage the source says is held that has no holder after the import: its version took
    another stage (a uniflow version holds one stage; the source let it hold both)."""

    model: str
    stage: str
    version: str  #: the version that held it last
    moved_to: str  #: the stage that version took
    at: str
    key: str  #: the import key of the event that moved it

    @property
    def why(self) -> str:
        return f"{self.version} moved to {self.moved_to} ({self.key}); a uniflow version holds one stage"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "stage": self.stage,
            "version": self.version,
            "moved_to": self.moved_to,
            "at": self.at,
            "source": self.key,
            "why": self.why,
        }


@dataclass(frozen=True)
class ImportReport:
    """What an import did (or, with ``dry_run``, would do). ``to_dict()`` is the CLI's ``--json``."""

    source: str
    dry_run: bool
    versions: tuple[VersionResult, ...] = ()
    events: tuple[EventResult, ...] = ()
    declared_stages: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    #: stages left with no holder because their version moved on (see :class:`EmptiedStage`)
    emptied_stages: tuple[EmptiedStage, ...] = ()

    @property
    def conflicts(self) -> tuple[VersionResult, ...]:
        return tuple(v for v in self.versions if v.status == "conflict")

    @property
    def failures(self) -> tuple[VersionResult | EventResult, ...]:
        return tuple(r for r in self._all() if r.status == "failed")

    def _all(self) -> list[VersionResult | EventResult]:
        return [*self.versions, *self.events]

    @property
    def ok(self) -> bool:
        return not self.conflicts and not self.failures

    def count(self, status: str) -> int:
        return sum(1 for r in self._all() if r.status == status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "versions": [v.to_dict() for v in self.versions],
            "events": [e.to_dict() for e in self.events],
            "declared_stages": list(self.declared_stages),
            "notes": list(self.notes),
            "stages_left_empty": [e.to_dict() for e in self.emptied_stages],
        }


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


def declare_stages(repo: Repository, stages: Iterable[str], dry_run: bool) -> tuple[str, ...]:
    """Declare the custom stages not yet in config.toml as single-holder; the ones added."""
    known = repo.stages()
    missing = sorted({s for s in stages if s not in known})
    if missing and not dry_run:
        repo.init()
        raw = dict(repo.config.raw)
        table = dict(raw.get("stages") or {})
        for s in missing:
            table[s] = {"single": True}
        raw["stages"] = table
        repo.config_source.save(raw)
    return tuple(missing)


def _imported_keys(repo: Repository, model: str) -> set[str]:
    if repo.lifecycle.head(model) is None:
        return set()
    return {
        str(e.extra.get("import_key")) for e in repo.lifecycle.history(model) if e.extra.get("import_key")
    }


def _already_imported(repo: Repository, step: Step) -> bool:
    """True when the version exists and its manifest records this very source key."""
    if repo.index.tag_sha(step.model, step.version) is None:
        return False
    return bool(repo.manifest(step.model, step.version).lineage.get("import_key") == step.key)


def run_plan(
    repo: Repository,
    register: RegisterFn,
    source: str,
    steps: list[Step],
    *,
    dry_run: bool,
    notes: Iterable[str] = (),
    progress: ProgressFn | None = None,
) -> ImportReport:
    """Replay ``steps`` (time order, versions before events of the same time) and report.

    Each version's files are fetched into a scratch directory of the store's ``tmp/``
    (removed at the end). ``progress(versions done, versions total)`` is called after each version.
    Each version is all-or-nothing (register's own guarantee); its events come after it, so
    a failure part-way leaves every version either imported or absent, and a re-run picks
    up the rest. A failed step is reported and the import goes on.
    """
    work = repo.store.tmp_path("import")
    try:
        return _replay(repo, register, source, steps, dry_run, work, notes, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _replay(
    repo: Repository,
    register: RegisterFn,
    source: str,
    steps: list[Step],
    dry_run: bool,
    work: Path,
    notes: Iterable[str],
    progress: ProgressFn | None,
) -> ImportReport:
    """:func:`run_plan` with its scratch directory ``work``."""
    steps = sorted(steps, key=lambda s: (s.at, s.fetch is None, s.order))
    stages = {s.stage for s in steps if s.stage is not None}
    declared = declare_stages(repo, stages, dry_run)
    keys: dict[str, set[str]] = {}
    present: set[tuple[str, str]] = set()
    versions: list[VersionResult] = []
    events: list[EventResult] = []
    total = sum(1 for s in steps if s.fetch is not None)
    for step in steps:
        if step.fetch is not None:
            result = _version(repo, register, source, step, dry_run, work)
            versions.append(result)
            if progress:
                progress(len(versions), total)
            if result.status in ("imported", "would-import", "skipped"):
                present.add((step.model, step.version))
            continue
        assert step.stage is not None
        seen = keys.setdefault(step.model, _imported_keys(repo, step.model))
        status = "skipped" if step.key in seen else "would-apply" if dry_run else "applied"
        if status != "skipped" and (step.model, step.version) not in present:
            status = "failed"  # its version was not imported (reported above)
        elif status == "applied":
            try:
                _apply(repo, source, step)
                seen.add(step.key)
            except UniflowError:
                status = "failed"
        events.append(
            EventResult(
                step.model,
                step.version,
                step.stage,
                _iso(step.at),
                f"{step.actor[0]} <{step.actor[1]}>",
                step.key,
                status,
            )
        )
    emptied = _emptied_stages(repo, steps, events, dry_run)
    return ImportReport(
        source, dry_run, tuple(versions), tuple(events), declared, tuple(notes), tuple(emptied)
    )


def _emptied_stages(
    repo: Repository, steps: list[Step], events: list[EventResult], dry_run: bool
) -> list[EmptiedStage]:
    """The stages the replayed events leave with no holder because their version took another
    stage, in the order they were emptied. Every event that happened or would happen counts
    (earlier runs' too: ``skipped``), failed ones do not; a single-holder stage's new holder
    displaces the old one (to ``archived``). After a real import, only stages still empty in
    the registry are reported (a later promotion may have filled one)."""
    outcome = {e.key: e.status for e in events}
    stage_of: dict[tuple[str, str], str] = {}  # (model, version) -> stage
    holders: dict[tuple[str, str], set[str]] = {}  # (model, stage) -> versions
    emptied: dict[tuple[str, str], EmptiedStage] = {}
    single = repo.stages()
    for step in steps:
        if step.stage is None or outcome.get(step.key, "failed") == "failed":
            continue
        model, version, to = step.model, step.version, step.stage
        before = stage_of.get((model, version))
        if before is not None and before != to:
            left = holders.setdefault((model, before), set())
            left.discard(version)
            if not left and before not in SHARED_STAGES and not step.releases:
                emptied[(model, before)] = EmptiedStage(model, before, version, to, _iso(step.at), step.key)
        taking = holders.setdefault((model, to), set())
        if to not in SHARED_STAGES and single.get(to, True):
            for other in taking - {version}:
                stage_of[(model, other)] = ModelStage.ARCHIVED.value  # displaced
            taking.clear()
        taking.add(version)
        stage_of[(model, version)] = to
        emptied.pop((model, to), None)
    found = [e for e in emptied.values() if not holders.get((e.model, e.stage))]
    if not dry_run:
        found = [e for e in found if not repo.lifecycle.state(e.model).holders(e.stage)]
    return found


def _apply(repo: Repository, source: str, step: Step) -> None:
    assert step.stage is not None
    stage = repo.stage(step.stage)
    extra = {"imported_from": source, "import_key": step.key}
    repo.lifecycle.apply(
        step.model,
        move_transition(step.version, stage, repo.stages(), step.reason, extra),
        step.actor,
        at=step.at,
    )


def _version(
    repo: Repository, register: RegisterFn, source: str, step: Step, dry_run: bool, work: Path
) -> VersionResult:
    def result(status: str, detail: str = "") -> VersionResult:
        return VersionResult(step.model, step.version, step.key, status, detail)

    if _already_imported(repo, step):
        return result("skipped", "already imported")
    if dry_run:
        exists = repo.index.tag_sha(step.model, step.version) is not None
        return result("would-import", "exists: bytes will be compared" if exists else "")
    assert step.fetch is not None
    existed = repo.index.tag_sha(step.model, step.version) is not None
    target = work / f"{len(step.key)}-{abs(hash(step.key))}"
    try:
        target.mkdir(parents=True)
        path = step.fetch(target)
        register(
            path,
            step.model,
            version=step.version,
            metrics=step.metrics,
            tags=step.tags,
            params=step.params,
            description=step.description,
            lineage={**step.lineage, "imported_from": source, "import_key": step.key},
            provenance=Provenance(
                step.actor, step.at, step.code_commit, {"imported_from": source, "import_key": step.key}
            ),
        )
    except VersionExistsError:
        return result("conflict", "exists with other bytes; left as it is")
    except UniflowError as exc:
        return result("failed", str(exc))
    except OSError as exc:  # a file the source names cannot be read or written here
        return result("failed", f"{exc.strerror or type(exc).__name__}: {exc.filename or ''}".rstrip(": "))
    finally:
        shutil.rmtree(target, ignore_errors=True)
    return result("skipped" if existed else "imported", "same bytes" if existed else "")
