"""The core additions importers rely on, and the name rules (no MLflow or GTO needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers import git
from uniflow import ModelRegistry
from uniflow._errors import InvalidNameError, UsageError
from uniflow._records.lifecycle import promote_transition
from uniflow._types import Provenance
from uniflow.importers import map_model_name
from uniflow.importers._common import identity_of, map_stage_name
from uniflow.importers.gto import parse_gto_tag
from uniflow.importers.mlflow import mlflow_version

WHEN = datetime(2023, 5, 4, 3, 2, 1, tzinfo=UTC)


def test_register_with_provenance(repo: Path, tmp_path: Path) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"weights")
    old = git(repo, "rev-parse", "HEAD").strip()
    (repo / "more.py").write_text("x = 1\n")
    git(repo, "add", "more.py")
    git(repo, "commit", "-q", "-m", "later")
    reg = ModelRegistry(repo)
    mv = reg.register(
        f,
        "clf",
        version="v1.0.0",
        provenance=Provenance(
            ("Ann Lee", "ann@example.com"), WHEN, old, {"imported_from": "test", "import_key": "k1"}
        ),
    )
    assert mv.author == "Ann Lee <ann@example.com>" and mv.created_at == WHEN
    assert mv.code_commit == old and mv.branch is None and mv.dirty is False
    assert git(repo, "rev-parse", "models/clf/v1.0.0^{commit}^1").strip() == old
    (ev,) = reg.history("clf")
    assert ev.at == WHEN and ev.actor == "Ann Lee <ann@example.com>"
    assert ev.extra == {"imported_from": "test", "import_key": "k1"}
    # the same bytes again: the existing version, no second register event
    reg.register(f, "clf", version="v1.0.0", provenance=Provenance(("Ann Lee", "ann@example.com"), WHEN, old))
    assert len(reg.history("clf")) == 1


def test_lifecycle_apply_at(registry: ModelRegistry, tmp_path: Path) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"w")
    registry.register(f, "clf", version="v1.0.0")
    lc = registry.repository.lifecycle
    lc.apply("clf", promote_transition("v1.0.0", "staging", True), ("Bo", "bo@example.com"), at=WHEN)
    ev = registry.history("clf")[-1]
    assert (ev.at, ev.actor, ev.to_stage) == (WHEN, "Bo <bo@example.com>", "staging")
    with pytest.raises(UsageError, match="time zone"):
        lc.apply(
            "clf",
            promote_transition("v1.0.0", "production", True),
            ("Bo", "b@x.org"),
            at=datetime(2020, 1, 1),
        )


@pytest.mark.parametrize(
    "source, expected",
    [
        ("clf", "clf"),
        ("Fraud Detector", "fraud-detector"),
        ("my_model.v2", "my_model.v2"),
        ("team/churn:model", "team-churn-model"),
        ("__Private Model__", "private-model__"),
        ("x" * 200, "x" * 128),
    ],
)
def test_model_name_rule(source: str, expected: str) -> None:
    assert map_model_name(source) == expected


@pytest.mark.parametrize("source", ["", "///", "名前", "a..b", "model.lock"])
def test_unmappable_names_are_refused(source: str) -> None:
    with pytest.raises(InvalidNameError, match="cannot map model name"):
        map_model_name(source)


def test_stage_and_version_and_identity_rules() -> None:
    assert map_stage_name("Champion") == "champion" and map_stage_name("Production") == "production"
    with pytest.raises(UsageError):
        map_stage_name("blue green")
    assert mlflow_version("7") == "v7.0.0" and mlflow_version(12) == "v12.0.0"
    with pytest.raises(UsageError):
        mlflow_version("7a")
    assert identity_of("ann@example.com") == ("ann@example.com", "ann@example.com")
    assert identity_of("Evil <x>\nAuthor: y") == ("Evil x Author: y", "Evil-x-Author--y@imported.invalid")
    assert identity_of(None, None, "mlflow") == ("mlflow", "mlflow@imported.invalid")


def test_gto_tag_grammar() -> None:
    t = parse_gto_tag("churn@v1.2.3")
    assert t is not None and (t.action, t.artifact, t.version) == ("register", "churn", "v1.2.3")
    assert parse_gto_tag("churn@v1.2.3!").action == "deregister"  # type: ignore[union-attr]
    t = parse_gto_tag("churn#prod#4")
    assert t is not None and (t.action, t.stage, t.counter) == ("assign", "prod", 4)
    assert parse_gto_tag("churn#prod!#5").action == "unassign"  # type: ignore[union-attr]
    assert parse_gto_tag("churn@deprecated#6").action == "deprecate"  # type: ignore[union-attr]
    t = parse_gto_tag("models/nlp=churn@v0.1.0")
    assert t is not None and t.artifact == "models/nlp:churn"
    for other in ("v1.0.0", "release-1", "churn@1.0.0", "Churn@v1.0.0", "churn#Prod#1", "churn@v1.0.0\n"):
        assert parse_gto_tag(other) is None, other


def test_import_into_a_registry_read_by_url_is_refused_up_front(tmp_path: Path) -> None:
    """A registry read by Git URL is read-only: both imports refuse with the one line every
    write gives (exit 8), before reading the source (GTO said 'git for-each-ref: fatal: not a
    git repository'; MLflow read the whole source first)."""
    from tests.helpers import cli

    bare = tmp_path / "srv" / "models.git"
    bare.parent.mkdir()
    git(bare.parent, "init", "-q", "--bare", str(bare))
    (tmp_path / "mlruns").mkdir()  # never looked at
    cache = {"UNIFLOW_CACHE_DIR": str(tmp_path / "cache")}
    for args in (["gto"], ["gto", "--dry-run"], ["mlflow", "--tracking-uri", str(tmp_path / "mlruns")]):
        r = cli(tmp_path, "--repo", f"file://{bare}", "import", *args, code=8, env=cache)
        assert "read-only" in r.stderr and "cannot import" in r.stderr and r.stderr.count("\n") == 1
    assert list((tmp_path / "mlruns").iterdir()) == []
