"""The overview and model pages read the listing index and each model's last event only:
they must be the very pages built from every manifest and the whole history."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import git
from uniflow import ModelRegistry
from uniflow.ui import views
from uniflow.ui.cache import CachedRegistry
from uniflow.ui.render import Links, render_page

NOW = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)


class _FixedNow(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return NOW


class FromManifests:
    """The reads the pages made before the index: every manifest, the whole history."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.root = registry.root

    def __getattr__(self, name: str) -> Any:
        return getattr(self.registry, name)

    def version_rows(self, name: str, stage: Any = None) -> Any:
        return self.registry.list_versions(name, stage=stage)

    def history(self, name: str, *, last: int | None = None) -> Any:
        events = self.registry.history(name)
        return events if last is None else events[len(events) - last :]


def _pages(reader: Any) -> dict[str, str]:
    links = Links()
    rows = views.overview(reader)
    out = {
        "/": render_page("overview.html", links, repo="demo", generated=None, rows=rows, crumbs=[], api=None)
    }
    for row in rows:
        for query in ({}, {"stage": "production"}, {"sort": "created", "desc": True}):
            data = views.model_page(reader, row.name, **query)
            out[f"{row.name} {query}"] = render_page(
                "model.html", links, repo="demo", generated=None, crumbs=[], api=None, **data
            )
        for mv in reader.version_rows(row.name)[-2:]:
            data = views.version_page(reader, row.name, mv.version)
            out[f"{row.name}/{mv.version}"] = render_page(
                "version.html", links, repo="demo", generated=None, crumbs=[], api=None, **data
            )
    return out


def test_pages_from_the_index_are_the_pages_from_the_manifests(
    demo_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "datetime", _FixedNow)
    repo = tmp_path / "demo"
    git(tmp_path, "clone", "-q", str(demo_repo), str(repo))  # a copy this test may change
    for ref in ("refs/uniflow/models/*", "refs/tags/models/*"):
        git(repo, "fetch", "-q", "origin", f"+{ref}:{ref}")
    reg = ModelRegistry(repo)
    expected = _pages(FromManifests(reg))
    assert len(expected) > 10 and any("production" in page for page in expected.values())
    for _ in range(2):  # the index is built, then read back
        cached = CachedRegistry(ModelRegistry(repo))
        cached.refresh()
        assert _pages(cached) == expected
    # the newest version deleted by plain git, then every ref packed: still the same pages
    name = next(iter(reg.list_models())).name
    newest = reg.list_versions(name)[-1].version
    git(repo, "tag", "-d", f"models/{name}/{newest}")
    git(repo, "pack-refs", "--all")
    expected = _pages(FromManifests(ModelRegistry(repo)))
    cached = CachedRegistry(ModelRegistry(repo))
    cached.refresh()
    assert _pages(cached) == expected
