"""``Repository``: the parts of one registry that the layers below ``ModelRegistry`` share.

The registry facade builds one and hands it down; maintenance, registration, materializing
and push/pull receive it (or just the part they need), never the ``ModelRegistry`` itself,
so imports flow one way (docs/design.md, "Module layout")::

    ModelRegistry ──> Repository ──> GitRepo, ObjectStore, VersionIndex, Lifecycle, ConfigSource

It also owns the small reads every layer needs: stage names, "does this model exist", and
which version a ``version=`` / ``stage=`` pair means.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import (
    IntegrityError,
    ModelNotFoundError,
    StageEmptyError,
    UniflowWarning,
    UsageError,
    VersionNotFoundError,
)
from ._naming import validate_model_name, validate_version, version_sort_key
from ._records.config import Config, ConfigSource
from ._records.eventtags import tag_event
from ._records.git import GitRepo
from ._records.lifecycle import (
    Lifecycle,
    LifecycleEvent,
    LifecycleState,
    Transition,
    move_transition,
    rollback_transition,
)
from ._records.listing import Listing, ListingIndex, skipped_notice
from ._records.objcache import DerivedCache, load_key
from ._records.paths import store_dir, work_trees
from ._records.refs import tag_ref
from ._records.versions import VersionIndex
from ._stages import BUILTIN_STAGES, SHARED_STAGES, ModelStage, StageLike, normalize_stage
from ._storage.store import FetchFn, ObjectStore

if TYPE_CHECKING:
    from ._authority.signing import Signer
    from ._records.manifest import Manifest
    from ._types import ModelVersion, VersionRow

__all__ = ["Guard", "Repository"]

#: sees a lifecycle event about to be written (its fields) and the state before it; returns
#: the fields to write, or raises to refuse the event
Guard = Callable[[dict[str, Any], LifecycleState], dict[str, Any]]


def _guarded(transition: Transition, guard: Guard | None) -> Transition:
    """``transition`` with ``guard`` run on its event before anything is written."""
    if guard is None:
        return transition

    def run(state: LifecycleState) -> tuple[dict[str, Any], str]:
        past = {k: list(v) for k, v in state.past.items()}
        before = LifecycleState(state.model, state.seq, dict(state.stage_of), past)
        event, summary = transition(state)
        return guard(event, before), summary

    return run


class Repository:
    """Git repository, chunk store, version index, lifecycles and configuration of one registry."""

    def __init__(
        self,
        git: GitRepo,
        *,
        fetcher: FetchFn | None = None,
        root: Path | None = None,
        config_source: ConfigSource | None = None,
        store: ObjectStore | None = None,
    ) -> None:
        # root / config_source / store: given for a registry read from a Git URL
        # (sharing.remote): a bare mirror, the remote's config, the per-user chunk cache
        self.git = git
        self.root: Path = root if root is not None else git.workdir
        #: the work tree's ``.uniflow``: the committed config.toml (and pipeline run records)
        self.uniflow_dir: Path = self.root / ".uniflow"
        self.config_source = config_source if config_source is not None else ConfigSource(self.uniflow_dir)
        if store is None:
            # one store per repository, beside the refs every work tree shares; a store of
            # the old layout in the .uniflow of any of its work trees is moved there first
            store = ObjectStore(store_dir(git.git_dir), fetcher=fetcher, stamp_key=load_key)
            for tree in dict.fromkeys([self.root, *work_trees(git.git_dir)]):
                store.adopt(tree / ".uniflow")
        self.store = store
        # derived from Git objects, keyed by their sha: kept with the store, shared the same way
        derived = DerivedCache(store.root / "cache" / "git")
        self.index = VersionIndex(git, derived, limits=lambda: self.config.limits)
        self.lifecycle = Lifecycle(git, lambda s: self.stages().get(s, True), derived, stages=self.stages)
        self.listings = ListingIndex(self.index, derived)

    # ------------------------------------------------------------------ configuration
    @property
    def config(self) -> Config:
        return self.config_source.get()

    def reload_config(self) -> None:
        self.config_source.reload()

    def init(self) -> bool:
        """Create ``.uniflow/`` (config.toml, .gitignore); True if anything was created."""
        return self.config_source.init()

    def stages(self) -> dict[str, bool]:
        """Every known stage -> whether it holds a single version at a time."""
        return self.config.stages

    def stage(self, stage: StageLike) -> str:
        """The canonical name of ``stage`` (built-in or declared), else InvalidStageError."""
        table = self.stages()
        return normalize_stage(stage, {k: v for k, v in table.items() if k not in BUILTIN_STAGES})

    # ------------------------------------------------------------------ reads
    def require_model(self, name: str) -> None:
        validate_model_name(name)
        if not self.index.version_names(name) and self.lifecycle.head(name) is None:
            raise ModelNotFoundError(name)

    def versions_in(self, name: str, stage: str, state: LifecycleState | None = None) -> list[str]:
        """Versions of ``name`` (with a tag) that ``stage`` holds: for ``development``, every
        version not promoted anywhere."""
        names = self.index.version_names(name)
        state = state if state is not None else self.lifecycle.state(name)
        if stage == ModelStage.DEVELOPMENT:
            return [v for v in names if state.stage(v) == ModelStage.DEVELOPMENT]
        existing = set(names)
        return [v for v in state.holders(stage) if v in existing]

    def readable_state(self, name: str, head: str | None = None) -> tuple[LifecycleState, int | None]:
        """:meth:`Lifecycle.state_at` for reads: an unreadable lifecycle (its ref on a
        non-commit, a corrupt state) reads as no promotion at all, every version in
        development, with a :class:`UniflowWarning` naming it. ``uniflow verify`` reports it;
        promote, which needs the real state, refuses (see :meth:`promote`)."""
        try:
            return self.lifecycle.state_at(name, head)
        except IntegrityError as exc:  # one bad record spoils only itself
            warnings.warn(
                UniflowWarning(f"{exc}: skipped, every version of {name!r} shown in development"),
                stacklevel=3,
            )
            return LifecycleState(name), None

    def resolve(self, name: str, version: str | None, stage: StageLike | None) -> tuple[str, LifecycleState]:
        """The concrete version meant by ``version`` / ``stage`` (newest when neither)."""
        self.require_model(name)
        state = self.readable_state(name)[0]
        if version is not None:
            validate_version(version)
            if self.index.tag_sha(name, version) is None:
                raise VersionNotFoundError(name, version)
            return version, state
        if stage is not None:
            st = self.stage(stage)
            candidates = self.versions_in(name, st, state)
            if not candidates:
                raise StageEmptyError(name, st)
            return max(candidates, key=version_sort_key), state
        listing = self.listings.listing(name)  # readable versions only
        if not listing.versions:
            notice = skipped_notice(listing)
            if notice is not None:  # tags, but none is a readable version
                raise IntegrityError(f"model {name!r}: no readable version; {notice}")
            raise ModelNotFoundError(name)
        return listing.versions[-1], state

    def manifest(self, name: str, version: str) -> Manifest:
        """The validated manifest of a version whose tag exists."""
        return self.index.manifest(name, version)[1]

    def model_version(self, name: str, version: str, stage: str, tag_sha: str | None = None) -> ModelVersion:
        from ._records.manifest import to_model_version

        m = self.index.manifest(name, version, tag_sha)[1]
        return to_model_version(m, stage, tag_ref(name, version))

    def list_versions(self, name: str, stage: StageLike | None = None) -> list[ModelVersion]:
        """Every version of ``name`` (semver ascending), optionally only those in ``stage``."""
        listing, state, wanted = self._listing(name, stage)
        out = []
        for i, v in enumerate(listing.versions):
            st = state.stage(v)
            if wanted is None or st == wanted:
                out.append(self.model_version(name, v, st, listing.tag_sha(i)))
        return out

    def versions_json(self, name: str, stage: StageLike | None = None) -> str:
        """The indented JSON of ``[v.to_dict() for v in list_versions(name, stage)]``, built
        from the model's listing index (uniflow/_records/listing.py) without opening a manifest."""
        from ._records.listing import json_list

        listing, state, wanted = self._listing(name, stage)
        stage_of = state.stage_of
        rows = []
        for v, (head, tail) in zip(listing.versions, self.listings.json_rows(name, listing), strict=True):
            st = stage_of.get(v, ModelStage.DEVELOPMENT.value)
            if wanted is None or st == wanted:
                rows.append((head, st, tail))
        return json_list(rows)

    def version_rows(self, name: str, stage: StageLike | None = None) -> list[VersionRow]:
        """What ``list_versions`` lists, as :class:`VersionRow` summaries read from the model's
        listing index (uniflow/_records/listing.py) without opening a manifest."""
        from ._types import VersionRow

        listing, state, wanted = self._listing(name, stage)
        stage_of = state.stage_of
        r = listing.rows
        columns = zip(listing.versions, r.framework, r.size, r.metrics, r.created, strict=True)
        out = []
        for v, fw, size, metrics, created in columns:
            st = stage_of.get(v, ModelStage.DEVELOPMENT.value)
            if wanted is None or st == wanted:
                out.append(VersionRow(v, st, fw, size, metrics, created))
        return out

    def _listing(self, name: str, stage: StageLike | None) -> tuple[Listing, LifecycleState, str | None]:
        validate_model_name(name)
        listing = self.listings.listing(name)
        notice = skipped_notice(listing)
        if notice is not None and not listing.versions:  # tags, but none is a readable version
            raise IntegrityError(f"model {name!r}: no readable version; {notice}")
        if notice is not None:  # listed without them, and said so
            warnings.warn(UniflowWarning(f"model {name!r}: {notice}"), stacklevel=4)
        if not listing.versions and self.lifecycle.head(name) is None:
            raise ModelNotFoundError(name)
        state = self.readable_state(name)[0]
        return listing, state, (self.stage(stage) if stage is not None else None)

    def overview(self) -> list[tuple[str, Listing, LifecycleState, int | None]]:
        """``(model, listing, state, time of the lifecycle head)`` of every model with a version
        or a lifecycle, by name: ``packed-refs`` read once, each model's listing (its stored
        index; a version not in it yet is read once through the gate, so an unreadable tag
        is neither counted nor ``latest``) and lifecycle state."""
        from ._records.refs import LIFECYCLE_PREFIX, TAGS_PREFIX
        from ._records.refscan import PackedRefs, loose_dirs_in, loose_refs_in, parse_packed
        from ._records.versions import is_model_name

        git_dir = self.git.git_dir
        packed = PackedRefs(git_dir)
        sections = packed.sections(TAGS_PREFIX)
        heads = parse_packed(packed.section(LIFECYCLE_PREFIX), LIFECYCLE_PREFIX)
        heads.update(loose_refs_in(git_dir, LIFECYCLE_PREFIX))
        names = set(sections) | set(loose_dirs_in(git_dir, TAGS_PREFIX)) | set(heads)
        out = []
        for name in sorted(n for n in names if is_model_name(n)):
            listing = self.listings.listing(name, section=sections.get(name, b""))
            head = heads.get(name)
            if not listing.versions and head is None:
                continue
            state, when = self.readable_state(name, head) if head else (LifecycleState(name), None)
            out.append((name, listing, state, when))
        return out

    # ------------------------------------------------------------------ writes
    def promote(
        self,
        name: str,
        version: str,
        stage: StageLike,
        *,
        reason: str | None = None,
        extra: dict[str, Any] | None = None,
        signer: Signer | None = None,
        guard: Guard | None = None,
    ) -> LifecycleEvent:
        """Move ``version`` into ``stage`` (one lifecycle event, compare-and-swap); a
        single-holder stage's previous holder is archived. Returns the event recorded
        (``action`` ``"archive"`` when ``stage`` is archived).

        ``signer`` signs the lifecycle commit; ``guard(event, state)`` sees the event about to
        be written (and the state before it) and returns it, or raises to refuse it
        (``uniflow._ops.authority`` enforces the policy with it)."""
        from ._records.manifest import json_safe

        st = self.stage(stage)
        self.lifecycle.state(name)  # an unreadable lifecycle refuses here (reads fall back)
        self.resolve(name, version, None)
        transition = move_transition(version, st, self.stages(), reason, json_safe(extra) if extra else None)
        event = self.lifecycle.apply(name, _guarded(transition, guard), self.git.identity(), signer=signer)[1]
        return tag_event(self.git, self.config.event_tags, name, event)  # after CAS and pointers

    def archive(
        self,
        name: str,
        version: str,
        *,
        reason: str | None = None,
        signer: Signer | None = None,
        guard: Guard | None = None,
    ) -> LifecycleEvent:
        """Move ``version`` to the archived stage; returns the event recorded."""
        return self.promote(name, version, ModelStage.ARCHIVED, reason=reason, signer=signer, guard=guard)

    def rollback(
        self,
        name: str,
        stage: StageLike,
        *,
        reason: str | None = None,
        signer: Signer | None = None,
        guard: Guard | None = None,
    ) -> LifecycleEvent:
        """Give single-holder ``stage`` back to its previous holder that still has a tag (the
        current one is archived); returns the event recorded (its ``version`` is the holder)."""
        st = self.stage(stage)
        self.require_model(name)
        if st in SHARED_STAGES or not self.stages().get(st, True):
            raise UsageError(
                f"cannot roll back stage {st!r}: only single-holder stages have a previous holder"
            )
        existing = set(self.index.version_names(name))
        transition = rollback_transition(st, existing.__contains__, reason)
        event = self.lifecycle.apply(name, _guarded(transition, guard), self.git.identity(), signer=signer)[1]
        return tag_event(self.git, self.config.event_tags, name, event)  # after CAS and pointers

    def close(self) -> None:
        """Release open files: the Git repository's, and the packs the store reads."""
        self.git.close()
        self.store.close()
