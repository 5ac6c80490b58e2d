"""``uniflow ui``: serve the registry read-only in a browser, or export it as a static site.

The web stack (Starlette, Uvicorn, Jinja2: the ``ui`` extra) is imported only here, when
the command runs; see docs/ui.md.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

import click

from ._common import CliError, echo_json, get_registry, json_option, repo_option

__all__ = ["ui_cmd"]


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise CliError(
            f"uniflow ui needs {', '.join(missing)}: pip install 'uniflow-registry[ui]'", exit_code=2
        )


@click.command("ui")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback is reachable from other machines.",
)
@click.option("--port", type=int, default=8765, show_default=True, help="TCP port; 0 picks a free one.")
@click.option(
    "--open/--no-open",
    "open_browser",
    default=False,
    show_default=True,
    help="Open the URL in a web browser.",
)
@click.option(
    "--export",
    "export_dir",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Write the pages as a static site to DIR instead of serving them.",
)
@json_option
@repo_option
def ui_cmd(
    host: str, port: int, open_browser: bool, export_dir: str | None, as_json: bool, repo: str | None
) -> None:
    """Browse the registry: models, versions, charts, cards, comparisons, history.

    Serves read-only pages (GET/HEAD only) and JSON under /api (the --json shapes of the
    models commands) on http://127.0.0.1:8765/ until Ctrl-C. With --export DIR, writes the
    same pages as static HTML with relative links (open DIR/index.html).
    """
    if export_dir is not None:
        _require("jinja2")
        registry = get_registry(repo)
        from ..ui.export import export_site

        report = export_site(registry, os.path.abspath(export_dir))
        if as_json:
            echo_json(report)
        else:
            click.echo(
                f"Exported {report.pages} pages of {report.models} models to {report.path} "
                f"(open {os.path.join(report.path, 'index.html')})"
            )
        return
    _require("jinja2", "starlette", "uvicorn")
    registry = get_registry(repo)
    from ..ui.app import create_app
    from ..ui.server import bind, is_loopback, serve, url_of

    if not is_loopback(host):
        click.echo(
            f"warning: listening on {host}: anyone who can reach this address can read the registry "
            "(the server is read-only; use the default 127.0.0.1 to keep it to this machine)",
            err=True,
        )
    sock = bind(host, port)
    url = url_of(sock)
    if as_json:
        echo_json({"url": url, "repo": _where(registry), "read_only": True})
    else:
        click.echo(f"Serving {_where(registry)} at {url} (read-only; Ctrl-C stops)")
    sys.stdout.flush()
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    serve(create_app(registry, loopback_only=is_loopback(sock.getsockname()[0]), warm=True), sock)


def _where(registry: Any) -> str:
    """What is served: the Git URL of a registry opened by URL, else the repository's path."""
    url = getattr(registry, "url", None)
    return url if isinstance(url, str) else os.fspath(registry.root)
