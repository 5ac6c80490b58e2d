"""docs/design.md's "Module layout" draws the real tree: every package and top-level module of
``uniflow/`` is in it, and so is every module of the core packages."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: packages whose every module the drawing names (the others are described in prose)
CORE = ("_storage", "_records", "_ops", "_authority", "serving", "oci")


def _layout() -> str:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    section = text.split("## Module layout", 1)[1]
    return section.split("```", 2)[1]


def test_the_drawing_names_every_package_and_top_level_module() -> None:
    drawn = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", _layout()))
    pkg = ROOT / "uniflow"
    names = {p.stem for p in pkg.glob("*.py") if p.stem not in ("__init__", "__main__")}
    names |= {p.name for p in pkg.iterdir() if (p / "__init__.py").is_file()}
    assert sorted(names - drawn) == []


def test_the_drawing_names_every_module_of_the_core_packages() -> None:
    drawn = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", _layout()))
    missing = [
        f"{package}/{p.stem}"
        for package in CORE
        for p in sorted((ROOT / "uniflow" / package).glob("*.py"))
        if p.stem != "__init__" and p.stem not in drawn
    ]
    assert missing == []
