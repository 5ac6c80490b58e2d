"""scikit-learn (and sklearn-API xgboost / lightgbm) estimators as ``model.skops``.

Loading never runs pickle: skops lists the types in the file it does not trust by
default; those are loaded only with ``trust=True``.
Meta keys: ``file``, ``class``, ``sklearn_version``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .._errors import SerializationError, UnsafeLoadError
from ._base import Serializer

__all__ = ["SklearnSerializer"]

FILE = "model.skops"
_ROOTS = ("sklearn", "xgboost", "lightgbm")
_SHOW = 10


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


class SklearnSerializer(Serializer):
    name = "sklearn"
    framework = "sklearn"
    aliases = ("sklearn", "scikit-learn", "xgboost", "lightgbm")
    priority = 40

    def can_save(self, obj: Any) -> bool:
        if isinstance(obj, type):
            return False
        module = type(obj).__module__ or ""
        root = module.split(".")[0]
        if root == "sklearn" and "sklearn" in sys.modules:
            return True
        if root in _ROOTS and root in sys.modules:
            return callable(getattr(obj, "fit", None)) and callable(getattr(obj, "get_params", None))
        base = sys.modules.get("sklearn.base")
        return base is not None and isinstance(obj, base.BaseEstimator)

    def save(self, obj: Any, dest: Path, *, trust: bool = False) -> dict[str, Any]:
        import skops.io

        path = Path(dest) / FILE
        try:
            skops.io.dump(obj, path)
        except Exception as exc:  # skops raises TypeError / ValueError / NotImplementedError ...
            raise SerializationError(
                f"skops cannot save {_qualname(obj)}: {exc}; pass trust=True with framework='pickle' "
                "to store it with pickle instead"
            ) from exc
        meta: dict[str, Any] = {"file": FILE, "class": _qualname(obj)}
        sklearn = sys.modules.get("sklearn")
        if sklearn is not None:
            meta["sklearn_version"] = str(getattr(sklearn, "__version__", ""))
        return meta

    def load(self, src: Path, meta: dict[str, Any], *, trust: bool = False, into: Any = None) -> Any:
        import skops.io

        path = Path(src) / FILE
        try:
            untrusted = list(skops.io.get_untrusted_types(file=path))
        except Exception as exc:
            raise SerializationError(f"cannot read {path.name}: {exc}") from exc
        if untrusted and not trust:
            shown = ", ".join(untrusted[:_SHOW])
            if len(untrusted) > _SHOW:
                shown += f" and {len(untrusted) - _SHOW} more"
            raise UnsafeLoadError(
                f"{path.name} contains types skops does not trust by default: {shown}; "
                "trust=True would load them (only do so if you trust who registered this model)"
            )
        try:
            return skops.io.load(path, trusted=untrusted or None)
        except Exception as exc:
            raise SerializationError(f"skops cannot load {path.name}: {exc}") from exc
