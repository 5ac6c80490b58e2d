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

from tests.helpers import cli, git, run_py
from tests.importers._mlflow_fixture import build_registry, log_version, model_files
from uniflow import ModelRegistry


def _refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    return build_registry(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def file_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MLflow 3 file store (``mlruns``), built in a subprocess of its own: MLflow opens
    one only with ``MLFLOW_ALLOW_FILE_STORE`` set, and caches the stores it opened; this
    process must see neither."""
    root = tmp_path_factory.mktemp("mlflow-files")
    code = (
        "from pathlib import Path\n"
        "from tests.importers._mlflow_fixture import build_file_store\n"
        f"build_file_store(Path({str(root)!r}))\n"
    )
    r = run_py(code, cwd=root, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return root / "mlruns"


def _snapshot(repo: Path) -> tuple[list[str], list[str]]:
    """What a user sees of the work tree: ``git status --porcelain --ignored`` and every path
    below it (the .git directory aside)."""
    status = sorted(git(repo, "status", "--porcelain", "--ignored", "--untracked-files=all").splitlines())
    listing = sorted(
        os.fspath(p.relative_to(repo)) for p in repo.rglob("*") if p.relative_to(repo).parts[0] != ".git"
    )
    return status, listing


def _only_uniflow_added(before: tuple[list[str], list[str]], after: tuple[list[str], list[str]]) -> None:
    """Everything of ``before`` is still there and every new entry is below ``.uniflow/``."""
    for old, new in zip(before, after, strict=True):
        assert set(old) <= set(new)
        added = set(new) - set(old)
        assert all(".uniflow" in line.split("/")[0] for line in added), sorted(added)


def _tree(root: Path) -> dict[str, bytes]:
    return {os.fspath(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


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


def test_file_store_works_and_nothing_of_mlflow_lands_in_the_repository(repo: Path, file_store: Path) -> None:
    """MLflow 3 refuses a file store unless MLFLOW_ALLOW_FILE_STORE is set, and its file store
    opens a default client that creates ./mlflow.db; the import sets what MLflow needs for the
    call only, and the user's directory sees nothing but .uniflow/."""
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ and "MLFLOW_TRACKING_URI" not in os.environ
    before, store = _snapshot(repo), _tree(file_store)
    r = cli(repo, "import", "mlflow", "--tracking-uri", file_store.as_uri(), "--dry-run", "--json")
    plan = json.loads(r.stdout)
    assert [(v["version"], v["status"]) for v in plan["versions"]] == [
        ("v1.0.0", "would-import"),
        ("v2.0.0", "would-import"),
    ]
    assert _snapshot(repo) == before  # dry run: nothing at all
    # the alias 'champion' (v2) loses its holder when v2 takes Staging: said, with the reason
    [left] = plan["stages_left_empty"]
    assert (left["model"], left["stage"], left["version"], left["moved_to"]) == (
        "clf",
        "champion",
        "v2.0.0",
        "staging",
    )
    assert left["source"].startswith("clf/2:stage:staging@") and "holds one stage" in left["why"]
    r = cli(repo, "import", "mlflow", "--tracking-uri", os.fspath(file_store))  # a plain path
    assert "Imported from mlflow: 2 imported, 3 applied" in r.stdout
    assert "stage left with no holder: clf champion (v2.0.0 moved to staging at " in r.stdout
    _only_uniflow_added(before, _snapshot(repo))
    assert _tree(file_store) == store  # MLflow's store is read, never written
    reg = ModelRegistry(repo)
    assert _files(reg, "clf", "v1.0.0") == model_files(21) and _files(reg, "clf", "v2.0.0") == model_files(22)
    assert reg.get("clf", stage="production").version == "v1.0.0"
    assert reg.get("clf", stage="staging").version == "v2.0.0"
    assert reg.get("clf", "v2.0.0").lineage["tracking_uri"] == file_store.as_uri()


def test_sqlite_store_nothing_of_mlflow_lands_in_the_repository(repo: Path, built) -> None:
    before = _snapshot(repo)
    cli(repo, "import", "mlflow", "--tracking-uri", built.uri, "--dry-run")
    assert _snapshot(repo) == before
    report = json.loads(cli(repo, "import", "mlflow", "--tracking-uri", built.uri, "--json").stdout)
    assert report["ok"] and report["stages_left_empty"] == []
    _only_uniflow_added(before, _snapshot(repo))


def test_no_tracking_uri_creates_no_database(repo: Path, file_store: Path) -> None:
    """MLflow 3's default tracking URI is sqlite:///mlflow.db in the current directory, which
    it creates; the import refuses a database that is not there instead."""
    before = _snapshot(repo)
    r = cli(repo, "import", "mlflow", "--dry-run", code=3)
    assert r.stderr.startswith("error: no MLflow database at sqlite:///") and "mlflow.db" in r.stderr
    assert r.stderr.count("\n") == 1 and "--tracking-uri" in r.stderr
    assert _snapshot(repo) == before
    r = cli(repo, "import", "mlflow", "--dry-run", "--json", env={"MLFLOW_TRACKING_URI": file_store.as_uri()})
    assert len(json.loads(r.stdout)["versions"]) == 2  # MLflow's own variable is honoured
    assert _snapshot(repo) == before


def test_in_process_import_leaves_the_environment_as_it_was(repo: Path, file_store: Path) -> None:
    import mlflow

    env, uri, registry_uri = dict(os.environ), mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    report = ModelRegistry(repo).import_mlflow(tracking_uri=file_store.as_uri(), dry_run=True)
    assert [v.status for v in report.versions] == ["would-import", "would-import"]
    assert dict(os.environ) == env
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (uri, registry_uri)
    # a user's own MLflow settings (a global URI, a variable) are what they were afterwards too
    mine = "http://127.0.0.1:1"
    mlflow.set_tracking_uri(mine)  # sets MLFLOW_TRACKING_URI as well
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "true"
    try:
        env = dict(os.environ)
        report = ModelRegistry(repo).import_mlflow(tracking_uri=os.fspath(file_store), dry_run=True)
        assert len(report.versions) == 2
        assert dict(os.environ) == env and mlflow.get_tracking_uri() == mine
    finally:
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)


