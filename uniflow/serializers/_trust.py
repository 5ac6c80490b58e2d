"""Which code data may name: the rule for importing a module that a manifest (or a
serializer plug-in's entry point) names.

A module named by data is imported without the caller's ``trust=True`` only when

1. it is already imported in this process (importing it again runs nothing), or
2. its top-level package belongs to an installed distribution (one whose ``*.dist-info``
   lies outside the current directory and the Git work tree being read) and is not part
   of the standard library, and every module on the way, from the top-level package down
   to the named one, is found by ``importlib.util.find_spec`` at a location outside those
   directories. The check runs before the named module is imported (``find_spec`` of a
   dotted name imports only its parent packages, each checked first).

So a module file committed to a repository (``evilnet.py`` at its root, a ``*.dist-info``
next to it) or a standard-library module with import-time effects (``this``,
``antigravity``) is never imported because a manifest names it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from .._errors import SerializationError
from .._records.paths import find_workdir

__all__ = ["Untrusted", "found_inside", "import_untrusted", "untrusted_roots", "why_untrusted"]

_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def untrusted_roots(*near: Path | None) -> list[Path]:
    """The current directory and the Git work trees around it and around each of ``near``:
    code found there is data, not an installed distribution."""
    roots: set[Path] = set()
    for start in (Path.cwd(), *(p for p in near if p is not None)):
        try:
            here = Path(start).resolve()
        except OSError:
            continue
        roots.add(here)
        workdir = find_workdir(here)
        if workdir is not None:
            roots.add(workdir.resolve())
    return sorted(roots)


def _inside(path: str | os.PathLike[str], roots: Iterable[Path]) -> bool:
    try:
        p = Path(path).resolve()
    except OSError:
        return True  # cannot tell: count it as data
    return any(p == r or r in p.parents for r in roots)


def _installed_top_levels(roots: list[Path]) -> set[str]:
    """Top-level import names of the distributions installed outside ``roots``."""
    names: set[str] = set()
    for dist in importlib.metadata.distributions():
        if _inside(str(dist.locate_file("")), roots):
            continue
        declared = (dist.read_text("top_level.txt") or "").split()
        if declared:
            names.update(declared)
            continue
        for f in dist.files or ():
            if f.suffix == ".py":
                names.add(f.parts[0] if len(f.parts) > 1 else f.stem)
    return names


def _spec_locations(name: str) -> list[str] | None:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    out = [spec.origin] if spec.origin and spec.has_location else []
    return out + list(spec.submodule_search_locations or ())


def found_inside(module: str, roots: list[Path], *, missing_ok: bool = False) -> str | None:
    """Why importing ``module`` would run code found inside ``roots``, else None.

    Walks from the top-level package down, checking each module's spec before importing
    anything below it (already imported modules are skipped). A module that cannot be
    found is a reason unless ``missing_ok`` (its import then simply fails).
    """
    if not _MODULE_RE.fullmatch(module):
        return f"{module!r} is not a module name"
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name in sys.modules:
            continue
        try:
            locations = _spec_locations(name)
        except (ImportError, ValueError) as exc:
            return None if missing_ok else f"{name!r} cannot be found ({exc})"
        if locations is None:
            return None if missing_ok else f"{name!r} is not installed"
        inside = [loc for loc in locations if _inside(loc, roots)]
        if inside or not locations:
            where = inside[0] if inside else "nowhere on disk"
            return f"{name!r} would be imported from {where}, not from an installed distribution"
    return None


def why_untrusted(module: str, roots: list[Path]) -> str | None:
    """None if ``module`` may be imported without trust (module docstring), else why not."""
    if not _MODULE_RE.fullmatch(module):
        return f"{module!r} is not a module name"
    if module in sys.modules:
        return None
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return f"{top!r} is a standard-library module, not an installed distribution"
    if top not in _installed_top_levels(roots):
        return f"{top!r} does not come from an installed distribution"
    return found_inside(module, roots)


def import_untrusted(module: str, *, trust: bool, near: Path | None = None) -> ModuleType:
    """Import ``module`` named by data, under the rule above (``trust`` skips it).

    Raises :class:`Untrusted` (a :class:`SerializationError`) carrying the reason.
    """
    if not trust:
        reason = why_untrusted(module, untrusted_roots(near))
        if reason is not None:
            raise Untrusted(reason)
    return importlib.import_module(module)


class Untrusted(SerializationError):
    """Data named a module that may not be imported without trust; ``str()`` is the reason."""
