"""All or nothing (issue 9): a register refused or failing at any point leaves no version tag,
no register event and no stage pointer, so `uniflow verify` stays clean, the model still
lists, and a correct register of the same version succeeds afterwards.

Refusal points: a manifest larger than ``[limits] max_manifest_bytes`` (a huge description,
too many tags, too many metrics; the limit is lowered in config.toml so the manifests stay
small), more files than ``max_chunks``, the lifecycle ref write failing after the tag was
written (a real failure: a directory in the ref's place), and one version of an import (the
public register path with provenance) refused for its size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli, git, make_repo, model_dir, write_config
from uniflow import ModelRegistry
from uniflow._errors import UniflowError
from uniflow._types import Provenance

SMALL_MANIFEST = "[limits]\nmax_manifest_bytes = 8192\n"


def _refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "refs/tags/models", "refs/uniflow")


def _assert_untouched(repo: Path, before: str, model: str = "m") -> None:
    """Nothing new under refs/tags/models or refs/uniflow; verify and `models list` work."""
    assert _refs(repo) == before
    cli(repo, "verify")
    listed = cli(repo, "models", "list", model).stdout
    assert "v1.0.0" in listed and "v1.1.0" not in listed, listed


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, ModelRegistry, Path]:
    """A repository with ``m`` v1.0.0 registered (a good version to list), and a model dir."""
    repo = make_repo(tmp_path / "repo")
    write_config(repo, SMALL_MANIFEST)
    reg = ModelRegistry(repo)
    src = model_dir(tmp_path / "src", 2, size=1000, seed=1)
    reg.register(str(src), "m", version="v1.0.0")
    return repo, reg, src


@pytest.mark.parametrize(
    "extra",
    [
        {"description": "x" * 10_000},
        {"tags": {f"t{i:04d}": "v" * 20 for i in range(400)}},
        {"metrics": {f"m{i:04d}": float(i) for i in range(600)}},
    ],
    ids=["description", "tags", "metrics"],
)
def test_a_manifest_too_large_to_read_is_never_written(
    setup: tuple[Path, ModelRegistry, Path], extra: dict[str, Any]
) -> None:
    repo, reg, src = setup
    before = _refs(repo)
    with pytest.raises(UniflowError, match="max_manifest_bytes"):
        reg.register(str(src), "m", version="v1.1.0", **extra)
    _assert_untouched(repo, before)
    reg.register(str(src), "m", version="v1.1.0")  # the same version, within the limits
    cli(repo, "verify")
    assert "v1.1.0" in cli(repo, "models", "list", "m").stdout


def test_the_cli_refusal_is_one_line_and_leaves_nothing(setup: tuple[Path, ModelRegistry, Path]) -> None:
    repo, _reg, src = setup
    before = _refs(repo)
    r = cli(
        repo,
        *("models", "register", str(src), "--name", "m", "--version", "v1.1.0"),
        *("--description", "y" * 10_000),
        code=None,
    )
    assert r.returncode != 0 and "max_manifest_bytes" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    _assert_untouched(repo, before)


def test_too_many_files_is_refused_before_any_ref(
    setup: tuple[Path, ModelRegistry, Path], tmp_path: Path
) -> None:
    repo, reg, _src = setup
    write_config(repo, "[limits]\nmax_chunks = 3\n")
    reg.reload_config()
    before = _refs(repo)
    many = model_dir(tmp_path / "many", 5, size=1000, seed=2)
    with pytest.raises(UniflowError, match="max_chunks"):
        reg.register(str(many), "m", version="v1.1.0")
    _assert_untouched(repo, before)
    reg.register(str(model_dir(tmp_path / "few", 3, size=1000, seed=3)), "m", version="v1.1.0")
    cli(repo, "verify")


@pytest.mark.slow
def test_a_failed_lifecycle_write_takes_the_tag_back(tmp_path: Path) -> None:
    """The version tag is written, then the register event cannot be: a directory stands
    where the lifecycle ref would be created, so every compare-and-swap fails and the write
    gives up as "too many concurrent writers" (all its attempts: about 15 s). The tag this
    call wrote is deleted again. (A full disk at the same place: tests/adversarial/test_disk_full.py.)"""
    repo = make_repo(tmp_path / "repo")
    reg = ModelRegistry(repo)
    src = model_dir(tmp_path / "src", 2, size=1000, seed=4)
    reg.register(str(src), "m", version="v1.0.0")
    blocker = repo / ".git" / "refs" / "uniflow" / "models" / "n"
    blocker.mkdir(parents=True)
    before = _refs(repo)
    with pytest.raises(UniflowError, match="concurrent writers"):
        reg.register(str(src), "n", version="v1.0.0")
    assert _refs(repo) == before
    assert not (repo / ".git" / "refs" / "tags" / "models" / "n").exists() or not any(
        (repo / ".git" / "refs" / "tags" / "models" / "n").iterdir()
    )
    cli(repo, "verify")
    assert "v1.0.0" in cli(repo, "models", "list", "m").stdout
    shutil.rmtree(blocker)
    reg.register(str(src), "n", version="v1.0.0")  # the same version, now whole
    assert "register n v1.0.0: -> development" in git(repo, "log", "--format=%s", "refs/uniflow/models/n")
    cli(repo, "verify")
    assert "v1.0.0" in cli(repo, "models", "list", "n").stdout


def test_a_failed_import_of_one_version_leaves_nothing(setup: tuple[Path, ModelRegistry, Path]) -> None:
    """What an importer does for each version: register with provenance (original author,
    time, code commit, where it came from). One refused version leaves nothing of itself."""
    repo, reg, src = setup
    head = git(repo, "rev-parse", "HEAD").strip()
    prov = Provenance(
        author=("Original Author", "orig@example.com"),
        created_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        code_commit=head,
        event_extra={"imported_from": "gto:m@v1.1.0"},
    )
    before = _refs(repo)
    with pytest.raises(UniflowError, match="max_manifest_bytes"):
        reg.register(str(src), "m", version="v1.1.0", description="z" * 10_000, provenance=prov)
    _assert_untouched(repo, before)
    reg.register(str(src), "m", version="v1.1.0", provenance=prov)
    cli(repo, "verify")
    assert "imported_from" in git(repo, "show", "refs/uniflow/models/m:event.json")


def test_an_import_whose_register_event_is_too_large_to_read_leaves_nothing(
    setup: tuple[Path, ModelRegistry, Path],
) -> None:
    """The register event is read through its own gate (event.json at most MAX_EVENT_BYTES):
    an import recording more than that where it came from is refused before the tag."""
    from uniflow._records.lifecycle import MAX_EVENT_BYTES

    repo, reg, src = setup
    prov = Provenance(
        author=("Original Author", "orig@example.com"),
        created_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        event_extra={"imported_from": "q" * MAX_EVENT_BYTES},
    )
    before = _refs(repo)
    with pytest.raises(UniflowError, match="event.json"):
        reg.register(str(src), "m", version="v1.1.0", provenance=prov)
    _assert_untouched(repo, before)
    ok = Provenance(author=prov.author, created_at=prov.created_at, event_extra={"imported_from": "gto"})
    reg.register(str(src), "m", version="v1.1.0", provenance=ok)
    cli(repo, "verify")


@pytest.mark.slow
def test_a_130_mib_description_with_the_default_limits(tmp_path: Path) -> None:
    """The attack as reported: no [limits] in config, a description over 128 MiB."""
    repo = make_repo(tmp_path / "repo")
    reg = ModelRegistry(repo)
    src = model_dir(tmp_path / "src", 2, size=1000, seed=5)
    reg.register(str(src), "m", version="v1.0.0")
    before = _refs(repo)
    with pytest.raises(UniflowError, match="max_manifest_bytes"):
        reg.register(str(src), "m", version="v1.1.0", description="d" * (130 << 20))
    _assert_untouched(repo, before)


def test_a_gto_import_refused_for_one_version_leaves_nothing_of_it(tmp_path: Path) -> None:
    """`uniflow import gto` on tags written by `gto` itself: the version whose description
    makes its manifest too large fails alone, and nothing of it is left; the other imports."""
    gto_bin = shutil.which("gto", path=str(Path(sys.executable).parent)) or shutil.which("gto")
    if gto_bin is None:
        pytest.skip("the import-test extra (gto) is not installed")
    repo = make_repo(tmp_path / "repo")
    (repo / "artifacts.yaml").write_text(
        f"huge:\n  type: model\n  path: huge.onnx\n  description: {'h' * 10_000}\n"
        "small:\n  type: model\n  path: small.onnx\n  description: fine\n"
    )
    (repo / "huge.onnx").write_bytes(b"\x01" * 3000)
    (repo / "small.onnx").write_bytes(b"\x02" * 3000)
    write_config(repo, SMALL_MANIFEST)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "two models")
    env = {**os.environ, "GTO_NO_ANALYTICS": "1", "ITERATIVE_DO_NOT_TRACK": "1"}
    for name in ("huge", "small"):
        subprocess.run(
            [gto_bin, "register", name, "--version", "v1.0.0"], cwd=repo, env=env, check=True, timeout=120
        )
    before = _refs(repo)
    r = cli(repo, "import", "gto", "--json", code=None)
    assert r.returncode != 0, r.stdout
    status = {(v["model"], v["version"]): v["status"] for v in json.loads(r.stdout)["versions"]}
    assert status == {("huge", "v1.0.0"): "failed", ("small", "v1.0.0"): "imported"}, r.stdout
    new = set(_refs(repo).splitlines()) - set(before.splitlines())
    assert not [line for line in new if "/huge" in line], new
    cli(repo, "verify")
    assert "v1.0.0" in cli(repo, "models", "list", "small").stdout
    write_config(repo, "")  # the default limits: the same import now takes the version
    git(repo, "commit", "-q", "-am", "default limits")
    cli(repo, "import", "gto")
    cli(repo, "verify")
    assert "v1.0.0" in cli(repo, "models", "list", "huge").stdout
