"""Helpers every ``uniflow`` command module shares (and the one error handler).

Command modules (``_models``, ``_admin``, ``_share`` ...) build their commands from these
pieces so that every command behaves the same way:

``repo_option``
    Decorator adding ``--repo PATH`` to a command (keyword argument ``repo``). The value
    falls back to the top-level ``uniflow --repo PATH``, then to the working directory.
``json_option``
    Decorator adding ``--json`` (keyword argument ``as_json: bool``).
``oms_key_option`` / ``oms_signer(key, mv)``
    ``--oms-key KEY`` (keyword ``oms_key``) for the commands that write a version's files,
    and what checks the key before they are written and signs them after.
``get_registry(repo, *, create=False)``
    Open the ``ModelRegistry`` of the Git repository enclosing ``repo`` (a Git URL or a
    bare repository opens the read-only registry of that URL). The registry
    module is imported here, lazily, so that ``uniflow --help`` stays cheap. Unless
    ``create`` is true, a path outside any Git work tree raises ``RepositoryError``
    ("not a git repository ...") instead of initialising one as the library does for
    notebook users.
``echo_json(obj)``
    Print ``obj`` as indented JSON on stdout (datetimes as ISO-8601 strings, non-finite
    floats as ``null``, paths and other objects via ``str``).
``console(stderr=False)``
    The lazily created ``rich.console.Console`` (one for stdout, one for stderr).
``fancy()``
    True when stdout is a terminal: commands then draw rich tables; otherwise they print
    plain, space-aligned text with no colour codes and no box drawing. The environment
    variable ``UNIFLOW_FORCE_TTY=1`` (or ``0``) overrides the detection; ``NO_COLOR``
    is honoured by rich.
``progress_bar(description)``
    Context manager yielding a ``progress(done, total)`` callable for the library's
    ``progress=`` arguments: a rich progress bar on stderr when it is a terminal, else
    ``None`` (no output at all).
``handle_errors(traceback=False)``
    Context manager: the one place library errors become CLI errors. A ``UniflowError``
    prints ``error: <message>`` (red on a terminal) to stderr and exits with the error's
    ``exit_code``; any other exception prints one line naming it plus
    ``(run with --traceback for details)`` and exits 1 (with ``traceback=True`` the full
    traceback is printed instead). ``click`` exceptions and ``SystemExit`` pass through.
    The top-level group already wraps every sub-command in it, so command modules only
    need it for code that runs outside a command invocation.
``fail(message, exit_code=1)``
    Print one error line and exit, for problems the CLI itself detects.
``CliError``
    A ``UniflowError`` with a chosen exit code, raised by commands for CLI-level problems.

Nothing in this module imports rich, dulwich or the registry at import time.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .._errors import RepositoryError, UniflowError
from .._jsonable import dumps

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from .._registry import ModelRegistry

__all__ = [
    "CliError",
    "console",
    "echo_json",
    "fail",
    "fancy",
    "find_git_root",
    "get_registry",
    "handle_errors",
    "json_option",
    "progress_bar",
    "repo_option",
]

F = TypeVar("F", bound=Callable[..., Any])


class CliError(UniflowError):
    """An error detected by the command line itself (bad option combination ...)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------- options


def _complete_dir(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:  # noqa: ARG001 (click's completion signature)
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="dir")]


def repo_option(f: F) -> F:
    """Add ``--repo PATH`` (keyword ``repo``) to a command."""
    return click.option(
        "--repo",
        "repo",
        metavar="PATH",
        default=None,
        help="Directory inside the Git repository to use (default: the current directory), "
        "or a Git URL to read without a clone.",
        shell_complete=_complete_dir,
    )(f)


def json_option(f: F) -> F:
    """Add ``--json`` (keyword ``as_json``) to a command."""
    return click.option(
        "--json", "as_json", is_flag=True, default=False, help="Print machine-readable JSON."
    )(f)