def test_source_errors_are_one_line_with_their_exit_code(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uniflow import NotFoundError, RemoteError

    before = _snapshot(repo)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database\n" * 100)
    r = cli(repo, "import", "mlflow", "--tracking-uri", f"sqlite:///{garbage}", code=9)
    assert r.stderr.startswith("error: MLflow: open the registry: ") and r.stderr.count("\n") == 1
    assert _snapshot(repo) == before
    reg = ModelRegistry(repo)
    missing = tmp_path / "no-mlruns"
    with pytest.raises(NotFoundError, match="^no MLflow file store at .*no-mlruns$"):
        reg.import_mlflow(tracking_uri=os.fspath(missing))
    assert not missing.exists()  # MLflow would have made an empty store there
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotFoundError, match="^no MLflow file store at .*empty$"):
        reg.import_mlflow(tracking_uri=empty.as_uri())
    assert list(empty.iterdir()) == []
    (empty / ".trash").mkdir()  # a tracking store whose registry is empty: MLflow would add models/
    with pytest.raises(NotFoundError, match="^the MLflow file store at .*empty has no model registry"):
        reg.import_mlflow(tracking_uri=os.fspath(empty))
    assert [p.name for p in empty.iterdir()] == [".trash"]
    with pytest.raises(RemoteError, match="^MLflow: open the registry: "):
        reg.import_mlflow(tracking_uri="bogus://nowhere")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(RemoteError, match="^MLflow: list models: ") as err:
        reg.import_mlflow(tracking_uri=f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    assert err.value.exit_code == 9 and "\n" not in str(err.value)
    assert _snapshot(repo) == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_import_from_mlflow_server(repo: Path, tmp_path: Path) -> None:
    """The server serves the artifacts (``mlflow-artifacts:``, MLflow's default since 2.0): a
    ``file://`` location handed out by a server is refused (tests/adversarial/test_import_sources.py)."""
    import sqlite3

    b = build_registry(tmp_path / "ml")
    served = (tmp_path / "ml" / "artifacts").as_uri()
    db = sqlite3.connect(b.uri.removeprefix("sqlite:///"))
    with db:
        db.execute(
            "UPDATE model_versions SET storage_location = 'mlflow-artifacts:' || substr(storage_location, ?)",
            (len(served) + 1,),
        )
    db.close()
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
            "--artifacts-destination",
            served,
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
