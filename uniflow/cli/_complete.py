"""Shell completion of model names, versions and stages.

The callbacks read the Git refs directly from the file system (loose refs and
``packed-refs``), never import dulwich or the registry, and never raise: any problem gives
no suggestions. Version tags live at ``refs/tags/models/<model>/<version>``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ._common import find_git_root

__all__ = ["complete_model", "complete_stage", "complete_version", "complete_versions", "model_versions"]

_TAG_PREFIX = "refs/tags/models/"
BUILTIN_STAGES = ("development", "staging", "production", "archived")


def _repo_from_ctx(ctx: click.Context | None) -> str | None:
    while ctx is not None:
        value = ctx.params.get("repo")
        if value:
            return str(value)
        ctx = ctx.parent
    return None


def _git_dirs(ctx: click.Context | None) -> tuple[Path, Path] | None:
    """(work tree, common git dir) for the repository the command line points at."""
    root = find_git_root(_repo_from_ctx(ctx))
    if root is None:
        return None
    git = root / ".git"
    if git.is_file():
        text = git.read_text(encoding="utf-8", errors="replace").strip()
        if not text.startswith("gitdir:"):
            return None
        git = (root / text[len("gitdir:"):].strip()).resolve()
    common = git / "commondir"
    if common.is_file():
        git = (git / common.read_text(encoding="utf-8").strip()).resolve()
    return root, git


def model_versions(ctx: click.Context | None) -> dict[str, set[str]]:
    """Model name -> versions, read from the version tags. Empty on any problem."""
    found: dict[str, set[str]] = {}
    try:
        dirs = _git_dirs(ctx)
        if dirs is None:
            return found
        _, git = dirs
        packed = git / "packed-refs"
        if packed.is_file():
            with packed.open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) == 2 and parts[1].startswith(_TAG_PREFIX):
                        _add(found, parts[1][len(_TAG_PREFIX):])
        base = git / "refs" / "tags" / "models"
        if base.is_dir():
            for model in os.scandir(base):
                if model.is_dir():
                    for version in os.scandir(model.path):
                        if version.is_file():
                            _add(found, f"{model.name}/{version.name}")
    except Exception:  # noqa: BLE001  completion must never raise
        return found
    return found


def _add(found: dict[str, set[str]], rest: str) -> None:
    model, sep, version = rest.partition("/")
    if sep and model and version and "/" not in version:
        found.setdefault(model, set()).add(version)


def _items(values: Any, incomplete: str) -> list[Any]:
    from click.shell_completion import CompletionItem

    return [CompletionItem(v) for v in sorted(values) if v.startswith(incomplete)]


def complete_model(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    try:
        return _items(model_versions(ctx), incomplete)
    except Exception:  # noqa: BLE001
        return []


def _name_in_ctx(ctx: click.Context) -> str | None:
    name = ctx.params.get("name")
    return name if isinstance(name, str) else None


def complete_version(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    try:
        name = _name_in_ctx(ctx)
        versions = model_versions(ctx)
        if name is None:
            return []
        return _items(versions.get(name, ()), incomplete)
    except Exception:  # noqa: BLE001
        return []


def complete_versions(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """For ``nargs=-1`` version arguments: skip versions already given."""
    try:
        name = _name_in_ctx(ctx)
        if name is None:
            return []
        given = set(ctx.params.get(param.name or "", None) or ())
        return _items(model_versions(ctx).get(name, set()) - given, incomplete)
    except Exception:  # noqa: BLE001
        return []


def _custom_stages(ctx: click.Context | None) -> list[str]:
    try:
        dirs = _git_dirs(ctx)
        if dirs is None:
            return []
        config = dirs[0] / ".uniflow" / "config.toml"
        if not config.is_file():
            return []
        import tomllib

        data = tomllib.loads(config.read_text(encoding="utf-8"))
        stages = data.get("stages", {})  # [stages.NAME] tables, see uniflow/_config.py
        return [str(n).lower() for n in stages] if isinstance(stages, dict) else []
    except Exception:  # noqa: BLE001
        return []


def complete_stage(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    try:
        stages = list(BUILTIN_STAGES) + [s for s in _custom_stages(ctx) if s not in BUILTIN_STAGES]
        low = incomplete.lower()
        from click.shell_completion import CompletionItem

        return [CompletionItem(s) for s in stages if s.startswith(low)]
    except Exception:  # noqa: BLE001
        return []
