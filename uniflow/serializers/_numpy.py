"""numpy arrays as ``array.npy``, written and read with ``allow_pickle=False``.

Meta keys: ``file``, ``dtype``, ``shape``; ``order: "F"`` for a Fortran-ordered array and
``byteorder: ">"`` for a big-endian one.

A Fortran-ordered array (F-contiguous, not C-contiguous) is written in C order, and a
big-endian one little-endian, so that ``array.npy`` is a plain C-order little-endian file
whose tensor record (``_records.tensors``) describes it: partial loads and diffs read its values in
their logical order. Loading gives it back as registered: the same values, dtype (byte
order included), shape and memory order (``np.asfortranarray``).
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
        meta: dict[str, Any] = {"file": FILE, "dtype": str(obj.dtype), "shape": [int(n) for n in obj.shape]}
        data = obj
        if obj.flags.f_contiguous and not obj.flags.c_contiguous:
            data, meta["order"] = np.ascontiguousarray(data), "F"
        if obj.dtype.byteorder == ">":
            data, meta["byteorder"] = data.astype(obj.dtype.newbyteorder("<")), ">"
        try:
            np.save(Path(dest) / FILE, data, allow_pickle=False)
        except Exception as exc:
            raise SerializationError(f"cannot save the array: {exc}") from exc
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
        if meta.get("byteorder") == ">":
            array = array.astype(array.dtype.newbyteorder(">"))
        return np.asfortranarray(array) if meta.get("order") == "F" else array
