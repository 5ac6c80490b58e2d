"""Fixtures of the UI tests: one demo registry per session (built in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ui._browser import ROOT
from tests.ui._demo import GIT_ENV


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The registry of tests/ui/_demo.py (torch, sklearn and planted-XSS models). Read-only:
    tests that change a registry make their own."""
    base = tmp_path_factory.mktemp("ui-demo")
    home = base / "home"
    home.mkdir()
    repo = base / "demo"
    env = {**os.environ, **GIT_ENV, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.ui._demo", str(repo)],
        env=env,
        cwd=base,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return repo
