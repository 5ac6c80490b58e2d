"""The server's cache: pages come from memory while the refs are unchanged, and never stale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import git, make_repo
from uniflow import ModelRegistry
from uniflow.ui import cache as cache_mod
from uniflow.ui.cache import CachedRegistry


class Counting:
    """A registry that counts the reads the cache passes through."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        if name in ("list_versions", "version_rows", "history", "list_models"):
            self.reads += 1
        return getattr(self.registry, name)


def _register(reg: ModelRegistry, repo: Path, version: str, data: bytes) -> None:
    (repo / "m.bin").write_bytes(data)
    reg.register(model=str(repo / "m.bin"), name="m", version=version, metrics={"acc": len(data)})


@pytest.mark.parametrize("racy_ns", [0, 2_000_000_000])
def test_changes_are_seen_and_nothing_is_read_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, racy_ns: int
) -> None:
    """With stats trusted at once (0) the fast path decides; with the 2 s window git does."""
    monkeypatch.setattr(cache_mod, "_RACY_NS", racy_ns)
    repo = make_repo(tmp_path / "r")
    reg = ModelRegistry(repo)
    _register(reg, repo, "v1.0.0", b"one")
    counting = Counting(reg)
    cached = CachedRegistry(counting)  # type: ignore[arg-type]

    cached.refresh()
    assert [s.latest for s in cached.list_models()] == ["v1.0.0"]
    assert [v.version for v in cached.list_versions("m")] == ["v1.0.0"]
    reads = counting.reads
    cached.refresh()
    cached.refresh("m")
    cached.list_models(), cached.list_versions("m"), cached.history("m")
    cached.version_rows("m"), cached.history("m", last=1)
    reads = counting.reads
    cached.refresh()
    cached.list_models(), cached.list_versions("m"), cached.history("m")
    cached.version_rows("m"), cached.history("m", last=1)
    assert counting.reads == reads  # unchanged refs: all from memory

    _register(reg, repo, "v1.1.0", b"two")
    cached.refresh("m")
    assert [v.version for v in cached.list_versions("m")] == ["v1.0.0", "v1.1.0"]
    reg.promote("m", "v1.1.0", "production")
    cached.refresh()
    assert cached.list_models()[0].stages == {"production": "v1.1.0"}
    assert cached.get("m", "v1.1.0").stage == "production"
    assert cached.history("m")[-1].action == "promote"

    git(repo, "pack-refs", "--all")  # refs move into packed-refs: still the same answers
    cached.refresh()
    assert [v.version for v in cached.list_versions("m")] == ["v1.0.0", "v1.1.0"]
    (repo / ".uniflow" / "config.toml").write_text("[stages.canary]\nsingle = true\n")
    cached.refresh()
    assert "canary" in cached.stages()


def test_without_git_every_call_reads_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "r")
    reg = ModelRegistry(repo)
    _register(reg, repo, "v1.0.0", b"one")
    counting = Counting(reg)
    cached = CachedRegistry(counting)  # type: ignore[arg-type]
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    cached.refresh()
    cached.list_versions("m")
    cached.refresh()
    cached.list_versions("m")
    assert counting.reads == 2  # list_versions, twice (nothing else is read along)
