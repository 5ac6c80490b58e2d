"""The library is split by concept: no function or method in ``uniflow/`` is longer than 80
lines (ruff's C901 and PLR0915 bound its branches and statements)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 80


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for path in sorted((ROOT / "uniflow").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > LIMIT:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
