"""JSON-safe values: the rules every ``--json`` output and the web UI's ``/api`` share.

``to_dict()`` objects become their dicts, datetimes ISO-8601 strings, paths strings, sets
sorted lists, non-finite floats ``null`` (JSON has no NaN), enums their value.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from typing import Any

__all__ = ["to_jsonable", "dumps"]


def to_jsonable(obj: Any) -> Any:
    """Make ``obj`` JSON-safe: ``to_dict()`` objects, datetimes, paths, sets, non-finite floats."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(v) for v in items]
    if isinstance(obj, datetime):
        return obj.isoformat()
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_jsonable(to_dict())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    value = getattr(obj, "value", None)  # enums
    if isinstance(value, str):
        return value
    return str(obj)


def dumps(obj: Any) -> str:
    """``obj`` as the indented JSON text every ``--json`` output prints (:func:`to_jsonable`,
    two-space indent, non-ASCII kept)."""
    return json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False, allow_nan=False)
