"""numpy arrays as ``array.npy``, written and read with ``allow_pickle=False``.

Meta keys: ``file``, ``dtype``, ``shape``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .._errors import SerializationError
from ._base import Serializer

__all__ = ["NumpySerializer"]

FILE = "array.npy"


class NumpySerializer(Serializer):
    name = "numpy"
    framework = "numpy"
    aliases = ("numpy", "np")
    priority = 30

    def can_save(self, obj: Any) -> bool:
        np = sys.modules.get("numpy")
        if np is None or not isinstance(obj, np.ndarray):
            return False
        return not isinstance(obj, np.ma.MaskedArray) and not obj.dtype.hasobject

    def save(self, obj: Any, dest: Path, *, trust: bool = False) -> dict[str, Any]:
        import numpy as np

        if not isinstance(obj, np.ndarray):
            raise SerializationError(f"the numpy serializer saves numpy arrays, not {type(obj).__name__}")
        if obj.dtype.hasobject:
            raise SerializationError(
                f"a numpy array of dtype {obj.dtype} holds Python objects, which .npy can only store "
                "with pickle; pass trust=True (without framework='numpy') to store it with the "
                "pickle serializer"
            )
        if isinstance(obj, np.ma.MaskedArray):
            raise SerializationError("masked arrays are not supported; save .data and .mask separately")
        try:
            np.save(Path(dest) / FILE, obj, allow_pickle=False)
        except Exception as exc:
            raise SerializationError(f"cannot save the array: {exc}") from exc
        return {"file": FILE, "dtype": str(obj.dtype), "shape": [int(n) for n in obj.shape]}

    def load(self, src: Path, meta: dict[str, Any], *, trust: bool = False, into: Any = None) -> Any:
        import numpy as np

        path = Path(src) / FILE
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:  # object arrays need pickle, which stays off
            raise SerializationError(f"{path.name} cannot be read without pickle: {exc}") from exc
        except OSError as exc:
            raise SerializationError(f"cannot read {path.name}: {exc}") from exc
