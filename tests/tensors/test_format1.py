"""Versions registered before manifest format 2 keep loading; a diff involving one says it has
no tensor data instead of failing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import GIT_ENV, ROOT, cli, git
from tests.tensors._util import TinyLM, fine_tune_head, tiny_lm
from uniflow import ModelRegistry

#: the last commit whose registry wrote manifest format 1
FORMAT_1_COMMIT = "dd7dcd8"


def _register_format_1(registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch, model, version: str) -> None:
    """Register as uniflow 0.1 did: format 1, no tensor lists."""
    from uniflow._ops import register as _register
    from uniflow._records import tensors as _tensors

    with monkeypatch.context() as mp:
        mp.setattr(_register, "MANIFEST_FORMAT", 1)
        mp.setattr(_tensors, "scan_for", lambda path: None)
        registry.register(model, "lm", version=version)


def test_diff_with_a_format_1_version_says_no_tensor_data(
    registry: ModelRegistry, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_lm()
    _register_format_1(registry, monkeypatch, model, "v1.0.0")
    registry.register(fine_tune_head(model), "lm", version="v1.1.0")
    diff = registry.diff("lm", "v1.0.0", "v1.1.0")
    (f,) = diff.files
    assert f.status == "changed" and f.tensors is None
    assert f.note == "no tensor data in v1.0.0 (registered with manifest format 1)"
    assert diff.summary["tensor_data"] == "none"
    assert diff.summary["line"] == (
        "no tensor data: v1.0.0 was registered with manifest format 1, which records no tensor data"
    )
    out = cli(repo, "models", "diff", "lm", "v1.0.0", "v1.1.0").stdout
    assert "no tensor data in v1.0.0" in out and out.rstrip().endswith("which records no tensor data")
    data = json.loads(cli(repo, "models", "diff", "lm", "v1.0.0", "v1.1.0", "--json").stdout)
    assert data["files"][0]["tensors"] is None and data["summary"]["tensor_data"] == "none"
    assert cli(repo, "models", "diff", "lm", "v1.0.0", "v1.1.0", "--stats").returncode == 0
    rows = {r["key"]: r for r in registry.compare_versions("lm", ["v1.0.0", "v1.1.0"]).rows["info"]}
    assert rows["tensors (vs first)"]["values"][0] == "no tensor data"
    assert rows["tensors (vs first)"]["values"][1].startswith("no tensor data")
    # and the format-1 version itself loads as before
    loaded = registry.load("lm", "v1.0.0", model=TinyLM())
    assert all(
        p.equal(q) for p, q in zip(loaded.state_dict().values(), tiny_lm().state_dict().values(), strict=True)
    )


def test_a_repository_written_by_the_format_1_code_keeps_loading(tmp_path: Path, repo: Path) -> None:
    """The registry code of the last format-1 commit registers a model in a subprocess; this
    code reads, loads, lists and diffs it."""
    probe = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "-q", f"{FORMAT_1_COMMIT}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"commit {FORMAT_1_COMMIT} is not in this clone's history")
    old = tmp_path / "old"
    old.mkdir()
    archive = subprocess.run(
        [
            "git",
            "-C",
            str(ROOT),
            "archive",
            FORMAT_1_COMMIT,
            "uniflow",
            "tests/_models.py",
            "tests/__init__.py",
        ],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    code = (
        "from tests._models import trained_sentiment_net\n"
        "from uniflow import ModelRegistry\n"
        "ModelRegistry('.').register(trained_sentiment_net(), 'clf', 'v1.0.0')\n"
    )
    import os

    env = {**os.environ, **GIT_ENV, "PYTHONPATH": str(old)}
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    reg = ModelRegistry(repo)
    assert reg.repository.manifest("clf", "v1.0.0").format == 1
    from tests._models import SentimentNet, trained_sentiment_net

    loaded = reg.load("clf", "v1.0.0", model=SentimentNet())
    assert all(
        p.equal(q)
        for p, q in zip(
            loaded.state_dict().values(), trained_sentiment_net().state_dict().values(), strict=True
        )
    )
    reg.register(trained_sentiment_net(seed=1), "clf", version="v1.1.0")
    assert "no tensor data" in reg.diff("clf", "v1.0.0", "v1.1.0").summary["line"]
    assert "v1.0.0" in cli(repo, "models", "list", "clf").stdout
    git(repo, "fsck", "--strict")  # asserts success
