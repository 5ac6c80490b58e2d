"""``uniflow models ...``: each command is a thin call of the ModelRegistry method of the same name."""

from __future__ import annotations

import contextlib
import gc
import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from .._errors import InvalidPathError
from .._types import show_payload, version_events
from ._common import CliError, echo_json, fancy, get_registry, json_option, progress_bar, repo_option
from ._complete import complete_model, complete_stage, complete_version, complete_versions
from ._format import (
    Cell,
    format_value,
    human_size,
    iso_text,
    print_columns,
    print_heading,
    print_kv,
    print_line,
    print_table,
    printable_column,
    show_time,
    stage_style,
)

if TYPE_CHECKING:  # pragma: no cover
    from .._registry import ModelRegistry
    from .._types import HistoryEvent, ModelSummary, ModelVersion, VersionRow

__all__ = ["models"]

STAGE_ORDER = {"production": 0, "staging": 1, "development": 8, "archived": 9}


def _stage_cell(stage: str | None) -> Cell:
    return Cell(stage or "-", stage_style(stage))


def _stage_key(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.get(stage, 5), stage)


def _parse_pairs(
    values: tuple[str, ...], what: str, number: bool = False, guess: bool = False
) -> dict[str, Any]:
    """``("a=1", "b=x")`` -> ``{"a": 1, "b": "x"}``. ``number``: values must be numbers;
    ``guess``: numbers, true/false and null are converted, anything else stays text."""
    out: dict[str, Any] = {}
    for raw in values:
        key, sep, value = raw.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"invalid {what} {raw!r}: expected KEY=VALUE")
        if number:
            parsed = _number(value)
            if parsed is None:
                raise CliError(f"invalid {what} {raw!r}: {value!r} is not a finite number")
            out[key] = parsed
        elif guess:
            out[key] = _guess(value)
        else:
            out[key] = value
    return out


def _number(text: str) -> int | float | None:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _guess(text: str) -> Any:
    number = _number(text)
    if number is not None:
        return number
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    return text


@click.group("models")
def models() -> None:
    """List, inspect, register and promote models."""


# --------------------------------------------------------------------------- list


