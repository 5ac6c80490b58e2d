"""The public API is ``uniflow.__all__``: pinned here, and closed: every type a public
signature names (a parameter, a return value, a property, a field of a returned record) is
one of those names, or comes with Python. A user never has to import ``uniflow._anything``."""

from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import uniflow
from uniflow import ModelRegistry, ReadOnlyRegistryError, RegistryReader, RemoteRegistry

PUBLIC = [
    "Admins",
    "ApprovalRule",
    "ChunkStats",
    "Comparison",
    "ConcurrencyError",
    "Condition",
    "Config",
    "ConfigError",
    "CorruptChunkError",
    "EmptiedStage",
    "EventRecord",
    "EventResult",
    "FileDelta",
    "FileInfo",
    "GcReport",
    "HistoryEvent",
    "ImportReport",
    "InForce",
    "IntegrityError",
    "InvalidNameError",
    "InvalidPathError",
    "InvalidStageError",
    "InvalidVersionError",
    "LfsPointerError",
    "LfsPointerWarning",
    "LifecycleConflictError",
    "LifecycleEvent",
    "Limits",
    "MissingChunkError",
    "Model",
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelStage",
    "ModelSummary",
    "ModelVersion",
    "NotFoundError",
    "Policy",
    "PolicyChain",
    "PolicyError",
    "PolicyInit",
    "PolicySignature",
    "PromoteReport",
    "PromoteResult",
    "PromoteRule",
    "Provenance",
    "PullReport",
    "PushRejectedError",
    "PushReport",
    "ReadOnlyRegistryError",
    "RegistryReader",
    "RemoteError",
    "RemoteRegistry",
    "RemoteSpec",
    "RepositoryError",
    "RevisionVerdict",
    "SerializationError",
    "SignatureError",
    "SigningError",
    "StageEmptyError",
    "StageLike",
    "StageRule",
    "TensorDelta",
    "TensorInfo",
    "TrustRoot",
    "UniflowError",
    "UniflowWarning",
    "UnsafeLoadError",
    "UsageError",
    "VerifyProblem",
    "VerifyReport",
    "VersionDiff",
    "VersionExistsError",
    "VersionNotFoundError",
    "VersionResult",
    "VersionRow",
    "__version__",
    "pipeline",
    "step",
]

#: attributes of every registry that hand out the parts below the facade, documented as
#: internal (docs/api.md): their types are private on purpose, and the check does not follow them
INTERNAL = {"repository", "git", "store"}

_NOT_CLASSES = (typing.Union, types.UnionType, typing.Literal, typing.Annotated)


def _classes(hint: Any) -> Iterator[type]:
    """Every class a resolved annotation names (``dict[str, X] | None`` -> dict, str, X)."""
    origin = typing.get_origin(hint)
    if origin is not None:
        if origin not in _NOT_CLASSES:
            yield origin
        if origin is not typing.Literal:
            for arg in typing.get_args(hint):
                yield from _classes(arg)
    elif isinstance(hint, type):
        yield hint
    elif isinstance(hint, (list, tuple)):  # Callable[[A, B], C]
        for arg in hint:
            yield from _classes(arg)


def _annotated(exports: dict[str, Any]) -> Iterator[tuple[str, Any, str]]:
    """``(where, annotated object, module to resolve names in)`` for every public signature of
    an exported name: functions; classes' fields, constructors, methods and properties."""
    for name, obj in exports.items():
        if not inspect.isclass(obj):
            if callable(obj):
                yield name, obj, obj.__module__
            continue
        yield name, obj, obj.__module__  # fields (dataclasses, declared attributes)
        internal = INTERNAL if issubclass(obj, RegistryReader) else set()
        for attr in ["__init__", "__new__", *dir(obj)]:
            if (attr.startswith("_") and attr not in ("__init__", "__new__")) or attr in internal:
                continue
            static = inspect.getattr_static(obj, attr, None)
            if isinstance(static, property):
                static = static.fget
            elif isinstance(static, (staticmethod, classmethod)):
                static = static.__func__
            if inspect.isfunction(static) and static.__module__.startswith("uniflow"):
                yield f"{name}.{attr}", static, static.__module__


