"""``uniflow import mlflow``: an MLflow Model Registry, read through MLflow's own client.

Needs the ``mlflow`` extra (``pip install 'uniflow-registry[mlflow]'``), imported only when an import
runs. Every registered model (or the names given) and every version, oldest first, becomes
a uniflow version: the files of the version's artifacts (downloaded by MLflow into a fresh
directory under the store's ``tmp/``, stored as a directory model, never unpickled); the source
run's metrics and params; the version's tags, plus the model's as ``model.<key>``; the
version's description (else the model's); creation time and user; run id, experiment and
source URI as lineage. Version ``N`` becomes ``vN.0.0``. The current stage (Staging,
Production, Archived) becomes an event at the version's last update time; each alias
becomes a single-holder custom stage (declared in ``.uniflow/config.toml``) taken right after
the version's registration (MLflow does not record when an alias was set). The mapping is in
docs/migrate.md.

MLflow 3 stores: a sqlite file or a file store (``file:///…/mlruns`` or a plain path) is read
as it is, and must exist (MLflow would create an empty one). MLflow 3 opens a file store only
with ``MLFLOW_ALLOW_FILE_STORE`` set and, from inside it, a default client that would create
``./mlflow.db``; :func:`_mlflow_scope` sets what MLflow needs for the call and restores it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

from .._errors import InvalidPathError, NotFoundError, RemoteError, UniflowError, UsageError
from .._naming import validate_key
from .._repo import Repository
from .._stages import BUILTIN_STAGES, ModelStage
from .._types import ProgressFn
from ._common import (
    ImportReport,
    RegisterFn,
    Step,
    copy_confined,
    identity_of,
    map_model_name,
    map_stage_name,
    run_plan,
)

__all__ = ["import_mlflow", "mlflow_version"]

SOURCE = "mlflow"
#: MLflow's stages (lowercased) that are built-in stages here; its "None" is development
_STAGES = {m.value: m.value for m in (ModelStage.STAGING, ModelStage.PRODUCTION, ModelStage.ARCHIVED)}
_PAGE = 1000
_MAX_PAGES = 100_000
_NAMED_STORES = ("databricks", "databricks-uc", "uc")  #: scheme-less URIs that are not paths
_SCOPED_ENV = (
    "MLFLOW_ALLOW_FILE_STORE",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
)


def mlflow_version(number: object) -> str:
    """MLflow's version number ``N`` as a uniflow version: ``vN.0.0``."""
    text = str(number)
    if not text.isdigit() or len(text) > 18:
        raise UsageError(f"MLflow version {text!r} is not a positive integer")
    return f"v{int(text)}.0.0"


def _mlflow_module() -> Any:
    try:
        import mlflow
    except ImportError as exc:
        raise UsageError(
            "importing from MLflow needs the mlflow extra: pip install 'uniflow-registry[mlflow]'"
        ) from exc
    return mlflow


def _file_path(uri: str) -> Path | None:
    """The directory of a file-store URI (``file:///…/mlruns`` or a plain path), else None."""
    if uri in _NAMED_STORES:
        return None
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(url2pathname(parts.path)).absolute()
    if parts.scheme == "" and not parts.netloc:
        return Path(uri).expanduser().absolute()
    return None


def _normalized(uri: str) -> str:
    """``uri`` with a file store as an absolute ``file://`` URI (what lineage records)."""
    path = _file_path(uri)
    return path.as_uri() if path is not None else uri


def _check_store(uri: str, *, registry: bool, defaulted: bool) -> None:
    """Refuse a local store that is not there: MLflow would create an empty one (a sqlite
    file, or an ``mlruns`` directory with its default experiment) and read nothing from it."""
    hint = " (MLflow's default; pass --tracking-uri URI, tracking_uri= in Python)" if defaulted else ""
    if uri.startswith("sqlite:///"):
        if not Path(unquote(uri.removeprefix("sqlite:///"))).is_file():
            raise NotFoundError(f"no MLflow database at {uri}{hint}")
        return
    path = _file_path(uri)
    if path is None:
        return
    # MLflow makes .trash/ with a store and models/ with its registry (it would create both)
    if not path.is_dir() or not any((path / d).is_dir() for d in ("models", ".trash")):
        raise NotFoundError(f"no MLflow file store at {path}{hint}")
    if registry and not (path / "models").is_dir():
        raise NotFoundError(f"the MLflow file store at {path} has no model registry (no models/ directory)")


