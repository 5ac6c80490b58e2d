"""Typed public results (issue 10): verify, gc, push, pull and promote-on-merge return frozen
dataclasses whose ``to_dict()`` is the ``--json`` document; ``register`` is keyword-only after
``name``; ``push``/``pull`` spell out their parameters; no ``KeyError`` escapes."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from pathlib import Path

import pytest

from tests.helpers import cli, flip_stored_byte, git, model_dir, open_pack_files, stored_chunks
from uniflow import (
    ChunkStats,
    GcReport,
    IntegrityError,
    ModelRegistry,
    PromoteReport,
    PromoteResult,
    PullReport,
    PushReport,
    RemoteError,
    VerifyProblem,
    VerifyReport,
    VersionNotFoundError,
)


# ---------------------------------------------------------------------- verify
def test_verify_returns_a_report_whose_to_dict_is_the_cli_json(registry: ModelRegistry, weights) -> None:
    registry.register(weights(1), "m", version="v1.0.0")
    report = registry.verify()
    assert isinstance(report, VerifyReport) and report.ok and report.problems == () and report.name is None
    assert registry.verify("m").to_dict() == {"ok": True, "name": "m", "problems": []}
    assert json.loads(cli(registry.root, "verify", "m", "--json").stdout) == registry.verify("m").to_dict()


def test_verify_tells_a_missing_chunk_from_a_corrupted_one(registry: ModelRegistry, tmp_path: Path) -> None:
    src = model_dir(tmp_path / "src", 2)  # two files of one chunk each
    # the first file's chunk stored before the register (which finds it): one pack each
    registry.store.put_file(src / "part-000.bin")
    registry.register(str(src), "m", version="v1.0.0")
    # each file is one chunk: its chunk's name -> its path
    files = {f.chunks[0][0].hex(): f.path for f in registry.repository.manifest("m", "v1.0.0").files}
    gone, flipped = stored_chunks(registry.store)
    assert gone.path != flipped.path
    gone.path.unlink()  # its pack and index: the chunk is in no file of the store
    gone.path.with_suffix(".idx").unlink()
    flip_stored_byte(flipped, flipped.length - 1)
    report = ModelRegistry(registry.root).verify()
    assert not report.ok
    by_chunk = {p.chunk: p for p in report.problems}
    digest = gone.digest
    assert by_chunk[digest] == VerifyProblem("m", "v1.0.0", files[digest], digest, "missing")
    assert by_chunk[flipped.digest].problem == "corrupted"
    r = cli(registry.root, "verify", "--json", code=5)
    assert json.loads(r.stdout) == report.to_dict()
    assert {p["problem"] for p in json.loads(r.stdout)["problems"]} == {"missing", "corrupted"}


def test_reports_are_frozen(registry: ModelRegistry) -> None:
    report = registry.verify()
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.name = "other"  # type: ignore[misc]


# ---------------------------------------------------------------------- gc
def test_gc_reports_bytes_freed_under_one_key_dry_run_or_not(registry: ModelRegistry, weights) -> None:
    registry.register(weights(1), "m", version="v1.0.0")
    registry.store.put_bytes(os.urandom(20_000))  # an orphan: no version names it
    orphan_bytes = sum(c.length for c in stored_chunks(registry.store)) - sum(
        c.length for c in stored_chunks(registry.store) if c.digest in _live(registry)
    )
    assert orphan_bytes > 0

    dry = json.loads(cli(registry.root, "gc", "--json", "--grace", "0s").stdout)
    assert dry["dry_run"] is True and dry["bytes_freed"] == orphan_bytes and "bytes_to_free" not in dry
    assert dry["deleted_chunks"] == 0
    report = registry.gc(dry_run=False, grace_seconds=0)
    assert isinstance(report, GcReport) and report.dry_run is False
    assert report.bytes_freed == orphan_bytes and report.deleted_chunks == 1
    assert list(report.to_dict()) == list(dry)  # the same keys, in the same order
    again = registry.gc(dry_run=True, grace_seconds=0)
    assert again.bytes_freed == 0 and again.unreachable_chunks == 0
    assert registry.verify().ok


def _live(registry: ModelRegistry) -> set[str]:
    from uniflow._records.manifest import file_records

    return {
        c.digest
        for v in registry.list_versions("m")
        for _rel, rec, _mode in file_records(registry.repository.manifest("m", v.version))
        for c in rec.chunks
    }


def test_gc_text_output_says_to_free_on_a_dry_run_and_freed_otherwise(
    registry: ModelRegistry, weights
) -> None:
    registry.register(weights(1), "m", version="v1.0.0")
    registry.store.put_bytes(os.urandom(5_000))
    assert "bytes to free" in cli(registry.root, "gc", "--grace", "0s").stdout
    out = cli(registry.root, "gc", "--yes", "--grace", "0s").stdout
    assert "bytes freed" in out and "bytes to free" not in out


# ---------------------------------------------------------------------- shapes of push, pull, promote
def test_push_pull_and_promote_reports_serialise_to_the_documented_json() -> None:
    chunks = ChunkStats(wanted=3, present=1, transferred=2, bytes=10)
    push = PushReport(
        remote="origin",
        blob_remote="origin",
        models=None,
        versions=("m/v1.0.0",),
        lifecycle=("m",),
        behind=(),
        refs=3,
        chunks=chunks,
        up_to_date=False,
    )
    assert push.to_dict() == {
        "remote": "origin",
        "blob_remote": "origin",
        "models": None,
        "versions": ["m/v1.0.0"],
        "lifecycle": ["m"],
        "behind": [],
        "refs": 3,
        "chunks": {"wanted": 3, "present": 1, "transferred": 2, "bytes": 10},
        "up_to_date": False,
    }
    pull = PullReport(
        remote="origin",
        models={"m": "fast-forward", "x": "rejected"},
        versions=(),
        chunks=ChunkStats(),
        rejected={"x": "lifecycle commit abc names an undeclared stage"},
    )
    assert pull.to_dict() == {
        "remote": "origin",
        "models": {"m": "fast-forward", "x": "rejected"},
        "versions": [],
        "chunks": {"wanted": 0, "present": 0, "transferred": 0, "bytes": 0},
        "rejected": {"x": "lifecycle commit abc names an undeclared stage"},
    }
    assert not pull.ok and PullReport("origin", {"m": "unchanged"}, (), ChunkStats(), {}).ok
    result = PromoteResult(
        rule=1,
        describe="clf staging -> production when accuracy >= 0.9",
        model="clf",
        to="production",
        version="v1.1.0",
        status="failed",
        detail="accuracy >= 0.9 failed",
    )
    promote = PromoteReport(
        base=None,
        head="h" * 40,
        commits=2,
        rules=1,
        results=(result,),
        promoted=0,
        pushed=push,
        ci={"provider": "ci"},
    )
    assert promote.failures == (result,) and not promote.ok
    assert promote.to_dict() == {
        "base": None,
        "head": "h" * 40,
        "commits": 2,
        "rules": 1,
        "results": [
            {
                "rule": 1,
                "describe": "clf staging -> production when accuracy >= 0.9",
                "model": "clf",
                "to": "production",
                "version": "v1.1.0",
                "status": "failed",
                "detail": "accuracy >= 0.9 failed",
            }
        ],
        "promoted": 0,
        "pushed": push.to_dict(),
        "ci": {"provider": "ci"},
    }


def test_errors_carry_typed_results_and_keep_one_line_messages() -> None:
    report = PullReport("origin", {"m": "diverged"}, (), ChunkStats(), {})
    err = IntegrityError("pull from 'origin' rejected\nmodel 'x'", result=report)
    assert err.result is report and "\n" not in str(err) and err.exit_code == 5
    assert IntegrityError("plain").result is None and RemoteError("plain").result is None
    assert RemoteError("a\n b", result=report).result is report


# ---------------------------------------------------------------------- signatures
def test_register_is_keyword_only_after_name(registry: ModelRegistry, weights) -> None:
    params = inspect.signature(ModelRegistry.register).parameters
    assert [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD] == ["self", "model", "name"]
    assert list(params)[3:] == [
        "version",
        "framework",
        "metrics",
        "tags",
        "params",
        "description",
        "trust",
        "lineage",
        "progress",
        "provenance",
        "strict",
    ]
    with pytest.raises(TypeError):
        registry.register(weights(1), "m", "v1.0.0")  # type: ignore[misc]
    assert registry.list_models() == []
    mv = registry.register(weights(1), "m", version="v1.0.0", metrics={"acc": 0.5})
    assert (mv.version, mv.metrics) == ("v1.0.0", {"acc": 0.5})


@pytest.mark.parametrize(
    "method, impl", [("push", "uniflow.sharing.push:push"), ("pull", "uniflow.sharing.pull:pull")]
)
def test_push_and_pull_spell_out_every_parameter_of_the_sharing_layer(method: str, impl: str) -> None:
    import importlib

    module, _, func = impl.partition(":")
    facade = inspect.signature(getattr(ModelRegistry, method)).parameters
    inner = inspect.signature(getattr(importlib.import_module(module), func)).parameters
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in facade.values())
    assert list(facade)[1:] == list(inner)[1:]  # all but self / repo, in order
    for name in list(inner)[1:]:
        assert (facade[name].kind, facade[name].default) == (inner[name].kind, inner[name].default), name
    doc = inspect.getdoc(getattr(ModelRegistry, method)) or ""
    for name in list(inner)[1:]:
        assert f"``{name}" in doc, f"ModelRegistry.{method} does not document {name}"


def test_push_and_pull_refuse_unknown_keywords(registry: ModelRegistry) -> None:
    with pytest.raises(TypeError):
        registry.push(all=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        registry.pull(ours=True)  # type: ignore[call-arg]


# ---------------------------------------------------------------------- no KeyError escapes
def test_a_version_without_a_tag_is_version_not_found_not_key_error(registry: ModelRegistry, weights) -> None:
    registry.register(weights(1), "m", version="v1.0.0")
    with pytest.raises(VersionNotFoundError, match="has no version 'v9.9.9'"):
        registry.repository.index.manifest("m", "v9.9.9")
    git(registry.root, "tag", "-d", "models/m/v1.0.0")
    with pytest.raises(VersionNotFoundError):
        registry.repository.manifest("m", "v1.0.0")


def test_a_missing_lifecycle_commit_is_an_integrity_error(registry: ModelRegistry, weights) -> None:
    registry.register(weights(1), "m", version="v1.0.0")
    ref = registry.git.git_dir / "refs" / "uniflow" / "models" / "m"
    git(registry.root, "pack-refs", "--all")
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text("1" * 40 + "\n")  # a ref naming an object this repository does not have
    fresh = ModelRegistry(registry.root)
    with pytest.raises(IntegrityError, match="111111111111.*missing"):
        list(fresh.repository.lifecycle.events("m"))
    problems = fresh.verify("m").problems
    assert problems and all(
        p.problem.startswith("lifecycle unreadable") for p in problems if p.version is None
    )


# ---------------------------------------------------------------------- close / context manager
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to list open files")
def test_the_registry_is_a_context_manager_that_closes_its_pack_files(repo: Path, weights) -> None:
    with ModelRegistry(repo) as registry:
        registry.register(weights(1), "m", version="v1.0.0")
    git(repo, "gc", "-q")  # version objects now live in a pack file
    packs_before = len(open_pack_files(repo))
    with ModelRegistry(repo) as registry:
        assert registry.get("m").version == "v1.0.0" and registry.history("m")
        assert len(open_pack_files(repo)) > packs_before  # reading opened the pack
    assert len(open_pack_files(repo)) == packs_before  # ... and leaving the block closed it
    registry.close()  # idempotent
    assert registry.get("m").version == "v1.0.0"  # a closed registry reopens on use
    registry.close()
    assert len(open_pack_files(repo)) == packs_before


def test_register_on_a_damaged_head_is_an_integrity_error(repo: Path, weights) -> None:
    tree = git(repo, "rev-parse", "HEAD^{tree}").strip()
    (repo / ".git" / "objects" / tree[:2] / tree[2:]).unlink()  # HEAD's tree object is gone
    with pytest.raises(IntegrityError, match=r"\(HEAD\) are missing; run 'git fsck'"):
        ModelRegistry(repo).register(weights(1), "m", version="v1.0.0")
    r = cli(repo, "models", "register", str(weights(2)), "--name", "m", code=5)
    assert r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1
