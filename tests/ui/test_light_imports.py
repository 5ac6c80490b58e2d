"""The UI stack loads only for ``uniflow ui``: never for ``import uniflow``, ``--version`` or ``--help``."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.ui._browser import ROOT

UI_STACK = ("starlette", "uvicorn", "jinja2", "pandas", "matplotlib", "markdown_it", "anyio", "IPython")


def _loaded(code: str) -> list[str]:
    probe = code + f"\nimport sys\nprint(','.join(m for m in {UI_STACK!r} if m in sys.modules))\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    return [m for m in r.stdout.rstrip("\n").split("\n")[-1].split(",") if m]


def test_import_uniflow_and_uniflow_ui_load_no_web_stack() -> None:
    assert _loaded("import uniflow, uniflow.ui, uniflow._views.charts, uniflow._views.notebook") == []


def test_version_and_help_load_no_web_stack() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from uniflow.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    main(['--version'])\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert ' ui ' in out.getvalue(), out.getvalue()\n"
    )
    assert _loaded(code) == []


def test_ui_help_loads_no_web_stack() -> None:
    code = (
        "import contextlib, io\n"
        "from uniflow.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        "        main(['ui', '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert '--export DIR' in out.getvalue(), out.getvalue()\n"
    )
    assert _loaded(code) == []
