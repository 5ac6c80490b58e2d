"""``uniflow init``, ``uniflow gc`` and ``uniflow verify``: whole-repository commands."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import click

from .._errors import IntegrityError
from ._common import CliError, echo_json, find_git_root, get_registry, json_option, repo_option
from ._complete import complete_model
from ._format import Cell, format_value, human_size, print_kv, print_line, print_table

__all__ = ["gc_cmd", "init_cmd", "parse_duration", "verify_cmd"]

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)")
_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> float:
    """``"1h"`` -> 3600, ``"1h30m"`` -> 5400, ``"90"`` -> 90 (seconds), ``"0"`` -> 0."""
    raw = text.strip().lower()
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or value < 0:
            raise CliError(f"invalid duration {text!r}: must be a non-negative number of seconds")
        return value
    pos = 0
    total = 0.0
    for m in _DURATION_RE.finditer(raw):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(raw) or not raw:
        raise CliError(f"invalid duration {text!r}: use e.g. 90s, 30m, 1h, 2d or 1h30m")
    return total


@click.command("init")
@click.argument("path", required=False, type=click.Path(file_okay=False))
@repo_option
def init_cmd(path: str | None, repo: str | None) -> None:
    """Create .uniflow/ in the enclosing Git repository.

    Writes .uniflow/config.toml and .uniflow/.gitignore (commit both). Outside a Git repository, PATH (default: the current directory) becomes one.
    Calls ModelRegistry(PATH) and its init().
    """
    target = Path(path or repo or os.getcwd())
    if not target.exists():
        target.mkdir(parents=True)
    had_git = find_git_root(target) is not None
    registry = get_registry(os.fspath(target), create=True)
    root = Path(getattr(registry, "root", target))
    uniflow_dir = Path(getattr(registry, "uniflow_dir", root / ".uniflow"))
    existed = (uniflow_dir / "config.toml").exists()
    init = getattr(registry, "init", None)
    if callable(init):
        created = init()
        existed = existed and not created
    if not had_git:
        click.echo(f"Initialised empty Git repository in {root}")
    if existed:
        click.echo(f"Registry already initialised in {uniflow_dir}")
    else:
        click.echo(f"Initialised uniflow registry in {uniflow_dir}")
        click.echo("Commit .uniflow/config.toml and .uniflow/.gitignore to share the configuration.")


@click.command("gc")
@click.option("--yes", "-y", is_flag=True, help="Really delete (default: dry run, report only).")
@click.option("--grace", default="1h", show_default=True, metavar="DURATION",
              help="Spare objects younger than this (e.g. 30m, 1h, 2d).")
@json_option
@repo_option
def gc_cmd(yes: bool, grace: str, as_json: bool, repo: str | None) -> None:
    """Delete unreachable stored objects (dry run unless --yes).

    Objects that no ref, tag or remote-tracking ref reaches are deleted once older than
    --grace. Calls ModelRegistry.gc(dry_run=not --yes, grace_seconds=--grace).
    """
    grace_seconds = parse_duration(grace)
    result = get_registry(repo).gc(dry_run=not yes, grace_seconds=int(grace_seconds))
    if as_json:
        echo_json(result)
        return
    _print_gc(result, dry_run=not yes)


def _print_gc(result: dict[str, Any], dry_run: bool) -> None:
    pairs: list[tuple[str, Any]] = []
    for key, value in result.items():
        if isinstance(value, (list, tuple, set)):
            pairs.append((key.replace("_", " "), str(len(value))))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and "bytes" in key:
            pairs.append((key.replace("_", " "), human_size(value)))
        elif isinstance(value, dict):
            pairs.append((key.replace("_", " "), " ".join(f"{k}={format_value(v)}" for k, v in value.items())))
        else:
            pairs.append((key.replace("_", " "), format_value(value)))
    print_line(Cell("gc (dry run)" if dry_run else "gc", "bold"))
    print_kv(pairs)
    if dry_run:
        click.echo("Dry run: nothing deleted. Run 'uniflow gc --yes' to delete.")


@click.command("verify")
@click.argument("name", required=False, shell_complete=complete_model)
@json_option
@repo_option
def verify_cmd(name: str | None, as_json: bool, repo: str | None) -> None:
    """Re-hash stored chunks and report problems.

    Checks every chunk of every version (or of model NAME) against its digest. Exits 5 when a problem is found. Calls ModelRegistry.verify(NAME).
    """
    problems = get_registry(repo).verify(name)
    if as_json:
        echo_json({"ok": not problems, "name": name, "problems": problems})
    elif not problems:
        click.echo(f"OK: every stored file of {name or 'every model'} verified")
    else:
        _print_problems(problems)
    if problems:
        count = len(problems)
        raise IntegrityError(f"{count} problem{'' if count == 1 else 's'} found"
                             + (f" in model {name!r}" if name else ""))


_PREFERRED = ("model", "name", "version", "file", "path", "chunk", "problem", "error", "message", "detail")


def _print_problems(problems: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for p in problems:
        for k in p:
            if k not in keys:
                keys.append(k)
    first_seen = {k: i for i, k in enumerate(keys)}
    keys.sort(key=lambda k: (_PREFERRED.index(k) if k in _PREFERRED else len(_PREFERRED), first_seen[k]))
    rows = []
    for p in problems:
        row: list[Any] = []
        for k in keys:
            v = p.get(k)
            text = "-" if v is None else str(v)
            if k == "chunk" and isinstance(v, str) and len(v) > 16:
                text = v[:16]
            row.append(Cell(text, "red" if k in ("problem", "error", "message") else ""))
        rows.append(row)
    print_table([k.capitalize() for k in keys], rows)
