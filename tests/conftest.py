"""Shared fixtures: throwaway Git repositories with a known identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import GIT_ENV, make_repo


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for k, v in GIT_ENV.items():
        monkeypatch.setenv(k, v)
    home = tmp_path_factory.mktemp("home")
    (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n[user]\n\tname = Test User\n\temail = test@example.com\n")
    monkeypatch.setenv("HOME", str(home))



@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def registry(repo: Path):
    from uniflow import ModelRegistry

    return ModelRegistry(repo)