def _unexported(exports: dict[str, Any]) -> dict[str, set[str]]:
    """Classes the signatures of ``exports`` name that are not among them (nor Python's)."""
    public = {id(value) for value in exports.values()}
    found: dict[str, set[str]] = {}
    for where, obj, module in _annotated(exports):
        try:
            hints = typing.get_type_hints(obj, globalns=vars(sys.modules[module]), localns=exports)
        except NameError as exc:  # a name imported only for type checkers, and not exported
            found.setdefault(f"unresolvable {exc.name}", set()).add(where)
            continue
        for key, hint in hints.items():
            if key.startswith("_") or (
                inspect.isclass(obj) and issubclass(obj, RegistryReader) and key in INTERNAL
            ):
                continue
            for cls in _classes(hint):
                top = cls.__module__.partition(".")[0]
                if id(cls) in public or top == "builtins" or top in sys.stdlib_module_names:
                    continue
                found.setdefault(f"{cls.__module__}.{cls.__qualname__}", set()).add(f"{where} ({key})")
    return found


def test_public_names_are_pinned() -> None:
    assert uniflow.__all__ == PUBLIC
    assert sorted(PUBLIC) == PUBLIC
    for name in PUBLIC:
        assert getattr(uniflow, name) is not None, name
    assert set(uniflow._errors.__all__) <= set(PUBLIC)  # the whole error tree


def test_every_type_in_a_public_signature_is_exported() -> None:
    assert (
        _unexported({name: getattr(uniflow, name) for name in uniflow.__all__ if name != "__version__"}) == {}
    )


def test_the_check_finds_private_types() -> None:
    """The walk is not vacuous: with ``Provenance``, ``VersionRow`` and ``ImportReport`` left
    out (as they were before issue 23), it reports each signature that names them."""
    left_out = {"Provenance", "VersionRow", "ImportReport"}
    exports = {n: getattr(uniflow, n) for n in uniflow.__all__ if n != "__version__" and n not in left_out}
    assert _unexported(exports) == {
        "uniflow._types.Provenance": {"ModelRegistry.register (provenance)"},
        "uniflow._types.VersionRow": {
            "RegistryReader.version_rows (return)",
            "ModelRegistry.version_rows (return)",
            "RemoteRegistry.version_rows (return)",
        },
        # imported for type checkers only: no module at run time has the name
        "unresolvable ImportReport": {"ModelRegistry.import_gto", "ModelRegistry.import_mlflow"},
    }


def test_read_only_registry_is_the_base_class() -> None:
    assert issubclass(ModelRegistry, RegistryReader) and issubclass(RemoteRegistry, RegistryReader)
    assert not issubclass(RemoteRegistry, ModelRegistry)
    from uniflow._registry import WRITE_METHODS

    def public(cls: type) -> set[str]:
        return {n for n in vars(cls) if not n.startswith("_")}

    writes = public(ModelRegistry) - public(RegistryReader)
    assert writes == set(WRITE_METHODS)  # every write the facade adds has its refusal
    assert not {n for n in writes if hasattr(RemoteRegistry, n)}  # and a RemoteRegistry has none


def test_a_registry_by_url_has_no_write_methods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(tmp_path / "cache"))
    url = "https://git.invalid/team/models.git"
    reg: RegistryReader = ModelRegistry(url)
    assert isinstance(reg, RemoteRegistry) and not isinstance(reg, ModelRegistry)
    assert not hasattr(reg, "push") and getattr(reg, "register", None) is None
    with pytest.raises(ReadOnlyRegistryError, match="cannot roll back: the registry at https://git.invalid"):
        reg.rollback("m", "production")  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        reg.nonsense  # type: ignore[attr-defined]  # noqa: B018
    assert not (tmp_path / "cache").exists()  # nothing fetched, nothing created
    with pytest.raises(uniflow.UsageError, match="not opened directly"):
        RegistryReader()


def test_api_docs_name_public_modules_only() -> None:
    """docs/api.md imports only from ``uniflow`` and documents every public class."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text(encoding="utf-8")
    assert re.findall(r"uniflow\._(?!_)\w+", text) == []
    undocumented = [n for n in PUBLIC if n != "__version__" and not re.search(rf"\b{n}\b", text)]
    assert undocumented == []
