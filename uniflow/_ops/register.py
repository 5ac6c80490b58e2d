"""Registering a version: collect the files, store their chunks (pinned), write the manifest,
the version commit and tag, then the register event.

Write order (invariant 1): chunks (fsynced) -> version objects -> tag ref -> lifecycle
event. The chunks a register relies on, new or reused, stay pinned until its tag exists,
so a concurrent gc never deletes them (docs/design.md, "gc and registers in flight").
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import warnings
from contextlib import ExitStack, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _testhooks
from .._errors import (
    IntegrityError,
    InvalidPathError,
    LfsPointerError,
    LfsPointerWarning,
    UsageError,
    VersionExistsError,
)
from .._naming import next_version, validate_key, validate_model_name, validate_version
from .._records import tensors as _tensors
from .._records.lifecycle import LifecycleState, parse_event, register_transition
from .._records.lifecycle import _dumps as lifecycle_dumps
from .._records.manifest import (
    MANIFEST_FORMAT,
    FileEntry,
    Manifest,
    content_digest,
    file_entry,
    json_safe,
    pack,
    unpack,
)
from .._records.refs import tag_ref
from .._repo import Repository
from .._storage import lfs as _lfs
from .._storage.pins import Pin
from .._types import ProgressFn, Provenance
from .._version import __version__
from ..serializers._base import StreamedFile
from .enforce import configured_signer
from .materialize import model_path_kind, walk_model

if TYPE_CHECKING:
    from .._authority.signing import Signer

__all__ = ["register_version"]

_AUTO_VERSION_ATTEMPTS = 100
log = logging.getLogger("uniflow")
#: a lifecycle ``seq`` wider than any real one: an event checked with it is at least as long
_SEQ_PLACEHOLDER = 10**15


def register_version(
    repo: Repository,
    model: Any,
    name: str,
    *,
    version: str | None = None,
    framework: str | None = None,
    metrics: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    description: str | None = None,
    trust: bool = False,
    lineage: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    provenance: Provenance | None = None,
    strict: bool = False,
) -> str:
    """Store ``model`` as a version of ``name`` and return the version string chosen.

    Its chunks stay pinned until the tag exists (docs/design.md, "gc and registers in
    flight"); see ``ModelRegistry.register`` for the parameters.
    """
    _validate_arguments(name, version, metrics=metrics, tags=tags, params=params)
    with ExitStack() as cleanup:
        repo.init()
        repo.store.ensure_dirs()
        pin = cleanup.enter_context(repo.store.pin())
        work = repo.store.tmp_path("ser")
        try:
            files, serializer, meta, fw = _collect(model, framework, trust, work)
            if isinstance(model, (str, os.PathLike)):
                _check_lfs_pointers(files, strict)
            with repo.store.batch(pin):  # one set of packs for all files, durable at the end
                entries = _store_files(repo, files, progress, pin)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        origin = _Origin.of(repo, provenance)
        manifest = Manifest(
            format=MANIFEST_FORMAT,
            name=name,
            version="",
            created_at=origin.when.isoformat(timespec="seconds"),
            author=f"{origin.actor[0]} <{origin.actor[1]}>",
            framework=fw,
            serializer=serializer,
            serializer_meta=json_safe(meta),
            files=tuple(entries),
            content_digest=content_digest(entries),
            metrics=json_safe(metrics or {}),
            params=json_safe(params or {}),
            tags={str(k): str(v) for k, v in (tags or {}).items()},
            description=description or "",
            lineage={**origin.lineage(repo), **json_safe(lineage or {})},
            libraries=_libraries(),
        )
        _testhooks.point("register-before-tag")
        return _publish(repo, manifest, version, origin, provenance)


def _validate_arguments(
    name: str,
    version: str | None,
    *,
    metrics: dict[str, Any] | None,
    tags: dict[str, Any] | None,
    params: dict[str, Any] | None,
) -> None:
    """Refuse a bad name, version, or metrics/tags/params that are not dicts of valid keys."""
    validate_model_name(name)
    if version is not None:
        validate_version(version)
    for label, value in (("metrics", metrics), ("tags", tags), ("params", params)):
        if value is not None and not isinstance(value, dict):
            raise UsageError(f"{label} must be a dict, got {type(value).__name__}")
        for key in value or {}:
            validate_key(key if isinstance(key, str) else str(key), label[:-1])


@dataclass(frozen=True)
class _Origin:
    """Who registers, when, and from which code commit: this clone's, or an importer's."""

    code_commit: str | None
    actor: tuple[str, str]
    when: datetime
    own_commit: bool  # False for an imported commit: it is on no branch of ours

    @classmethod
    def of(cls, repo: Repository, prov: Provenance | None) -> _Origin:
        code_commit = prov.code_commit if prov and prov.code_commit else repo.git.head()
        actor = prov.author if prov else repo.git.identity()
        when = prov.created_at.astimezone(UTC) if prov else datetime.now(UTC)
        return cls(code_commit, actor, when, own_commit=not (prov and prov.code_commit))

    def lineage(self, repo: Repository) -> dict[str, Any]:
        """The manifest's lineage: the code commit, and the branch and dirty flag of our own."""
        return {
            "code_commit": self.code_commit,
            "branch": repo.git.branch() if self.own_commit else None,
            "dirty": repo.git.is_dirty() if self.code_commit and self.own_commit else False,
        }


def _publish(
    repo: Repository,
    manifest: Manifest,
    version: str | None,
    origin: _Origin,
    prov: Provenance | None,
) -> str:
    """Write the version tag, then its register event; return the version chosen.

    ``version=None`` takes the next free version, again if a concurrent register took it.
    What a reader would refuse is refused before the first ref; a failure after the tag
    takes the tag back (all or nothing)."""
    name = manifest.name
    signer = configured_signer(repo)  # a configured key signs the tag and the register event
    for _attempt in range(_AUTO_VERSION_ATTEMPTS):
        chosen = version or next_version(repo.index.version_names(name))
        manifest = replace(manifest, version=chosen)
        _readable_or_refuse(repo, manifest)  # before the first ref: what a reader would refuse
        _event_readable_or_refuse(name, chosen, origin.actor, origin.when, prov)
        try:
            created, tag = repo.index.write_version(manifest, origin.code_commit, origin.actor, signer=signer)
        except VersionExistsError:
            if version is not None:
                raise
            continue  # someone took this auto version concurrently: take the next one
        _testhooks.point("register-before-event")
        try:
            _record_register(repo, name, chosen, tag, origin.actor, prov, signer)
        except BaseException:
            if created:  # all or nothing: no tag without its register event
                _take_back(repo, name, chosen, tag)
            raise
        return chosen
    raise VersionExistsError(name, "auto", "(too many concurrent registrations)")


def _collect(
    model: Any, framework: str | None, trust: bool, work: Path
) -> tuple[list[tuple[str, Path | StreamedFile]], str, dict[str, Any], str]:
    """Files to store: ``([(relpath, path or streamed bytes)], serializer, meta, framework
    label)``. An in-memory model whose serializer can stream is never written to disk:
    its bytes go from the model's memory straight into the store."""
    from ..serializers import canonical_framework, serializer_for
    from ..serializers._files import framework_for_path

    if isinstance(model, (str, os.PathLike)):
        src = Path(model)
        kind = model_path_kind(src)  # a regular file or a directory, nothing else
        fw = framework or framework_for_path(src)
        if kind == "file":
            return [(src.name, src)], "files", {"kind": "file", "path": src.name}, fw
        walked = walk_model(src)  # a symlink, FIFO, socket or device inside is an InvalidPathError
        if not walked:
            raise InvalidPathError(f"model directory {src} holds no files")
        return list(walked), "files", {"kind": "dir"}, fw
    ser = serializer_for(model, framework, trust)
    fw = canonical_framework(framework) if framework else ser.framework
    streamed = ser.stream(model, trust=trust)
    if streamed is not None:
        return [(f.path, f) for f in streamed.files], ser.name, streamed.meta, fw
    work.mkdir(parents=True)
    meta = ser.save(model, work, trust=trust)
    return list(walk_model(work)), ser.name, meta, fw


def _check_lfs_pointers(files: list[tuple[str, Path | StreamedFile]], strict: bool) -> None:
    """Warn (:class:`LfsPointerWarning`), or with ``strict`` refuse before anything is stored
    (:class:`LfsPointerError`), when files of a model registered from a path are Git LFS
    pointer files: a clone made without git-lfs, or with ``GIT_LFS_SKIP_SMUDGE=1``."""
    pointers = _lfs.lfs_pointers([(rel, p) for rel, p in files if isinstance(p, Path)])
    if not pointers:
        return
    what = _lfs.describe(pointers)
    if strict:
        raise LfsPointerError(f"{what}: run `git lfs pull` first (refused: strict)")
    warnings.warn(  # caller of ModelRegistry.register: 4 frames up
        LfsPointerWarning(f"{what}: registered as it is; run `git lfs pull` and register again"),
        stacklevel=4,
    )


def _record_register(
    repo: Repository,
    name: str,
    version: str,
    tag: str,
    actor: tuple[str, str],
    prov: Provenance | None = None,
    signer: Signer | None = None,
) -> None:
    """Write the register event of ``version`` unless its lifecycle already has it.

    Called after every register, new or repeated: a register that died between its tag
    and its event is repaired by the next register of the same version, exactly once.
    The check runs inside the lifecycle compare-and-swap (on the head it is about to
    extend), so two registers racing here write one event between them.
    """
    since = repo.git.read_tag(tag).tag_time - _EVENT_CLOCK_SLACK

    def once(state: LifecycleState) -> tuple[dict[str, Any], str]:
        if _has_register_event(repo, name, version, since):
            raise _AlreadyRecorded
        return register_transition(version, json_safe(prov.event_extra) if prov else None, tag)(state)

    with suppress(_AlreadyRecorded):
        repo.lifecycle.apply(name, once, actor, at=prov.created_at if prov else None, signer=signer)


def _readable_or_refuse(repo: Repository, manifest: Manifest) -> None:
    """Run the manifest's exact bytes through the read gate (``_records.manifest.unpack``, with the
    repository's ``[limits]``), so a version every reader would refuse (a manifest over
    ``max_manifest_bytes``: a huge description, thousands of tags) is refused with a
    :class:`UsageError` before its tag exists, never after."""
    name, version = manifest.name, manifest.version
    context = f"model {name!r} version {version!r}"
    try:
        unpack(pack(manifest), context, limits=repo.index.limits(), name=name, version=version)
    except IntegrityError as exc:
        raise UsageError(f"cannot register: {exc}") from exc


def _event_readable_or_refuse(
    name: str, version: str, actor: tuple[str, str], when: datetime, prov: Provenance | None
) -> None:
    """Run the register event this call will write (its ``extra`` is an importer's, of any
    size) through the reader's event gate (``_records.lifecycle.parse_event``, in the lifecycle's own
    serialization) before the tag exists: a :class:`UsageError` instead of an event that no
    reader could read. ``seq`` is given more digits than any lifecycle reaches."""
    event, _summary = register_transition(version, json_safe(prov.event_extra) if prov else None)(
        LifecycleState(name)
    )
    event = {**event, "seq": _SEQ_PLACEHOLDER, "actor": f"{actor[0]} <{actor[1]}>", "at": when.isoformat()}
    try:
        parse_event(lifecycle_dumps(event), f"register event of model {name!r} version {version!r}")
    except IntegrityError as exc:
        raise UsageError(f"cannot register: {exc}") from exc


def _take_back(repo: Repository, name: str, version: str, tag: str) -> None:
    """Delete the version tag this register created when its register event was not
    written (the event write failed or was refused): compare-and-swap on the exact tag sha,
    so a tag anyone else wrote is never touched, and only while the lifecycle holds no
    register event of it. The original error is what the caller sees; should this
    clean-up fail too, the next register of the version records the event (see
    :func:`_record_register`)."""
    try:
        since = repo.git.read_tag(tag).tag_time - _EVENT_CLOCK_SLACK
        if _has_register_event(repo, name, version, since):
            return  # the event is there (a later step failed): the version is whole
        repo.git.delete_ref(tag_ref(name, version), tag)
    except Exception as exc:  # noqa: BLE001 - the error being raised already says what failed
        log.warning("uniflow: could not take back tag %s of %s %s: %s", tag[:12], name, version, exc)


def _store_files(
    repo: Repository,
    files: list[tuple[str, Path | StreamedFile]],
    progress: ProgressFn | None,
    pin: Pin | None = None,
) -> list[FileEntry]:
    """Store every file (its chunks cut at its tensors' edges, see ``_storage.cutting``) and
    return its manifest entries: format 3, the file's and each tensor's identity built
    from the chunk names (``_storage.merkle``)."""
    total = sum(p.size if isinstance(p, StreamedFile) else p.stat().st_size for _, p in files)
    done = 0
    entries = []
    for rel, path in files:
        base = done
        cb = (lambda d, _t, b=base: progress(b + d, total)) if progress else None
        scan = _tensors.scan_for(rel)  # tensor files: cut at tensor edges, per-tensor identities
        if isinstance(path, StreamedFile):
            rec = repo.store.put_segments(path.parts, cb, pin, scan)
            mode = 0o644  # what the serializer's file would have had
        else:
            rec = repo.store.put_file(path, cb, pin, scan)
            mode = path.stat().st_mode
        done += rec.size
        tensors = scan.entries(rec.range_digests) if scan is not None else None
        entries.append(file_entry(rel, rec, mode, tensors))
    if progress and not files:
        progress(0, 0)
    return entries


#: a register event is written after its tag, on the same clock; events older than the tag
#: by more than this are an earlier registration of a version of the same name (deleted since)
_EVENT_CLOCK_SLACK = 5


class _AlreadyRecorded(Exception):
    """The register event exists: nothing to write (aborts the lifecycle transition)."""


def _has_register_event(repo: Repository, name: str, version: str, since: int) -> bool:
    """True if the lifecycle of ``name`` records registering ``version`` at or after ``since``
    (walking back from the head only that far: usually one commit)."""
    return any(
        ev is not None and ev.action == "register" and ev.version == version
        for ev in repo.lifecycle.events(name, since)
    )


def _libraries() -> dict[str, str]:
    """Versions of Python, uniflow and the ML libraries already imported (none is imported here)."""
    libs = {"python": platform.python_version(), "uniflow": __version__}
    for mod in ("torch", "safetensors", "sklearn", "skops", "numpy"):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, "__version__"):
            libs[mod] = str(m.__version__)
    return libs
