"""Arbitrary Python objects as ``model.pkl`` — only ever with ``trust=True``.

Unpickling runs code chosen by whoever wrote the file, so both saving (to make the
choice explicit) and loading require ``trust=True``.
Meta keys: ``file``, ``class``, ``protocol``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from .._errors import SerializationError, UnsafeLoadError
from ._base import Serializer

__all__ = ["PickleSerializer"]

FILE = "model.pkl"


class PickleSerializer(Serializer):
    name = "pickle"
    framework = "pickle"
    aliases = ("pickle",)
    priority = -1000  # the last resort, and only chosen with trust=True

    def can_save(self, obj: Any) -> bool:
        return True

    def save(self, obj: Any, dest: Path, *, trust: bool = False) -> dict[str, Any]:
        cls = type(obj)
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not trust:
            raise SerializationError(
                f"refusing to pickle {where} without trust=True: pickle files run arbitrary code "
                "when loaded; pass trust=True to store it with pickle"
            )
        protocol = pickle.HIGHEST_PROTOCOL
        try:
            with open(Path(dest) / FILE, "wb") as fh:
                pickle.dump(obj, fh, protocol=protocol)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise SerializationError(f"cannot pickle {where}: {exc}") from exc
        return {"file": FILE, "class": where, "protocol": protocol}

    def load(self, src: Path, meta: dict[str, Any], *, trust: bool = False, into: Any = None) -> Any:
        path = Path(src) / FILE
        if not trust:
            raise UnsafeLoadError(
                f"{path.name} is a pickle; pass trust=True to load it — pickle can run arbitrary code"
            )
        try:
            with open(path, "rb") as fh:
                return pickle.load(fh)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
            raise SerializationError(f"cannot unpickle {path.name}: {exc}") from exc