@models.command("list")
@click.argument("name", required=False, shell_complete=complete_model)
@click.option(
    "--stage",
    "-s",
    metavar="STAGE",
    shell_complete=complete_stage,
    help="Only versions in this stage (with NAME).",
)
@json_option
@repo_option
def list_cmd(name: str | None, stage: str | None, as_json: bool, repo: str | None) -> None:
    """List all models, or the versions of model NAME.

    Calls ModelRegistry.list_models(), or ModelRegistry.version_rows(NAME, stage)
    (ModelRegistry.versions_json with --json: the to_dict() of every version).
    """
    registry = get_registry(repo)
    if name is None:
        if stage is not None:
            raise CliError("--stage needs a model NAME: uniflow models list NAME --stage STAGE")
        summaries = registry.list_models()
        if as_json:
            echo_json([s.to_dict() for s in summaries])
        else:
            _print_models(summaries)
        return
    with _no_gc():  # hundreds of thousands of acyclic objects: no collection can free any
        if as_json:
            click.echo(registry.versions_json(name, stage=stage))
        else:
            _print_versions(name, registry.version_rows(name, stage=stage), mark_latest=stage is None)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused (and restored): building 100,000 rows otherwise
    triggers full collections that walk every object built so far (~10% of the time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _print_models(summaries: list[ModelSummary]) -> None:
    if not summaries:
        click.echo("No models registered yet. Register one with: uniflow models register PATH --name NAME")
        return
    rows = []
    for s in summaries:
        stages = sorted((st for st in s.stages if s.stages[st]), key=_stage_key)
        rows.append(
            [
                Cell(s.name, "bold"),
                s.latest or "-",
                str(s.versions),
                Cell.join([(f"{st} {s.stages[st]}", stage_style(st)) for st in stages]) if stages else "-",
                show_time(s.updated_at),
            ]
        )
    print_table(["Name", "Latest", "Versions", "Stages", "Updated"], rows, justify={2: "right"})


def _metrics_text(metrics: dict[str, Any], limit: int = 4) -> str:
    if not metrics:
        return "-"
    items = list(metrics.items())
    text = " ".join(
        f"{k}={v:.6g}" if type(v) is float and math.isfinite(v) else f"{k}={format_value(v)}"
        for k, v in items[:limit]
    )
    if len(items) > limit:
        text += f" (+{len(items) - limit})"
    return text


def _print_versions(name: str, versions: list[VersionRow], mark_latest: bool) -> None:
    if not versions:
        click.echo(f"No versions of {name} match.")
        return
    columns = ["Version", "Stage", "Framework", "Size", "Metrics", "Created"]
    rows: list[list[Any]]
    if not fancy():  # plain text: the same table, built column by column (100,000 rows)
        names = [v.version for v in versions]
        if mark_latest:
            names[-1] += " (latest)"
        sizes: dict[int, str] = {}
        text_columns = [
            names,
            [v.stage or "-" for v in versions],
            [v.framework or "-" for v in versions],
            [
                sizes[v.size] if v.size in sizes else sizes.setdefault(v.size, human_size(v.size))
                for v in versions
            ],
            [_metrics_text(v.metrics) for v in versions],
            [iso_text(v.created) for v in versions],
        ]
        header = [c.upper() for c in columns]
        print_columns(header, [printable_column(c) for c in text_columns], justify={3: "right"})
        return
    rows = []
    for i, v in enumerate(versions):
        latest = mark_latest and i == len(versions) - 1
        rows.append(
            [
                Cell.join([(v.version, "bold"), (" (latest)", "dim")], sep="")
                if latest
                else Cell(v.version, "bold"),
                _stage_cell(v.stage),
                v.framework or "-",
                human_size(v.size),
                _metrics_text(v.metrics),
                show_time(v.created_at),
            ]
        )
    print_table(columns, rows, title=None, justify={3: "right"})


# --------------------------------------------------------------------------- show


@models.command("show")
@click.argument("name", shell_complete=complete_model)
@click.argument("version", required=False, shell_complete=complete_version)
@click.option(
    "--stage",
    "-s",
    metavar="STAGE",
    shell_complete=complete_stage,
    help="Show the version currently in this stage.",
)
@json_option
@repo_option
def show_cmd(name: str, version: str | None, stage: str | None, as_json: bool, repo: str | None) -> None:
    """Show the model card of a version (default: the newest).

    Calls ModelRegistry.get(NAME, VERSION, stage) and ModelRegistry.history(NAME).
    """
    if version is not None and stage is not None:
        raise CliError("give either VERSION or --stage, not both")
    registry = get_registry(repo)
    mv = registry.get(name, version=version, stage=stage)
    history = registry.history(name)
    if as_json:
        echo_json(show_payload(mv, history))
        return
    # This version's own events, and those that displaced it from a stage.
    _print_card(mv, version_events(mv.version, history))


def _print_card(mv: ModelVersion, events: list[HistoryEvent]) -> None:
    print_line(Cell(f"{mv.name} {mv.version}", "bold"), "  ", _stage_cell(mv.stage))
    if mv.description:
        print_line("  ", mv.description)
    print_kv(
        [
            ("framework", mv.framework or "-"),
            ("serializer", mv.serializer or "-"),
            ("size", human_size(mv.size)),
            ("digest", mv.digest or "-"),
            ("created", f"{show_time(mv.created_at)} by {mv.author or 'unknown'}"),
            ("tag", mv.tag_ref or "-"),
        ]
    )
    for title, mapping in (("Metrics", mv.metrics), ("Params", mv.params), ("Tags", mv.tags)):
        print_heading(f"\n{title}")
        if mapping:
            print_kv([(str(k), format_value(v)) for k, v in mapping.items()])
        else:
            print_line("  -")
    print_heading("\nFiles")
    if mv.files:
        rows = [[f.path, human_size(f.size), str(f.chunks), f.digest[:16]] for f in mv.files]
        print_table(["Path", "Size", "Chunks", "Digest"], rows, justify={1: "right", 2: "right"})
    else:
        print_line("  -")
    print_heading("\nLineage")
    lineage: list[tuple[str, Any]] = [
        ("code commit", mv.code_commit or "-"),
        ("branch", mv.branch or "-"),
        ("dirty", "yes" if mv.dirty else "no"),
    ]
    lineage += [
        (str(k), format_value(v))
        for k, v in mv.lineage.items()
        if k not in ("code_commit", "commit", "branch", "dirty")
    ]
    if mv.libraries:
        lineage.append(("libraries", " ".join(f"{k}={v}" for k, v in sorted(mv.libraries.items()))))
    print_kv(lineage)
    print_heading("\nStage history")
    if events:
        _print_events(events, with_version=False, subject=mv.version)
    else:
        print_line("  -")


# --------------------------------------------------------------------------- register


@models.command("register")
@click.argument("path", type=click.Path(), metavar="PATH")
@click.option("--name", "-n", required=True, shell_complete=complete_model, help="Model name.")
@click.option("--version", "-v", "version", help="Semantic version (default: the newest bumped).")
@click.option("--framework", "-f", help="Framework label, e.g. pytorch, sklearn, onnx.")
@click.option("--metric", "-m", "metrics", multiple=True, metavar="KEY=NUMBER", help="A metric (repeatable).")
@click.option("--tag", "-t", "tags", multiple=True, metavar="KEY=VALUE", help="A tag (repeatable).")
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A parameter (repeatable); numbers and true/false are converted.",
)
@click.option("--description", "-d", help="Free-text description.")
@json_option
@repo_option
def register_cmd(
    path: str,
    name: str,
    version: str | None,
    framework: str | None,
    metrics: tuple[str, ...],
    tags: tuple[str, ...],
    params: tuple[str, ...],
    description: str | None,
    as_json: bool,
    repo: str | None,
) -> None:
    """Register a file or directory as a new version.

    PATH becomes a new version of model --name, in development. Calls
    ModelRegistry.register(PATH, name=..., version=..., framework=..., metrics=..., tags=...,
    params=..., description=...).
    """
    metric_values = _parse_pairs(metrics, "metric", number=True)
    tag_values = _parse_pairs(tags, "tag")
    param_values = _parse_pairs(params, "param", guess=True)
    if not os.path.lexists(path):
        raise InvalidPathError(f"no such file or directory: {path!r}")
    registry = get_registry(repo)
    with progress_bar(f"register {name}") as progress:
        mv = registry.register(
            os.path.abspath(path),
            name=name,
            version=version,
            framework=framework,
            metrics=metric_values or None,
            tags=tag_values or None,
            params=param_values or None,
            description=description,
            progress=progress,
        )
    if as_json:
        echo_json(mv.to_dict())
        return
    files = len(mv.files)
    print_line(
        "Registered ",
        Cell(f"{mv.name} {mv.version}", "bold"),
        " (",
        _stage_cell(mv.stage),
        f"): {files} file{'' if files == 1 else 's'}, {human_size(mv.size)}",
    )


