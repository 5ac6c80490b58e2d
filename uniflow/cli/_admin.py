"""``uniflow init``, ``uniflow gc`` and ``uniflow verify``: whole-repository commands."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .._errors import IntegrityError
from .._format import human_size
from ._authority import trust_root_option, verify_signatures
from ._common import CliError, echo_json, find_git_root, get_registry, json_option, repo_option
from ._complete import complete_model
from ._format import Cell, format_value, print_kv, print_line, print_table

if TYPE_CHECKING:
    from .._ops.maintenance import FileB3sum
    from .._registry import ModelRegistry
    from .._reports import GcReport, VerifyReport

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

    Writes .uniflow/config.toml and .uniflow/.gitignore (commit both). Outside a Git repository, PATH
    (default: the current directory) becomes one.
    Configures the origin remote so that a plain `git fetch` brings lifecycles and version
    tags (docs/sharing.md).
    \f
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
    created = registry.init()  # a registry read by URL (PATH a bare repository) refuses: exit 8
    existed = existed and not created
    if not had_git:
        click.echo(f"Initialised empty Git repository in {root}")
    if existed:
        click.echo(f"Registry already initialised in {uniflow_dir}")
    else:
        click.echo(f"Initialised uniflow registry in {uniflow_dir}")
        click.echo("Commit .uniflow/config.toml and .uniflow/.gitignore to share the configuration.")
    from ..sharing.hooks import configure_fetch
    from ._share import echo_fetch

    echo_fetch(configure_fetch(root))  # a plain `git fetch` brings lifecycles and version tags


@click.command("gc")
@click.option("--yes", "-y", is_flag=True, help="Really delete (default: dry run, report only).")
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="Spare objects younger than this (e.g. 30m, 1h, 2d).",
)
@click.option("--repack", is_flag=True, help="Also move chunk files of older stores into packs.")
@json_option
@repo_option
def gc_cmd(yes: bool, grace: str, repack: bool, as_json: bool, repo: str | None) -> None:
    """Delete unreachable stored objects (dry run unless --yes).

    Objects that no ref, tag or remote-tracking ref reaches are deleted once older than
    --grace; packs that are mostly such objects are rewritten.
    \f
    Calls ModelRegistry.gc(dry_run=not --yes, grace_seconds=--grace, repack=--repack).
    """
    grace_seconds = parse_duration(grace)
    report = get_registry(repo).gc(dry_run=not yes, grace_seconds=int(grace_seconds), repack=repack)
    if as_json:
        echo_json(report.to_dict())
        return
    _print_gc(report)


def _print_gc(report: GcReport) -> None:
    pairs: list[tuple[str, str]] = []
    for key, value in report.to_dict().items():
        label = key.replace("_", " ")
        if key == "bytes_freed":
            pairs.append(("bytes to free" if report.dry_run else label, human_size(report.bytes_freed)))
        else:
            pairs.append((label, format_value(value)))
    print_line(Cell("gc (dry run)" if report.dry_run else "gc", "bold"))
    print_kv(pairs)
    if report.dry_run:
        click.echo("Dry run: nothing deleted. Run 'uniflow gc --yes' to delete.")


@click.command("verify")
@click.argument("name", required=False, shell_complete=complete_model)
@click.option(
    "--repair",
    is_flag=True,
    help="First fix what needs no model data: reflogs of version tags and stage pointers "
    "that older versions wrote (git gc reports them as errors).",
)
@click.option(
    "--signatures",
    is_flag=True,
    help="Instead, check who signed every version tag and lifecycle event against the policy "
    "in force when it was made.",
)
@click.option(
    "--b3sum",
    "b3sum",
    is_flag=True,
    help="Also compute each file's BLAKE3 digest (what b3sum prints) from its stored chunks and "
    "print it; for a version of manifest format 1 or 2 it must equal the recorded digest.",
)
@trust_root_option
@json_option
@repo_option
def verify_cmd(
    name: str | None,
    repair: bool,
    signatures: bool,
    b3sum: bool,
    trust_root: str | None,
    as_json: bool,
    repo: str | None,
) -> None:
    """Re-hash stored chunks and report problems.

    Checks every chunk of every version (or of model NAME) against its digest. Exits 5 when a problem is
    found. With --signatures, checks signatures and the policy instead, listing each failure.
    With --b3sum, also prints each file's BLAKE3 digest, computed from its chunks.
    \f
    Calls ModelRegistry.verify(NAME) (after ModelRegistry.repair() with --repair); with
    --signatures, uniflow._ops.authority.verify_lifecycle per model; with --b3sum,
    uniflow._ops.maintenance.file_b3sums.
    """
    if signatures:
        verify_signatures(name, trust_root, as_json, repo)
        return
    registry = get_registry(repo)
    repaired = registry.repair() if repair else []
    report = registry.verify(name)
    sums = _b3sums(registry, name) if b3sum else []
    bad = [s for s in sums if not s.ok]
    if as_json:
        out = {**report.to_dict(), "repaired": repaired} if repair else report.to_dict()
        echo_json({**out, "b3sums": [s.to_dict() for s in sums]} if b3sum else out)
    else:
        for line in repaired:
            click.echo(f"repaired: {line}")
        for s in sums:
            flag = "" if s.ok else f"  MISMATCH: the manifest records {s.recorded}"
            click.echo(f"{s.b3sum}  {s.model} {s.version} {s.path}{flag}")
        if report.ok and not bad:
            click.echo(f"OK: every stored file of {name or 'every model'} verified")
        elif not report.ok:
            _print_problems(report)
    if not report.ok or bad:
        count = len(report.problems) + len(bad)
        raise IntegrityError(
            f"{count} problem{'' if count == 1 else 's'} found" + (f" in model {name!r}" if name else "")
        )


def _b3sums(registry: ModelRegistry, name: str | None) -> list[FileB3sum]:
    """Every file's b3sum, from its stored chunks (``uniflow verify --b3sum``)."""
    from .._ops.maintenance import file_b3sums

    if name is not None:
        registry.repository.require_model(name)
    return file_b3sums(registry.repository, name)


def _print_problems(report: VerifyReport) -> None:
    rows = []
    for p in report.problems:
        chunk = p.chunk[:16] if p.chunk is not None else None
        cells = [p.model, p.version, p.file, chunk]
        rows.append([Cell("-" if v is None else v) for v in cells] + [Cell(p.problem, "red")])
    print_table(["Model", "Version", "File", "Chunk", "Problem"], rows)
