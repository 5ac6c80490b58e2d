"""`uniflow import gto` on a Git repository whose tags were written by `gto` itself."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import cli, git
from uniflow import ModelRegistry

GTO = shutil.which("gto", path=str(Path(sys.executable).parent)) or shutil.which("gto")
pytestmark = pytest.mark.skipif(GTO is None, reason="the import-test extra (gto) is not installed")


def gto(repo: Path, *args: str, who: str) -> None:
    """Run `gto` as ``who`` (the tag's tagger), in a second of its own (tag times have 1 s resolution)."""
    env = {
        **os.environ,
        "GTO_NO_ANALYTICS": "1",
        "ITERATIVE_DO_NOT_TRACK": "1",
        "GIT_COMMITTER_NAME": who,
        "GIT_COMMITTER_EMAIL": f"{who.lower()}@example.com",
    }
    time.sleep(1 - time.time() % 1 + 0.01)
    r = subprocess.run([str(GTO), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (args, r.stdout, r.stderr)


def commit_files(repo: Path, files: dict[str, bytes], message: str) -> str:
    for rel, data in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(data)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


DVC_YAML = b"""artifacts:
  churn:
    path: models/churn
    type: model
    desc: churn model
    labels: [tabular, prod]
  big:
    path: data/big.bin
    type: model
"""
ARTIFACTS_YAML = b"""legacy:
  type: model
  path: legacy.onnx
"""


def dvc_tracked(repo: Path, rel: str, data: bytes, cached: bool) -> dict[str, bytes]:
    """A DVC-tracked file the way `dvc add` leaves it: a .dvc file in Git, the bytes in the cache."""
    md5 = hashlib.md5(data).hexdigest()
    if cached:
        obj = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
        obj.parent.mkdir(parents=True, exist_ok=True)
        obj.write_bytes(data)
    name = rel.rsplit("/", 1)[-1]
    return {
        f"{rel}.dvc": f"outs:\n- md5: {md5}\n  size: {len(data)}\n  hash: md5\n  path: {name}\n".encode(),
        ".gitignore": f"/{rel}\n.dvc/cache\n".encode(),
    }


@pytest.fixture(scope="module")
def _gto_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """Built once (each `gto` call costs ~1 s); every test gets its own copy."""
    from tests.helpers import GIT_ENV, make_repo

    saved = {k: os.environ.get(k) for k in GIT_ENV}
    os.environ.update(GIT_ENV)
    try:
        repo = make_repo(tmp_path_factory.mktemp("gto") / "repo")
        return repo, _build(repo)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def gto_repo(_gto_template: tuple[Path, dict[str, object]], repo: Path) -> dict[str, object]:
    shutil.rmtree(repo)
    shutil.copytree(_gto_template[0], repo, symlinks=True)
    return _gto_template[1]


def _build(repo: Path) -> dict[str, object]:
    v1 = {"models/churn/model.bin": b"churn weights 1", "models/churn/run.sh": b"#!/bin/sh\n"}
    c1 = commit_files(
        repo,
        {
            **v1,
            "dvc.yaml": DVC_YAML,
            "artifacts.yaml": ARTIFACTS_YAML,
            "legacy.onnx": b"onnx 1",
            **dvc_tracked(repo, "data/big.bin", b"big 1" * 1000, True),
        },
        "first models",
    )
    (repo / "models/churn/run.sh").chmod(0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "exec bit")
    c1 = git(repo, "rev-parse", "HEAD").strip()
    gto(repo, "register", "churn", "--version", "v0.1.0", who="Alice")
    gto(repo, "register", "big", "--version", "v1.0.0", who="Alice")
    gto(repo, "register", "legacy", "--version", "v1.0.0", who="Alice")
    v2 = {"models/churn/model.bin": b"churn weights 2"}
    c2 = commit_files(
        repo, {**v2, **dvc_tracked(repo, "data/big.bin", b"big 2 not cached", False)}, "retrain"
    )
    gto(repo, "register", "churn", "--version", "v0.2.0", who="Bob")
    gto(repo, "register", "big", "--version", "v2.0.0", who="Bob")
    gto(repo, "assign", "churn", "--version", "v0.1.0", "--stage", "prod", who="Carol")
    gto(repo, "assign", "churn", "--version", "v0.2.0", "--stage", "staging", who="Carol")
    gto(repo, "assign", "churn", "--version", "v0.2.0", "--stage", "prod", who="Dave")
    gto(repo, "deprecate", "churn", "v0.1.0", who="Dave")
    gto(repo, "deprecate", "legacy", who="Erin")
    commit_files(repo, {"models/churn/model.bin": b"uncommitted later state"}, "later")  # not a version
    return {"c1": c1, "c2": c2, "v1": v1}


def _tags(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/tags")


def test_import_gto_tags(repo: Path, gto_repo: dict[str, object]) -> None:
    gto_tags = _tags(repo)
    reg = ModelRegistry(repo)
    report = reg.import_gto()
    assert [(v.model, v.version, v.status) for v in report.versions] == [  # in tag time order
        ("churn", "v0.1.0", "imported"),
        ("big", "v1.0.0", "imported"),
        ("legacy", "v1.0.0", "imported"),
        ("churn", "v0.2.0", "imported"),
        ("big", "v2.0.0", "failed"),
    ]
    failed = report.versions[4].detail
    assert (
        "data/big.bin is DVC-tracked" in failed and "not in the DVC cache" in failed and "dvc fetch" in failed
    )
    # files as they were at the tagged commit (Git, or the DVC cache), exec bit kept
    root = reg.load_path("churn", "v0.1.0")
    assert (root / "model.bin").read_bytes() == b"churn weights 1" and (
        root / "run.sh"
    ).read_bytes() == b"#!/bin/sh\n"
    assert {f.path: f.mode for f in reg.get("churn", "v0.1.0").files} == {"model.bin": 0o644, "run.sh": 0o755}
    assert (reg.load_path("churn", "v0.2.0") / "model.bin").read_bytes() == b"churn weights 2"
    assert (reg.load_path("big", "v1.0.0") / "big.bin").read_bytes() == b"big 1" * 1000
    # the version commit's first parent is the tagged commit; lineage says where it came from
    mv = reg.get("churn", "v0.1.0")
    assert mv.code_commit == gto_repo["c1"] and mv.branch is None
    assert git(repo, "rev-parse", "models/churn/v0.1.0^{commit}^1").strip() == gto_repo["c1"]
    times = dict(
        line.split()
        for line in git(
            repo, "for-each-ref", "--format=%(refname:strip=2) %(taggerdate:unix)", "refs/tags"
        ).splitlines()
    )
    assert mv.author == "Alice <alice@example.com>" and mv.created_at.timestamp() == int(
        times["churn@v0.1.0"]
    )
    assert mv.tags == {"gto.type": "model", "gto.labels": "tabular, prod"} and mv.description == "churn model"
    assert mv.lineage["gto_tag"] == "churn@v0.1.0"
    # assignments and deprecations replayed in tag order with the original authors and times
    hist = [
        (e.action, e.version, e.to_stage, e.actor.split(" <")[0], int(e.at.timestamp()))
        for e in reg.history("churn")
    ]
    assert hist == [
        ("register", "v0.1.0", "development", "Alice", int(times["churn@v0.1.0"])),
        ("register", "v0.2.0", "development", "Bob", int(times["churn@v0.2.0"])),
        ("promote", "v0.1.0", "prod", "Carol", int(times["churn#prod#1"])),
        ("promote", "v0.2.0", "staging", "Carol", int(times["churn#staging#2"])),
        ("promote", "v0.2.0", "prod", "Dave", int(times["churn#prod#3"])),
        ("archive", "v0.1.0", "archived", "Dave", int(times["churn@v0.1.0!"])),
    ]
    assert reg.history("churn")[4].displaced == "v0.1.0"  # prod holds one version: v0.1.0 was archived then
    # GTO keeps v0.2.0 in staging and prod; here it moved to prod, leaving staging empty: said so
    [left] = report.emptied_stages
    assert (left.model, left.stage, left.version, left.moved_to, left.key) == (
        "churn",
        "staging",
        "v0.2.0",
        "prod",
        "churn#prod#3",
    )
    assert left.at == reg.history("churn")[4].at.isoformat() and "holds one stage" in left.why
    assert reg.stages()["prod"] is True
    assert [(e.action, e.to_stage, e.actor.split(" <")[0]) for e in reg.history("legacy")] == [
        ("register", "development", "Alice"),
        ("archive", "archived", "Erin"),
    ]
    assert _tags(repo).startswith(gto_tags.rstrip("\n").split("\n")[0])
    assert all(line in _tags(repo) for line in gto_tags.splitlines())  # GTO's tags untouched
    assert reg.verify().ok


def test_second_run_changes_nothing(repo: Path, gto_repo: dict[str, object]) -> None:
    reg = ModelRegistry(repo)
    reg.import_gto()
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    again = reg.import_gto()
    assert again.count("imported") == 0 and again.count("applied") == 0
    assert {v.status for v in again.versions} == {"skipped", "failed"}  # big v2.0.0: still not in the cache
    assert git(repo, "for-each-ref", "--format=%(refname) %(objectname)") == refs
    assert [(e.model, e.stage) for e in again.emptied_stages] == [
        ("churn", "staging")
    ]  # still so, still said
    reg.promote("churn", "v0.1.0", "staging")  # filled by hand: no longer reported
    assert reg.import_gto(["churn"]).emptied_stages == ()
    # the missing DVC file arrives: only it is imported
    data = b"big 2 not cached"
    md5 = hashlib.md5(data).hexdigest()
    obj = repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(data)
    third = reg.import_gto(["big"])
    assert [(v.version, v.status) for v in third.versions] == [("v1.0.0", "skipped"), ("v2.0.0", "imported")]


def test_cli_dry_run_rev_and_names(repo: Path, gto_repo: dict[str, object]) -> None:
    r = cli(repo, "import", "gto", "churn", "--dry-run", "--json")
    plan = json.loads(r.stdout)
    assert [v["version"] for v in plan["versions"]] == ["v0.1.0", "v0.2.0"]
    assert {v["status"] for v in plan["versions"]} == {"would-import"} and plan["declared_stages"] == ["prod"]
    assert [(e["model"], e["stage"], e["version"], e["moved_to"]) for e in plan["stages_left_empty"]] == [
        ("churn", "staging", "v0.2.0", "prod")
    ]
    assert "refs/tags/models" not in git(repo, "for-each-ref")
    r = cli(repo, "import", "gto", "--rev", str(gto_repo["c1"]), "--json", code=0)
    done = json.loads(r.stdout)
    assert sorted((v["model"], v["version"]) for v in done["versions"]) == [
        ("big", "v1.0.0"),
        ("churn", "v0.1.0"),
        ("legacy", "v1.0.0"),
    ]
    r = cli(repo, "import", "gto", code=1)  # big v2.0.0 is not in the DVC cache
    assert "failed        big v2.0.0" in r.stdout and "Traceback" not in r.stderr
    assert "stage left with no holder: churn staging (v0.2.0 moved to prod at " in r.stdout


def test_a_stage_gto_itself_empties_is_not_reported_and_errors_say_gto(repo: Path) -> None:
    """An unassign empties a stage in GTO too: nothing to report. A --rev that names no commit
    is a one-line usage error."""
    commit_files(repo, {"artifacts.yaml": b"m:\n  path: m.bin\n", "m.bin": b"weights"}, "model")
    gto(repo, "register", "m", "--version", "v1.0.0", who="Alice")
    gto(repo, "assign", "m", "--version", "v1.0.0", "--stage", "qa", who="Alice")
    gto(repo, "deprecate", "m", "v1.0.0", "qa", who="Bob")  # unassign
    report = json.loads(cli(repo, "import", "gto", "--json").stdout)
    assert [e["stage"] for e in report["events"]] == ["qa", "development"]
    assert report["ok"] and report["stages_left_empty"] == []
    r = cli(repo, "import", "gto", "--rev", "no-such-branch", code=2)
    assert r.stderr == "error: GTO: --rev 'no-such-branch' names no commit of this repository\n"


def test_tampered_dvc_cache_is_refused(repo: Path, gto_repo: dict[str, object]) -> None:
    data = b"big 1" * 1000
    md5 = hashlib.md5(data).hexdigest()
    obj = repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    obj.write_bytes(b"something else")
    report = ModelRegistry(repo).import_gto(["big"])
    assert report.versions[0].status == "failed" and "does not match its md5" in report.versions[0].detail


def test_dvc_directory_from_dvc_lock_and_progress_bar(repo: Path) -> None:
    """A DVC-tracked directory (a pipeline output in dvc.lock, a `.dir` listing in the cache)."""
    files = {"vocab.txt": b"a\nb\n", "sub/merges.txt": b"a b\n"}
    cache = repo / ".dvc/cache/files/md5"
    listing = []
    for rel, data in sorted(files.items()):
        md5 = hashlib.md5(data).hexdigest()
        (cache / md5[:2]).mkdir(parents=True, exist_ok=True)
        (cache / md5[:2] / md5[2:]).write_bytes(data)
        listing.append({"md5": md5, "relpath": rel})
    raw = json.dumps(listing).encode()
    dir_md5 = hashlib.md5(raw).hexdigest()
    (cache / dir_md5[:2]).mkdir(parents=True, exist_ok=True)
    (cache / dir_md5[:2] / (dir_md5[2:] + ".dir")).write_bytes(raw)
    commit_files(
        repo,
        {
            "dvc.yaml": b"stages:\n  tok:\n    cmd: python tok.py\n    outs: "
            b"[models/tok]\nartifacts:\n  tok:\n    path: models/tok\n",
            "dvc.lock": f"schema: '2.0'\nstages:\n  tok:\n    cmd: python tok.py\n    outs:\n    - "
            f"path: models/tok\n"
            f"      md5: {dir_md5}.dir\n      nfiles: 2\n".encode(),
            ".gitignore": b"/models/tok\n.dvc/cache\n",
        },
        "tokenizer",
    )
    gto(repo, "register", "tok", "--version", "v1.0.0", who="Fay")
    r = cli(repo, "import", "gto", env={"UNIFLOW_FORCE_TTY": "1", "COLUMNS": "100"})
    assert "imported      tok v1.0.0" in r.stdout
    reg = ModelRegistry(repo)
    root = reg.load_path("tok", "v1.0.0")
    assert {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()} == files
