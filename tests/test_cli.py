"""The ``uniflow`` command line through click's CliRunner: every command, its output and --json shapes.

Bad input and process-level behaviour (console script, start-up imports, completion,
terminal rendering) are in ``test_cli_errors.py`` and ``test_cli_process.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from uniflow.cli import cli

GIT_ENV = {
    "GIT_AUTHOR_NAME": "CLI Tester",
    "GIT_AUTHOR_EMAIL": "cli@example.com",
    "GIT_COMMITTER_NAME": "CLI Tester",
    "GIT_COMMITTER_EMAIL": "cli@example.com",
}
MODEL = "sentiment_classifier"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True, env={**os.environ, **GIT_ENV}
    ).stdout


def make_repo(root: Path) -> Path:
    """A throwaway Git repository with one commit and a configured identity."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "CLI Tester")
    git(root, "config", "user.email", "cli@example.com")
    git(root, "config", "commit.gpgsign", "false")
    (root / "train.py").write_text("print('training')\n")
    git(root, "add", "train.py")
    git(root, "commit", "-q", "-m", "initial code")
    return root


def write_blob(path: Path, size: int, seed: int) -> Path:
    import random

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def populate(repo: Path, files: Path) -> None:
    """Two versions of sentiment_classifier (production, staging) and one of fraud-detector."""
    from uniflow import ModelRegistry, ModelStage

    reg = ModelRegistry(repo)
    reg.register(
        str(write_blob(files / "v1" / "model.bin", 20_000, 1)),
        name=MODEL,
        version="v1.0.0",
        framework="pytorch",
        metrics={"accuracy": 0.95, "f1": 0.94},
        tags={"language": "en", "architecture": "bert"},
        params={"lr": 0.001, "epochs": 3},
        description="first cut",
    )
    reg.register(
        str(write_blob(files / "v2" / "model.bin", 30_000, 2)),
        name=MODEL,
        version="v1.1.0",
        framework="pytorch",
        metrics={"accuracy": 0.96, "f1": 0.95},
        tags={"language": "en"},
    )
    d = files / "fraud"
    write_blob(d / "weights.bin", 5_000, 3)
    (d / "config.json").write_text('{"layers": 2}')
    reg.register(str(d), name="fraud-detector", version="1.0.0", metrics={"auc": 0.9})
    reg.promote(MODEL, "v1.0.0", ModelStage.PRODUCTION)
    reg.promote(MODEL, "v1.1.0", ModelStage.STAGING)


@pytest.fixture(autouse=True)
def _cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("UNIFLOW_FORCE_TTY", raising=False)


@pytest.fixture(scope="module")
def populated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cli-template")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in GIT_ENV.items():
            mp.setenv(key, value)
        repo = make_repo(base / "repo")
        populate(repo, base / "files")
    return repo


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty repository (one commit, no models), made the working directory."""
    root = make_repo(tmp_path / "project")
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def models_repo(populated_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the populated repository, made the working directory."""
    root = tmp_path / "models-repo"
    shutil.copytree(populated_template, root, symlinks=True)
    monkeypatch.chdir(root)
    return root


