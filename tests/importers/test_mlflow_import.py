"""`uniflow import mlflow` against a real MLflow registry (sqlite file; `mlflow server` on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import cli, git
from tests.importers._mlflow_fixture import build_registry, log_version
from uniflow import ModelRegistry


def _refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    return build_registry(tmp_path_factory.mktemp("mlflow"))


def _files(reg: ModelRegistry, name: str, version: str) -> dict[str, bytes]:
    root = reg.load_path(name, version)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_import_sqlite_registry(repo: Path, built) -> None:
    reg = ModelRegistry(repo)
    report = reg.import_mlflow(tracking_uri=built.uri)
    assert report.ok, report.to_dict()
    assert [m.name for m in reg.list_models()] == ["clf", "fraud-detector"]
    assert "MLflow model 'Fraud Detector' is imported as 'fraud-detector'" in report.notes
    # bytes, metrics, params, tags and descriptions of every version
    for (model, n), files in built.artifacts.items():
        name = "clf" if model == "clf" else "fraud-detector"
        assert _files(reg, name, f"v{n}.0.0") == files
        mv = reg.get(name, f"v{n}.0.0")
        assert mv.metrics == pytest.approx(built.metrics[(model, n)])
        assert mv.params == {"lr": "0.01", "seed": mv.params["seed"]}
        assert mv.lineage["mlflow_model"] == model and mv.lineage["mlflow_version"] == str(n)
        assert mv.lineage["experiment"] == "training" and len(mv.lineage["run_id"]) == 32
        assert mv.lineage["imported_from"] == "mlflow"
    v1 = reg.get("clf", "v1.0.0")
    assert v1.tags == {"data": "2024-01", "model.team": "nlp"}
    assert v1.description == "first"
    assert reg.get("clf", "v2.0.0").description == "sentiment classifier"  # none of its own: the model's
    assert oct(next(f.mode for f in v1.files if f.path == "sub/predict.sh")) == "0o755"
    # stages and the alias (declared as a single-holder custom stage in config.toml)
    assert reg.stages()["champion"] is True
    assert "[stages.champion]" in (repo / ".uniflow" / "config.toml").read_text()
    assert {v.version: v.stage for v in reg.list_versions("clf")} == {
        "v1.0.0": "archived",
        "v2.0.0": "production",
        "v3.0.0": "champion",
    }
    assert reg.get("fraud-detector", stage="staging").version == "v2.0.0"
    # the history: registrations in creation order, then stages, each marked as imported with MLflow's times
    hist = reg.history("clf")
    assert [(e.action, e.version, e.to_stage) for e in hist] == [
        ("register", "v1.0.0", "development"),
        ("register", "v2.0.0", "development"),
        ("register", "v3.0.0", "development"),
        ("promote", "v3.0.0", "champion"),
        ("archive", "v1.0.0", "archived"),
        ("promote", "v2.0.0", "production"),
    ]
    assert all(e.extra.get("imported_from") == "mlflow" for e in hist)
    mlv = built.client.get_model_version("clf", "1")
    assert hist[0].at.timestamp() == pytest.approx(mlv.creation_timestamp / 1000)
    assert hist[4].at.timestamp() == pytest.approx(mlv.last_updated_timestamp / 1000)
    assert [e.at for e in hist] == sorted(e.at for e in hist)
    assert reg.verify().ok
    assert "error" not in git(repo, "fsck", "--strict").lower()


def test_second_run_changes_nothing_and_new_versions_come_in(repo: Path, tmp_path: Path) -> None:
    b = build_registry(tmp_path / "ml")
    reg = ModelRegistry(repo)
    assert reg.import_mlflow(tracking_uri=b.uri).ok
    before, config = _refs(repo), (repo / ".uniflow" / "config.toml").read_text()
    again = reg.import_mlflow(tracking_uri=b.uri)
    assert again.ok and again.count("imported") == 0 and again.count("applied") == 0
    assert again.count("skipped") == len(again.versions) + len(again.events)
    assert _refs(repo) == before and (repo / ".uniflow" / "config.toml").read_text() == config
    # MLflow moves on: a new version takes Production; only that is imported
    exp = b.client.get_experiment_by_name("training").experiment_id
    log_version(b, exp, "clf", 4, 0.95)
    b.client.transition_model_version_stage("clf", "4", "Production", archive_existing_versions=True)
    third = reg.import_mlflow(["clf"], tracking_uri=b.uri)
    assert [(v.version, v.status) for v in third.versions if v.status != "skipped"] == [
        ("v4.0.0", "imported")
    ]
    assert reg.get("clf", stage="production").version == "v4.0.0"
    assert reg.get("clf", "v2.0.0").stage == "archived"


def test_dry_run_writes_nothing(repo: Path, built) -> None:
    before = _refs(repo)
    r = cli(repo, "import", "mlflow", "--tracking-uri", built.uri, "--dry-run", "--json")
    plan = json.loads(r.stdout)
    assert plan["dry_run"] and {v["status"] for v in plan["versions"]} == {"would-import"}
    assert {e["status"] for e in plan["events"]} == {"would-apply"} and plan["declared_stages"] == [
        "champion"
    ]
    assert _refs(repo) == before and not (repo / ".uniflow").exists()
    text = cli(repo, "import", "mlflow", "--tracking-uri", built.uri, "--dry-run").stdout
    assert "would-import  clf v1.0.0" in text and "Plan from mlflow" in text
    r = cli(repo, "import", "mlflow", "clf", "--tracking-uri", built.uri)
    assert "Downloading artifacts" not in r.stderr  # MLflow's own progress bars stay off


def test_other_bytes_are_reported_never_overwritten(repo: Path, built, tmp_path: Path) -> None:
    reg = ModelRegistry(repo)
    mine = tmp_path / "mine.bin"
    mine.write_bytes(b"my own v1")
    reg.register(mine, "clf", version="v1.0.0")
    r = cli(repo, "import", "mlflow", "clf", "--tracking-uri", built.uri, code=4)
    assert "conflict      clf v1.0.0" in r.stdout
    reg = ModelRegistry(repo)  # the CLI declared the alias's stage in config.toml meanwhile
    assert _files(reg, "clf", "v1.0.0") == {"mine.bin": b"my own v1"}
    assert reg.get("clf", "v2.0.0").stage == "production"  # the rest came in


def test_missing_extra_and_bad_uri_are_one_line_errors(repo: Path, tmp_path: Path) -> None:
    r = cli(repo, "import", "mlflow", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", code=3)
    assert r.stderr == f"error: no MLflow database at sqlite:///{tmp_path / 'none.db'}\n"
    assert not (tmp_path / "none.db").exists()
    b = build_registry(tmp_path / "ml")
    r = cli(repo, "import", "mlflow", "nosuchmodel", "--tracking-uri", b.uri, code=9)
    assert r.stderr.strip().splitlines()[-1].startswith("error: MLflow: model 'nosuchmodel'")
    (tmp_path / "nomlflow").mkdir(exist_ok=True)
    (tmp_path / "nomlflow" / "mlflow.py").write_text("raise ImportError('no mlflow here')\n")
    r = cli(repo, "import", "mlflow", env={"PYTHONPATH": str(tmp_path / "nomlflow")}, code=2)
    assert "needs the mlflow extra" in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_import_from_mlflow_server(repo: Path, tmp_path: Path) -> None:
    b = build_registry(tmp_path / "ml")
    port = _free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            b.uri,
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "wb"),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(0.3)
        else:
            pytest.fail("mlflow server did not start in 90 s")
        r = cli(repo, "import", "mlflow", "--tracking-uri", url, "--json", timeout=300)
        report = json.loads(r.stdout)
        assert report["ok"] and {v["status"] for v in report["versions"]} == {"imported"}
        reg = ModelRegistry(repo)
        assert _files(reg, "clf", "v3.0.0") == b.artifacts[("clf", 3)]
        assert reg.get("clf", stage="champion").version == "v3.0.0"
        assert reg.get("clf", "v3.0.0").lineage["tracking_uri"] == url
        again = json.loads(cli(repo, "import", "mlflow", "--tracking-uri", url, "--json").stdout)
        assert {v["status"] for v in again["versions"]} == {"skipped"}
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait(timeout=20)
