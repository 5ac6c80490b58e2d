"""numpy arrays as ``array.npy``, written and read with ``allow_pickle=False``.

Meta keys: ``file``, ``dtype``, ``shape``, and ``order: "F"`` for a Fortran-ordered array.

A Fortran-ordered array (F-contiguous, not C-contiguous) is written in C order, so that
``array.npy`` is a plain C-order file whose tensor record (``_tensors``) describes it: partial
loads and diffs read its values in their logical order. Loading gives it back Fortran-ordered
(``np.asfortranarray``), the same values, dtype, shape and memory order as registered.
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
        fortran = bool(obj.flags.f_contiguous and not obj.flags.c_contiguous)
        try:
            np.save(Path(dest) / FILE, np.ascontiguousarray(obj) if fortran else obj, allow_pickle=False)
        except Exception as exc:
            raise SerializationError(f"cannot save the array: {exc}") from exc
        meta: dict[str, Any] = {"file": FILE, "dtype": str(obj.dtype), "shape": [int(n) for n in obj.shape]}
        if fortran:
            meta["order"] = "F"
        return meta

    def load(self, src: Path, meta: dict[str, Any], *, trust: bool = False, into: Any = None) -> Any:
        import numpy as np

        path = Path(src) / FILE
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:  # object arrays need pickle, which stays off
            raise SerializationError(f"{path.name} cannot be read without pickle: {exc}") from exc
        except OSError as exc:
            raise SerializationError(f"cannot read {path.name}: {exc}") from exc
        return np.asfortranarray(array) if meta.get("order") == "F" else array