# --------------------------------------------------------------------------- promote / archive / rollback


def _displaced(registry: ModelRegistry, name: str, version: str) -> str | None:
    """The version the last event moved to archived, for the message (never fails)."""
    try:
        events = registry.history(name)
    except Exception:  # noqa: BLE001  only for the message
        return None
    if events and events[-1].version == version:
        return events[-1].displaced
    return None


@models.command("promote")
@click.argument("name", shell_complete=complete_model)
@click.argument("version", shell_complete=complete_version)
@click.option(
    "--to",
    "stage",
    required=True,
    metavar="STAGE",
    shell_complete=complete_stage,
    help="Target stage (case-insensitive), e.g. staging or production.",
)
@click.option("--reason", "-r", help="Why; recorded in the stage history.")
@json_option
@repo_option
def promote_cmd(
    name: str, version: str, stage: str, reason: str | None, as_json: bool, repo: str | None
) -> None:
    """Move VERSION of NAME into a stage.

    A single-holder stage (staging, production) archives its previous holder. Calls
    ModelRegistry.promote(NAME, VERSION, stage, reason=...).
    """
    registry = get_registry(repo)
    mv = registry.promote(name, version, stage, reason=reason)
    if as_json:
        echo_json(mv.to_dict())
        return
    displaced = _displaced(registry, name, mv.version)
    parts: list[Cell | str] = [
        "Promoted ",
        Cell(f"{mv.name} {mv.version}", "bold"),
        " to ",
        _stage_cell(mv.stage),
    ]
    if displaced:
        parts += [f" ({displaced} moved to ", _stage_cell("archived"), ")"]
    print_line(*parts)


