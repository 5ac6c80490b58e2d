"""The ``uniflow`` command line (click + rich); see docs/cli.md.

Each command is a thin call of the :class:`uniflow.ModelRegistry` method of the same
name; :mod:`uniflow.cli._common` holds the shared options and the one error handler.

``main`` answers ``uniflow --version`` before importing click, so that the most common
"is it installed?" probe costs no more than starting Python; everything else goes through
the click group :data:`cli` (imported on first use).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

__all__ = ["cli", "main"]

if TYPE_CHECKING:  # pragma: no cover
    from ._main import cli


def main(argv: Sequence[str] | None = None) -> Any:
    """Console-script entry point (``uniflow``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        from .._version import __version__

        sys.stdout.write(f"uniflow {__version__}\n")
        sys.stdout.flush()
        return 0
    from ._main import main as click_main

    return click_main(args)


def __getattr__(name: str) -> Any:
    if name == "cli":
        from ._main import cli

        return cli
    raise AttributeError(f"module 'uniflow.cli' has no attribute {name!r}")
