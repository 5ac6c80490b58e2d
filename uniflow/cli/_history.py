"""``uniflow models history | compare | export``: a model's lifecycle events, versions side by
side, and a version's verified files copied out (thin calls of the ``ModelRegistry``
methods of the same names; added to the ``models`` group by ``_models``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .._format import human_size
from .._stages import ModelStage
from ._authority import print_verdicts, trust_root_option
from ._common import (
    CliError,
    b3sum_option,
    echo_json,
    get_registry,
    json_option,
    oms_key_option,
    oms_signer,
    print_b3sums,
    progress_bar,
    repo_option,
    resolve_repo,
    written_b3sums,
)
from ._complete import complete_model, complete_stage, complete_version, complete_versions
from ._format import Cell, format_value, print_heading, print_line, print_table, show_time, stage_style

if TYPE_CHECKING:  # pragma: no cover
    from .._registry import RegistryReader
    from .._types import HistoryEvent

__all__ = ["compare_cmd", "export_cmd", "history_cmd", "print_events"]


def _event_stage(e: HistoryEvent) -> Cell:
    return _event_stage_pair(e.from_stage, e.to_stage)


def _event_note(e: HistoryEvent) -> str:
    """Displaced version and reason; the commit message only repeats the other columns."""
    notes = []
    if e.displaced:
        notes.append(f"{e.displaced} -> archived")
    reason = getattr(e, "reason", None) or (e.extra or {}).get("reason")
    if reason:
        notes.append(str(reason).strip().splitlines()[0])
    return "; ".join(notes)


def print_events(events: list[HistoryEvent], with_version: bool = True, subject: str | None = None) -> None:
    """Events as a table. ``subject``: the version a model card is about; events that
    displaced it are shown from its point of view (its stage -> archived)."""
    columns = ["#", "When", "Action"] + (["Version"] if with_version else []) + ["Stage", "By", "Note"]
    rows = []
    for e in events:
        row: list[Any] = [str(e.seq), show_time(e.at), e.action]
        if with_version:
            row.append(Cell(e.version, "bold"))
        if subject is not None and e.version != subject and e.displaced == subject:
            row[2] = "displaced"
            row += [
                _event_stage_pair(e.to_stage, ModelStage.ARCHIVED.value),
                e.actor or "-",
                f"by {e.version} ({e.action})",
            ]
        else:
            row += [_event_stage(e), e.actor or "-", _event_note(e)]
        rows.append(row)
    print_table(columns, rows, justify={0: "right"})


def _event_stage_pair(before: str | None, after: str | None) -> Cell:
    pieces: list[tuple[str, str]] = []
    if before:
        pieces.append((before, stage_style(before)))
    if after:
        if pieces:
            pieces.append((" -> ", ""))
        pieces.append((after, stage_style(after)))
    return Cell.join(pieces, sep="") if pieces else Cell("-")


@click.command("history")
@click.argument("name", shell_complete=complete_model)
@click.option(
    "--verify",
    "verify",
    is_flag=True,
    help="Show who signed each event and whether the policy in force then allowed it.",
)
@trust_root_option
@json_option
@repo_option
def history_cmd(name: str, verify: bool, trust_root: str | None, as_json: bool, repo: str | None) -> None:
    """Show every lifecycle event of NAME, oldest first.

    With --verify, each event's signer and verdict (exits 5 when one fails).
    \f
    Calls ModelRegistry.history(NAME); with --verify, uniflow._ops.authority.verify_lifecycle.
    """
    if verify:
        _history_verified(name, trust_root, as_json, repo)
        return
    events = get_registry(repo).history(name)
    if as_json:
        echo_json([e.to_dict() for e in events])
        return
    if not events:
        click.echo(f"No history for {name}.")
        return
    print_events(events)


def _history_verified(name: str, trust_root: str | None, as_json: bool, repo: str | None) -> None:
    from .._errors import IntegrityError
    from .._ops.authority import verify_lifecycle

    registry = get_registry(repo)
    registry.repository.require_model(name)
    verdicts = verify_lifecycle(registry.repository, name, trust_root=trust_root)
    if as_json:
        echo_json(verdicts.to_dict())
    else:
        print_verdicts(verdicts)
    failures = verdicts.failures()
    if failures:
        raise IntegrityError(f"{len(failures)} event(s) or tag(s) of {name} fail: {failures[0]}")


@click.command("compare")
@click.argument("name", shell_complete=complete_model)
@click.argument("versions", nargs=-1, required=True, shell_complete=complete_versions)
@json_option
@repo_option
def compare_cmd(name: str, versions: tuple[str, ...], as_json: bool, repo: str | None) -> None:
    """Compare two or more versions of NAME side by side.

    Metrics (with deltas), params, tags, sizes, shared bytes and code commits.
    \f
    Calls ModelRegistry.compare_versions(NAME, [V1, V2, ...]).
    """
    if len(versions) < 2:
        raise CliError("compare needs at least two versions: uniflow models compare NAME V1 V2 [V3 ...]")
    comparison = get_registry(repo).compare_versions(name, list(versions))
    if as_json:
        echo_json(comparison)
        return
    _print_comparison(comparison)


def _print_comparison(comparison: Any) -> None:
    data = comparison.to_dict() if hasattr(comparison, "to_dict") else None
    if not isinstance(data, dict) or not isinstance(data.get("sections"), dict):
        click.echo(str(comparison))
        return
    versions = [str(v) for v in data.get("versions", [])]
    rows: list[list[Any]] = []
    for section, entries in data["sections"].items():
        if not entries:
            continue
        rows.append([Cell(section, "bold")] + [""] * len(versions))
        for entry in entries:
            values = list(entry.get("values", []))
            deltas = list(entry.get("delta") or [None] * len(values))
            changed = bool(entry.get("changed"))
            cells: list[Any] = [f"  {entry.get('key', '')}"]
            for i, value in enumerate(values):
                text = "-" if value is None else format_value(value)
                if "bytes" in str(entry.get("key", "")) or entry.get("key") == "size":
                    text = human_size(value) if isinstance(value, (int, float)) else text
                delta = deltas[i] if i < len(deltas) else None
                if i > 0 and isinstance(delta, (int, float)) and delta:
                    text += f" ({delta:+.4g})"
                style = "yellow" if changed and i > 0 and value != values[0] else ""
                if section == "info" and entry.get("key") == "stage":
                    style = stage_style(str(value))
                cells.append(Cell(text, style))
            rows.append(cells)
    print_line("Comparing ", Cell(str(data.get("name", "")), "bold"), ": ", ", ".join(versions))
    print_table(["", *versions], rows, upper=False)
    commits = data.get("commits") or {}
    for version in versions[1:]:
        entries = commits.get(version) or []
        if entries:
            print_heading(f"\nCode commits up to {version}")
            for c in entries[:20]:
                print_line("  ", Cell(str(c.get("sha", ""))[:10], "dim"), " ", str(c.get("subject", "")))
            if len(entries) > 20:
                print_line(f"  ... {len(entries) - 20} more")


def _export_registry(repo: str | None, blob: str | None, offline: bool) -> RegistryReader:
    """The registry to export from: ``--repo`` as every command opens it; with ``--blob`` or
    ``--offline`` (a registry read by Git URL only) opened as ``uniflow get`` opens it."""
    if blob is None and not offline:
        return get_registry(repo)
    from .._errors import UsageError
    from .._registry import RemoteRegistry
    from ..sharing.giturl import is_git_url

    target = resolve_repo(repo)
    if target is None or not is_git_url(target):
        raise UsageError(
            "--blob and --offline apply to a registry read by Git URL (--repo URL), not a work tree"
        )
    return RemoteRegistry(target, offline=offline, blob=blob)


def _complete_export_args(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """First argument: a version or a directory; second: a directory."""
    from click.shell_completion import CompletionItem

    given = ctx.params.get("args") or ()
    items: list[Any] = [] if given else complete_version(ctx, param, incomplete)
    return [*items, CompletionItem(incomplete, type="dir")]


@click.command("export")
@click.argument("name", shell_complete=complete_model)
@click.argument(
    "args", nargs=-1, required=True, metavar="[VERSION] DEST", shell_complete=_complete_export_args
)
@click.option(
    "--stage", "-s", metavar="STAGE", shell_complete=complete_stage, help="Export the version in this stage."
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace a symlink or special file found below DEST (the link itself, never its target).",
)
@click.option(
    "--offline", is_flag=True, help="With --repo URL: use the cache alone, no network for the Git side."
)
@click.option(
    "--blob",
    "blob",
    metavar="URL",
    help="With --repo URL: read chunks from this blob remote (a directory, s3://...).",
)
@oms_key_option
@b3sum_option
@json_option
@repo_option
def export_cmd(
    name: str,
    args: tuple[str, ...],
    stage: str | None,
    force: bool,
    offline: bool,
    blob: str | None,
    oms_key: str | None,
    b3sum: bool,
    as_json: bool,
    repo: str | None,
) -> None:
    """Copy the verified files of a version to DEST.

    The version is VERSION, the holder of --stage, or the newest. Symlinks below DEST are
    never written through: refused, or replaced with --force. For a registry read by Git URL
    (--repo URL), --blob and --offline work as in `uniflow get`. With --oms-key, the key is
    checked first and DEST/model.sig is written once the files are. With --b3sum, each
    file's BLAKE3 digest is printed as b3sum prints it.
    \f
    Calls ModelRegistry.export(NAME, DEST, version, stage, force).
    """
    if len(args) == 1:
        version, dest = None, args[0]
    elif len(args) == 2:
        version, dest = args
    else:
        raise CliError("usage: uniflow models export NAME [VERSION | --stage STAGE] DEST")
    if version is not None and stage is not None:
        raise CliError("give either VERSION or --stage, not both")
    with _export_registry(repo, blob, offline) as registry:
        # Resolve the stage (or newest) once, so the files and the message name the same version.
        mv = registry.get(name, version=version, stage=stage)
        oms = oms_signer(oms_key, mv)  # checks the key before any file is written
        with progress_bar(f"export {name}") as progress:
            out = registry.export(
                name, os.path.abspath(dest), version=mv.version, progress=progress, force=force
            )
        bundle = oms(out)
    sums = written_b3sums(Path(out), [f.path for f in mv.files]) if b3sum else None
    if as_json:
        report = {
            "name": mv.name,
            "version": mv.version,
            "path": os.fspath(out),
            "files": len(mv.files),
            "size": mv.size,
            "oms_bundle": bundle,
        }
        echo_json({**report, "b3sum": sums} if sums is not None else report)
        return
    print_line(
        "Exported ",
        Cell(f"{mv.name} {mv.version}", "bold"),
        f" to {os.fspath(out)} ({len(mv.files)} file{'' if len(mv.files) == 1 else 's'}, "
        f"{human_size(mv.size)})",
    )
    if bundle is not None:
        print_line(f"  OpenSSF model signature -> {bundle}")
    if sums is not None:
        print_b3sums(sums)
