"""The top-level ``uniflow`` group: cheap to import, sub-commands loaded on demand.

Only click and :mod:`uniflow.cli._common` are imported here. Each sub-command lives in a
module that is imported when the command is invoked or when ``--help`` lists it; the
registry (and so dulwich) is imported only inside commands.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from ._common import _complete_dir, handle_errors

__all__ = ["LazyGroup", "cli", "main"]

#: command name -> "module:attribute"
LAZY_COMMANDS: dict[str, str] = {
    "init": "uniflow.cli._admin:init_cmd",
    "models": "uniflow.cli._models:models",
    "gc": "uniflow.cli._admin:gc_cmd",
    "verify": "uniflow.cli._admin:verify_cmd",
    "policy": "uniflow.cli._policy:policy_group",
    "remote": "uniflow.cli._share:remote",
    "push": "uniflow.cli._share:push",
    "pull": "uniflow.cli._share:pull",
    "hooks": "uniflow.cli._share:hooks",
    "ci": "uniflow.cli._share:ci",
    "get": "uniflow.cli._get:get_cmd",
    "storage-initializer": "uniflow.cli._serve:storage_initializer_cmd",
    "events": "uniflow.cli._events:events_group",
    "watch": "uniflow.cli._events:watch_cmd",
    "oci": "uniflow.cli._oci:oci_group",
    "ui": "uniflow.cli._ui:ui_cmd",
    "import": "uniflow.cli._import:import_group",
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use, and which runs every
    sub-command inside the one error handler (:func:`uniflow.cli._common.handle_errors`)."""

    def __init__(self, *args: Any, lazy_commands: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in self.lazy_commands:
            return command
        module_name, _, attr = self.lazy_commands[cmd_name].partition(":")
        loaded: click.Command = getattr(importlib.import_module(module_name), attr)
        self.commands[cmd_name] = loaded
        return loaded

    def invoke(self, ctx: click.Context) -> Any:
        with handle_errors(traceback=bool(ctx.params.get("traceback"))):
            return super().invoke(ctx)


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:  # noqa: ARG001 (click's callback signature)
    if not value or ctx.resilient_parsing:
        return
    from .._version import __version__

    click.echo(f"uniflow {__version__}")
    ctx.exit(0)


@click.group(
    "uniflow",
    cls=LazyGroup,
    lazy_commands=LAZY_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
@click.option(
    "--repo",
    "repo",
    metavar="PATH",
    default=None,
    shell_complete=_complete_dir,
    help="Directory inside the Git repository to use (default: the current directory), "
    "or a Git URL (https://, ssh://, git://, file://, a bare repository) to read without a clone.",
)
@click.option(
    "--traceback", is_flag=True, default=False, help="Show the full traceback of an unexpected error."
)
def cli(repo: str | None, traceback: bool) -> None:
    """UniFlow: a Git-native model registry.

    Model bytes live in .git/uniflow/ as verified chunks; versions are Git tags; stages and
    their history are Git refs. Run 'uniflow COMMAND --help' for details.
    """


def _one_line_warnings() -> None:
    """Show each :class:`uniflow.UniflowWarning` a command does not print itself as one
    ``warning: ...`` line on stderr (e.g. a listing that skipped an unreadable lifecycle);
    other warnings are shown as usual."""
    import warnings

    shown = warnings.showwarning

    def show(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        from .._errors import UniflowWarning

        if issubclass(category, UniflowWarning):
            click.echo(f"warning: {message}", err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> Any:
    """Run the click group (``uniflow.cli.main`` calls this for everything but ``--version``)."""
    _one_line_warnings()
    try:
        return cli.main(args=argv, prog_name="uniflow")
    except BrokenPipeError:  # e.g. `uniflow models list | head -1`
        from ._common import _silence_stdout

        _silence_stdout()
        sys.exit(1)
