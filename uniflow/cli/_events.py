"""``uniflow events [NAME]``, ``uniflow events show REF`` and ``uniflow watch URL NAME``:
the stage moves of a registry, one named by its event tag (a CI job's ``$GITHUB_REF``),
and a poller that runs a command whenever a stage's holder changes (docs/events.md).

``events`` and ``events show`` are thin calls of ``ModelRegistry.events`` / ``.event``;
``watch`` polls ``ModelRegistry(URL)`` and writes each new holder with the verified,
all-or-nothing writes of ``uniflow get``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from .._errors import UniflowError, UsageError
from ._common import echo_json, json_option, repo_option
from ._format import Cell, print_line, print_table, show_time

if TYPE_CHECKING:  # pragma: no cover
    from .._registry import RemoteRegistry

__all__ = ["events_group", "watch_cmd"]

#: the shortest --interval (seconds): a poll is one ``git ls-remote`` at least
MIN_INTERVAL = 1.0


class _ListByDefault(click.Group):
    """A group whose first argument, when it names no sub-command, is ``list``'s: so
    ``uniflow events`` and ``uniflow events clf --json`` list (a model named ``show`` or
    ``list`` is listed with ``uniflow events list show``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group("events", cls=_ListByDefault)
def events_group() -> None:
    """The promotions, archives and rollbacks of the registry (uniflow events [NAME])."""


@events_group.command("list")
@click.argument("name", required=False)
@click.option(
    "--since", metavar="SEQ|TIME", help="Events after sequence number SEQ, or at or after an ISO-8601 TIME."
)
@json_option
@repo_option
def events_list(name: str | None, since: str | None, as_json: bool, repo: str | None) -> None:
    """List stage moves (all models, or NAME), oldest first, with their event tag names.

    Read from the lifecycle (the source of truth), whether or not [events] tags is on.
    \f
    Calls ModelRegistry.events(NAME, since=...).
    """
    from ._common import get_registry

    with get_registry(repo) as registry:
        records = registry.events(name, since=since)
    if as_json:
        echo_json([r.to_dict() for r in records])
        return
    rows: list[list[Any]] = [
        [
            r.model,
            str(r.seq),
            show_time(r.time),
            r.action,
            Cell(r.version, "bold"),
            r.stage,
            r.actor or "-",
            r.tag,
        ]
        for r in records
    ]
    print_table(["Model", "#", "When", "Action", "Version", "Stage", "By", "Tag"], rows, justify={1: "right"})


@events_group.command("show")
@click.argument("ref")
@json_option
@repo_option
def events_show(ref: str, as_json: bool, repo: str | None) -> None:  # noqa: ARG001 (--json accepted for symmetry; the output is JSON)
    """Print the event an event tag names, as JSON.

    REF is refs/tags/uniflow/<model>/<stage>/<seq> (what $GITHUB_REF holds in a workflow
    the tag started) or uniflow/<model>/<stage>/<seq>. The tag is read when this repository
    has it, else the lifecycle's event of that number. The output is always JSON (--json
    is accepted for symmetry).
    \f
    Calls ModelRegistry.event(REF).
    """
    from ._common import get_registry

    with get_registry(repo) as registry:
        record = registry.event(ref)
    echo_json(record.to_dict())


# ---------------------------------------------------------------------- watch
class _Stop:
    """Set by SIGTERM/SIGINT; the watcher's sleeps wait on it, so a stop is prompt."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002 (signal handler signature)
        self.event.set()


@click.command("watch")
@click.argument("url")
@click.argument("name")
@click.option("--stage", "-s", required=True, metavar="STAGE", help="The stage to watch.")
@click.option(
    "--exec",
    "command",
    required=True,
    metavar="CMD",
    help="Run when the holder changes (split like a shell; no shell).",
)
@click.option(
    "--interval",
    default=60.0,
    show_default=True,
    type=float,
    metavar="S",
    help="Seconds between polls (at least 1).",
)
@click.option(
    "--once",
    is_flag=True,
    help="Poll once: run CMD if the holder differs from the last one seen, then exit with its code.",
)
@click.option(
    "-o", "--out", "out", metavar="DIR", help="Where holders are written: DIR/<version> (default: ./NAME)."
)
@click.option("--blob", "blob", metavar="URL", help="Read chunks from this blob remote.")
def watch_cmd(
    url: str,
    name: str,
    stage: str,
    command: str,
    interval: float,
    once: bool,
    out: str | None,
    blob: str | None,
) -> None:
    """Run CMD whenever the holder of --stage of NAME at the registry URL changes.

    Each new holder is fetched and verified into DIR/<version> first (as uniflow get), then
    CMD runs with UNIFLOW_MODEL, UNIFLOW_VERSION, UNIFLOW_STAGE and UNIFLOW_DIR set. The
    last holder handled is kept in DIR/.uniflow-watch, so a restarted watcher (or --once
    from cron) runs CMD only for a change. A failing CMD is reported and the watcher goes
    on (with --once: its exit code is the command's). SIGTERM or SIGINT stop it between
    polls, or after the running CMD.
    \f
    Calls ModelRegistry(URL).refresh(), .get(NAME, stage=STAGE) and .export(...).
    """
    argv = shlex.split(command)
    if not argv:
        raise UsageError("--exec needs a command")
    if not interval >= MIN_INTERVAL:
        raise UsageError(f"--interval must be at least {MIN_INTERVAL:g} s, not {interval:g}")
    base = Path(out if out is not None else name).absolute()
    stop = _Stop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    from .._registry import RemoteRegistry
    from ..sharing.giturl import parse_git_url

    if parse_git_url(url) is None:
        raise UsageError(f"{url!r} is not a Git URL or a bare repository")
    registry = RemoteRegistry(url, blob=blob)
    with registry:
        while True:
            try:
                code = _poll(registry, name, stage, argv, base)
            except UniflowError as exc:
                if once:
                    raise
                click.echo(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
            else:
                if once:
                    raise SystemExit(code)
            if stop.event.wait(interval):
                return


def _poll(registry: RemoteRegistry, name: str, stage: str, argv: list[str], base: Path) -> int:
    """One poll: when the holder differs from the last handled, fetch it and run CMD.
    Returns CMD's exit code (0 when nothing changed). A poll that fails is one error line
    (raised with --once by the caller's handler; the loop goes on otherwise)."""
    registry.refresh()
    mv = registry.get(name, stage=stage)
    state = base / ".uniflow-watch"
    seen = state.read_text().strip() if state.is_file() else None
    if seen == mv.version:
        return 0
    dest = _fetch(registry, name, mv.version, base)
    env = {**os.environ, "UNIFLOW_MODEL": name, "UNIFLOW_VERSION": mv.version, "UNIFLOW_STAGE": mv.stage}
    env["UNIFLOW_DIR"] = os.fspath(dest)
    print_line("Holder of ", Cell(f"{name} {stage}", "bold"), f" is {mv.version}: running {shlex.join(argv)}")
    try:
        code = subprocess.run(argv, env=env, check=False).returncode
    except OSError as exc:
        raise UsageError(f"cannot run {argv[0]!r}: {exc.strerror}") from exc
    if code != 0:
        click.echo(f"error: {shlex.join(argv)} exited with {code} for {name} {mv.version}", err=True)
    # handled, whatever CMD's outcome: only the next change runs it again (written whole)
    tmp = state.with_name(f"{state.name}.{os.getpid()}.tmp")
    tmp.write_text(mv.version + "\n")
    os.replace(tmp, state)
    return code


def _fetch(registry: RemoteRegistry, name: str, version: str, base: Path) -> Path:
    """The verified files of ``version`` in ``base/<version>``, written all or nothing."""
    from ..sharing.staging import begin as begin_staging
    from ._dest import move_into_place as _move_into_place

    base.mkdir(parents=True, exist_ok=True)
    dest = base / version
    staging = begin_staging(dest)
    try:
        registry.export(name, staging.files, version=version)
        _move_into_place(staging.files, dest, True)
    finally:
        shutil.rmtree(staging.root, ignore_errors=True)
    return dest
