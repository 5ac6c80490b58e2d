"""No module re-exports another's names: a name is imported from the module that defines it
(only a package ``__init__`` gathers names from its modules)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "uniflow"


def _reexported(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defined: set[str] = set()
    exported: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if not isinstance(target, ast.Name):
                    continue
                defined.add(target.id)
                if target.id == "__all__" and isinstance(node.value, (ast.List, ast.Tuple)):
                    exported += [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
    return [name for name in exported if name not in defined]


def test_only_package_inits_gather_names() -> None:
    found = {
        str(p.relative_to(ROOT.parent)): names
        for p in sorted(ROOT.rglob("*.py"))
        if p.name != "__init__.py" and (names := _reexported(p))
    }
    assert found == {}