@models.command("archive")
@click.argument("name", shell_complete=complete_model)
@click.argument("version", shell_complete=complete_version)
@click.option("--reason", "-r", help="Why; recorded in the stage history.")
@json_option
@repo_option
def archive_cmd(name: str, version: str, reason: str | None, as_json: bool, repo: str | None) -> None:
    """Move VERSION of NAME to the archived stage.

    Calls ModelRegistry.archive(NAME, VERSION, reason=...).
    """
    mv = get_registry(repo).archive(name, version, reason=reason)
    if as_json:
        echo_json(mv.to_dict())
        return
    print_line("Archived ", Cell(f"{mv.name} {mv.version}", "bold"))


@models.command("rollback")
@click.argument("name", shell_complete=complete_model)
@click.option(
    "--stage",
    "-s",
    required=True,
    metavar="STAGE",
    shell_complete=complete_stage,
    help="Stage to roll back, e.g. production.",
)
@click.option("--reason", "-r", help="Why; recorded in the stage history.")
@json_option
@repo_option
def rollback_cmd(name: str, stage: str, reason: str | None, as_json: bool, repo: str | None) -> None:
    """Put the previous holder of a stage back into it.

    Calls ModelRegistry.rollback(NAME, stage, reason=...).
    """
    mv = get_registry(repo).rollback(name, stage, reason=reason)
    if as_json:
        echo_json(mv.to_dict())
        return
    print_line("Rolled back ", _stage_cell(mv.stage), f" of {mv.name} to ", Cell(mv.version, "bold"))


# --------------------------------------------------------------------------- history / compare / export


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


def _print_events(events: list[HistoryEvent], with_version: bool = True, subject: str | None = None) -> None:
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
            row += [_event_stage_pair(e.to_stage, "archived"), e.actor or "-", f"by {e.version} ({e.action})"]
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


@models.command("history")
@click.argument("name", shell_complete=complete_model)
@json_option
@repo_option
def history_cmd(name: str, as_json: bool, repo: str | None) -> None:
    """Show every lifecycle event of NAME, oldest first.

    Calls ModelRegistry.history(NAME).
    """
    events = get_registry(repo).history(name)
    if as_json:
        echo_json([e.to_dict() for e in events])
        return
    if not events:
        click.echo(f"No history for {name}.")
        return
    _print_events(events)


@models.command("compare")
@click.argument("name", shell_complete=complete_model)
@click.argument("versions", nargs=-1, required=True, shell_complete=complete_versions)
@json_option
@repo_option
def compare_cmd(name: str, versions: tuple[str, ...], as_json: bool, repo: str | None) -> None:
    """Compare two or more versions of NAME side by side.

    Metrics (with deltas), params, tags, sizes, shared bytes and code commits. Calls
    ModelRegistry.compare_versions(NAME, [V1, V2, ...]).
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


def _complete_export_args(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """First argument: a version or a directory; second: a directory."""
    from click.shell_completion import CompletionItem

    given = ctx.params.get("args") or ()
    items: list[Any] = [] if given else complete_version(ctx, param, incomplete)
    return [*items, CompletionItem(incomplete, type="dir")]


@models.command("export")
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
@json_option
@repo_option
def export_cmd(
    name: str, args: tuple[str, ...], stage: str | None, force: bool, as_json: bool, repo: str | None
) -> None:
    """Copy the verified files of a version to DEST.

    The version is VERSION, the holder of --stage, or the newest. Symlinks below DEST are
    never written through: refused, or replaced with --force.
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
    registry = get_registry(repo)
    # Resolve the stage (or newest) once, so the files and the message name the same version.
    mv = registry.get(name, version=version, stage=stage)
    with progress_bar(f"export {name}") as progress:
        out = registry.export(name, os.path.abspath(dest), version=mv.version, progress=progress, force=force)
    if as_json:
        echo_json(
            {
                "name": mv.name,
                "version": mv.version,
                "path": os.fspath(out),
                "files": len(mv.files),
                "size": mv.size,
            }
        )
        return
    print_line(
        "Exported ",
        Cell(f"{mv.name} {mv.version}", "bold"),
        f" to {os.fspath(out)} ({len(mv.files)} file{'' if len(mv.files) == 1 else 's'}, "
        f"{human_size(mv.size)})",
    )


# --------------------------------------------------------------------------- diff (uniflow/cli/_diff.py)
def _add_diff() -> None:
    from ._diff import diff_cmd

    models.add_command(diff_cmd)


_add_diff()
