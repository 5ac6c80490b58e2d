"""``uniflow import mlflow`` and ``uniflow import gto``: bring another registry's models in,
with their history (docs/migrate.md). Thin calls of ``ModelRegistry.import_mlflow`` and
``ModelRegistry.import_gto``; exit 0 when everything was imported or skipped, 4 when a
version exists here with other bytes (left as it is), 1 when a version or event failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._common import echo_json, get_registry, json_option, progress_bar, repo_option

if TYPE_CHECKING:
    from ..importers import ImportReport

__all__ = ["import_group"]


@click.group("import")
def import_group() -> None:
    """Import models and their history from MLflow or GTO (re-runs import only what is new)."""


@import_group.command("mlflow")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--tracking-uri", metavar="URI", help="MLflow tracking URI (a sqlite file, a server URL...).")
@click.option("--registry-uri", metavar="URI", help="MLflow registry URI (default: the tracking URI).")
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@json_option
@repo_option
def mlflow_cmd(
    names: tuple[str, ...],
    tracking_uri: str | None,
    registry_uri: str | None,
    dry_run: bool,
    as_json: bool,
    repo: str | None,
) -> None:
    """Import every MLflow registered model (or NAMEs): versions oldest first, stages, aliases.

    Version N becomes vN.0.0; aliases become single-holder custom stages declared in
    .uniflow/config.toml.
    \f
    Calls ModelRegistry.import_mlflow().
    """
    registry = get_registry(repo)
    with progress_bar("Importing versions", items=True) as progress:
        report = registry.import_mlflow(
            names or None,
            tracking_uri=tracking_uri,
            registry_uri=registry_uri,
            dry_run=dry_run,
            progress=progress,
        )
    _finish(report, as_json)


@import_group.command("gto")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--rev", metavar="REV", help="Only the GTO tags whose commit REV reaches.")
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@json_option
@repo_option
def gto_cmd(names: tuple[str, ...], rev: str | None, dry_run: bool, as_json: bool, repo: str | None) -> None:
    """Import the GTO tags of this repository (registrations, assignments, deprecations).

    Files are taken as they were at each tagged commit (Git, else the DVC cache); GTO's tags
    are left untouched.
    \f
    Calls ModelRegistry.import_gto().
    """
    registry = get_registry(repo)
    with progress_bar("Importing versions", items=True) as progress:
        report = registry.import_gto(names or None, rev=rev, dry_run=dry_run, progress=progress)
    _finish(report, as_json)


def _finish(report: ImportReport, as_json: bool) -> None:
    if as_json:
        echo_json(report.to_dict())
    else:
        _print(report)
    if report.conflicts:
        raise SystemExit(4)
    if report.failures:
        raise SystemExit(1)


def _print(report: ImportReport) -> None:
    from ._format import print_line

    head = "Plan" if report.dry_run else "Imported"
    for note in report.notes:
        print_line(f"note: {note}")
    if report.declared_stages:
        verb = "would declare" if report.dry_run else "declared"
        print_line(f"{verb} stages in .uniflow/config.toml (commit it): {', '.join(report.declared_stages)}")
    for v in report.versions:
        detail = f" ({v.detail})" if v.detail else ""
        print_line(f"{v.status:13} {v.model} {v.version}  <- {report.source} {v.key}{detail}")
    for e in report.events:
        print_line(f"{e.status:13} {e.model} {e.version} -> {e.stage}  at {e.at} by {e.actor}")
    for left in report.emptied_stages:
        print_line(
            f"stage left with no holder: {left.model} {left.stage} ({left.version} moved to "
            f"{left.moved_to} at {left.at}, {report.source} {left.key}; a uniflow version holds one stage)"
        )
    counts = ", ".join(
        f"{report.count(s)} {s}"
        for s in ("imported", "would-import", "applied", "would-apply", "skipped", "conflict", "failed")
        if report.count(s)
    )
    print_line(f"{head} from {report.source}: {counts or 'nothing to do'}")
