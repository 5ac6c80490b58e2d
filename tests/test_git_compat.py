"""Our records are plain Git: the real git binary reads and checks them."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import git
from uniflow import ModelRegistry, ModelStage


def _two_versions(registry: ModelRegistry, tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(os.urandom(100_000))
    registry.register(model=f, name="clf", version="v1.0.0", metrics={"accuracy": 0.91}, tags={"team": "nlp"})
    (registry.root / "train.py").write_text("print('better training')\n")
    git(registry.root, "commit", "-qam", "tune learning rate")
    f.write_bytes(os.urandom(100_000))
    registry.register(model=f, name="clf", version="v1.1.0", metrics={"accuracy": 0.93})
    registry.promote("clf", "v1.0.0", ModelStage.STAGING)
    registry.promote("clf", "v1.0.0", ModelStage.PRODUCTION)
    registry.promote("clf", "v1.1.0", "production", reason="better accuracy")
    registry.rollback("clf", "production")


def test_fsck_strict_is_clean(registry: ModelRegistry, tmp_path: Path) -> None:
    _two_versions(registry, tmp_path)
    out = git(registry.root, "fsck", "--strict", "--no-dangling")
    assert out.strip() == ""


def test_git_log_of_lifecycle_ref_reads_as_promotion_history(registry: ModelRegistry, tmp_path: Path) -> None:
    _two_versions(registry, tmp_path)
    log = git(registry.root, "log", "--format=%s", "refs/uniflow/models/clf").splitlines()
    assert log == [
        "rollback clf v1.0.0: archived -> production (v1.1.0 -> archived)",
        "promote clf v1.1.0: development -> production (v1.0.0 -> archived)",
        "promote clf v1.0.0: staging -> production",
        "promote clf v1.0.0: development -> staging",
        "register clf v1.1.0: -> development",
        "register clf v1.0.0: -> development",
    ]
    assert "Test User" in git(registry.root, "log", "-1", "--format=%an", "refs/uniflow/models/clf")


def test_git_show_of_a_version_tag_is_a_readable_card(registry: ModelRegistry, tmp_path: Path) -> None:
    _two_versions(registry, tmp_path)
    shown = git(registry.root, "show", "--stat", "models/clf/v1.0.0")
    assert "# clf v1.0.0" in shown
    assert "- accuracy: 0.91" in shown and '- team: "nlp"' in shown
    assert ".uniflow/card/README.md" in shown
    # the version commit's parent is the code commit it was registered from
    parent = git(registry.root, "rev-parse", "models/clf/v1.1.0^{commit}^").strip()
    assert parent == git(registry.root, "rev-parse", "main").strip()
    assert "tune learning rate" in git(registry.root, "log", "--format=%s", "models/clf/v1.1.0^{commit}")
    # diffing two versions reads well: code change plus card change
    diff = git(
        registry.root,
        "diff",
        "models/clf/v1.0.0",
        "models/clf/v1.1.0",
        "--",
        "train.py",
        ".uniflow/card/README.md",
    )
    assert "+print('better training')" in diff
    assert "-- accuracy: 0.91" in diff and "+- accuracy: 0.93" in diff


def test_stage_pointer_shows_the_production_model(registry: ModelRegistry, tmp_path: Path) -> None:
    _two_versions(registry, tmp_path)
    shown = git(registry.root, "show", "--no-patch", "refs/uniflow/stages/clf/production")
    assert "# clf v1.0.0" in shown
    refs = git(registry.root, "for-each-ref", "--format=%(refname)", "refs/uniflow", "refs/tags/models")
    assert set(refs.split()) == {
        "refs/uniflow/models/clf",
        "refs/uniflow/stages/clf/production",
        "refs/tags/models/clf/v1.0.0",
        "refs/tags/models/clf/v1.1.0",
    }


def test_model_tags_do_not_disturb_git_describe(registry: ModelRegistry, tmp_path: Path) -> None:
    git(registry.root, "tag", "-a", "1.2.3", "-m", "release")
    _two_versions(registry, tmp_path)
    assert git(registry.root, "describe", "--tags", "--abbrev=0").strip() == "1.2.3"


def test_dirty_working_tree_is_recorded(registry: ModelRegistry, tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 10)
    assert registry.register(model=f, name="d", version="v1.0.0").dirty is False
    (registry.root / "train.py").write_text("uncommitted change\n")
    f.write_bytes(b"y" * 10)
    v = registry.register(model=f, name="d", version="v1.0.1")
    assert v.dirty is True and v.code_commit == git(registry.root, "rev-parse", "HEAD").strip()


def test_packed_refs_are_read_like_loose_ones(registry: ModelRegistry, tmp_path: Path) -> None:
    _two_versions(registry, tmp_path)
    before = [(s.name, s.latest, s.stages) for s in registry.list_models()]
    git(registry.root, "pack-refs", "--all", "--prune")
    assert not (registry.git.git_dir / "refs" / "tags" / "models" / "clf" / "v1.0.0").exists()
    fresh = ModelRegistry(registry.root)
    assert [(s.name, s.latest, s.stages) for s in fresh.list_models()] == before
    assert [v.version for v in fresh.list_versions("clf")] == ["v1.0.0", "v1.1.0"]
    fresh.promote("clf", "v1.1.0", "staging")  # CAS on a ref that lives only in packed-refs
    assert ModelRegistry(registry.root).get("clf", stage="staging").version == "v1.1.0"
    assert git(registry.root, "fsck", "--strict", "--no-dangling").strip() == ""