def b3sum_option(f: F) -> F:
    """Add ``--b3sum`` (keyword ``b3sum``): print the BLAKE3 of each file written."""
    return click.option(
        "--b3sum",
        "b3sum",
        is_flag=True,
        default=False,
        help="Also print each file's BLAKE3 digest, as b3sum prints it (with --json: a "
        '"b3sum" per file). Computed only when asked: it reads every file once more.',
    )(f)


def written_b3sums(dest: Path, paths: list[str]) -> dict[str, str]:
    """The BLAKE3 (what ``b3sum`` prints) of each file ``dest / path`` just written."""
    from .._storage.ingest import fd_digest

    out: dict[str, str] = {}
    for rel in paths:
        target = dest / rel
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise RepositoryError(f"cannot read {target}: {exc.strerror}") from exc
        try:
            digest = fd_digest(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        if digest is None:
            raise RepositoryError(f"{target} changed while it was read")
        out[rel] = digest
    return out


def print_b3sums(sums: dict[str, str]) -> None:
    """``<digest>  <path>`` lines, as ``b3sum`` prints them."""
    for rel, digest in sums.items():
        click.echo(f"{digest}  {rel}")


def oms_key_option(f: F) -> F:
    """Add ``--oms-key KEY`` (keyword ``oms_key``): sign the written files (uniflow._ops.oms)."""
    return click.option(
        "--oms-key",
        "oms_key",
        metavar="KEY",
        help="Also write DEST/model.sig, an OpenSSF model-signing bundle signed with this EC "
        "private key (PEM); needs uniflow-registry[oms].",
    )(f)


def oms_signer(key: str | None, mv: Any) -> Callable[[str | os.PathLike[str]], str | None]:
    """With ``--oms-key``: check the extra, the key and the version's file names now, before
    anything is written, and return what writes ``DEST/model.sig`` over those files once they
    are (returning its path). Without: a no-op returning None."""
    if key is None:
        return lambda _dest: None
    from .._ops.oms import check_oms, write_oms_bundle

    files = [f.path for f in mv.files]
    check_oms(key, files)
    return lambda dest: os.fspath(write_oms_bundle(dest, key, files=files))


def resolve_repo(repo: str | os.PathLike[str] | None) -> str | None:
    """The command's ``--repo``, else the top-level ``uniflow --repo``, else None (cwd)."""
    if repo is not None:
        return os.fspath(repo)
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        value = ctx.params.get("repo")
        if value is not None:
            return os.fspath(str(value))
        ctx = ctx.parent
    return None


def find_git_root(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The work tree enclosing ``start`` (default: cwd), found as the registry finds it; no git call."""
    from .._records.paths import find_workdir

    return find_workdir(Path(start if start is not None else os.getcwd()))


def get_registry(repo: str | os.PathLike[str] | None = None, *, create: bool = False) -> ModelRegistry:
    """Open the registry of the repository enclosing ``repo`` (see the module docstring)."""
    target = resolve_repo(repo)
    if target is not None:
        from ..sharing.giturl import is_git_url

        if is_git_url(target):  # a Git URL or a bare repository: read-only, no clone (docs/remote.md)
            from .._registry import ModelRegistry

            return ModelRegistry(target)
    path = Path(target) if target is not None else Path.cwd()
    if not path.exists():
        raise RepositoryError(f"no such directory: {os.fspath(path)!r}")
    if not path.is_dir():
        raise RepositoryError(f"not a directory: {os.fspath(path)!r}")
    if not create and find_git_root(path) is None:
        raise RepositoryError(
            f"not a git repository (or any parent up to /): {os.fspath(path.absolute())}; "
            "run 'git init' or 'uniflow init' first"
        )
    from .._registry import ModelRegistry

    return ModelRegistry(path)


# --------------------------------------------------------------------------- output


def echo_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON (see :func:`to_jsonable`) on stdout."""
    click.echo(dumps(obj))


def fancy() -> bool:
    """True when stdout is an interactive terminal (``UNIFLOW_FORCE_TTY`` overrides)."""
    forced = os.environ.get("UNIFLOW_FORCE_TTY")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        return bool(sys.stdout.isatty()) and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def _stderr_fancy() -> bool:
    forced = os.environ.get("UNIFLOW_FORCE_TTY")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


_CONSOLES: dict[bool, Console] = {}


def console(stderr: bool = False) -> Console:
    """The rich console for stdout (or stderr), created on first use."""
    con = _CONSOLES.get(stderr)
    stream = sys.stderr if stderr else sys.stdout
    if con is None or con.file is not stream:
        from rich.console import Console

        forced = os.environ.get("UNIFLOW_FORCE_TTY")
        con = Console(
            file=stream,
            stderr=stderr,
            force_terminal=True if forced == "1" else (False if forced == "0" else None),
            highlight=False,
            soft_wrap=False,
        )
        _CONSOLES[stderr] = con
    return con


@contextlib.contextmanager
def progress_bar(description: str, *, items: bool = False) -> Iterator[Callable[[int, int], None] | None]:
    """Yield a ``progress(done, total)`` callable driving a rich bar on a terminal, else None.
    ``items=True`` counts things (``3/10``) instead of bytes."""
    if not _stderr_fancy():
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *((MofNCompleteColumn(),) if items else (DownloadColumn(binary_units=True), TransferSpeedColumn())),
        TimeRemainingColumn(),
        console=console(stderr=True),
        transient=True,
    )
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        with contextlib.suppress(Exception):  # a progress bar must never break a transfer
            bar.update(task, completed=done, total=total or None)

    with bar:
        yield update


# --------------------------------------------------------------------------- errors


def _error_line(message: str) -> None:
    text = f"error: {message}"
    colour = _stderr_fancy() and not os.environ.get("NO_COLOR")
    if colour:
        text = click.style(text, fg="red")
    click.echo(text, err=True, color=colour or None)


def fail(message: str, exit_code: int = 1) -> None:
    """Print ``error: <message>`` on stderr and exit with ``exit_code``."""
    _error_line(" ".join(str(message).split()))
    raise SystemExit(exit_code)


def _describe_unexpected(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {os.fspath(exc.filename)!r}" if exc.filename is not None else ""
        return f"{exc.strerror}{where}"
    detail = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"unexpected {name}: {detail}" if detail else f"unexpected {name}"


@contextlib.contextmanager
def handle_errors(traceback: bool = False) -> Iterator[None]:
    """Turn exceptions into one ``error:`` line and an exit code (see module docstring)."""
    try:
        yield
    except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
        raise
    except UniflowError as exc:
        if traceback:
            _print_traceback()
        _error_line(str(exc) or type(exc).__name__)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        _error_line("interrupted")
        raise SystemExit(130) from None
    except BrokenPipeError:
        _silence_stdout()
        raise SystemExit(1) from None
    except Exception as exc:  # noqa: BLE001  this is the one catch-all of the CLI
        cause = _underlying(exc)
        if isinstance(cause, UniflowError):
            if traceback:
                _print_traceback()
            _error_line(str(cause) or type(cause).__name__)
            raise SystemExit(cause.exit_code) from None
        shown: BaseException = cause if cause is not None else exc
        if traceback:
            _print_traceback()
            _error_line(_describe_unexpected(shown))
        else:
            _error_line(f"{_describe_unexpected(shown)} (run with --traceback for details)")
        raise SystemExit(1) from None


def _underlying(exc: BaseException) -> BaseException | None:
    """The error an unexpected exception was raised *while handling* (implicit context, not
    ``raise ... from``), when that one is ours or an OSError — e.g. a clean-up step failing
    while a PermissionError unwinds, which would otherwise hide the real problem."""
    seen = 0
    current = exc
    while current.__cause__ is None and not current.__suppress_context__ and seen < 10:
        inner = current.__context__
        if inner is None:
            return None
        if isinstance(inner, (UniflowError, OSError)):
            return inner
        current = inner
        seen += 1
    return None


def _print_traceback() -> None:
    import traceback as tb

    tb.print_exc(file=sys.stderr)


def _silence_stdout() -> None:
    # After a broken pipe, point stdout at devnull so the interpreter's final flush is quiet.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
