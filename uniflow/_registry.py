"""The registry facade: the Python API. Every CLI command is a thin call of a method here.

Three classes::

    RegistryReader          the read API: get, list, load, export, history, compare, diff ...
    ├── ModelRegistry       a work tree's registry: adds every write (register, promote, push ...)
    └── RemoteRegistry      a registry read from a Git URL without a clone: reads only

``ModelRegistry(url)`` (a Git URL or a bare repository) returns a :class:`RemoteRegistry`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Self

from ._errors import (
    InvalidPathError,
    ReadOnlyRegistryError,
    StageEmptyError,
    UsageError,
)
from ._ops.materialize import export_files, materialize
from ._records.config import Config, ConfigSource
from ._records.git import GitRepo
from ._records.lifecycle import LifecycleEvent
from ._repo import Repository
from ._reports import GcReport, PullReport, PushReport, VerifyReport
from ._stages import ModelStage, StageLike
from ._storage.store import ObjectStore
from ._types import (
    HistoryEvent,
    HistoryList,
    ModelSummary,
    ModelVersion,
    ProgressFn,
    Provenance,
    VersionList,
    VersionRow,
)
from .sharing.blobs import JOBS, BlobFetcher
from .sharing.giturl import is_git_url
from .sharing.pull import PolicyCheck
from .sharing.pull import pull as _pull
from .sharing.push import push as _push

if TYPE_CHECKING:
    from ._authority.rotation import PolicyChain
    from ._ops.compare import Comparison
    from ._ops.diff import VersionDiff
    from ._ops.policy import PolicyInit, PolicySignature
    from ._records.eventtags import EventRecord
    from ._records.lifecycle import LifecycleState
    from ._records.manifest import Manifest
    from .importers import ImportReport

__all__ = ["ModelRegistry", "RegistryReader", "RemoteRegistry"]

log = logging.getLogger("uniflow")


class RegistryReader:
    """The read API every registry has: :class:`ModelRegistry` (a work tree's registry, which
    adds the writes) and :class:`RemoteRegistry` (a registry read by Git URL, read-only).

    Not opened directly: ``ModelRegistry(path)`` or ``ModelRegistry(url)`` gives one. Type a
    variable as ``RegistryReader`` where either kind is welcome.
    """

    #: the repository read from; built by :meth:`_open` on first use when not given up front
    _bound: Repository | None = None
    #: ``signatures=`` given when opened (None: the config's, else the default; see :meth:`get`)
    _signatures: str | None = None
    #: ``trust_root=`` given when opened: an allowed-signers file naming the admins
    _trust_root: str | os.PathLike[str] | None = None
    #: whether the mode may come from the registry's own config (not for one read by URL)
    _config_mode = True

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        if cls is RegistryReader:
            raise UsageError(
                "RegistryReader is not opened directly: use ModelRegistry(path) or ModelRegistry(url)"
            )
        return super().__new__(cls)

    def _open(self) -> Repository:
        """Build the repository this registry reads (called once, on first use)."""
        raise NotImplementedError

    @property
    def _repo(self) -> Repository:
        if self._bound is None:
            self._bound = self._open()
        return self._bound

    @property
    def git(self) -> GitRepo:
        """The Git repository (internal, like :attr:`repository`)."""
        return self._repo.git

    @property
    def root(self) -> Path:
        """The work tree (for a registry read by URL: the chunk cache's directory)."""
        return self._repo.root

    @property
    def uniflow_dir(self) -> Path:
        """``<root>/.uniflow``."""
        return self._repo.uniflow_dir

    @property
    def store(self) -> ObjectStore:
        """The chunk store (internal, like :attr:`repository`)."""
        return self._repo.store

    @property
    def repository(self) -> Repository:
        """The parts below this facade (Git, store, index, lifecycles, config), for the
        sharing and CI layers; internal, no stability promise."""
        return self._repo

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release open files (the Git repository's pack files). Idempotent; the registry
        reopens what it needs if it is used again. Not required: a registry never closed has
        its files released when it is collected, or at exit, quietly (a finalizer in
        ``GitRepo``)."""
        if self._bound is not None:
            self._bound.close()

    # ------------------------------------------------------------------ config
    @property
    def config(self) -> Config:
        """The validated ``.uniflow/config.toml`` (read once; :meth:`reload_config` re-reads)."""
        return self._repo.config

    def reload_config(self) -> None:
        """Read ``.uniflow/config.toml`` again (a registry read by URL: its config changes on sync)."""
        self._repo.reload_config()

    def stages(self) -> dict[str, bool]:
        """Every known stage -> whether it holds a single version at a time."""
        return self._repo.stages()

    # ------------------------------------------------------------------ read
    def _resolve(self, name: str, version: str | None, stage: StageLike | None) -> tuple[str, LifecycleState]:
        """``Repository.resolve``; a stage found empty in a clone that lacks the model's
        lifecycle says to run ``uniflow pull`` (see :meth:`missing_lifecycle_hint`)."""
        try:
            return self._repo.resolve(name, version, stage)
        except StageEmptyError as exc:
            hint = self.missing_lifecycle_hint(name)
            if hint is None:
                raise
            raise StageEmptyError(exc.name, exc.stage, hint) from None

    def _verified(
        self, name: str, version: str | None, stage: StageLike | None, signatures: str | None
    ) -> tuple[str, LifecycleState]:
        """:meth:`_resolve`, then the signature check of the version it resolved to
        (``_ops.consume.check_read``): refused under ``require``, warned under ``warn``."""
        from ._ops.consume import check_read, signature_mode

        v, state = self._resolve(name, version, stage)
        asked = signatures if signatures is not None else self._signatures
        mode = signature_mode(self._repo, asked, remote=not self._config_mode)
        if mode != "off":
            self._prepare_verification()
            held = self._repo.stage(stage) if version is None and stage is not None else None
            check_read(self._repo, name, v, held, mode=mode, trust_root=self._trust_root)
        return v, state

    def _prepare_verification(self) -> None:
        """Make what verifying signatures reads available (a clone has it all)."""

    def missing_lifecycle_hint(self, name: str | None = None) -> str | None:  # noqa: ARG002 (RegistryReader's signature)
        """What to do when model ``name`` (or any model) has version tags but no lifecycle
        in a clone with a Git remote, else None. A fresh ``git clone`` brings the version
        tags but not ``refs/uniflow/*``: until ``uniflow pull`` every version reads as in
        development and no stage has a holder. The CLI prints it as a ``hint:`` line."""
        models = [name] if name is not None else self._repo.index.models()
        lacking = [  # one ref read per model; its tags are listed only when it has no lifecycle
            m for m in models if self._repo.lifecycle.head(m) is None and self._repo.index.version_names(m)
        ]
        if not lacking or not self.git.remote_names():
            return None
        which = f"model {lacking[0]!r}" if len(lacking) == 1 else "models " + ", ".join(map(repr, lacking))
        return (
            f"this clone has the version tags of {which} but not the lifecycle (stages, history): "
            "run `uniflow pull` to fetch it"
        )

    def get(
        self,
        name: str,
        version: str | None = None,
        stage: StageLike | None = None,
        *,
        signatures: str | None = None,
    ) -> ModelVersion:
        """The :class:`ModelVersion` for a version, a stage's holder, or the newest version.

        ``signatures`` (here, in :meth:`load`, :meth:`load_path` and :meth:`export`; default:
        the registry's ``signatures=``, else ``[signatures] verify`` of a clone's config, else
        ``"warn"`` once the default branch has a policy, else ``"off"``): ``"require"`` serves
        a stage's holder only if its promotion chain satisfies the policy (a version asked by
        name: only if its tag is signed by an allowed signer), and never a lifecycle older than
        one verified before; otherwise one line, :class:`PolicyError` or
        :class:`IntegrityError`. ``"warn"``: a :class:`UniflowWarning`, then the version.
        See docs/governance.md, "Consumers"."""
        v, state = self._verified(name, version, stage, signatures)
        return self._repo.model_version(name, v, state.stage(v))

    def list_models(self) -> list[ModelSummary]:
        out = []
        single = self.stages()
        for name, listing, state, when in self._repo.overview():
            names = listing.versions  # semver ascending
            state = state.restricted_to(names)  # a version whose tag is gone holds nothing
            holders = {
                s: v for v, s in state.stage_of.items() if single.get(s, True) and s != ModelStage.ARCHIVED
            }
            updated = datetime.fromtimestamp(when, UTC) if when is not None else None
            latest = names[-1] if names else None
            out.append(ModelSummary(name, latest, len(names), dict(sorted(holders.items())), updated))
        return out

    def list_versions(self, name: str, stage: StageLike | None = None) -> list[ModelVersion]:
        """Every version of ``name`` (semver ascending), optionally only those in ``stage``."""
        return VersionList(self._repo.list_versions(name, stage))

    def version_rows(self, name: str, stage: StageLike | None = None) -> list[VersionRow]:
        """What ``list_versions`` lists, as light :class:`~uniflow._types.VersionRow` summaries
        (version, stage, framework, size, metrics, created_at) read from the model's listing
        index: what ``uniflow models list NAME`` prints, flat in the number of versions."""
        return self._repo.version_rows(name, stage)

    def versions_json(self, name: str, stage: StageLike | None = None) -> str:
        """The JSON text ``uniflow models list NAME --json`` prints: ``to_dict()`` of every
        version ``list_versions(name, stage)`` returns, as an indented list, built from the
        model's listing index (the rows are rendered once per version and kept, MAC-ed)."""
        return self._repo.versions_json(name, stage)

    def history(self, name: str, *, last: int | None = None) -> list[HistoryEvent]:
        """Every lifecycle event of ``name``, oldest first (``git log`` of its lifecycle ref);
        with ``last``, only the newest ``last`` events (read alone, without walking the rest)."""
        self._repo.require_model(name)
        if last is None:
            return HistoryList(self._repo.lifecycle.history(name))
        if isinstance(last, bool) or not isinstance(last, int) or last < 0:
            raise UsageError(f"last must be a whole number >= 0, not {last!r}")
        return HistoryList(self._repo.lifecycle.history(name, limit=last))

    # ---------------------------------------------------------------- events (uniflow/_ops/events.py)
    def events(
        self, name: str | None = None, *, since: str | int | datetime | None = None
    ) -> list[EventRecord]:
        """The promote/archive/rollback events of ``name`` (all models when None), from the
        lifecycle; ``since``: a seq (events after it) or a time (at or after it)."""
        from ._ops.events import list_events

        return list_events(self._repo, name, since)

    def event(self, ref: str) -> EventRecord:
        """The event an event tag names (``refs/tags/uniflow/<model>/<stage>/<seq>``)."""
        from ._ops.events import show_event

        return show_event(self._repo, ref)

    # ---------------------------------------------------------------- notebooks (uniflow/_views/notebook.py)
    def versions_frame(self, name: str, stage: StageLike | None = None) -> Any:
        """The versions of ``name`` as a ``pandas.DataFrame`` (needs the ``notebook`` extra)."""
        from ._views.notebook import versions_frame

        return versions_frame(self.list_versions(name, stage=stage))

    def plot(self, name: str, metric: str) -> Any:
        """A matplotlib ``Figure`` of ``metric`` across the versions of ``name`` (``notebook`` extra)."""
        from ._views.notebook import plot_metric

        return plot_metric(self.list_versions(name), metric, self.history(name))

    # ------------------------------------------------------------------ load
    def load_path(
        self,
        name: str,
        version: str | None = None,
        stage: StageLike | None = None,
        *,
        signatures: str | None = None,
    ) -> Path:
        """A verified, read-only directory holding the version's files (``signatures``: as
        in :meth:`get`)."""
        v, _ = self._verified(name, version, stage, signatures)
        return self._materialize(name, v, self._repo.manifest(name, v))

    def _materialize(self, name: str, version: str, m: Manifest, progress: ProgressFn | None = None) -> Path:
        """``.git/uniflow/cache/versions/<content digest>``, holding the verified files; every
        path is re-checked and walked without following symlinks (see ``_ops.materialize``)."""
        return materialize(self._repo, name, version, m, progress)[0]

    def load(
        self,
        name: str,
        version: str | None = None,
        stage: StageLike | None = None,
        *,
        model: Any = None,
        trust: bool = False,
        tensors: list[str] | str | None = None,
        signatures: str | None = None,
    ) -> Any:
        """The registered object, rebuilt safely from verified bytes.

        Files and directories come back as a path. ``model=`` is an instance to load
        weights into; ``trust=True`` allows pickle for versions registered with it.
        ``tensors=["head.*", ...]`` (glob patterns) returns ``{name: tensor}`` of the matching
        tensors only, reading (and fetching) only the chunks that cover them (``_ops.partial``).
        ``signatures``: as in :meth:`get`.
        """
        from .serializers import get_serializer

        v, _ = self._verified(name, version, stage, signatures)
        m = self._repo.manifest(name, v)
        if tensors is not None:
            from ._ops.partial import load_tensors

            if model is not None:
                raise UsageError("tensors= returns a dict of tensors; it cannot be combined with model=")
            return load_tensors(self._repo, name, v, m, tensors)
        vdir = self._materialize(name, v, m)
        ser = get_serializer(m.serializer)
        return ser.load(vdir, dict(m.serializer_meta), trust=trust, into=model)

    def export(
        self,
        name: str,
        dest: str | os.PathLike[str],
        version: str | None = None,
        stage: StageLike | None = None,
        *,
        progress: ProgressFn | None = None,
        force: bool = False,
        signatures: str | None = None,
    ) -> Path:
        """Copy the version's verified files into the directory ``dest`` (writable copies).

        ``dest`` is followed as named; below it no symlink is followed: a symlink, FIFO,
        socket or device where a model file or directory goes raises
        :class:`InvalidPathError`, unless ``force`` (then that entry itself is replaced).
        Files are written under a temporary name and renamed into place, mode 0o755 or
        0o644 (minus the umask). ``signatures``: as in :meth:`get`.
        """
        v, _ = self._verified(name, version, stage, signatures)
        m = self._repo.manifest(name, v)
        _vdir, sources = materialize(self._repo, name, v, m, progress)
        out = Path(dest)
        export_files(out, sources, force=force)
        return out

    def compare_versions(self, name: str, versions: list[str]) -> Comparison:
        """Metrics side by side with deltas, params, tags, sizes, shared bytes, code commits."""
        from ._ops.compare import build_comparison
        from ._ops.diff import store_bytes

        if isinstance(versions, str) or len(versions) < 2:
            raise UsageError("compare_versions needs a list of at least two versions")
        mvs = [self.get(name, v) for v in versions]
        manifests = [self._repo.manifest(name, v) for v in versions]
        return build_comparison(self.git, mvs, manifests, store_bytes(self._repo.store))

    def diff(self, name: str, a: str, b: str, *, stats: bool = False) -> VersionDiff:
        """What changed from version ``a`` to ``b``, per file and per tensor, from the two
        manifests alone; ``stats=True`` also reads the changed tensors of both (only those)
        for max |Δ|, mean |Δ| and relative L2."""
        from ._ops.diff import diff_manifests, store_bytes

        ma = self._repo.manifest(name, self._repo.resolve(name, a, None)[0])
        mb = self._repo.manifest(name, self._repo.resolve(name, b, None)[0])
        result = diff_manifests(ma, mb, store_bytes(self._repo.store))
        if stats:
            from ._ops.partial import diff_stats

            result = diff_stats(self._repo, result, ma, mb)
        return result


class ModelRegistry(RegistryReader):
    """A model registry stored in the Git repository enclosing ``path`` (default: cwd): the
    read API of :class:`RegistryReader` and every write.

    Outside any Git repository a new one is initialised at ``path`` and a notice is logged,
    so a notebook just works. A Git URL (or a bare repository) as ``path`` gives a
    :class:`RemoteRegistry` instead, which is not a ``ModelRegistry``: it has no write methods.
    Type checkers cannot tell a URL from a path and see a ``ModelRegistry``: annotate the
    result as :class:`RegistryReader`, or call ``RemoteRegistry(url)``, to have them check it.
    """

    def __new__(cls, path: str | os.PathLike[str] | None = None, **kwargs: Any) -> ModelRegistry:
        # A Git URL (or a bare repository) opens a read-only registry without a clone
        # (RemoteRegistry below, docs/remote.md); anything else is a work tree. A RemoteRegistry
        # is no ModelRegistry, so Python does not call __init__ on it: it is built complete here.
        if cls is ModelRegistry and path is not None and is_git_url(path):
            return RemoteRegistry(path, **kwargs)  # type: ignore[return-value]  # see the class docstring
        return super().__new__(cls)

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        offline: bool = False,
        blob: str | None = None,
        signatures: str | None = None,
        trust_root: str | os.PathLike[str] | None = None,
    ) -> None:
        if offline or blob is not None:
            raise UsageError("offline= and blob= apply to a registry opened by Git URL, not to a work tree")
        self._signatures, self._trust_root = _signature_options(signatures, trust_root)
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
        source = ConfigSource(root / ".uniflow")
        self._bound = Repository(git, fetcher=BlobFetcher(source, root), config_source=source)

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"

    # ------------------------------------------------------------------ config
    def init(self) -> bool:
        """Create ``.uniflow/`` (config.toml, .gitignore); True if anything was created."""
        return self._repo.init()

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
        strict: bool = False,
    ) -> ModelVersion:
        """Store ``model`` (an object, or a path to a file or directory) as a new version.

        Everything after ``name`` is keyword-only. ``version=None`` bumps the newest
        version's patch number. Registering an existing version with identical content
        returns it (and records its register event if a crash lost it); with different
        content raises :class:`VersionExistsError`. ``trust=True`` allows pickle for objects
        no safe serializer handles; ``lineage`` adds keys to the recorded lineage;
        ``progress(done, total)`` is called as bytes are stored. ``provenance`` (importers)
        gives the original author, time and code commit (:class:`~uniflow._types.Provenance`).
        A file of a path model that is a Git LFS pointer (a clone without git-lfs) gives a
        :class:`~uniflow.LfsPointerWarning`; with ``strict=True`` an :class:`~uniflow.LfsPointerError`.
        """
        from ._ops.register import register_version  # writes only: kept off a read's imports

        chosen = register_version(
            self._repo,
            model,
            name,
            version=version,
            framework=framework,
            metrics=metrics,
            tags=tags,
            params=params,
            description=description,
            trust=trust,
            lineage=lineage,
            progress=progress,
            provenance=provenance,
            strict=strict,
        )
        return self.get(name, chosen)

    # ------------------------------------------------------------------ lifecycle
    def promote(
        self,
        name: str,
        version: str,
        stage: StageLike,
        *,
        reason: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> LifecycleEvent:
        """Move ``version`` into ``stage``; a single-holder stage's previous holder is archived.

        Returns the :class:`LifecycleEvent` recorded, as ``history`` shows it (``displaced``
        names the archived previous holder); ``get(name, version)`` gives the version."""
        from ._ops import enforce

        return enforce.promote(self._repo, name, version, stage, reason=reason, extra=extra)

    def archive(self, name: str, version: str, *, reason: str | None = None) -> LifecycleEvent:
        """Move ``version`` to the archived stage; returns the :class:`LifecycleEvent` recorded."""
        from ._ops import enforce

        return enforce.archive(self._repo, name, version, reason=reason)

    def rollback(self, name: str, stage: StageLike, *, reason: str | None = None) -> LifecycleEvent:
        """Give ``stage`` back to its previous holder (the current one is archived); returns
        the :class:`LifecycleEvent` recorded, whose ``version`` is the holder put back."""
        from ._ops import enforce

        return enforce.rollback(self._repo, name, stage, reason=reason)

    def approve(
        self, name: str, version: str, *, for_stage: StageLike, message: str | None = None
    ) -> LifecycleEvent:
        """Record a signed approval of ``version`` for ``for_stage`` (no stage changes); a
        policy counts it toward that stage's ``approvals``. Refused (:class:`SigningError`)
        without a signing key; see ``docs/governance.md``."""
        from ._ops import enforce

        return enforce.approve(self._repo, name, version, for_stage, message=message)

    # ------------------------------------------------------------------ importers (uniflow/importers/)
    def import_mlflow(
        self,
        names: Iterable[str] | None = None,
        *,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
        dry_run: bool = False,
        progress: ProgressFn | None = None,
    ) -> ImportReport:
        """Import an MLflow Model Registry (every model, or ``names``) with its stages and
        aliases; idempotent. Needs the ``mlflow`` extra. See docs/migrate.md."""
        from .importers.mlflow import import_mlflow

        return import_mlflow(
            self._repo,
            self.register,
            names,
            tracking_uri=tracking_uri,
            registry_uri=registry_uri,
            dry_run=dry_run,
            progress=progress,
        )

    def import_gto(
        self,
        names: Iterable[str] | None = None,
        *,
        rev: str | None = None,
        dry_run: bool = False,
        progress: ProgressFn | None = None,
    ) -> ImportReport:
        """Import the GTO tags of this repository (only those whose commit ``rev`` reaches, when
        given) with their assignments and deprecations; idempotent. See docs/migrate.md."""
        from .importers.gto import import_gto

        return import_gto(self._repo, self.register, names, rev=rev, dry_run=dry_run, progress=progress)

    # ------------------------------------------------------------------ maintenance
    def verify(self, name: str | None = None) -> VerifyReport:
        """Re-hash every chunk of every version (or of ``name``) and check every lifecycle;
        the :class:`VerifyReport` (``.ok`` when no problem was found)."""
        from ._ops.maintenance import verify

        return verify(self._repo, name)

    def repair(self) -> list[str]:
        """Fix what can be fixed without any model data (``uniflow verify --repair``): today
        the reflogs of version tags and stage pointers older versions wrote, which ``git gc``
        reports as errors. One line per fix (empty: nothing to fix)."""
        from ._ops.maintenance import repair

        return repair(self._repo)

    def gc(self, *, dry_run: bool = True, grace_seconds: float = 3600.0, repack: bool = False) -> GcReport:
        """Delete chunks no ref reaches, older than the grace period (dry run by default), and
        rewrite packs that are mostly garbage; with ``repack``, move chunk files into packs.
        The :class:`GcReport` of what was (or would be) done."""
        from ._ops.maintenance import gc

        return gc(self._repo, dry_run=dry_run, grace_seconds=grace_seconds, repack=repack)

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

        A lifecycle the remote has and this clone lacks (a fresh ``git clone`` brings no
        ``refs/uniflow/*``) is fetched and integrated first, your events replayed on top.
        Raises :class:`PushRejectedError` when the remote has lifecycle events you do not have
        on a lifecycle you share (pull, then push again) or holds one of your versions with
        other content, and :class:`RemoteError` when no blob remote is configured for
        versions to upload.
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
        check: PolicyCheck | None = None,
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
        are integrated); either carries the :class:`PullReport` as ``.result``. When a policy
        is in force, a model's incoming commits before the first that breaks it are
        integrated and the rest refused, and the pull raises the same way
        (``PullReport.refused`` names each refused commit). ``check``: what judges each
        model's incoming lifecycle (``check(model, remote_head)`` returns ``(newest admitted
        commit or None, refused lines)``);
        default: the policy in force here (:func:`uniflow._ops.incoming.pull_check`; none
        without a policy).
        """
        from ._ops.incoming import pull_check

        return _pull(
            self._repo,
            remote,
            names,
            all_versions=all_versions,
            stages=stages,
            resolve=resolve,
            blob=blob,
            force_tags=force_tags,
            fetch_chunks=fetch_chunks,
            jobs=jobs,
            progress=progress,
            check=check if check is not None else pull_check(self._repo),
        )

    # ------------------------------------------------------------------ policy (docs/governance.md)
    def policy_init(self, admin: str, key: str | None = None) -> PolicyInit:
        """Write ``.uniflow/policy.toml`` and ``.uniflow/allowed_signers`` naming ``admin``
        (``key``: a public key line or ``.pub`` file; default: Git's ``user.signingKey``) for
        you to commit, signed. Refuses to overwrite either file."""
        from ._ops.policy import policy_init

        return policy_init(self._repo, admin, key)

    def policy_check(self, trust_root: str | os.PathLike[str] | None = None) -> PolicyChain:
        """Verify the policy revisions of the default branch from the trust root (``trust_root``:
        an allowed-signers file naming the admins; default: the first policy this clone saw,
        recorded on the first check); the :class:`PolicyChain` with the policy in force."""
        from ._ops.policy import policy_check

        return policy_check(self._repo, trust_root)

    def policy_sign(self, trust_root: str | os.PathLike[str] | None = None) -> PolicySignature:
        """Co-sign the work tree's change of the policy files with Git's signing key and write
        ``.uniflow/policy-signatures/<principal>.sig`` to commit with it (docs/governance.md);
        a :class:`PolicySignature` says what was signed and how many admins have signed."""
        from ._ops.policy import policy_sign

        return policy_sign(self._repo, trust_root)


def _signature_options(
    signatures: str | None, trust_root: str | os.PathLike[str] | None
) -> tuple[str | None, str | os.PathLike[str] | None]:
    """``signatures=`` and ``trust_root=`` of a registry, checked (one-line UsageError)."""
    from ._records.config import SIGNATURE_MODES

    if signatures is not None and signatures not in SIGNATURE_MODES:
        raise UsageError(
            f"signatures= must be one of {', '.join(map(repr, SIGNATURE_MODES))}, not {signatures!r}"
        )
    if trust_root is not None and not isinstance(trust_root, (str, os.PathLike)):
        raise UsageError(f"trust_root= is the path of an allowed-signers file, not {trust_root!r}")
    return signatures, trust_root


class _NoWriteMethod(ReadOnlyRegistryError, AttributeError):
    """A write method asked of a :class:`RemoteRegistry`, which has none: the read-only error
    (the CLI prints its one line and exits 8) that is also an ``AttributeError``, so
    ``hasattr(registry, "push")`` is False."""


#: the public methods :class:`ModelRegistry` adds to :class:`RegistryReader` -> the action a
#: :class:`ReadOnlyRegistryError` names when one is asked of a :class:`RemoteRegistry`
WRITE_METHODS: dict[str, str] = {
    "init": "init",
    "register": "register",
    "promote": "promote",
    "archive": "archive",
    "rollback": "roll back",
    "approve": "approve",
    "import_mlflow": "import",
    "import_gto": "import",
    "verify": "verify",
    "repair": "repair",
    "gc": "gc",
    "push": "push",
    "pull": "pull",
    "policy_init": "write a policy",
    # the trust on first use is recorded in the clone; a consumer pins --trust-root instead
    "policy_check": "check the policy chain (a clone records its trust root)",
    "policy_sign": "co-sign a policy change",
}


class RemoteRegistry(RegistryReader):
    """A read-only registry read from a Git URL, without a clone (``ModelRegistry(url)``, or
    ``RemoteRegistry(url)`` for a precise static type).

    The read API is :class:`RegistryReader`'s. The first read syncs the per-user mirror of
    the URL (one ``git ls-remote`` when nothing changed; see ``sharing.remote`` and
    docs/remote.md); :meth:`refresh` syncs again. ``offline=True`` reads the mirror as last
    synced; ``blob=`` names the blob remote to read chunks from.

    It has no write methods. Asking for one of :class:`ModelRegistry`'s (``register``,
    ``promote``, ``push``, ``import_gto`` ...) raises :class:`ReadOnlyRegistryError` at once,
    before any network call; that error is also an ``AttributeError``. Writes reached through
    the internal :attr:`repository` instead (the CLI's ``remote`` and ``hooks`` commands) run
    only after the mirror is synced: a configuration change is then refused with
    :class:`ReadOnlyRegistryError` (the remote's configuration is never written), other
    writes fail on the mirror.
    """

    _config_mode = False  # the remote's config does not get to choose how it is verified

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        offline: bool = False,
        blob: str | None = None,
        signatures: str | None = None,
        trust_root: str | os.PathLike[str] | None = None,
    ) -> None:
        from .sharing.remote import RemoteSource

        if path is None:
            raise UsageError("RemoteRegistry needs a Git URL")
        self._signatures, self._trust_root = _signature_options(signatures, trust_root)
        # the policy history is synced at once for a read that verifies; a read whose mode is
        # not set verifies (warn) once a policy exists, so the sync brings it then
        history = None if self._signatures is None else self._signatures in ("warn", "require")
        self._source = RemoteSource(os.fspath(path), offline=offline, blob=blob, history=history)
        self.url: str = self._source.display

    def _open(self) -> Repository:
        return self._source.open()

    def _prepare_verification(self) -> None:
        """The default branch's history and policy files, fetched into the mirror."""
        self._repo  # noqa: B018 (synced first)
        self._source.fetch_policy_history()

    def refresh(self) -> None:
        """Sync the mirror again (offline: re-read it): later reads see the remote as it is now."""
        self.close()
        self._bound = self._source.open()

    def __repr__(self) -> str:
        return f"RemoteRegistry({self.url!r}) (read-only)"

    if not TYPE_CHECKING:  # hidden from type checkers, so that a write on a RemoteRegistry is a static error

        def __getattr__(self, name: str) -> NoReturn:
            action = WRITE_METHODS.get(name)
            if action is None or "url" not in self.__dict__:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            raise _NoWriteMethod(self.url, action)

    def export(
        self,
        name: str,
        dest: str | os.PathLike[str],
        version: str | None = None,
        stage: StageLike | None = None,
        *,
        progress: ProgressFn | None = None,
        force: bool = False,
        signatures: str | None = None,
    ) -> Path:
        """As :meth:`RegistryReader.export`; into a new directory the files are written
        straight from the chunk cache and the blob remote, each chunk verified once (no
        materialized copy in between; see ``sharing.remote.stream_version``)."""
        from .sharing.remote import stream_version

        out = Path(dest)
        if os.path.lexists(out):
            return super().export(
                name, dest, version, stage, progress=progress, force=force, signatures=signatures
            )
        v, _ = self._verified(name, version, stage, signatures)
        stream_version(self._repo, name, v, out, progress)  # removes ``out`` again on failure
        return out

    def missing_lifecycle_hint(self, name: str | None = None) -> str | None:  # noqa: ARG002 (RegistryReader's signature)
        """None: the mirror of a URL fetches lifecycles with the tags (there is nothing to pull)."""
        return None