def run(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    return result


def run_json(*args: str, code: int = 0) -> Any:
    return json.loads(run(*args, "--json", code=code).stdout)


VERSION_KEYS = {
    "name",
    "version",
    "stage",
    "framework",
    "serializer",
    "metrics",
    "tags",
    "params",
    "description",
    "created_at",
    "author",
    "code_commit",
    "branch",
    "dirty",
    "size",
    "digest",
    "files",
    "lineage",
    "libraries",
    "tag_ref",
}


# --------------------------------------------------------------------------- init


def test_init_creates_layout(repo: Path) -> None:
    out = run("init").stdout
    assert "Initialised uniflow registry" in out
    assert (repo / ".uniflow" / "config.toml").is_file()
    assert "objects/" in (repo / ".uniflow" / ".gitignore").read_text()
    assert "already initialised" in run("init").stdout


def test_init_outside_a_repository_creates_one(tmp_path: Path) -> None:
    target = tmp_path / "fresh"
    out = run("init", str(target)).stdout
    assert "Initialised empty Git repository" in out
    assert (target / ".git").exists() and (target / ".uniflow" / "config.toml").is_file()


def test_init_with_repo_option(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run("init", "--repo", str(repo))
    assert (repo / ".uniflow" / "config.toml").is_file()


# --------------------------------------------------------------------------- list


def test_list_empty_repo(repo: Path) -> None:
    assert "No models registered yet" in run("models", "list").stdout
    assert run_json("models", "list") == []
    assert not (repo / ".uniflow").exists(), "a read must not create the store"


def test_list_models_plain(models_repo: Path) -> None:
    out = run("models", "list").stdout
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "LATEST", "VERSIONS", "STAGES", "UPDATED"]
    assert lines[1].split()[0] == "fraud-detector" and lines[2].split()[0] == MODEL
    assert "production v1.0.0" in lines[2] and "staging v1.1.0" in lines[2]
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lines[2])
    assert "\x1b[" not in out and "─" not in out and "│" not in out


def test_list_models_json(models_repo: Path) -> None:
    data = run_json("models", "list")
    assert [m["name"] for m in data] == ["fraud-detector", MODEL]
    m = data[1]
    assert set(m) == {"name", "latest", "versions", "stages", "updated_at"}
    assert m["latest"] == "v1.1.0" and m["versions"] == 2
    assert m["stages"] == {"production": "v1.0.0", "staging": "v1.1.0"}


def test_list_versions(models_repo: Path) -> None:
    out = run("models", "list", MODEL).stdout
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["VERSION", "STAGE", "FRAMEWORK"]
    assert lines[1].split()[:3] == ["v1.0.0", "production", "pytorch"]
    assert lines[2].startswith("v1.1.0 (latest)") and "staging" in lines[2]
    assert "accuracy=0.96" in lines[2] and "KiB" in lines[2]


def test_list_versions_json_and_stage_filter(models_repo: Path) -> None:
    data = run_json("models", "list", MODEL)
    assert [v["version"] for v in data] == ["v1.0.0", "v1.1.0"]
    assert set(data[0]) == VERSION_KEYS
    prod = run_json("models", "list", MODEL, "--stage", "PRODUCTION")
    assert [v["version"] for v in prod] == ["v1.0.0"]
    assert "(latest)" not in run("models", "list", MODEL, "--stage", "staging").stdout


