"""``uniflow models ...``: each command is a thin call of the ModelRegistry method of the same name."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from .._errors import IntegrityError, InvalidPathError, UniflowWarning
from .._format import human_size
from .._stages import ModelStage, stage_sort_key
from .._types import show_payload, version_events
from ._common import CliError, echo_json, fancy, get_registry, json_option, progress_bar, repo_option
from ._complete import complete_model, complete_stage, complete_version
from ._format import (
    Cell,
    format_value,
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
from ._history import compare_cmd, export_cmd, history_cmd, print_events

if TYPE_CHECKING:  # pragma: no cover
    from .._registry import ModelRegistry
    from .._types import HistoryEvent, ModelSummary, ModelVersion, VersionRow

__all__ = ["models"]


def _stage_cell(stage: str | None) -> Cell:
    return Cell(stage or "-", stage_style(stage))


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

    \f
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
        _pull_hint(registry, None)
        return
    with _no_gc():  # hundreds of thousands of acyclic objects: no collection can free any
        if as_json:
            click.echo(registry.versions_json(name, stage=stage))
        else:
            _print_versions(name, registry.version_rows(name, stage=stage), mark_latest=stage is None)
    _pull_hint(registry, name)


def _pull_hint(registry: ModelRegistry, name: str | None) -> None:
    """A ``hint:`` line on stderr when this clone has a model's tags but not its lifecycle
    (a fresh ``git clone``): the stages shown are wrong until ``uniflow pull``."""
    hint = registry.missing_lifecycle_hint(name)
    if hint is not None:
        click.echo(f"hint: {hint}", err=True)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused (and restored): building 100,000 rows otherwise
    triggers full collections that walk every object built so far, again and again."""
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
        stages = sorted((st for st in s.stages if s.stages[st]), key=stage_sort_key)
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

    \f
    Calls ModelRegistry.get(NAME, VERSION, stage) and ModelRegistry.history(NAME).
    """
    if version is not None and stage is not None:
        raise CliError("give either VERSION or --stage, not both")
    registry = get_registry(repo)
    mv = registry.get(name, version=version, stage=stage)
    try:
        history = registry.history(name)
    except IntegrityError as exc:  # an unreadable lifecycle spoils only itself: the card is shown
        click.echo(f"warning: {exc}: shown without lifecycle events", err=True)
        history = []
    if as_json:
        echo_json(show_payload(mv, history))
    else:  # this version's own events, and those that displaced it from a stage
        _print_card(mv, version_events(mv.version, history))
    _pull_hint(registry, name)


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
        print_events(events, with_version=False, subject=mv.version)
    else:
        print_line("  -")


# --------------------------------------------------------------------------- register


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Print each :class:`UniflowWarning` raised inside as one ``warning:`` line on stderr
    (after the progress bar, even when the command fails); other warnings are shown as usual."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UniflowWarning)
            yield
    finally:  # the usual warning machinery is back: other warnings go through it
        for w in caught:
            if issubclass(w.category, UniflowWarning):
                click.echo(f"warning: {w.message}", err=True)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)


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
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse files that are Git LFS pointers (a clone without git-lfs) instead of warning.",
)
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
    strict: bool,
    as_json: bool,
    repo: str | None,
) -> None:
    """Register a file or directory as a new version.

    PATH becomes a new version of model --name, in development. A file that is a Git LFS
    pointer (the content was never fetched) gives a warning, or with --strict an error.
    \f
    Calls ModelRegistry.register(PATH, name=..., version=..., framework=..., metrics=...,
    tags=..., params=..., description=..., strict=...).
    """
    metric_values = _parse_pairs(metrics, "metric", number=True)
    tag_values = _parse_pairs(tags, "tag")
    param_values = _parse_pairs(params, "param", guess=True)
    if not os.path.lexists(path):
        raise InvalidPathError(f"no such file or directory: {path!r}")
    registry = get_registry(repo)
    with _warnings_to_stderr(), progress_bar(f"register {name}") as progress:
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
            strict=strict,
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

    A single-holder stage (staging, production) archives its previous holder.
    \f
    Calls ModelRegistry.promote(NAME, VERSION, stage, reason=...).
    """
    registry = get_registry(repo)
    event = registry.promote(name, version, stage, reason=reason)
    mv = registry.get(name, event.version)
    if as_json:
        echo_json(mv.to_dict())
        return
    displaced = event.displaced
    parts: list[Cell | str] = [
        "Promoted ",
        Cell(f"{mv.name} {mv.version}", "bold"),
        " to ",
        _stage_cell(mv.stage),
    ]
    if displaced:
        parts += [f" ({displaced} moved to ", _stage_cell(ModelStage.ARCHIVED.value), ")"]
    print_line(*parts)


@models.command("archive")
@click.argument("name", shell_complete=complete_model)
@click.argument("version", shell_complete=complete_version)
@click.option("--reason", "-r", help="Why; recorded in the stage history.")
@json_option
@repo_option
def archive_cmd(name: str, version: str, reason: str | None, as_json: bool, repo: str | None) -> None:
    """Move VERSION of NAME to the archived stage.

    \f
    Calls ModelRegistry.archive(NAME, VERSION, reason=...).
    """
    registry = get_registry(repo)
    mv = registry.get(name, registry.archive(name, version, reason=reason).version)
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

    \f
    Calls ModelRegistry.rollback(NAME, stage, reason=...).
    """
    registry = get_registry(repo)
    mv = registry.get(name, registry.rollback(name, stage, reason=reason).version)
    if as_json:
        echo_json(mv.to_dict())
        return
    print_line("Rolled back ", _stage_cell(mv.stage), f" of {mv.name} to ", Cell(mv.version, "bold"))


# ------------------------------------------------- history, compare, export (_history); diff (_diff)
def _add_commands() -> None:
    from ._authority import approve_cmd, audit_cmd
    from ._diff import diff_cmd

    for cmd in (history_cmd, compare_cmd, export_cmd, diff_cmd, approve_cmd, audit_cmd):
        models.add_command(cmd)


_add_commands()
