"""Plain-text formatting every output shares (CLI, web UI, notebook, model card, diff)."""

from __future__ import annotations

__all__ = ["human_size"]

_UNITS = ("KiB", "MiB", "GiB", "TiB")


def human_size(n: object, *, significant: bool = False) -> str:
    """Bytes in binary units: ``1536`` -> ``1.5 KiB`` (one decimal), or with ``significant``
    three significant digits (``4.02 KiB``, ``40 KiB``, ``1 GiB``; never ``1.02e+03 MiB``).
    Bytes below 1 KiB print whole (``1023 B``); anything but a number prints ``-``."""
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "-"
    if abs(n) < 1024:
        return f"{int(n)} B"
    size = n / 1024
    for unit in _UNITS:
        if significant and (size < 999.5 or unit == _UNITS[-1]):
            return f"{size:.3g} {unit}"
        if not significant and (abs(size) < 1024 or unit == _UNITS[-1]):
            return f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable: the last unit always returns")  # pragma: no cover
