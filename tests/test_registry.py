"""ModelRegistry behaviour a user relies on, including every failure path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from uniflow import (
    InvalidNameError,
    InvalidStageError,
    InvalidVersionError,
    ModelNotFoundError,
    ModelRegistry,
    ModelStage,
    StageEmptyError,
    UsageError,
    VersionExistsError,
    VersionNotFoundError,
)


def test_model_stage_accepts_names_case_insensitively() -> None:
    assert ModelStage("Production") is ModelStage.PRODUCTION
    assert ModelStage("STAGING") is ModelStage.STAGING
    with pytest.raises(ValueError):
        ModelStage("prod")


def test_register_returns_a_full_model_version(registry: ModelRegistry, weights) -> None:
    v = registry.register(
        model=weights(1),
        name="clf",
        version="v1.0.0",
        framework="onnx",
        metrics={"acc": np.float32(0.5)},
        tags={"team": "nlp"},
        params={"lr": 0.1},
        description="baseline",
    )
    assert (v.name, v.version, v.stage, v.framework) == ("clf", "v1.0.0", "development", "onnx")
    assert v.metrics == {"acc": 0.5} and v.tags == {"team": "nlp"} and v.params == {"lr": 0.1}
    assert v.description == "baseline" and v.author == "Test User <test@example.com>"
    assert v.size == 50_001 and len(v.digest) == 64 and v.files[0].path == "w1.bin"
    assert v.code_commit and v.branch == "main" and v.created_at.tzinfo is not None
    assert v.to_dict()["files"][0]["size"] == 50_001


def test_versions_auto_bump_and_newest_is_the_default(registry: ModelRegistry, weights) -> None:
    assert registry.register(model=weights(1), name="m").version == "v1.0.0"
    assert registry.register(model=weights(2), name="m").version == "v1.0.1"
    registry.register(model=weights(3), name="m", version="2.0.0-rc.1")
    newest = weights(4)
    assert registry.register(model=newest, name="m").version == "2.0.0"
    assert registry.get("m").version == "2.0.0"
    assert [v.version for v in registry.list_versions("m")] == ["v1.0.0", "v1.0.1", "2.0.0-rc.1", "2.0.0"]
    assert Path(registry.load("m")).read_bytes() == newest.read_bytes()


def test_identical_content_returns_existing_different_content_raises(
    registry: ModelRegistry, weights
) -> None:
    f = weights(1)
    first = registry.register(model=f, name="m", version="v1.0.0")
    again = registry.register(model=f, name="m", version="v1.0.0")
    assert again.digest == first.digest and again.created_at == first.created_at
    assert len(registry.history("m")) == 1
    with pytest.raises(VersionExistsError, match="already exists"):
        registry.register(model=weights(2), name="m", version="v1.0.0")
    assert Path(registry.load("m", "v1.0.0")).read_bytes() == f.read_bytes()


@pytest.mark.parametrize("name", ["", "Upper", "a/b", "../x", "a..b", "x.lock", "-x", "a b", None, "é"])
def test_invalid_model_names(registry: ModelRegistry, weights, name) -> None:
    with pytest.raises(InvalidNameError):
        registry.register(model=weights(1), name=name, version="v1.0.0")


@pytest.mark.parametrize("version", ["1", "v1.0", "1.0.0.0", "latest", "v01.0.0", "1.0.0-", "v1.0.0/x"])
def test_invalid_versions(registry: ModelRegistry, weights, version) -> None:
    with pytest.raises(InvalidVersionError):
        registry.register(model=weights(1), name="m", version=version)


def test_unknown_things_are_clear_errors(registry: ModelRegistry, weights) -> None:
    registry.register(model=weights(1), name="m", version="v1.0.0")
    with pytest.raises(ModelNotFoundError, match="'nope'"):
        registry.load("nope")
    with pytest.raises(VersionNotFoundError, match="v9.9.9"):
        registry.get("m", "v9.9.9")
    with pytest.raises(StageEmptyError, match="production"):
        registry.load("m", stage="production")
    with pytest.raises(InvalidStageError, match="expected one of"):
        registry.promote("m", "v1.0.0", "prod")
    with pytest.raises(UsageError):
        registry.rollback("m", "production")
    with pytest.raises(UsageError):
        registry.compare_versions("m", ["v1.0.0"])
    with pytest.raises(UsageError):
        registry.register(model=weights(2), name="m", metrics=[1, 2])  # type: ignore[arg-type]
    from uniflow import InvalidPathError

    with pytest.raises(InvalidPathError):
        registry.register(model=Path("/does/not/exist"), name="m")


def test_promotion_displaces_archives_and_rolls_back(registry: ModelRegistry, weights) -> None:
    for i in range(3):
        registry.register(model=weights(i), name="m", version=f"v1.{i}.0")
    registry.promote("m", "v1.0.0", ModelStage.PRODUCTION)
    registry.promote("m", "v1.1.0", "staging")
    registry.promote("m", "v1.1.0", "production")
    assert registry.get("m", "v1.0.0").stage == "archived"
    assert registry.get("m", stage="production").version == "v1.1.0"
    with pytest.raises(StageEmptyError):
        registry.get("m", stage="staging")
    registry.promote("m", "v1.2.0", "production")
    assert registry.rollback("m", "production").version == "v1.1.0"
    assert registry.rollback("m", ModelStage.PRODUCTION).version == "v1.0.0"
    assert registry.get("m", "v1.2.0").stage == "archived"
    registry.archive("m", "v1.0.0")
    with pytest.raises(StageEmptyError):
        registry.load("m", stage="production")
    assert [v.version for v in registry.list_versions("m", stage="archived")] == [
        "v1.0.0",
        "v1.1.0",
        "v1.2.0",
    ]
    actions = [e.action for e in registry.history("m")]
    assert actions == ["register"] * 3 + ["promote"] * 4 + ["rollback", "rollback", "archive"]
    summary = registry.list_models()[0]
    assert (summary.name, summary.latest, summary.versions, summary.stages) == ("m", "v1.2.0", 3, {})


def test_development_stage_loads_newest_development_version(registry: ModelRegistry, weights) -> None:
    a, b = weights(1), weights(2)
    registry.register(model=a, name="m", version="v1.0.0")
    registry.register(model=b, name="m", version="v1.1.0")
    registry.promote("m", "v1.1.0", "staging")
    assert Path(registry.load("m", stage="development")).read_bytes() == a.read_bytes()


def test_custom_stages_from_config(registry: ModelRegistry, weights) -> None:
    registry.init()
    (registry.uniflow_dir / "config.toml").write_text(
        "[stages.canary]\nsingle = true\n[stages.shadow]\nsingle = false\n"
    )
    reg = ModelRegistry(registry.root)
    for i in range(3):
        reg.register(model=weights(i), name="m", version=f"v1.{i}.0")
    reg.promote("m", "v1.0.0", "Canary")
    reg.promote("m", "v1.1.0", "canary")
    assert reg.get("m", "v1.0.0").stage == "archived"
    reg.promote("m", "v1.0.0", "shadow")
    reg.promote("m", "v1.2.0", "shadow")
    assert {v.version for v in reg.list_versions("m", stage="shadow")} == {"v1.0.0", "v1.2.0"}
    assert reg.stages()["canary"] is True and reg.stages()["shadow"] is False


def test_directory_models_and_export(registry: ModelRegistry, tmp_path: Path) -> None:
    d = tmp_path / "bundle"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text('{"a": 1}')
    (d / "sub" / "weights.bin").write_bytes(os.urandom(10_000))
    (d / "run.sh").write_text("#!/bin/sh\n")
    (d / "run.sh").chmod(0o755)
    registry.register(model=d, name="bundle", version="v1.0.0")
    loaded = registry.load("bundle")
    assert (loaded / "sub" / "weights.bin").read_bytes() == (d / "sub" / "weights.bin").read_bytes()
    out = registry.export("bundle", tmp_path / "out")
    assert (out / "config.json").read_text() == '{"a": 1}'
    assert os.access(out / "run.sh", os.X_OK)
    (out / "config.json").write_text("edited")  # an export is the user's own writable copy
    assert (registry.load_path("bundle") / "config.json").read_text() == '{"a": 1}'


def test_outside_a_git_repository_one_is_initialised(tmp_path: Path, monkeypatch, caplog, weights) -> None:
    plain = tmp_path / "notebook"
    plain.mkdir()
    monkeypatch.chdir(plain)
    with caplog.at_level("WARNING", logger="uniflow"):
        reg = ModelRegistry()
    assert (plain / ".git").is_dir() and "initialising" in caplog.text
    src = weights(1)
    v = reg.register(model=src, name="m", version="v1.0.0")
    assert v.code_commit is None
    assert Path(reg.load("m")).read_bytes() == src.read_bytes()


def test_compare_versions_table_and_dict(registry: ModelRegistry, weights) -> None:
    registry.register(
        model=weights(1),
        name="m",
        version="v1.0.0",
        metrics={"acc": 0.9, "f1": 0.8},
        params={"lr": 0.1},
        tags={"data": "2024"},
    )
    registry.register(
        model=weights(2), name="m", version="v1.1.0", metrics={"acc": 0.92}, params={"lr": 0.05}
    )
    c = registry.compare_versions("m", ["v1.0.0", "v1.1.0"])
    d = c.to_dict()
    acc = next(r for r in d["sections"]["metrics"] if r["key"] == "acc")
    assert acc["values"] == [0.9, 0.92] and abs(acc["delta"][1] - 0.02) < 1e-9
    assert next(r for r in d["sections"]["metrics"] if r["key"] == "f1")["values"] == [0.8, None]
    assert next(r for r in d["sections"]["params"] if r["key"] == "lr")["changed"] is True
    text = str(c)
    assert "acc" in text and "+0.02" in text and "lr" in text and "data" in text
    assert d["shared_bytes"] == {"v1.0.0": 50_001, "v1.1.0": 0}


def test_gc_keeps_reachable_spares_young_and_deletes_garbage(registry: ModelRegistry, weights) -> None:
    src = weights(1)
    registry.register(model=src, name="m", version="v1.0.0")
    orphan = registry.store.put_bytes(os.urandom(1000))
    report = registry.gc(dry_run=False, grace_seconds=3600)
    assert report.spared_young == 1 and report.deleted_chunks == 0
    dry = registry.gc(dry_run=True, grace_seconds=0)
    assert dry.unreachable_chunks == 1 and registry.store.has(orphan.chunks[0].digest)
    registry.gc(dry_run=False, grace_seconds=0)
    assert not registry.store.has(orphan.chunks[0].digest)
    assert registry.verify().problems == ()
    assert Path(registry.load("m")).read_bytes() == src.read_bytes()


def test_gc_drops_chunks_and_cache_of_a_deleted_version(registry: ModelRegistry, weights) -> None:
    from tests.helpers import git

    a, b = weights(1), weights(2)
    registry.register(model=a, name="m", version="v1.0.0")
    registry.register(model=b, name="m", version="v1.1.0")
    registry.load("m", "v1.0.0")
    registry.load("m", "v1.1.0")
    git(registry.root, "tag", "-d", "models/m/v1.0.0")
    report = registry.gc(dry_run=False, grace_seconds=0)
    assert report.deleted_chunks >= 1
    assert report.cache_removed == 2  # v1.0.0's materialized file and its version tree
    fresh = ModelRegistry(registry.root)
    assert Path(fresh.load("m", "v1.1.0")).read_bytes() == b.read_bytes()
    assert fresh.verify().problems == ()
