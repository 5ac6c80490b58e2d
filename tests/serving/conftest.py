"""Fixtures of the serving tests: a private cache directory for every test (the CLI
subprocesses inherit it), a published registry and ``git daemon`` on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import serve_git_daemon


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$UNIFLOW_CACHE_DIR`` of this test."""
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(cache))
    monkeypatch.delenv("UNIFLOW_BLOB", raising=False)
    return cache


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    """A working directory with no Git repository above it that git would find."""
    d = tmp_path / "empty"
    d.mkdir()
    return d


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[str]:
    """``git://127.0.0.1:<port>`` serving ``<tmp>/srv`` read-only."""
    base = tmp_path / "srv"
    base.mkdir(exist_ok=True)
    yield from serve_git_daemon(base)
