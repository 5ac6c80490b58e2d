"""Pipelines: ``@step`` functions whose returned :class:`Model` assets are registered.

A *step* is a plain function decorated with :func:`step`. It keeps working as a plain
function (arguments pass through, the return value comes back), and when it returns a
:class:`Model` with ``register=True`` -- directly, or inside a tuple, list or dict -- that
model is registered in the model registry once the step has finished successfully, with the
step's lineage (function, source hash, bound parameters, timing, pipeline run) recorded in
the version's manifest. A step that raises registers nothing.

A *pipeline* (:func:`pipeline`) is a function that calls steps; every step it runs shares one
run id, held in a :mod:`contextvars` variable, so nested calls and ``asyncio`` tasks see it.
Each pipeline call keeps a :class:`PipelineRun` record (``my_pipeline.last_run``) and writes
it as JSON to ``<repo>/.uniflow/runs/<run_id>.json`` (atomically, after every step), so a
failed run can be inspected after the process is gone (:func:`list_runs`, :func:`get_run`).

Which registry: the one given to the step, else the one given to the pipeline, else
``ModelRegistry()`` for the working directory, created at the first registration (never at
decoration time). A registry may be given as a ``ModelRegistry`` or as a path.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import numbers
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .._errors import UsageError
from .._naming import validate_model_name, validate_version
from .._stages import ModelStage, StageLike
from ._runs import (
    _CURRENT_RUN,
    PipelineRun,
    StepRun,
    _describe,
    _new_run_id,
    _now,
    _resolve_registry,
    _spec_root,
    list_runs,
)

if TYPE_CHECKING:  # pragma: no cover
    from .._types import ModelVersion

__all__ = ["Model", "pipeline", "step"]

log = logging.getLogger("uniflow.pipeline")

F = TypeVar("F", bound=Callable[..., Any])

_MAX_SEARCH_DEPTH = 3  # how deep Models are looked for inside returned containers
_MAX_REPR = 256  # longest repr() kept for a non-primitive parameter
_MAX_ITEMS = 64  # longest list/dict parameter kept as JSON before falling back to repr()


# --------------------------------------------------------------------------- Model asset


class Model:
    """A model produced by a step, optionally registered when the step succeeds.

    ``Model(data, name, register=False, version=None, framework=None, metrics=None,
    tags=None, params=None, stage=None, description=None, *, trust=False)``; the arguments
    mean what they mean for :meth:`ModelRegistry.register` (``version=None`` auto-bumps),
    ``stage`` is where the new version is promoted after registration, and ``trust=True``
    allows pickle for objects no safe serializer handles.

    After registration:

    * ``model.registered`` is ``True``;
    * ``model.model_version`` is the registered :class:`~uniflow.ModelVersion` (after
      promotion when ``stage`` was given);
    * ``model.version`` is the version string that was registered (e.g. ``"v1.0.3"``).
    """

    __slots__ = (
        "data",
        "description",
        "framework",
        "metrics",
        "model_version",
        "name",
        "params",
        "register",
        "stage",
        "tags",
        "trust",
        "version",
    )

    def __init__(
        self,
        data: Any,
        name: str,
        register: bool = False,
        version: str | None = None,
        framework: str | None = None,
        metrics: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        stage: StageLike | None = None,
        description: str | None = None,
        *,
        trust: bool = False,
    ) -> None:
        self.data = data
        self.name = validate_model_name(name)
        self.register = bool(register)
        self.version = validate_version(version) if version is not None else None
        self.framework = framework
        self.metrics = dict(metrics) if metrics else None
        self.tags = dict(tags) if tags else None
        self.params = dict(params) if params else None
        if stage is not None and not isinstance(stage, (ModelStage, str)):
            raise UsageError(f"stage must be a ModelStage or a stage name, not {type(stage).__name__}")
        self.stage = stage
        self.description = description
        self.trust = bool(trust)
        self.model_version: ModelVersion | None = None

    @property
    def registered(self) -> bool:
        """True once the model has been registered (``model_version`` is set)."""
        return self.model_version is not None

    def __repr__(self) -> str:
        state = f"registered={self.version!r}" if self.registered else f"register={self.register}"
        return f"Model(name={self.name!r}, data={type(self.data).__name__}, {state})"


def _json_safe(value: Any, depth: int = 0) -> Any:
    """Primitives as-is; short lists/tuples/str-keyed dicts of them as JSON; anything else repr()."""
    if value is None or isinstance(value, (bool, str)):
        return value
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.generic) and not isinstance(value, (np.str_, np.bytes_)):
        with contextlib.suppress(ValueError, TypeError):
            value = value.item()  # numpy scalars -> the Python primitive
        if value is None or isinstance(value, (bool, str)):
            return value
    if isinstance(value, numbers.Integral):
        return int(value)  # IntEnum and friends become plain ints
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if math.isfinite(f) else None  # JSON has no NaN/inf: null, as for metrics
    if depth < 3 and type(value) in (list, tuple) and len(value) <= _MAX_ITEMS:
        return [_json_safe(v, depth + 1) for v in value]
    if (
        depth < 3
        and type(value) is dict
        and len(value) <= _MAX_ITEMS
        and all(isinstance(k, str) for k in value)
    ):
        return {k: _json_safe(v, depth + 1) for k, v in value.items()}
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not break the step
        text = f"<{type(value).__name__} (repr failed: {type(exc).__name__})>"
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 1] + "…"


def _bind_params(
    sig: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    if sig is None:
        return {}
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError:
        return {}  # the call itself will raise the natural TypeError
    bound.apply_defaults()
    return {k: _json_safe(v) for k, v in bound.arguments.items()}


def _source_hash(func: Callable[..., Any]) -> tuple[str, str]:
    """BLAKE3 of the function's source (``"source"``), else of its code object (``"bytecode"``)."""
    import blake3

    try:
        return blake3.blake3(inspect.getsource(func).encode("utf-8")).hexdigest(), "source"
    except (OSError, TypeError):
        pass
    code = getattr(inspect.unwrap(func), "__code__", None)
    h = blake3.blake3()
    if code is not None:
        h.update(code.co_code)
        h.update(repr((code.co_consts, code.co_names, code.co_varnames)).encode("utf-8"))
    else:
        h.update(repr(func).encode("utf-8"))
    return h.hexdigest(), "bytecode"


