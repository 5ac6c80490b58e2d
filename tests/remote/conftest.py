"""Fixtures of the registry-by-URL tests: a private cache directory for every test, a
published registry, ``git daemon`` and moto's S3 server on 127.0.0.1 (started and stopped
here, every wait bounded)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, publish_registry, wait_port


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
def published(tmp_path: Path) -> dict[str, Any]:
    return publish_registry(tmp_path)


def _daemon(base: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            f"--base-path={base}",
            "--export-all",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        yield f"git://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[str]:
    """``git://127.0.0.1:<port>`` serving ``<tmp>/srv`` read-only (each repository's own
    config decides ``uploadpack.allowFilter``, as on a real server)."""
    base = tmp_path / "srv"
    base.mkdir(exist_ok=True)
    yield from _daemon(base)
