"""Shell completion of model names, versions and stages.

The callbacks read the Git refs directly from the file system (loose refs and
``packed-refs``), never import dulwich or the registry, and never raise: any problem gives
no suggestions. Version tags live at ``refs/tags/models/<model>/<version>``.
"""

from __future__ import annotations

from typing import Any

import click

from .._stages import BUILTIN_STAGES
from ._common import find_git_root

__all__ = ["complete_model", "complete_stage", "complete_version", "complete_versions", "model_versions"]


def _repo_from_ctx(ctx: click.Context | None) -> str | None:
    while ctx is not None:
        value = ctx.params.get("repo")
        if value:
            return str(value)
        ctx = ctx.parent
    return None


def model_versions(ctx: click.Context | None) -> dict[str, set[str]]:
    """Model name -> versions, read from the version tags. Empty on any problem."""
    from .._records.refs import TAGS_PREFIX
    from .._records.refscan import git_dir_of, scan_refs

    found: dict[str, set[str]] = {}
    try:
        root = find_git_root(_repo_from_ctx(ctx))
        git = git_dir_of(root) if root is not None else None
        if git is None:
            return found
        for rest in scan_refs(git, TAGS_PREFIX, names_only=True):
            _add(found, rest)
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


def complete_model(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:  # noqa: ARG001 (click's completion signature)
    try:
        return _items(model_versions(ctx), incomplete)
    except Exception:  # noqa: BLE001
        return []


def _name_in_ctx(ctx: click.Context) -> str | None:
    name = ctx.params.get("name")
    return name if isinstance(name, str) else None


def complete_version(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:  # noqa: ARG001 (click's completion signature)
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
    from .._records.config import load_config

    try:
        root = find_git_root(_repo_from_ctx(ctx))
        if root is None:
            return []
        return [s for s in load_config(root / ".uniflow").stages if s not in BUILTIN_STAGES]
    except Exception:  # noqa: BLE001
        return []


def complete_stage(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:  # noqa: ARG001 (click's completion signature)
    try:
        stages = list(BUILTIN_STAGES) + [s for s in _custom_stages(ctx) if s not in BUILTIN_STAGES]
        low = incomplete.lower()
        from click.shell_completion import CompletionItem

        return [CompletionItem(s) for s in stages if s.startswith(low)]
    except Exception:  # noqa: BLE001
        return []