def _find_models(value: Any, depth: int = 0, seen: set[int] | None = None) -> list[Model]:
    """Models to register in a step's return value, searching containers a few levels deep."""
    if seen is None:
        seen = set()
    if isinstance(value, Model):
        if value.register and id(value) not in seen:
            seen.add(id(value))
            return [value]
        return []
    if depth >= _MAX_SEARCH_DEPTH:
        return []
    if isinstance(value, dict):
        items: Any = value.values()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return []
    found: list[Model] = []
    for item in items:
        found.extend(_find_models(item, depth + 1, seen))
    return found


def _stage_name(stage: StageLike) -> str:
    return stage.value if isinstance(stage, ModelStage) else str(stage).strip().lower()


# --------------------------------------------------------------------------- step


class _StepSpec:
    """What ``@step`` knows about the decorated function (computed lazily, once)."""

    def __init__(
        self, func: Callable[..., Any], name: str | None, registry: Any, tags: dict[str, str] | None
    ):
        self.func = func
        self.name: str = name or str(getattr(func, "__name__", "step"))
        self.registry = registry
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.qualname = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', self.name)}"
        try:
            self.signature: inspect.Signature | None = inspect.signature(func)
        except (TypeError, ValueError):
            self.signature = None
        self._source: tuple[str, str] | None = None
        self.source_file: str | None
        try:
            self.source_file = inspect.getsourcefile(func) or inspect.getfile(func)
        except TypeError:
            self.source_file = None

    def source(self) -> tuple[str, str]:
        if self._source is None:
            self._source = _source_hash(self.func)
        return self._source