@contextlib.contextmanager
def _mlflow_scope(mlflow: Any, tracking: str, registry: str | None) -> Iterator[str]:
    """Set what MLflow needs for this import, for the import only; yields the registry URI.

    MLflow 3 opens a file store only when ``MLFLOW_ALLOW_FILE_STORE`` is set, and its file
    registry opens a default client of its own (``MlflowClient()``), which without a tracking
    URI set creates ``./mlflow.db`` in the current directory; its downloads draw tqdm bars
    on stderr. So, for the call: the tracking and registry URIs are MLflow's current ones,
    the file store is allowed when one is read, the progress bars are off (unless the user
    set that variable). MLflow's globals and every environment variable are put back after.
    """
    import importlib

    modules: list[Any] = []
    for where in ("mlflow.tracking._tracking_service.utils", "mlflow.tracking._model_registry.utils"):
        try:  # where MLflow 2.9-3.x keep the URIs set_tracking_uri / set_registry_uri set
            modules.append(importlib.import_module(where))
        except ImportError:  # another layout: put back "not set" (the variables are restored below)
            modules.append(None)
    saved_env = {key: os.environ.get(key) for key in _SCOPED_ENV}
    saved_tracking = getattr(modules[0], "_tracking_uri", None)
    saved_registry = getattr(modules[1], "_registry_uri", None)
    try:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mlflow.set_tracking_uri(tracking)
        if registry is not None:
            mlflow.set_registry_uri(registry)
        resolved = _normalized(str(mlflow.get_registry_uri()))
        if _file_path(tracking) is not None or _file_path(resolved) is not None:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        yield resolved
    finally:
        mlflow.set_tracking_uri(saved_tracking)
        mlflow.set_registry_uri(saved_registry)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _redact(uri: str | None) -> str | None:
    """A URI without user:password (never stored in a manifest)."""
    if not uri:
        return uri
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _ms(value: object, fallback: datetime | None = None) -> datetime:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e15:
        return datetime.fromtimestamp(value / 1000, UTC)
    return fallback or datetime.fromtimestamp(0, UTC)


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the MLflow client; its errors become one-line RemoteErrors."""
    try:
        return fn(*args, **kwargs)
    except UniflowError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; none may escape untranslated
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise RemoteError(f"MLflow: {what}: {first}") from exc


def _paged(what: str, fn: Any, **kwargs: Any) -> list[Any]:
    out: list[Any] = []
    token = None
    for _ in range(_MAX_PAGES):
        page = _call(what, fn, page_token=token, **kwargs)
        out.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return out
    raise RemoteError(f"MLflow: {what}: too many pages")


def _keyed(items: dict[str, Any], what: str, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (items or {}).items():
        key = f"{prefix}{k}"
        validate_key(key, what)
        out[key] = str(v)
    return out


def _tags_of(obj: Any) -> dict[str, Any]:
    tags = getattr(obj, "tags", None) or {}
    return dict(tags) if isinstance(tags, dict) else {t.key: t.value for t in tags}


def _aliases_of(model: Any) -> dict[str, str]:
    """``{alias: version}`` of a registered model (a dict or a list of alias records)."""
    raw = getattr(model, "aliases", None) or {}
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    return {str(a.alias): str(a.version) for a in raw}


def _filter_quote(name: str) -> str:
    if "'" not in name:
        return f"name='{name}'"
    if '"' not in name:
        return f'name="{name}"'
    raise UsageError(f"MLflow model name {name!r} holds both kinds of quote; it cannot be searched")


def import_mlflow(
    repo: Repository,
    register: RegisterFn,
    names: Iterable[str] | None = None,
    *,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    dry_run: bool = False,
    progress: ProgressFn | None = None,
) -> ImportReport:
    """Import the MLflow registry at ``tracking_uri`` (MLflow's default when None: its
    ``MLFLOW_TRACKING_URI``, else ``./mlruns`` when it holds experiments, else
    ``sqlite:///mlflow.db``, which must exist). A file store (``file://`` or a plain path)
    is read as it is; nothing is written to the current directory or the store. While the
    import runs, MLflow's global tracking/registry URIs and a few ``MLFLOW_*`` variables are
    set for it (see :func:`_mlflow_scope`); all are restored when it returns.
    """
    mlflow = _mlflow_module()
    tracking = _normalized(tracking_uri or str(mlflow.get_tracking_uri()))
    _check_store(tracking, registry=registry_uri is None, defaulted=tracking_uri is None)
    registry = _normalized(registry_uri) if registry_uri else None
    with _mlflow_scope(mlflow, tracking, registry) as resolved_registry:
        if resolved_registry != tracking:
            _check_store(resolved_registry, registry=True, defaulted=False)
        client = _call(
            "open the registry", mlflow.MlflowClient, tracking_uri=tracking, registry_uri=resolved_registry
        )
        steps, notes = _plan(client, names, tracking, resolved_registry)
        return run_plan(repo, register, SOURCE, steps, dry_run=dry_run, notes=notes, progress=progress)


def _plan(
    client: Any, names: Iterable[str] | None, tracking: str, registry: str
) -> tuple[list[Step], list[str]]:
    """The steps of every registered model (or ``names``) and the notes on what was skipped."""
    wanted = list(names or [])
    if wanted:
        models = [_call(f"model {n!r}", client.get_registered_model, n) for n in wanted]
    else:
        models = _paged("list models", client.search_registered_models, max_results=_PAGE)
    steps: list[Step] = []
    notes: list[str] = []
    taken: dict[str, str] = {}
    experiments: dict[str, tuple[str, str]] = {}  # id -> (name, artifact location)
    for rm in sorted(models, key=lambda m: str(m.name)):
        try:
            name = map_model_name(str(rm.name), "MLflow model")
        except UsageError as exc:
            notes.append(f"skipped: {exc}")
            continue
        if name in taken:
            notes.append(
                f"skipped MLflow model {rm.name!r}: its uniflow name {name!r} is taken by {taken[name]!r}"
            )
            continue
        taken[name] = str(rm.name)
        if name != rm.name:
            notes.append(f"MLflow model {rm.name!r} is imported as {name!r}")
        steps += _model_steps(client, rm, name, tracking, registry, experiments, notes)
    return steps, notes


def _model_steps(
    client: Any,
    rm: Any,
    name: str,
    tracking: str,
    registry: str,
    experiments: dict[str, tuple[str, str]],
    notes: list[str],
) -> list[Step]:
    """The steps of registered model ``rm``: each READY version, then its aliases and its
    legacy stage as events; what cannot be imported is skipped with a note."""
    versions = _paged(
        f"versions of {rm.name!r}",
        client.search_model_versions,
        filter_string=_filter_quote(str(rm.name)),
        max_results=_PAGE,
    )
    aliases: dict[str, list[str]] = {}
    for alias, number in _aliases_of(rm).items():
        aliases.setdefault(number, []).append(alias)
    steps: list[Step] = []
    for mv in sorted(versions, key=lambda v: int(v.version) if str(v.version).isdigit() else 0):
        step = _version_step(client, rm, mv, name, _Where(tracking, registry, ()), experiments, notes)
        if step is None:
            continue
        steps.append(step)
        steps += _alias_steps(step, sorted(aliases.get(str(mv.version), [])), notes)
        held = _STAGES.get(str(mv.current_stage or "").lower())
        if held:
            updated = max(_ms(mv.last_updated_timestamp, step.at), step.at + timedelta(microseconds=100))
            steps.append(
                Step(
                    name,
                    step.version,
                    updated,
                    step.actor,
                    f"{step.key}:stage:{held}@{mv.last_updated_timestamp}",
                    order=100,
                    stage=held,
                    reason=f"MLflow stage {mv.current_stage}",
                )
            )
    return steps


def _version_step(
    client: Any,
    rm: Any,
    mv: Any,
    name: str,
    where: _Where,
    experiments: dict[str, tuple[str, str]],
    notes: list[str],
) -> Step | None:
    """The step registering MLflow version ``mv`` of ``rm`` (its files fetched from inside
    the store's roots only), or None with a note when it cannot be imported."""
    origin = f"{rm.name}/{mv.version}"
    try:
        version = mlflow_version(mv.version)
        if str(getattr(mv, "status", "READY")) not in ("READY", "ModelVersionStatus.READY"):
            raise UsageError(f"its status is {mv.status}, not READY")
        tags = {**_keyed(_tags_of(rm), "tag", "model."), **_keyed(_tags_of(mv), "tag")}
        metrics, params, lineage = _run_data(client, mv, experiments)
    except UniflowError as exc:
        notes.append(f"skipped MLflow version {origin}: {exc}")
        return None
    lineage.update(
        mlflow_model=str(rm.name),
        mlflow_version=str(mv.version),
        source=str(mv.source or ""),
        tracking_uri=_redact(where.tracking) or "",
        model_description=str(rm.description or ""),
    )
    roots = _roots(where.tracking, where.registry, lineage, experiments)
    return Step(
        name,
        version,
        _ms(mv.creation_timestamp),
        identity_of(getattr(mv, "user_id", None) or None, fallback="mlflow"),
        origin,
        order=0,
        fetch=_fetcher(client, str(rm.name), str(mv.version), _Where(where.tracking, where.registry, roots)),
        metrics=metrics,
        params=params,
        tags=tags,
        description=str(mv.description or "") or str(rm.description or ""),
        lineage=lineage,
    )


def _alias_steps(version_step: Step, aliases: list[str], notes: list[str]) -> list[Step]:
    """One event per alias of the version: a custom stage of that name; an alias naming a
    built-in stage, or no valid stage name, is skipped with a note."""
    steps: list[Step] = []
    origin = version_step.key
    for i, alias in enumerate(aliases):
        try:
            stage = map_stage_name(alias)
        except UsageError as exc:
            notes.append(f"skipped alias of {origin}: {exc}")
            continue
        if stage in BUILTIN_STAGES:
            notes.append(f"skipped alias {alias!r} of {origin}: it names a built-in stage")
            continue
        steps.append(
            Step(
                version_step.model,
                version_step.version,
                version_step.at + timedelta(microseconds=1 + i),
                version_step.actor,
                f"{origin}:alias:{alias}",
                order=1 + i,
                stage=stage,
                reason=f"MLflow alias {alias}",
            )
        )
    return steps


def _run_data(
    client: Any, mv: Any, experiments: dict[str, tuple[str, str]]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(metrics, params, lineage)`` of the version's source run (none: the version's own)."""
    metrics = (
        dict(getattr(mv, "metrics", None) or {}) if isinstance(getattr(mv, "metrics", None), dict) else {}
    )
    params = dict(getattr(mv, "params", None) or {}) if isinstance(getattr(mv, "params", None), dict) else {}
    lineage: dict[str, Any] = {}
    run_id = getattr(mv, "run_id", None)
    if run_id:
        run = _call(f"run {run_id}", client.get_run, run_id)
        metrics = dict(run.data.metrics)
        params = dict(run.data.params)
        exp_id = str(run.info.experiment_id)
        if exp_id not in experiments:
            exp = _call(f"experiment {exp_id}", client.get_experiment, exp_id)
            experiments[exp_id] = (
                str(getattr(exp, "name", "") or ""),
                str(getattr(exp, "artifact_location", "") or ""),
            )
        lineage.update(
            run_id=str(run_id),
            experiment_id=exp_id,
            experiment=experiments[exp_id][0],
            run_name=str(getattr(run.info, "run_name", "") or ""),
        )
    for key in metrics:
        validate_key(str(key), "metric")
    for key in params:
        validate_key(str(key), "param")
    return metrics, params, lineage


@dataclass(frozen=True)
class _Where:
    """Where a version's files may be read from: the store asked for and its artifact roots."""

    tracking: str  #: the tracking URI (an ``http(s)`` server, a sqlite file, a file store)
    registry: str
    roots: tuple[str, ...]  #: artifact roots of that store: download URIs must lie below one


def _roots(
    tracking: str, registry: str, lineage: dict[str, Any], experiments: dict[str, tuple[str, str]]
) -> tuple[str, ...]:
    """The artifact roots a version's files may come from: a file store's own directory and
    the artifact location the store records for the version's experiment (its run's)."""
    roots = [path.as_uri() for path in map(_file_path, (tracking, registry)) if path is not None]
    location = experiments.get(str(lineage.get("experiment_id", "")), ("", ""))[1]
    if location:
        roots.append(_normalized(location))
    return tuple(roots)


def _refused(uri: str, why: str) -> InvalidPathError:
    return InvalidPathError(f"refused: download URI {_redact(uri)} {why}")


def _segments_ok(path: str) -> bool:
    """True when a URI path has no ``.``/``..`` segment (never normalized away: refused)."""
    return not any(seg in (".", "..") for seg in unquote(path).split("/"))


def _local_source(uri: str, where: _Where) -> tuple[Path, tuple[str, ...]] | None:
    """``(root directory, parts below it)`` of a local download URI inside a local root; None
    for a URI that is not local. A local URI anywhere else is refused."""
    parts = urlsplit(uri)
    if parts.scheme not in ("", "file") or uri in _NAMED_STORES:
        return None
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment or not _segments_ok(parts.path):
        raise _refused(uri, "is not a plain local path")
    path = Path(url2pathname(parts.path))
    if not path.is_absolute():
        raise _refused(uri, "is a relative path")
    if not any(_file_path(u) or u.startswith("sqlite:") for u in (where.tracking, where.registry)):
        raise _refused(uri, f"is a local file, and {_redact(where.tracking)} is a server")
    for root_uri in where.roots:
        root = _file_path(root_uri)
        if root is None:
            continue
        for base in (root, root.resolve()):
            if path == base or base in path.parents:
                return base.resolve(), path.relative_to(base).parts
    raise _refused(uri, "is outside the store's artifact root")


def _remote_ok(uri: str, where: _Where) -> None:
    """Refuse a remote download URI that is neither served by the tracking server asked
    (``mlflow-artifacts:``) nor below a root of the same scheme and host."""
    parts = urlsplit(uri)
    if parts.query or parts.fragment or not _segments_ok(parts.path):
        raise _refused(uri, "has a query, a fragment or a '..'")
    if parts.scheme == "mlflow-artifacts":
        server = urlsplit(where.tracking)
        if server.scheme in ("http", "https") and parts.netloc in ("", server.netloc):
            return
        raise _refused(uri, f"is not served by {_redact(where.tracking)}")
    for root_uri in where.roots:
        root = urlsplit(root_uri)
        if (root.scheme, root.netloc) != (parts.scheme, parts.netloc) or root.scheme in ("", "file"):
            continue
        base = root.path.rstrip("/")
        if parts.path == base or parts.path.startswith(base + "/"):
            return
    raise _refused(uri, "is outside the artifact roots of the store")


def _fetcher(client: Any, model: str, number: str, where: _Where) -> Any:
    def fetch(dest: Path) -> Path:
        uri = str(
            _call(f"download URI of {model}/{number}", client.get_model_version_download_uri, model, number)
        )
        local = _local_source(uri, where)
        if local is not None:
            return copy_confined(local[0], local[1], dest, uri)
        _remote_ok(uri, where)
        return _download(uri, dest, model, number, where)

    return fetch


def _download(uri: str, dest: Path, model: str, number: str, where: _Where) -> Path:
    """MLflow's download of a remote URI checked above, into ``dest``."""
    import mlflow.artifacts

    got = Path(
        _call(
            f"download {model}/{number}",
            mlflow.artifacts.download_artifacts,
            artifact_uri=uri,
            dst_path=os.fspath(dest),
            tracking_uri=where.tracking or None,
            registry_uri=where.registry,
        )
    )
    real, root = got.resolve(), dest.resolve()
    if real != root and root not in real.parents:  # MLflow wrote outside the directory it was given
        raise RemoteError(f"MLflow: download of {model}/{number} landed outside {dest}")
    if not real.exists():
        raise NotFoundError(f"MLflow: version {model}/{number} has no artifacts")
    return got
