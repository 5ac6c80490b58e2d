"""``ModelRegistry``: the Python API. Every CLI command is a thin call of a method here."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
from collections.abc import Iterable
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import _testhooks
from ._config import Config, ConfigSource
from ._errors import (
    InvalidPathError,
    UsageError,
    VersionExistsError,
)
from ._git import GitRepo
from ._lifecycle import (
    LifecycleState,
    register_transition,
    rollback_transition,
)
from ._maintenance import gc as _gc
from ._maintenance import verify as _verify
from ._manifest import MANIFEST_FORMAT, content_digest, file_entry, json_safe
from ._naming import next_version, validate_key, validate_model_name, validate_version, version_sort_key
from ._pins import Pin
from ._repo import Repository
from ._reports import GcReport, PullReport, PushReport, VerifyReport
from ._stages import ModelStage, StageLike
from ._store import ObjectStore, ProgressFn
from ._tree import export_files, materialize, model_path_kind, walk_model
from ._types import HistoryEvent, Provenance, HistoryList, ModelSummary, ModelVersion, VersionList
from ._version import __version__
from .sharing.blobs import JOBS, BlobFetcher
from .sharing.pull import pull as _pull
from .sharing.push import push as _push

if TYPE_CHECKING:
    from ._compare import Comparison
    from .importers import ImportReport

__all__ = ["ModelRegistry"]

log = logging.getLogger("uniflow")

_AUTO_VERSION_ATTEMPTS = 100


class ModelRegistry:
    """A model registry stored in the Git repository enclosing ``path`` (default: cwd).

    Outside any Git repository a new one is initialised at ``path`` and a notice is logged,
    so a notebook just works.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        start = Path(path) if path is not None else Path.cwd()
        if path is not None and not start.exists():
            raise InvalidPathError(f"registry path {start} does not exist")
        workdir = GitRepo.find_workdir(start)
        if workdir is None:
            log.warning("uniflow: %s is not inside a git repository; initialising one there", start.resolve())
            git = GitRepo.init(start.resolve())
        else:
            git = GitRepo(workdir)
        root = git.workdir
        # missing chunks come from the declared blob remotes, verified, on demand
        fetcher = BlobFetcher(ConfigSource(root / ".uniflow"), root)
        self._repo = Repository(git, fetcher=fetcher)
        self.git: GitRepo = git
        self.root: Path = root
        self.uniflow_dir: Path = self._repo.uniflow_dir
        self.store: ObjectStore = self._repo.store

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"

    def __enter__(self) -> ModelRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release open files (the Git repository's pack files). Idempotent; the registry
        reopens what it needs if it is used again."""
        self._repo.close()

    # ------------------------------------------------------------------ config
    def init(self) -> bool:
        """Create ``.uniflow/`` (config.toml, .gitignore); True if anything was created."""
        return self._repo.init()

    @property
    def config(self) -> Config:
        """The validated ``.uniflow/config.toml`` (read once; :meth:`reload_config` re-reads)."""
        return self._repo.config

    def reload_config(self) -> None:
        self._repo.reload_config()

    def stages(self) -> dict[str, bool]:
        """Every known stage -> whether it holds a single version at a time."""
        return self._repo.stages()

    # ------------------------------------------------------------------ register
    def register(
        self,
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
    ) -> ModelVersion:
        """Store ``model`` (an object, or a path to a file or directory) as a new version.

        Everything after ``name`` is keyword-only. ``version=None`` bumps the newest
        version's patch number. Registering an existing version with identical content
        returns it (and records its register event if a crash lost it); with different
        content raises :class:`VersionExistsError`. ``trust=True`` allows pickle for objects
        no safe serializer handles; ``lineage`` adds keys to the recorded lineage;
        ``progress(done, total)`` is called as bytes are stored. ``provenance`` (importers)
        gives the original author, time and code commit (:class:`~uniflow._types.Provenance`).
        """
        with ExitStack() as cleanup:  # releases the pin (docs/design.md, "gc and registers in flight")
            return self._register(
                cleanup, model, name, version, framework, metrics, tags, params, description,
                trust=trust, lineage=lineage, progress=progress, provenance=provenance,
            )

    def _register(
        self,
        cleanup: ExitStack,
        model: Any,
        name: str,
        version: str | None,
        framework: str | None,
        metrics: dict[str, Any] | None,
        tags: dict[str, Any] | None,
        params: dict[str, Any] | None,
        description: str | None,
        *,
        trust: bool,
        lineage: dict[str, Any] | None,
        progress: ProgressFn | None,
        provenance: Provenance | None = None,
    ) -> ModelVersion:
        """:meth:`register`; its chunks stay pinned until ``cleanup`` closes, after the tag exists."""
        validate_model_name(name)
        if version is not None:
            validate_version(version)
        for label, value in (("metrics", metrics), ("tags", tags), ("params", params)):
            if value is not None and not isinstance(value, dict):
                raise UsageError(f"{label} must be a dict, got {type(value).__name__}")
            for key in value or {}:
                validate_key(key if isinstance(key, str) else str(key), label[:-1])
        self.init()
        self.store.ensure_dirs()
        pin = cleanup.enter_context(self.store.pin())
        work = self.store.tmp_path("ser")
        try:
            files, serializer, meta, fw = self._collect(model, framework, trust, work)
            entries = self._store_files(files, progress, pin)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        prov = provenance
        code_commit = prov.code_commit if prov and prov.code_commit else self.git.head()
        actor = prov.author if prov else self.git.identity()
        when = prov.created_at.astimezone(timezone.utc) if prov else datetime.now(timezone.utc)
        own_commit = not (prov and prov.code_commit)  # an imported commit is on no branch of ours
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "name": name,
            "version": "",
            "created_at": when.isoformat(timespec="seconds"),
            "author": f"{actor[0]} <{actor[1]}>",
            "framework": fw,
            "serializer": serializer,
            "serializer_meta": json_safe(meta),
            "files": entries,
            "content_digest": content_digest(entries),
            "metrics": json_safe(metrics or {}),
            "params": json_safe(params or {}),
            "tags": {str(k): str(v) for k, v in (tags or {}).items()},
            "description": description or "",
            "lineage": {
                "code_commit": code_commit,
                "branch": self.git.branch() if own_commit else None,
                "dirty": self.git.is_dirty() if code_commit and own_commit else False,
                **json_safe(lineage or {}),
            },
            "libraries": _libraries(serializer),
        }
        _testhooks.point("register-before-tag")
        for attempt in range(_AUTO_VERSION_ATTEMPTS):
            chosen = version or next_version(self._repo.index.version_names(name))
            manifest["version"] = chosen
            try:
                created, _tag = self._repo.index.write_version(manifest, code_commit, actor)
            except VersionExistsError:
                if version is not None:
                    raise
                continue  # someone took this auto version concurrently: take the next one
            _testhooks.point("register-before-event")
            self._record_register(name, chosen, _tag, actor, prov)
            return self.get(name, chosen)
        raise VersionExistsError(name, "auto", "(too many concurrent registrations)")

    def _collect(
        self, model: Any, framework: str | None, trust: bool, work: Path
    ) -> tuple[list[tuple[str, Path]], str, dict[str, Any], str]:
        """Files to store: ``([(relpath, path)], serializer, meta, framework label)``."""
        from .serializers import canonical_framework, serializer_for
        from .serializers._files import framework_for_path

        if isinstance(model, (str, os.PathLike)):
            src = Path(model)
            kind = model_path_kind(src)  # a regular file or a directory, nothing else
            fw = framework or framework_for_path(src)
            if kind == "file":
                return [(src.name, src)], "files", {"kind": "file", "path": src.name}, fw
            files = _walk(src)
            if not files:
                raise InvalidPathError(f"model directory {src} holds no files")
            return files, "files", {"kind": "dir"}, fw
        ser = serializer_for(model, framework, trust)
        work.mkdir(parents=True)
        meta = ser.save(model, work, trust=trust)
        fw = canonical_framework(framework) if framework else ser.framework
        return _walk(work), ser.name, meta, fw

    def _record_register(
        self, name: str, version: str, tag: str, actor: tuple[str, str], prov: Provenance | None = None
    ) -> None:
        """Write the register event of ``version`` unless its lifecycle already has it.

        Called after every register, new or repeated: a register that died between its tag
        and its event is repaired by the next register of the same version, exactly once.
        The check runs inside the lifecycle compare-and-swap (on the head it is about to
        extend), so two registers racing here write one event between them.
        """
        since = self.git.read_tag(tag).tag_time - _EVENT_CLOCK_SLACK

        def once(state: LifecycleState) -> tuple[dict[str, Any], str]:
            if _has_register_event(self._repo, name, version, since):
                raise _AlreadyRecorded
            return register_transition(version, json_safe(prov.event_extra) if prov else None)(state)

        try:
            self._repo.lifecycle.apply(name, once, actor, at=prov.created_at if prov else None)
        except _AlreadyRecorded:
            pass

    def _store_files(
        self, files: list[tuple[str, Path]], progress: ProgressFn | None, pin: Pin | None = None
    ) -> list[dict[str, Any]]:
        total = sum(p.stat().st_size for _, p in files)
        done = 0
        entries = []
        for rel, path in files:
            base = done
            cb = (lambda d, _t, b=base: progress(b + d, total)) if progress else None
            rec = self.store.put_file(path, cb, pin)
            done += rec.size
            entries.append(file_entry(rel, rec, path.stat().st_mode))
        if progress and not files:
            progress(0, 0)
        return entries

    # ------------------------------------------------------------------ read

    def get(self, name: str, version: str | None = None, stage: StageLike | None = None) -> ModelVersion:
        """The :class:`ModelVersion` for a version, a stage's holder, or the newest version."""
        v, state = self._repo.resolve(name, version, stage)
        return self._repo.model_version(name, v, state.stage(v))

    def list_models(self) -> list[ModelSummary]:
        out = []
        for name, names in sorted(self._repo.index.all_version_names().items()):
            state, when = self._repo.lifecycle.state_at(name)
            single = self.stages()
            state = state.restricted_to(names)  # a version whose tag is gone holds nothing
            holders = {s: v for v, s in state.stage_of.items() if single.get(s, True) and s != "archived"}
            updated = datetime.fromtimestamp(when, timezone.utc) if when is not None else None
            latest = max(names, key=version_sort_key) if names else None
            out.append(ModelSummary(name, latest, len(names), dict(sorted(holders.items())), updated))
        return out

    def list_versions(self, name: str, stage: StageLike | None = None) -> list[ModelVersion]:
        """Every version of ``name`` (semver ascending), optionally only those in ``stage``."""
        return VersionList(self._repo.list_versions(name, stage))

    def history(self, name: str) -> list[HistoryEvent]:
        """Every lifecycle event of ``name``, oldest first (``git log`` of its lifecycle ref)."""
        self._repo.require_model(name)
        return HistoryList(self._repo.lifecycle.history(name))

    # ------------------------------------------------------------------ notebooks (uniflow/_notebook.py)
    def versions_frame(self, name: str, stage: StageLike | None = None) -> Any:
        """The versions of ``name`` as a ``pandas.DataFrame`` (needs the ``notebook`` extra)."""
        from ._notebook import versions_frame

        return versions_frame(self.list_versions(name, stage=stage))

    def plot(self, name: str, metric: str) -> Any:
        """A matplotlib ``Figure`` of ``metric`` across the versions of ``name`` (``notebook`` extra)."""
        from ._notebook import plot_metric

        return plot_metric(self.list_versions(name), metric, self.history(name))

    # ------------------------------------------------------------------ load
    def _context(self, name: str, version: str, path: str) -> str:
        return f"model {name!r} version {version!r} file {path!r}"

    def load_path(self, name: str, version: str | None = None, stage: StageLike | None = None) -> Path:
        """A verified, read-only directory holding the version's files."""
        v, _ = self._repo.resolve(name, version, stage)
        return self._materialize(name, v, self._repo.manifest(name, v))

    def _materialize(self, name: str, version: str, m: dict[str, Any], progress: ProgressFn | None = None) -> Path:
        """``.uniflow/cache/versions/<content digest>``, holding the verified files; every
        path is re-checked and walked without following symlinks (see ``_tree``)."""
        return materialize(self._repo, name, version, m, progress)[0]

    def load(
        self,
        name: str,
        version: str | None = None,
        stage: StageLike | None = None,
        *,
        model: Any = None,
        trust: bool = False,
    ) -> Any:
        """The registered object, rebuilt safely from verified bytes.

        Files and directories come back as a path. ``model=`` is an instance to load
        weights into; ``trust=True`` allows pickle for versions registered with it.
        """
        from .serializers import get_serializer

        v, _ = self._repo.resolve(name, version, stage)
        m = self._repo.manifest(name, v)
        vdir = self._materialize(name, v, m)
        ser = get_serializer(m["serializer"])
        return ser.load(vdir, m.get("serializer_meta", {}), trust=trust, into=model)

    def export(
        self,
        name: str,
        dest: str | os.PathLike[str],
        version: str | None = None,
        stage: StageLike | None = None,
        *,
        progress: ProgressFn | None = None,
        force: bool = False,
    ) -> Path:
        """Copy the version's verified files into the directory ``dest`` (writable copies).

        ``dest`` is followed as named; below it no symlink is followed: a symlink, FIFO,
        socket or device where a model file or directory goes raises
        :class:`InvalidPathError`, unless ``force`` (then that entry itself is replaced).
        Files are written under a temporary name and renamed into place, mode 0o755 or
        0o644 (minus the umask).
        """
        v, _ = self._repo.resolve(name, version, stage)
        m = self._repo.manifest(name, v)
        _vdir, sources = materialize(self._repo, name, v, m, progress)
        out = Path(dest)
        export_files(out, sources, force=force)
        return out

    # ------------------------------------------------------------------ lifecycle
    def promote(
        self,
        name: str,
        version: str,
        stage: StageLike,
        *,
        reason: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Move ``version`` into ``stage``; a single-holder stage's previous holder is archived."""
        self._repo.promote(name, version, stage, reason=reason, extra=extra)
        return self.get(name, version)

    def archive(self, name: str, version: str, *, reason: str | None = None) -> ModelVersion:
        return self.promote(name, version, ModelStage.ARCHIVED, reason=reason)

    def rollback(self, name: str, stage: StageLike, *, reason: str | None = None) -> ModelVersion:
        """Give ``stage`` back to its previous holder (the current one is archived)."""
        st = self._repo.stage(stage)
        self._repo.require_model(name)
        if st in ("development", "archived") or not self.stages().get(st, True):
            raise UsageError(f"cannot roll back stage {st!r}: only single-holder stages have a previous holder")
        existing = set(self._repo.index.version_names(name))
        _state, event = self._repo.lifecycle.apply(
            name, rollback_transition(st, existing.__contains__, reason), self.git.identity()
        )
        return self.get(name, event["version"])

    def compare_versions(self, name: str, versions: list[str]) -> "Comparison":
        """Metrics side by side with deltas, params, tags, sizes, shared bytes, code commits."""
        from ._compare import build_comparison

        if isinstance(versions, str) or len(versions) < 2:
            raise UsageError("compare_versions needs a list of at least two versions")
        mvs = [self.get(name, v) for v in versions]
        manifests = [self._repo.manifest(name, v) for v in versions]
        return build_comparison(self.git, mvs, manifests)

    # ------------------------------------------------------------------ importers (uniflow/importers/)
    def import_mlflow(
        self, names: Iterable[str] | None = None, *, tracking_uri: str | None = None,
        registry_uri: str | None = None, dry_run: bool = False, progress: ProgressFn | None = None,
    ) -> "ImportReport":
        """Import an MLflow Model Registry (every model, or ``names``) with its stages and
        aliases; idempotent. Needs the ``mlflow`` extra. See docs/migrate.md."""
        from .importers.mlflow import import_mlflow

        return import_mlflow(self._repo, self.register, names, tracking_uri=tracking_uri,
                             registry_uri=registry_uri, dry_run=dry_run, progress=progress)

    def import_gto(
        self, names: Iterable[str] | None = None, *, rev: str | None = None, dry_run: bool = False,
        progress: ProgressFn | None = None,
    ) -> "ImportReport":
        """Import the GTO tags of this repository (only those whose commit ``rev`` reaches, when
        given) with their assignments and deprecations; idempotent. See docs/migrate.md."""
        from .importers.gto import import_gto

        return import_gto(self._repo, self.register, names, rev=rev, dry_run=dry_run, progress=progress)

    # ------------------------------------------------------------------ maintenance
    def verify(self, name: str | None = None) -> VerifyReport:
        """Re-hash every chunk of every version (or of ``name``) and check every lifecycle;
        the :class:`VerifyReport` (``.ok`` when no problem was found)."""
        return _verify(self._repo, name)

    def gc(self, *, dry_run: bool = True, grace_seconds: float = 3600.0) -> GcReport:
        """Delete chunks no ref reaches, older than the grace period (dry run by default);
        the :class:`GcReport` of what was (or would be) deleted."""
        return _gc(self._repo, dry_run=dry_run, grace_seconds=grace_seconds)

    @property
    def repository(self) -> Repository:
        """The parts below this facade (Git, store, index, lifecycles, config), for the
        sharing and CI layers."""
        return self._repo

    # ------------------------------------------------------------------ sharing (uniflow/sharing/)
    def push(
        self,
        remote: str | None = None,
        names: Iterable[str] | None = None,
        *,
        blob: str | None = None,
        all_versions: bool = False,
        jobs: int = JOBS,
        progress: ProgressFn | None = None,
    ) -> PushReport:
        """Upload the chunks the blob remote lacks, then push version tags, lifecycle refs and
        stage pointers to the Git remote in one atomic ``git push``.

        ``remote``: the Git remote (default ``origin``, else the only one). ``names``: push
        only these models (default: every model). ``blob``: the blob remote declared in
        ``.uniflow/config.toml`` (default: the one named like the Git remote, else the only
        one). ``all_versions``: make sure the chunks of every version are on the blob remote,
        not only those of tags the Git remote lacks. ``jobs``: parallel uploads.
        ``progress(done, total)``: called as bytes are uploaded.

        Raises :class:`PushRejectedError` when the remote has lifecycle events you do not have
        (pull, then push again) or holds one of your versions with other content, and
        :class:`RemoteError` when no blob remote is configured for versions to upload.
        """
        return _push(
            self._repo, remote, names, blob=blob, all_versions=all_versions, jobs=jobs, progress=progress
        )

    def pull(
        self,
        remote: str | None = None,
        names: Iterable[str] | None = None,
        *,
        all_versions: bool = False,
        stages: Iterable[StageLike] | None = None,
        resolve: Literal["ours", "theirs"] | None = None,
        blob: str | None = None,
        force_tags: bool = False,
        fetch_chunks: bool = True,
        jobs: int = JOBS,
        progress: ProgressFn | None = None,
    ) -> PullReport:
        """Fetch version tags and lifecycle refs from the Git remote, validate and integrate
        them, recompute stage pointers, and fetch the chunks asked for.

        ``remote``: the Git remote (default ``origin``, else the only one). ``names``: pull
        only these models (and fetch all their chunks). ``all_versions``: fetch the chunks of
        every version now; ``stages``: of the versions holding these stages. Without
        ``all_versions``, ``stages`` or ``names`` chunks are fetched when a version is
        loaded. ``resolve``: on a lifecycle conflict, ``"ours"`` replays your events on top
        of the remote's, ``"theirs"`` takes the remote's. ``blob``: the blob remote (as for
        :meth:`push`). ``force_tags``: let fetched tags replace local ones of the same name
        (CI checkouts). ``fetch_chunks=False``: refs only. ``jobs``: parallel downloads.
        ``progress(done, total)``: called as bytes are downloaded.

        Raises :class:`LifecycleConflictError` on a conflict left unresolved and
        :class:`IntegrityError` when a remote lifecycle failed validation (the other models
        are integrated); either carries the :class:`PullReport` as ``.result``.
        """
        return _pull(
            self._repo, remote, names, all_versions=all_versions, stages=stages, resolve=resolve, blob=blob,
            force_tags=force_tags, fetch_chunks=fetch_chunks, jobs=jobs, progress=progress,
        )


#: a register event is written after its tag, on the same clock; events older than the tag
#: by more than this are an earlier registration of a version of the same name (deleted since)
_EVENT_CLOCK_SLACK = 5


class _AlreadyRecorded(Exception):
    """The register event exists: nothing to write (aborts the lifecycle transition)."""


def _has_register_event(repo: Repository, name: str, version: str, since: int) -> bool:
    """True if the lifecycle of ``name`` records registering ``version`` at or after ``since``
    (walking back from the head only that far: usually one commit)."""
    return any(
        ev.get("action") == "register" and ev.get("version") == version for ev in repo.lifecycle.events(name, since)
    )


def _walk(root: Path) -> list[tuple[str, Path]]:
    """The regular files of a directory model; a symlink, FIFO, socket or device inside it
    is an InvalidPathError naming it (see ``_tree.walk_model``)."""
    return walk_model(root)


def _libraries(serializer: str) -> dict[str, str]:
    libs = {"python": platform.python_version(), "uniflow": __version__}
    for mod in ("torch", "safetensors", "sklearn", "skops", "numpy"):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, "__version__"):
            libs[mod] = str(m.__version__)
    return libs
