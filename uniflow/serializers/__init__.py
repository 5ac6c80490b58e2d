"""Finding the serializer for an object (on save) or by name (on load).

Importing this package is cheap: the concrete serializer modules are imported on first
use, and they import torch / scikit-learn / numpy only inside their functions. Third-party
serializers plug in through the ``uniflow.serializers`` entry-point group; those are loaded
only when a name or framework label is not a built-in one, or when detection runs, and only
from distributions installed outside the current directory and its Git work tree (a
``*.dist-info`` committed to a repository is data, not a plug-in; see ``_trust``). A
manifest's ``serializer`` is only ever looked up by name among these, never imported.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
from pathlib import Path
from typing import Any

from .._errors import SerializationError, UsageError
from ._base import Serializer

__all__ = [
    "Serializer",
    "get_serializer",
    "serializer_for",
    "canonical_framework",
    "framework_for_path",
]

_log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "uniflow.serializers"

#: serializer name -> "module:Class" (relative to this package)
_BUILTIN: dict[str, str] = {
    "torch": "._torch:TorchSerializer",
    "sklearn": "._sklearn:SklearnSerializer",
    "numpy": "._numpy:NumpySerializer",
    "pickle": "._pickle:PickleSerializer",
    "files": "._files:FilesSerializer",
    "onnx": "._files:OnnxSerializer",
}

#: spellings of the same framework -> the label recorded in manifests
_SYNONYMS: dict[str, str] = {
    "torch": "pytorch",
    "pt": "pytorch",
    "scikit-learn": "sklearn",
    "scikit_learn": "sklearn",
    "scikitlearn": "sklearn",
    "np": "numpy",
}

_LABEL = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$")

_lock = threading.RLock()
_instances: dict[str, Serializer] = {}
_plugins_loaded = False


def canonical_framework(label: str) -> str:
    """Normalize a framework label: lower case, synonyms folded (``"torch"`` -> ``"pytorch"``)."""
    if not isinstance(label, str):
        raise UsageError(f"framework must be a string, got {type(label).__name__}")
    norm = label.strip().lower()
    if not _LABEL.match(norm):
        raise UsageError(
            f"invalid framework label {label!r}: use letters, digits, '.', '_', '+' or '-' (max 64)"
        )
    return _SYNONYMS.get(norm, norm)


def framework_for_path(path: Any) -> str:
    """The framework label for a registered file or directory, from its extension."""
    from ._files import framework_for_path as _impl

    return _impl(path)


def _instantiate(cls: Any, origin: str) -> Serializer:
    if not (isinstance(cls, type) and issubclass(cls, Serializer)):
        raise SerializationError(f"{origin} is not a uniflow Serializer subclass")
    try:
        return cls()
    except Exception as exc:  # a plug-in's constructor may fail in any way
        raise SerializationError(f"cannot create serializer {origin}: {exc}") from exc


def _builtin(name: str) -> Serializer:
    with _lock:
        inst = _instances.get(name)
        if inst is None:
            module, _, attr = _BUILTIN[name].partition(":")
            inst = _instantiate(getattr(importlib.import_module(module, __name__), attr), attr)
            _instances[name] = inst
        return inst


def _untrusted_plugin(ep: Any, roots: list[Path]) -> str | None:
    """Why the entry point ``ep`` is not loaded, or None: its distribution and its module
    must lie outside the current directory and its work tree (see ``_trust``)."""
    from ._trust import found_inside

    dist = getattr(ep, "dist", None)
    if dist is not None:
        base = Path(str(dist.locate_file(""))).resolve()
        if any(base == r or r in base.parents for r in roots):
            return f"its distribution lies in {base}, inside the work tree or the current directory"
    module = str(ep.value).partition(":")[0].strip()
    return found_inside(module, roots, missing_ok=True)


def _load_plugins() -> None:
    """Import every entry-point serializer once; broken plug-ins are logged and skipped."""
    global _plugins_loaded
    with _lock:
        if _plugins_loaded:
            return
        _plugins_loaded = True
        from importlib.metadata import entry_points

        from ._trust import untrusted_roots

        roots = untrusted_roots()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.value.startswith(__name__ + "."):
                continue  # our own built-ins, declared in pyproject for discoverability
            reason = _untrusted_plugin(ep, roots)
            if reason is not None:
                _log.warning("skipping serializer plug-in %r: %s", ep.name, reason)
                continue
            try:
                inst = _instantiate(ep.load(), f"entry point {ep.name!r} ({ep.value})")
            except Exception as exc:
                _log.warning("skipping serializer plug-in %r: %s", ep.name, exc)
                continue
            if inst.name in _BUILTIN or inst.name in _instances:
                _log.warning("serializer plug-in %r reuses the name %r; ignored", ep.name, inst.name)
                continue
            _instances[inst.name] = inst


def _all() -> list[Serializer]:
    """Every serializer, highest priority first (built-ins win ties)."""
    for name in _BUILTIN:
        _builtin(name)
    _load_plugins()
    with _lock:
        items = list(_instances.values())
    builtin_rank = {name: i for i, name in enumerate(_BUILTIN)}
    return sorted(items, key=lambda s: (-s.priority, builtin_rank.get(s.name, len(builtin_rank))))


def get_serializer(name: str) -> Serializer:
    """The serializer stored in a manifest as ``serializer: <name>``."""
    if name in _BUILTIN:
        return _builtin(name)
    _load_plugins()
    with _lock:
        inst = _instances.get(name)
    if inst is None:
        known = ", ".join(sorted({*_BUILTIN, *_instances}))
        raise SerializationError(
            f"unknown serializer {name!r} (known: {known}); install the package that provides it"
        )
    return inst


def _by_label(label: str) -> Serializer | None:
    raw = label.strip().lower()
    canon = canonical_framework(label)
    for ser in _all():
        names = {ser.name, ser.framework, *ser.aliases}
        if raw in names or canon in names:
            return ser
    return None


def _describe(obj: Any) -> str:
    cls = type(obj)
    text = f"{cls.__module__}.{cls.__qualname__}"
    dtype = getattr(obj, "dtype", None)
    if dtype is not None and getattr(dtype, "hasobject", False):
        text += " with dtype object"
    return text


def serializer_for(obj: Any, framework: str | None = None, trust: bool = False) -> Serializer:
    """Choose how to save ``obj``.

    A ``framework`` label naming a serializer (``"pytorch"``, ``"sklearn"``, ``"np"`` ...)
    chooses it; any other label (``"jax"``) is only recorded and detection runs. Detection
    tries serializers by priority; pickle is considered only with ``trust=True``.
    """
    if framework is not None:
        ser = _by_label(framework)
        if ser is not None:
            if ser.name != "pickle" and not ser.can_save(obj):
                raise SerializationError(
                    f"framework {framework!r} uses the {ser.name!r} serializer, "
                    f"which cannot save a {_describe(obj)}"
                )
            return ser
    candidates = _all()
    for ser in candidates:
        if ser.name == "pickle":
            continue
        if ser.can_save(obj):
            return ser
    if trust:
        return _builtin("pickle")
    supported = (
        "torch nn.Module / state_dict / Tensor, scikit-learn estimators, numpy arrays, onnx.ModelProto"
    )
    extra = sorted(s.name for s in candidates if s.name not in _BUILTIN)
    if extra:
        supported += ", plus plug-ins: " + ", ".join(extra)
    raise SerializationError(
        f"cannot save a {_describe(obj)} safely; supported: {supported}. "
        "Pass trust=True to store it with pickle (loading it will also need trust=True)"
    )