def test_repo_option_on_command_and_group(
    models_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert MODEL in run("models", "list", "--repo", str(models_repo)).stdout
    assert MODEL in run("--repo", str(models_repo), "models", "list").stdout
    sub = models_repo / "sub" / "dir"
    sub.mkdir(parents=True)
    assert MODEL in run("models", "list", "--repo", str(sub)).stdout


# --------------------------------------------------------------------------- show


def test_show_card(models_repo: Path) -> None:
    out = run("models", "show", MODEL, "v1.0.0").stdout
    assert out.splitlines()[0].split() == [MODEL, "v1.0.0", "production"]
    for needle in (
        "first cut",
        "framework:",
        "pytorch",
        "Metrics",
        "accuracy: 0.95",
        "Params",
        "lr:",
        "Tags",
        "language:",
        "Files",
        "model.bin",
        "Lineage",
        "code commit:",
        "branch:",
        "Stage history",
        "register",
        "promote",
    ):
        assert needle in out, needle


def test_show_newest_and_by_stage(models_repo: Path) -> None:
    assert run_json("models", "show", MODEL)["version"] == "v1.1.0"
    assert run_json("models", "show", MODEL, "--stage", "Production")["version"] == "v1.0.0"


def test_show_json_shape(models_repo: Path) -> None:
    data = run_json("models", "show", MODEL, "v1.0.0")
    assert set(data) == VERSION_KEYS | {"history"}
    assert data["metrics"] == {"accuracy": 0.95, "f1": 0.94}
    assert data["params"] == {"lr": 0.001, "epochs": 3}
    assert data["files"][0]["path"] == "model.bin" and data["files"][0]["size"] == 20_000
    assert set(data["files"][0]) == {"path", "size", "digest", "chunks", "mode"}
    assert [e["action"] for e in data["history"]] == ["register", "promote"]
    assert set(data["history"][0]) >= {
        "seq",
        "action",
        "name",
        "version",
        "from_stage",
        "to_stage",
        "actor",
        "at",
        "commit",
        "message",
        "displaced",
        "extra",
    }


def test_show_directory_model(models_repo: Path) -> None:
    data = run_json("models", "show", "fraud-detector")
    assert sorted(f["path"] for f in data["files"]) == ["config.json", "weights.bin"]


# --------------------------------------------------------------------------- register


def test_register_file(repo: Path, tmp_path: Path) -> None:
    f = write_blob(tmp_path / "w.bin", 4096, 7)
    out = run(
        "models",
        "register",
        str(f),
        "--name",
        "m",
        "--version",
        "v0.1.0",
        "--framework",
        "onnx",
        "--metric",
        "acc=0.5",
        "--metric",
        "loss=2",
        "--tag",
        "team=nlp",
        "--param",
        "lr=1e-3",
        "--param",
        "opt=adam",
        "--param",
        "shuffle=true",
        "--description",
        "hello",
    ).stdout
    assert out.strip() == "Registered m v0.1.0 (development): 1 file, 4.0 KiB"
    data = run_json("models", "show", "m")
    assert data["metrics"] == {"acc": 0.5, "loss": 2}
    assert data["tags"] == {"team": "nlp"}
    assert data["params"] == {"lr": 0.001, "opt": "adam", "shuffle": True}
    assert data["description"] == "hello" and data["framework"] == "onnx"


def test_register_auto_version_and_json(repo: Path, tmp_path: Path) -> None:
    f = write_blob(tmp_path / "w.bin", 100, 1)
    first = run_json("models", "register", str(f), "--name", "m")
    assert first["version"] == "v1.0.0" and first["stage"] == "development"
    second = run_json("models", "register", str(write_blob(tmp_path / "w2.bin", 100, 2)), "--name", "m")
    assert second["version"] == "v1.0.1"


def test_register_relative_path_with_repo_option(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_blob(tmp_path / "rel" / "w.bin", 100, 3)
    monkeypatch.chdir(tmp_path / "rel")
    run("models", "register", "w.bin", "--name", "rel", "--repo", str(repo))
    assert run_json("models", "list", "--repo", str(repo))[0]["name"] == "rel"


def test_register_directory(repo: Path, tmp_path: Path) -> None:
    d = tmp_path / "dir"
    write_blob(d / "a.bin", 10, 1)
    write_blob(d / "sub" / "b.bin", 20, 2)
    out = run("models", "register", str(d), "--name", "dirmodel").stdout
    assert "2 files" in out


# --------------------------------------------------------------------------- lifecycle


def test_promote_seed_example(models_repo: Path) -> None:
    out = run("models", "promote", MODEL, "v1.1.0", "--to", "production").stdout
    assert out.strip() == f"Promoted {MODEL} v1.1.0 to production (v1.0.0 moved to archived)"
    stages = run_json("models", "list")[1]["stages"]
    assert stages == {"production": "v1.1.0"}
    card = run("models", "show", MODEL, "v1.0.0").stdout
    assert re.search(r"displaced\s+production -> archived .* by v1\.1\.0 \(promote\)", card)
    history = run_json("models", "show", MODEL, "v1.0.0")["history"]
    assert history[-1]["version"] == "v1.1.0" and history[-1]["displaced"] == "v1.0.0"


@pytest.mark.parametrize("spelling", ["Staging", "STAGING", "staging"])
def test_promote_stage_case_insensitive(models_repo: Path, spelling: str) -> None:
    data = run_json("models", "promote", "fraud-detector", "1.0.0", "--to", spelling)
    assert data["stage"] == "staging"


def test_promote_with_reason_records_event(models_repo: Path) -> None:
    run("models", "promote", MODEL, "v1.1.0", "--to", "production", "--reason", "better f1")
    events = run_json("models", "history", MODEL)
    assert events[-1]["action"] == "promote" and events[-1]["displaced"] == "v1.0.0"


def test_rollback(models_repo: Path) -> None:
    run("models", "promote", MODEL, "v1.1.0", "--to", "production")
    out = run("models", "rollback", MODEL, "--stage", "production").stdout
    assert out.strip() == f"Rolled back production of {MODEL} to v1.0.0"
    assert run_json("models", "show", MODEL, "--stage", "production")["version"] == "v1.0.0"
    assert run_json("models", "history", MODEL)[-1]["action"] == "rollback"


def test_rollback_json(models_repo: Path) -> None:
    run("models", "promote", MODEL, "v1.1.0", "--to", "production")
    assert run_json("models", "rollback", MODEL, "--stage", "Production")["version"] == "v1.0.0"


def test_archive(models_repo: Path) -> None:
    assert run("models", "archive", MODEL, "v1.1.0").stdout.strip() == f"Archived {MODEL} v1.1.0"
    assert run_json("models", "show", MODEL, "v1.1.0")["stage"] == "archived"
    assert "staging" not in run_json("models", "list")[1]["stages"]


def test_history(models_repo: Path) -> None:
    out = run("models", "history", MODEL).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["#", "WHEN", "ACTION", "VERSION", "STAGE", "BY", "NOTE"]
    assert len(lines) == 5
    assert "development -> production" in lines[3]
    events = run_json("models", "history", MODEL)
    assert [(e["seq"], e["action"], e["version"]) for e in events] == [
        (1, "register", "v1.0.0"),
        (2, "register", "v1.1.0"),
        (3, "promote", "v1.0.0"),
        (4, "promote", "v1.1.0"),
    ]
    assert events[2]["to_stage"] == "production" and events[2]["actor"].startswith("CLI Tester")


# --------------------------------------------------------------------------- compare / export


def test_compare(models_repo: Path) -> None:
    out = run("models", "compare", MODEL, "v1.0.0", "v1.1.0").stdout
    assert out.startswith(f"Comparing {MODEL}: v1.0.0, v1.1.0")
    assert re.search(r"accuracy\s+0\.95\s+0\.96 \(\+0\.01\)", out)
    assert "v1.0.0" in out.splitlines()[1], "version headers are not upper-cased"
    data = run_json("models", "compare", MODEL, "v1.0.0", "v1.1.0")
    assert data["versions"] == ["v1.0.0", "v1.1.0"] and data["name"] == MODEL
    assert set(data) >= {"name", "versions", "sections", "shared_bytes", "commits"}
    acc = next(r for r in data["sections"]["metrics"] if r["key"] == "accuracy")
    assert acc["values"] == [0.95, 0.96]


def test_export_variants(models_repo: Path, tmp_path: Path) -> None:
    out = run("models", "export", MODEL, "v1.0.0", str(tmp_path / "a")).stdout
    assert "Exported sentiment_classifier v1.0.0" in out
    assert (tmp_path / "a" / "model.bin").stat().st_size == 20_000
    data = run_json("models", "export", MODEL, "--stage", "staging", str(tmp_path / "b"))
    assert data["version"] == "v1.1.0" and data["files"] == 1 and data["size"] == 30_000
    assert (tmp_path / "b" / "model.bin").stat().st_size == 30_000
    newest = run_json("models", "export", "fraud-detector", str(tmp_path / "c"))
    assert newest["version"] == "1.0.0" and (tmp_path / "c" / "config.json").read_text() == '{"layers": 2}'


# --------------------------------------------------------------------------- gc / verify


def test_gc_dry_run_and_yes(models_repo: Path) -> None:
    from uniflow import ModelRegistry

    # An orphan chunk (as after a crash between chunks and tag): written, never referenced.
    reg = ModelRegistry(models_repo)
    orphan = write_blob(models_repo.parent / "orphan.bin", 3000, 99)
    rec = reg.store.put_file(orphan, None)
    data = run_json("gc")
    assert data["dry_run"] is True and data["spared_young"] >= 1
    out = run("gc").stdout
    assert "Dry run: nothing deleted" in out
    data = run_json("gc", "--yes", "--grace", "0s")
    assert data["dry_run"] is False and data["deleted_chunks"] >= 1
    assert not any(reg.store.has(c.digest) for c in rec.chunks)
    assert run_json("verify")["ok"] is True, "gc must not delete live chunks"


@pytest.mark.parametrize("grace", ["90", "30m", "1h", "2d", "1h30m", "1.5h"])
def test_gc_grace_formats(models_repo: Path, grace: str) -> None:
    assert run_json("gc", "--grace", grace)["dry_run"] is True


def test_verify_ok(models_repo: Path) -> None:
    assert "OK" in run("verify").stdout
    assert run_json("verify") == {"ok": True, "name": None, "problems": []}
    assert run_json("verify", MODEL)["name"] == MODEL


def _corrupt_one_chunk(repo: Path) -> str:
    from tests.helpers import flip_stored_byte, stored_chunks
    from uniflow._storage.store import ObjectStore

    chunk = min(stored_chunks(ObjectStore(repo / ".git" / "uniflow")))
    flip_stored_byte(chunk, 0)  # where it lies: its pack
    return chunk.digest


def test_verify_reports_corruption(models_repo: Path) -> None:
    digest = _corrupt_one_chunk(models_repo)
    result = CliRunner().invoke(cli, ["verify"])
    assert result.exit_code == 5
    assert "Traceback" not in result.output
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    header = result.stdout.splitlines()[0].split()
    assert header[:5] == ["MODEL", "VERSION", "FILE", "CHUNK", "PROBLEM"]
    assert "corrupted" in result.stdout
    result = CliRunner().invoke(cli, ["verify", "--json"])
    assert result.exit_code == 5
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert {p["chunk"] for p in data["problems"]} == {digest}
    assert set(data["problems"][0]) >= {"model", "version", "file", "chunk", "problem"}


def test_torch_model_round_trip(repo: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from uniflow import ModelRegistry

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    ModelRegistry(repo).register(net, name="tiny-net", version="v1.0.0", metrics={"loss": 0.25})
    data = run_json("models", "show", "tiny-net")
    assert data["framework"] == "pytorch" and data["serializer"] == "torch"
    assert any(f["path"].endswith(".safetensors") for f in data["files"])
    assert "torch" in data["libraries"]
    run("models", "promote", "tiny-net", "v1.0.0", "--to", "production")
    run("models", "export", "tiny-net", "--stage", "production", str(tmp_path / "served"))
    assert any(p.suffix == ".safetensors" for p in (tmp_path / "served").rglob("*"))
    assert run_json("verify", "tiny-net")["ok"] is True


# --------------------------------------------------------------------------- formatting helpers


def test_format_helpers() -> None:
    from datetime import datetime, timedelta

    from uniflow._format import human_size
    from uniflow.cli._admin import parse_duration
    from uniflow.cli._format import iso_time, relative_time

    assert [human_size(n) for n in (0, 1023, 1536, 5 * 1024**3, None)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 GiB",
        "-",
    ]
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert relative_time(now - timedelta(seconds=3), now) == "just now"
    assert relative_time(now - timedelta(minutes=3, seconds=5), now) == "3 minutes ago"
    assert relative_time(now - timedelta(hours=1), now) == "1 hour ago"
    assert relative_time(now - timedelta(days=2), now) == "2 days ago"
    assert relative_time(now + timedelta(minutes=5), now) == "in 5 minutes"
    assert iso_time(now) == "2024-05-01T12:00:00Z"
    assert [parse_duration(t) for t in ("0", "90", "90s", "30m", "1h", "2d", "1w", "1h30m")] == [
        0,
        90,
        90,
        1800,
        3600,
        172800,
        604800,
        5400,
    ]
