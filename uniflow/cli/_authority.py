"""``uniflow models approve | audit``, ``models history --verify`` and ``verify --signatures``:
who signed each version and lifecycle event, and whether the policy allowed it
(docs/governance.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from .._errors import IntegrityError
from ._common import CliError, echo_json, get_registry, json_option, repo_option
from ._complete import complete_model, complete_stage, complete_version
from ._format import Cell, print_line, print_table, show_time

if TYPE_CHECKING:  # pragma: no cover
    from .._ops.authority import LifecycleVerdicts

__all__ = ["approve_cmd", "audit_cmd", "print_verdicts", "trust_root_option", "verify_signatures"]

trust_root_option = click.option(
    "--trust-root",
    "trust_root",
    metavar="FILE",
    default=None,
    help="An allowed-signers file naming the policy admins you trust (default: the first policy "
    "this clone saw).",
)


@click.command("approve")
@click.argument("name", shell_complete=complete_model)
@click.argument("version", shell_complete=complete_version)
@click.option(
    "--for",
    "stage",
    required=True,
    metavar="STAGE",
    shell_complete=complete_stage,
    help="The stage VERSION is approved for, e.g. production.",
)
@click.option("--message", "-m", default=None, help="Why; recorded with the approval.")
@json_option
@repo_option
def approve_cmd(
    name: str, version: str, stage: str, message: str | None, as_json: bool, repo: str | None
) -> None:
    """Record your signed approval of VERSION of NAME for a stage.

    No stage changes: a policy counts the approval toward the stage's approvals when
    someone else promotes VERSION there. Needs your signing key (git config gpg.format
    ssh; git config user.signingKey KEY.pub).
    \f
    Calls ModelRegistry.approve(NAME, VERSION, for_stage=STAGE, message=...).
    """
    event = get_registry(repo).approve(name, version, for_stage=stage, message=message)
    if as_json:
        echo_json(event.to_dict())
        return
    print_line("Approved ", Cell(f"{name} {event.version}", "bold"), f" for {event.for_stage}")


def _verdict_cell(ok: bool, reason: str) -> Cell:
    return Cell(reason, "green" if ok else "red") if ok else Cell(f"FAIL: {reason}", "red")


def print_verdicts(verdicts: LifecycleVerdicts) -> None:
    """The events of one model with their signer and verdict, then the failing tags."""
    rows = []
    for e in verdicts.events:
        stage = f"{e.from_stage or '-'} -> {e.to_stage or '-'}"
        if e.action == "approve":
            stage = f"for {e.for_stage}"
        rows.append(
            [
                str(e.seq if e.seq is not None else "?"),
                show_time(e.at),
                e.action,
                Cell(e.version, "bold"),
                stage,
                e.signer or Cell(e.signature, "yellow"),
                _verdict_cell(e.ok, e.reason),
            ]
        )
    print_table(["#", "When", "Action", "Version", "Stage", "Signer", "Verdict"], rows, justify={0: "right"})
    if not verdicts.policy:
        click.echo("No policy in force: nothing was required (uniflow policy init).")
    for t in verdicts.tags.values():
        if not t.ok:
            print_line(Cell(f"tag {verdicts.model} {t.version} ({t.tag[:12]}): FAIL: {t.reason}", "red"))
    for p in verdicts.problems:
        print_line(Cell(f"FAIL: {p}", "red"))


def verify_signatures(name: str | None, trust_root: str | None, as_json: bool, repo: str | None) -> None:
    """``uniflow verify --signatures``: every model (or NAME) against the policy in force
    when each event was made; raises :class:`IntegrityError` listing the failures."""
    from .._ops.authority import policy_chain, verify_lifecycle, verify_signatures

    registry = get_registry(repo)
    if name is not None:
        registry.repository.require_model(name)
        found = [
            verify_lifecycle(registry.repository, name, chain=policy_chain(registry.repository, trust_root))
        ]
    else:
        found = verify_signatures(registry.repository, trust_root)
    failures = [line for v in found for line in v.failures()]
    if as_json:
        echo_json({"ok": not failures, "failures": failures, "models": [v.to_dict() for v in found]})
    elif not failures:
        events = sum(len(v.events) for v in found)
        tags = sum(len(v.tags) for v in found)
        click.echo(f"OK: {tags} version tags and {events} lifecycle events of {len(found)} models verified")
    else:
        for line in failures:
            click.echo(f"FAIL: {line}")
    if failures:
        count = len(failures)
        raise IntegrityError(f"{count} signature or policy failure{'' if count == 1 else 's'} found")


def _parse_time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(
            f"--at {text!r} is not an ISO-8601 time (e.g. 2026-05-01 or 2026-05-01T12:00Z)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@click.command("audit")
@click.argument("name", shell_complete=complete_model)
@click.option(
    "--at",
    "at",
    required=True,
    metavar="TIME",
    help="An ISO-8601 time (UTC unless it names a zone), e.g. 2026-05-01T12:00Z.",
)
@trust_root_option
@json_option
@repo_option
def audit_cmd(name: str, at: str, trust_root: str | None, as_json: bool, repo: str | None) -> None:
    """Show which version of NAME held each stage at a time, who promoted and who approved it.

    Built from the lifecycle's signed events: the signer is the verified principal, the
    verdict whether the policy in force then allowed the move.
    \f
    Calls uniflow._ops.authority.verify_lifecycle and audit.
    """
    from .._ops.authority import audit, verify_lifecycle

    when = _parse_time(at)
    registry = get_registry(repo)
    registry.repository.require_model(name)
    rows = audit(verify_lifecycle(registry.repository, name, trust_root=trust_root), when)
    if as_json:
        echo_json({"model": name, "at": when.isoformat(), "stages": rows})
        return
    if not rows:
        click.echo(f"No stage of {name} held a version at {when.isoformat()}.")
        return
    table = [
        [
            r["stage"],
            Cell(r["version"], "bold"),
            r["since"],
            r["promoted_by"] or Cell("(unsigned)", "yellow"),
            ", ".join(r["approved_by"]) or "-",
            _verdict_cell(r["ok"], r["verdict"]),
        ]
        for r in rows
    ]
    print_table(["Stage", "Version", "Since", "Promoted by", "Approved by", "Verdict"], table)
