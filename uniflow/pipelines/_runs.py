"""Pipeline run records: one JSON file per pipeline call under ``<repo>/.uniflow/runs/``.

Written atomically after every step, so a failed run can be inspected after the process is
gone (:func:`list_runs`, :func:`get_run`). :func:`current_run` is the run the calling code
belongs to (a :mod:`contextvars` variable, so nested calls and ``asyncio`` tasks see it).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import secrets
import threading
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import NotFoundError, UsageError
from .._records.paths import find_workdir as _find_git_root

if TYPE_CHECKING:  # pragma: no cover
    from .._registry import ModelRegistry

__all__ = ["RUNS_DIR", "PipelineRun", "StepRun", "current_run", "get_run", "list_runs"]

log = logging.getLogger("uniflow.pipeline")

RUNS_DIR = "runs"  # under <repo>/.uniflow/

_CURRENT_RUN: contextvars.ContextVar[PipelineRun | None] = contextvars.ContextVar(
    "uniflow_pipeline_run", default=None
)


# --------------------------------------------------------------------------- run records


def _now() -> datetime:
    return datetime.now(UTC)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class StepRun:
    """One step call: its status and the versions it registered (``{"name", "version", "stage"}``)."""

    name: str
    function: str
    status: str = "running"  # running | succeeded | failed
    started_at: str = ""
    duration_seconds: float | None = None
    error: str | None = None
    models: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PipelineRun:
    """One pipeline call. ``status`` is ``running``, ``succeeded`` or ``failed``; ``error`` is
    ``"ExceptionType: message"`` of a failed run; ``steps`` lists the steps run, in order."""

    run_id: str
    name: str
    status: str = "running"
    error: str | None = None
    started_at: str = ""
    finished_at: str | None = None
    duration_seconds: float | None = None
    steps: list[StepRun] = field(default_factory=list)
    parent_run_id: str | None = None

    # not part of the record
    _registry_spec: Any = field(default=None, repr=False, compare=False)
    _registry: Any = field(default=None, repr=False, compare=False)
    _root: Path | None = field(default=None, repr=False, compare=False)
    _t0: float = field(default=0.0, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def models(self) -> list[dict[str, Any]]:
        """Every version registered during the run, in order."""
        return [m for s in self.steps for m in s.models]

    @property
    def record_path(self) -> Path | None:
        """Where the JSON record of this run is written (None outside any repository)."""
        return None if self._root is None else self._root / ".uniflow" / RUNS_DIR / f"{self.run_id}.json"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe record written to ``.uniflow/runs/<run_id>.json``."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        d["steps"] = [s.to_dict() for s in self.steps]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineRun:
        public = {f.name for f in fields(cls) if not f.name.startswith("_")} - {"steps"}
        step_fields = {f.name for f in fields(StepRun)}
        steps = [StepRun(**{k: v for k, v in s.items() if k in step_fields}) for s in d.get("steps", [])]
        return cls(**{k: v for k, v in d.items() if k in public}, steps=steps)

    # -- internals used by step and pipeline

    def _get_registry(self) -> Any:
        with self._lock:
            if self._registry is None:
                self._registry = _resolve_registry(self._registry_spec)
            if self._root is None:
                root = getattr(self._registry, "root", None)
                self._root = Path(root) if root is not None else None
            return self._registry

    def _adopt_root(self, registry: Any) -> None:
        """A step with its own registry ran first: keep the record next to its models."""
        if self._root is None:
            root = getattr(registry, "root", None)
            if root is not None:
                self._root = Path(root)

    def _flush(self) -> None:
        """Write the JSON record atomically; never let bookkeeping break the pipeline."""
        path = self.record_path
        if path is None:
            return
        with self._lock:
            data = json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)
        try:
            _atomic_write(path, data)
        except OSError as exc:
            log.warning("could not write pipeline run record %s: %s", path, exc)


def _atomic_write(path: Path, text: str) -> None:
    runs_dir = path.parent
    if not runs_dir.is_dir():
        runs_dir.mkdir(parents=True, exist_ok=True)
    ignore = runs_dir / ".gitignore"
    if not ignore.exists():
        # Run records are local bookkeeping: keep them out of `git status` so they never make
        # the work tree dirty (which the registry would record in the next version's lineage).
        ignore.write_text("# uniflow pipeline run records (local)\n*\n", encoding="utf-8")
    tmp = runs_dir / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _new_run_id(at: datetime) -> str:
    return f"{at:%Y%m%dT%H%M%S}Z-{secrets.token_hex(4)}"


def current_run() -> PipelineRun | None:
    """The pipeline run the calling code is part of, or None outside any pipeline."""
    return _CURRENT_RUN.get()


def _spec_root(spec: Any) -> Path | None:
    """The repository root a registry spec points at, without constructing a registry."""
    if spec is None:
        return _find_git_root(Path.cwd())
    if isinstance(spec, (str, os.PathLike)):
        return _find_git_root(Path(spec))
    root = getattr(spec, "root", None)
    return Path(root) if root is not None else None


def _runs_dir_for(path: str | os.PathLike[str] | Any | None) -> Path | None:
    root = _spec_root(path)
    return None if root is None else root / ".uniflow" / RUNS_DIR


def list_runs(
    path: str | os.PathLike[str] | Any | None = None, *, name: str | None = None
) -> list[PipelineRun]:
    """Pipeline runs recorded in the repository at ``path`` (default: the working directory's;
    a ``ModelRegistry`` works too), oldest first; ``name`` keeps one pipeline's runs."""
    runs_dir = _runs_dir_for(path)
    if runs_dir is None or not runs_dir.is_dir():
        return []
    runs: list[PipelineRun] = []
    for p in runs_dir.glob("*.json"):
        try:
            run = PipelineRun.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipping unreadable pipeline run record %s: %s", p, exc)
            continue
        if name is None or run.name == name:
            run._root = runs_dir.parent.parent
            runs.append(run)
    runs.sort(key=lambda r: (r.started_at, r.run_id))
    return runs


def get_run(run_id: str, path: str | os.PathLike[str] | Any | None = None) -> PipelineRun:
    """The recorded pipeline run ``run_id``; raises :class:`NotFoundError` when there is none."""
    runs_dir = _runs_dir_for(path)
    if not isinstance(run_id, str) or not run_id or "/" in run_id or "\\" in run_id or run_id.startswith("."):
        raise UsageError(f"invalid pipeline run id {run_id!r}")
    p = None if runs_dir is None else runs_dir / f"{run_id}.json"
    if p is None or not p.is_file():
        raise NotFoundError(f"no pipeline run {run_id!r} recorded in this repository")
    run = PipelineRun.from_dict(json.loads(p.read_text(encoding="utf-8")))
    run._root = runs_dir.parent.parent if runs_dir is not None else None
    return run


def _resolve_registry(spec: Any) -> ModelRegistry:
    if spec is not None and not isinstance(spec, (str, os.PathLike)):
        return spec  # type: ignore[no-any-return]
    from .._registry import ModelRegistry

    return ModelRegistry(spec)
