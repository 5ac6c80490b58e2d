"""Fixtures of the registry-by-URL tests: a private cache directory for every test, a
published registry, ``git daemon`` and moto's S3 server on 127.0.0.1 (started and stopped
here, every wait bounded)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import publish_registry, serve_git_daemon


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$UNIFLOW_CACHE_DIR`` of this test (the CLI subprocesses inherit it)."""
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    """A working directory with no Git repository anywhere above it that git would find."""
    d = tmp_path / "empty"
    d.mkdir()
    return d


@pytest.fixture
def published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A registry whose blob remote holds loose chunk files (as pushed before packs on
    remotes): these tests damage, unlink and hard-link single chunk files. Packed remotes
    read by URL: tests/test_remote_packs.py."""
    with monkeypatch.context() as m:
        m.setenv("UNIFLOW_BLOB_LAYOUT", "loose")
        return publish_registry(tmp_path)


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[str]:
    """``git://127.0.0.1:<port>`` serving ``<tmp>/srv`` read-only (each repository's own
    config decides ``uploadpack.allowFilter``, as on a real server)."""
    base = tmp_path / "srv"
    base.mkdir(exist_ok=True)
    yield from serve_git_daemon(base)