class _StepCall:
    """One call of a step: times it, records it in the pipeline run, registers its Models."""

    def __init__(self, spec: _StepSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.spec = spec
        self.run = _CURRENT_RUN.get()
        self.started = _now()
        self.t0 = time.perf_counter()
        self.params = _bind_params(spec.signature, args, kwargs)
        self.duration = 0.0
        self.record = StepRun(name=spec.name, function=spec.qualname, started_at=self.started.isoformat())
        if self.run is not None:
            with self.run._lock:
                self.run.steps.append(self.record)

    def failed(self, exc: BaseException) -> None:
        self.record.status = "failed"
        self.record.error = _describe(exc)
        if self.record.duration_seconds is None:
            self.record.duration_seconds = round(time.perf_counter() - self.t0, 6)
        if self.run is not None:
            self.run._flush()

    def succeeded(self, result: Any) -> None:
        self.duration = time.perf_counter() - self.t0
        self.record.duration_seconds = round(self.duration, 6)
        try:
            models = [m for m in _find_models(result) if not m.registered]
            if models:
                registry = self._registry()
                for model in models:
                    self._register(registry, model)
        except BaseException as exc:
            self.failed(exc)
            raise
        self.record.status = "succeeded"
        if self.run is not None:
            self.run._flush()

    def _registry(self) -> Any:
        if self.spec.registry is not None:
            registry = _resolve_registry(self.spec.registry)
            if self.run is not None:
                self.run._adopt_root(registry)
            return registry
        if self.run is not None:
            return self.run._get_registry()
        return _resolve_registry(None)

    def lineage(self, registry: Any) -> dict[str, Any]:
        digest, kind = self.spec.source()
        source_file = self.spec.source_file
        if source_file is not None:
            try:
                source_file = (
                    Path(source_file).resolve().relative_to(Path(registry.root).resolve()).as_posix()
                )
            except (ValueError, OSError, AttributeError, TypeError):
                source_file = str(source_file)
        run = self.run
        return {
            "step": {
                "name": self.spec.name,
                "function": self.spec.qualname,
                "source_file": source_file,
                "source_hash": digest,
                "source_hash_of": kind,
                "params": self.params,
                "tags": dict(self.spec.tags),
                "started_at": self.started.isoformat(),
                "duration_seconds": round(self.duration, 6),
            },
            "pipeline": None
            if run is None
            else {"name": run.name, "run_id": run.run_id, "started_at": run.started_at},
        }

    def _register(self, registry: Any, model: Model) -> None:
        tags = {**self.spec.tags, **(model.tags or {})}
        mv = registry.register(
            model=model.data,
            name=model.name,
            version=model.version,
            framework=model.framework,
            metrics=model.metrics,
            tags=tags or None,
            params=model.params,
            description=model.description,
            trust=model.trust,
            lineage=self.lineage(registry),
        )
        model.model_version = mv
        model.version = mv.version
        where = f" of pipeline {self.run.name!r} run {self.run.run_id}" if self.run else ""
        log.info("step %r%s registered model %r version %s", self.spec.name, where, mv.name, mv.version)
        entry: dict[str, Any] = {"name": mv.name, "version": mv.version, "stage": str(mv.stage)}
        self.record.models.append(entry)
        if model.stage is not None and _stage_name(model.stage) != ModelStage.DEVELOPMENT.value:
            reason = f"step {self.spec.name}" + (
                f" (pipeline {self.run.name} run {self.run.run_id})" if self.run else ""
            )
            registry.promote(model.name, mv.version, model.stage, reason=reason)
            mv = registry.get(model.name, mv.version)
            model.model_version = mv
            entry["stage"] = str(mv.stage)
            log.info("promoted model %r version %s to %s", mv.name, mv.version, mv.stage)


def _wrap(func: Callable[..., Any], enter: Callable[[tuple[Any, ...], dict[str, Any]], Any]) -> Any:
    """Wrap ``func`` (sync or async): ``enter(args, kwargs)`` gives a call object told
    ``failed(exc)`` or ``succeeded(result)``; arguments and results pass through untouched."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            call = enter(args, kwargs)
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                call.failed(exc)
                raise
            call.succeeded(result)
            return result

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = enter(args, kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        call.succeeded(result)
        return result

    return wrapper


def _make_step(func: F, name: str | None, registry: Any, tags: dict[str, str] | None) -> F:
    if not callable(func):
        raise UsageError(f"@step decorates a function, not {type(func).__name__}")
    spec = _StepSpec(func, name, registry, tags)
    wrapper = _wrap(func, lambda args, kwargs: _StepCall(spec, args, kwargs))
    wrapper.step_name = spec.name
    wrapper.is_uniflow_step = True
    return wrapper  # type: ignore[no-any-return]


@overload
def step(func: F) -> F: ...
@overload
def step(
    func: str | None = None,
    *,
    name: str | None = None,
    registry: Any = None,
    tags: dict[str, str] | None = None,
) -> Callable[[F], F]: ...
def step(
    func: Any = None, *, name: str | None = None, registry: Any = None, tags: dict[str, str] | None = None
) -> Any:
    """Make a function a pipeline step: ``@step`` or ``@step(name=None, registry=None, tags=None)``.

    ``Model(..., register=True)`` values the step returns (directly or inside a tuple, list
    or dict) are registered when it returns, with its lineage; ``tags`` are merged into
    each model's tags (the model's own tags win). ``registry`` is a ``ModelRegistry`` or a
    path; by default the pipeline's registry, else ``ModelRegistry()`` of the working directory.
    """
    if isinstance(func, str) and name is None:  # @step("train")
        name, func = func, None
    if func is None:
        return lambda f: _make_step(f, name, registry, tags)
    return _make_step(func, name, registry, tags)


# --------------------------------------------------------------------------- pipeline


class _PipelineCall:
    def __init__(self, spec: _StepSpec, holder: Any) -> None:
        started = _now()
        parent = _CURRENT_RUN.get()
        self.run = PipelineRun(
            run_id=_new_run_id(started),
            name=spec.name,
            started_at=started.isoformat(),
            parent_run_id=parent.run_id if parent else None,
            _registry_spec=spec.registry,
            _t0=time.perf_counter(),
        )
        if spec.registry is not None and not isinstance(spec.registry, (str, os.PathLike)):
            self.run._registry = spec.registry
        # The record goes to the pipeline's repository (found without creating anything); outside
        # any repository, to the repository of the first registry a step opens, if any.
        self.run._root = _spec_root(spec.registry)
        holder.last_run = self.run
        self.token = _CURRENT_RUN.set(self.run)
        log.info("pipeline %r run %s started", self.run.name, self.run.run_id)
        self.run._flush()

    def succeeded(self, result: Any) -> None:  # noqa: ARG002 (the step call's signature; a pipeline keeps no result)
        self.finish(None)

    def failed(self, exc: BaseException) -> None:
        self.finish(exc)

    def finish(self, exc: BaseException | None) -> None:
        _CURRENT_RUN.reset(self.token)
        run = self.run
        run.finished_at = _now().isoformat()
        run.duration_seconds = round(time.perf_counter() - run._t0, 6)
        if exc is None:
            run.status = "succeeded"
            log.info("pipeline %r run %s succeeded", run.name, run.run_id)
        else:
            run.status = "failed"
            run.error = _describe(exc)
            log.info("pipeline %r run %s failed: %s", run.name, run.run_id, run.error)
        run._flush()


def _make_pipeline(func: F, name: str | None, registry: Any) -> F:
    if not callable(func):
        raise UsageError(f"@pipeline decorates a function, not {type(func).__name__}")
    spec = _StepSpec(func, name, registry, None)
    wrapper = _wrap(func, lambda _args, _kwargs: _PipelineCall(spec, wrapper))

    def runs() -> list[PipelineRun]:
        """This pipeline's recorded runs in its repository, oldest first."""
        return list_runs(registry, name=spec.name)

    wrapper.pipeline_name = spec.name
    wrapper.last_run = None
    wrapper.runs = runs
    return wrapper  # type: ignore[no-any-return]


@overload
def pipeline(func: F) -> F: ...
@overload
def pipeline(
    func: str | None = None, *, name: str | None = None, registry: Any = None
) -> Callable[[F], F]: ...
def pipeline(func: Any = None, *, name: str | None = None, registry: Any = None) -> Any:
    """Group the steps a function runs under one run id: ``@pipeline`` or
    ``@pipeline(name=None, registry=None)``.

    The decorated function gains ``last_run`` (the :class:`PipelineRun` of its latest call,
    status ``running``/``succeeded``/``failed``) and ``runs()`` (its runs recorded on disk).
    A failing step's exception propagates unchanged; versions registered by earlier steps stay.
    """
    if isinstance(func, str) and name is None:
        name, func = func, None
    if func is None:
        return lambda f: _make_pipeline(f, name, registry)
    return _make_pipeline(func, name, registry)
