"""Pipelines: ``@step`` / ``@pipeline`` and ``Model(..., register=True)`` (issue 4)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

import uniflow
from tests.helpers import git, make_repo
from uniflow import Model, ModelRegistry, ModelStage, pipeline, step
from uniflow.pipelines import PipelineRun, current_run, get_run, list_runs

SEED = np.int64(7)  # a numpy scalar default: recorded as the plain int 7


_git = git  # the shared helpers of tests/conftest.py
_make_repo = make_repo


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway Git repository with one commit, made the working directory."""
    root = _make_repo(tmp_path / "project")
    monkeypatch.chdir(root)
    return root


@pytest.fixture(scope="module")
def dataset() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=200, n_features=8, random_state=0)
    return X, y


@pytest.fixture(scope="module")
def fitted(dataset):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    X, y = dataset
    return LogisticRegression(max_iter=500).fit(X, y)


# --------------------------------------------------------------------------- the seed example


def test_seed_example_verbatim_registers_a_loadable_model(repo: Path, fitted, dataset) -> None:  # type: ignore[no-untyped-def]
    trained_model = fitted

    # ---- seed/model-registry.md, "Integration with Pipelines", verbatim ----
    from uniflow import step, Model  # noqa: I001 - verbatim

    @step
    def train():
        # ... training logic ...
        return Model(
            data=trained_model,
            name="my_model",
            register=True,  # Automatically register in Model Registry
        )

    # ---- end of the seed example ----

    model = train()
    assert isinstance(model, Model)
    assert model.registered
    assert model.model_version is not None
    assert model.model_version.name == "my_model"
    assert model.version == model.model_version.version == "v1.0.0"

    loaded = ModelRegistry().load("my_model")
    X, _ = dataset
    assert type(loaded).__name__ == "LogisticRegression"
    np.testing.assert_array_equal(loaded.predict(X), trained_model.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), trained_model.predict_proba(X))

    mv = ModelRegistry().get("my_model")
    assert mv.stage == "development"
    assert mv.lineage["step"]["name"] == "train"
    assert mv.lineage["pipeline"] is None


# --------------------------------------------------------------------------- plain functions


def test_steps_stay_plain_functions_and_decorating_creates_nothing(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # not a git repository: nothing may be created here

    @step
    def add(a: int, b: int = 2, *rest: int, scale: int = 1) -> int:
        """Add things."""
        return (a + b + sum(rest)) * scale

    @step(name="renamed", tags={"team": "x"})
    def unregistered() -> Model:
        return Model(data=[1, 2], name="not_registered")  # register=False

    @pipeline
    def flow(x: int) -> int:
        return add(x, 3, 4, scale=2)

    assert add.__name__ == "add" and add.__doc__ == "Add things."
    assert add.__wrapped__ is not None  # type: ignore[attr-defined]
    assert add(1) == 3
    assert add(1, 2, 3, scale=10) == 60
    assert flow(1) == 16
    assert isinstance(unregistered(), Model) and not unregistered().registered
    with pytest.raises(TypeError):
        add()  # type: ignore[call-arg]
    assert flow.last_run is not None and flow.last_run.status == "succeeded"  # type: ignore[attr-defined]
    assert [s.name for s in flow.last_run.steps] == ["add"]  # type: ignore[attr-defined]
    assert list(tmp_path.iterdir()) == []  # no registry, no .git, no run record


def test_async_step_and_pipeline(repo: Path) -> None:
    @step
    async def make(n: int) -> Model:
        await asyncio.sleep(0)
        return Model(data=np.arange(n, dtype=np.float32), name="async_model", register=True)

    @pipeline
    async def flow() -> Model:
        return await make(4)

    model = asyncio.run(flow())
    assert model.version == "v1.0.0"
    mv = ModelRegistry().get("async_model", "v1.0.0")
    assert mv.lineage["step"]["params"] == {"n": 4}
    assert mv.lineage["pipeline"]["run_id"] == flow.last_run.run_id  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- lineage


def test_parameters_and_code_are_recorded_in_lineage(repo: Path, fitted) -> None:  # type: ignore[no-untyped-def]
    @step
    def train(C: float = 1.0, solver: str = "lbfgs", layers=(64, 32), data=None, seed=SEED):
        return Model(data=fitted, name="clf", register=True, metrics={"accuracy": 0.9})

    before = datetime.now().astimezone()
    train(0.5, data=np.zeros((3, 3)))
    registry = ModelRegistry()
    mv = registry.get("clf", "v1.0.0")
    step_lineage = mv.lineage["step"]
    params = step_lineage["params"]
    assert params["C"] == 0.5
    assert params["solver"] == "lbfgs"  # default applied
    assert params["layers"] == [64, 32]
    assert params["seed"] == 7
    assert isinstance(params["data"], str) and params["data"].startswith("array(")
    assert step_lineage["name"] == "train"
    assert step_lineage["function"].endswith(
        "test_parameters_and_code_are_recorded_in_lineage.<locals>.train"
    )
    assert step_lineage["source_file"] == str(Path(__file__).resolve())
    assert re.fullmatch(r"[0-9a-f]{64}", step_lineage["source_hash"])
    assert step_lineage["source_hash_of"] == "source"
    started = datetime.fromisoformat(step_lineage["started_at"])
    assert started.tzinfo is not None and started.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert started >= before
    assert step_lineage["duration_seconds"] >= 0
    assert mv.metrics == {"accuracy": 0.9}
    assert mv.code_commit == _git(repo, "rev-parse", "HEAD").strip()
    json.dumps(mv.lineage)  # JSON-safe all the way down


def test_second_run_creates_a_new_version(repo: Path, fitted) -> None:  # type: ignore[no-untyped-def]
    @step
    def train(C: float) -> Model:
        return Model(data=fitted, name="clf", register=True)

    first = train(1.0)
    second = train(2.0)
    assert (first.version, second.version) == ("v1.0.0", "v1.0.1")
    registry = ModelRegistry()
    assert [v.version for v in registry.list_versions("clf")] == ["v1.0.0", "v1.0.1"]
    assert registry.get("clf", "v1.0.1").lineage["step"]["params"] == {"C": 2.0}
    assert registry.get("clf", "v1.0.0").lineage["step"]["params"] == {"C": 1.0}


def test_explicit_version_and_step_tags(repo: Path) -> None:
    @step(name="fit", tags={"team": "search", "owner": "step"})
    def train() -> Model:
        return Model(
            data=np.ones(3),
            name="tagged",
            register=True,
            version="v2.0.0",
            tags={"owner": "model"},
            params={"lr": 0.1},
            description="ones",
        )

    model = train()
    mv = ModelRegistry().get("tagged")
    assert model.version == mv.version == "v2.0.0"
    assert mv.tags == {"team": "search", "owner": "model"}  # the model's own tags win
    assert mv.params == {"lr": 0.1}
    assert mv.description == "ones"
    assert mv.lineage["step"]["name"] == "fit"
    assert mv.lineage["step"]["tags"] == {"team": "search", "owner": "step"}


def test_failing_step_registers_nothing(repo: Path, fitted) -> None:  # type: ignore[no-untyped-def]
    @step
    def train() -> Model:
        model = Model(data=fitted, name="never", register=True)
        raise RuntimeError("training diverged")
        return model

    with pytest.raises(RuntimeError, match="training diverged"):
        train()
    registry = ModelRegistry()
    assert all(m.name != "never" for m in registry.list_models())
    with pytest.raises(uniflow.NotFoundError):
        registry.get("never")


def test_models_inside_a_tuple_and_a_dict(repo: Path, fitted) -> None:  # type: ignore[no-untyped-def]
    @step
    def train_tuple():
        return Model(data=fitted, name="in_tuple", register=True), {"accuracy": 0.9}

    @step
    def train_dict():
        return {
            "main": Model(data=np.ones(4), name="in_dict", register=True),
            "nested": [Model(data=np.zeros(2), name="in_nested_list", register=True)],
            "draft": Model(data=np.ones(1), name="draft_only"),  # register=False
        }

    model, metrics = train_tuple()
    out = train_dict()
    assert metrics == {"accuracy": 0.9}
    assert model.registered and model.version == "v1.0.0"
    assert out["main"].registered and out["nested"][0].registered
    assert not out["draft"].registered
    names = {m.name for m in ModelRegistry().list_models()}
    assert {"in_tuple", "in_dict", "in_nested_list"} <= names
    assert "draft_only" not in names


def test_stage_promotion(repo: Path, fitted) -> None:  # type: ignore[no-untyped-def]
    @step
    def train(stage):
        return Model(data=fitted, name="promoted", register=True, stage=stage)

    first = train("production")
    registry = ModelRegistry()
    assert registry.get("promoted", first.version).stage == "production"
    assert first.model_version is not None and first.model_version.stage == "production"
    second = train(ModelStage.PRODUCTION)
    assert registry.get("promoted", stage="production").version == second.version
    assert registry.get("promoted", first.version).stage == "archived"
    staged = train("Staging")
    assert registry.get("promoted", staged.version).stage == "staging"


def test_explicit_registry_on_step(tmp_path: Path, repo: Path) -> None:
    other = _make_repo(tmp_path / "other")
    registry = ModelRegistry(other)

    @step(registry=registry)
    def by_instance() -> Model:
        return Model(data=np.ones(2), name="elsewhere", register=True)

    @step(registry=str(other))
    def by_path() -> Model:
        return Model(data=np.zeros(2), name="elsewhere", register=True)

    by_instance()
    by_path()
    assert [v.version for v in ModelRegistry(other).list_versions("elsewhere")] == ["v1.0.0", "v1.0.1"]
    assert all(m.name != "elsewhere" for m in ModelRegistry(repo).list_models())


# --------------------------------------------------------------------------- pipelines


def test_pipeline_groups_steps_under_one_run(repo: Path, fitted, dataset) -> None:  # type: ignore[no-untyped-def]
    seen: list[PipelineRun | None] = []

    @step
    def train(C: float) -> Model:
        seen.append(current_run())
        return Model(data=fitted, name="clf", register=True)

    @step
    def evaluate(model: Model) -> Model:
        X, y = dataset
        accuracy = float((model.data.predict(X) == y).mean())
        return Model(data=model.data, name="clf_eval", register=True, metrics={"accuracy": accuracy})

    @pipeline(name="training")
    def flow(C: float = 1.0):
        return evaluate(train(C))

    flow(0.25)
    run = flow.last_run  # type: ignore[attr-defined]
    assert seen == [run]
    assert current_run() is None
    assert run.name == "training" and run.status == "succeeded" and run.error is None
    assert [(s.name, s.status) for s in run.steps] == [("train", "succeeded"), ("evaluate", "succeeded")]
    assert run.models == [
        {"name": "clf", "version": "v1.0.0", "stage": "development"},
        {"name": "clf_eval", "version": "v1.0.0", "stage": "development"},
    ]
    registry = ModelRegistry()
    for name in ("clf", "clf_eval"):
        lineage = registry.get(name).lineage
        assert lineage["pipeline"]["name"] == "training"
        assert lineage["pipeline"]["run_id"] == run.run_id
    assert registry.get("clf").lineage["step"]["params"] == {"C": 0.25}

    record = json.loads((repo / ".uniflow" / "runs" / f"{run.run_id}.json").read_text())
    assert record["status"] == "succeeded" and len(record["steps"]) == 2
    # run records are local bookkeeping: they never make the work tree dirty
    assert ".uniflow/runs" not in _git(repo, "status", "--porcelain", "--untracked-files=all")


def test_pipeline_failure_keeps_earlier_versions_and_records_the_failure(repo: Path, fitted) -> None:  # type: ignore[no-untyped-def]
    @step
    def train() -> Model:
        return Model(data=fitted, name="kept", register=True)

    @step
    def evaluate(model: Model) -> Model:
        raise ValueError("accuracy below threshold")

    @pipeline
    def flow() -> Model:
        return evaluate(train())

    with pytest.raises(ValueError, match="accuracy below threshold"):
        flow()

    registry = ModelRegistry()
    assert [v.version for v in registry.list_versions("kept")] == ["v1.0.0"]
    run = flow.last_run  # type: ignore[attr-defined]
    assert run.status == "failed"
    assert run.error == "ValueError: accuracy below threshold"
    assert [(s.name, s.status) for s in run.steps] == [("train", "succeeded"), ("evaluate", "failed")]
    assert run.steps[0].models == [{"name": "kept", "version": "v1.0.0", "stage": "development"}]
    assert run.steps[1].error == "ValueError: accuracy below threshold"

    # the record survives the process: read it back from disk
    on_disk = get_run(run.run_id)
    assert on_disk.to_dict() == run.to_dict()
    assert [r.run_id for r in flow.runs()] == [run.run_id]  # type: ignore[attr-defined]
    assert [r.status for r in list_runs(repo)] == ["failed"]
    with pytest.raises(uniflow.NotFoundError):
        get_run("20000101T000000Z-deadbeef")


def test_registry_given_to_the_pipeline_is_used_by_its_steps(tmp_path: Path, repo: Path) -> None:
    other = _make_repo(tmp_path / "other")

    @step
    def train() -> Model:
        return Model(data=np.ones(3), name="via_pipeline", register=True)

    @pipeline(registry=str(other))
    def flow() -> Model:
        return train()

    flow()
    assert ModelRegistry(other).get("via_pipeline").version == "v1.0.0"
    assert (other / ".uniflow" / "runs" / f"{flow.last_run.run_id}.json").is_file()  # type: ignore[attr-defined]
    assert all(m.name != "via_pipeline" for m in ModelRegistry(repo).list_models())


# --------------------------------------------------------------------------- CLI and comparison


def test_lineage_is_visible_from_the_cli(repo: Path, fitted) -> None:  # type: ignore[no-untyped-def]
    @step
    def train(C: float = 1.0) -> Model:
        return Model(data=fitted, name="cli_model", register=True)

    train(C=0.125)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "uniflow",
            "models",
            "show",
            "cli_model",
            "v1.0.0",
            "--json",
            "--repo",
            str(repo),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["lineage"]["step"]["name"] == "train"
    assert shown["lineage"]["step"]["params"] == {"C": 0.125}


def test_compare_versions_shows_lineage_differences(repo: Path, fitted) -> None:  # type: ignore[no-untyped-def]
    @step
    def train(C: float) -> Model:
        return Model(data=fitted, name="cmp", register=True)

    train(1.0)
    train(2.0)
    comparison = ModelRegistry().compare_versions("cmp", ["v1.0.0", "v1.0.1"])
    data = comparison.to_dict()
    rows = {row["key"]: row for row in data["sections"]["lineage"]}
    assert rows["step.params.C"]["values"] == [1.0, 2.0]
    assert rows["step.params.C"]["changed"] is True
    assert "C" in str(comparison)


# --------------------------------------------------------------------------- edge cases


def test_a_failed_first_step_is_recorded_in_a_fresh_repository(repo: Path) -> None:
    @step
    def train() -> Model:
        raise MemoryError("out of memory")

    @pipeline
    def flow() -> Model:
        return train()

    with pytest.raises(MemoryError):
        flow()
    run = get_run(flow.last_run.run_id)  # type: ignore[attr-defined]
    assert run.status == "failed" and run.error == "MemoryError: out of memory"
    assert [(s.name, s.status) for s in run.steps] == [("train", "failed")]
    assert ".uniflow" not in _git(repo, "status", "--porcelain", "--untracked-files=all")


def test_a_registration_error_fails_the_step(repo: Path) -> None:
    @step
    def train(x: float) -> Model:
        return Model(data=np.full(3, x), name="fixed", register=True, version="v1.0.0")

    @pipeline
    def flow(x: float) -> Model:
        return train(x)

    assert flow(1.0).version == "v1.0.0"
    with pytest.raises(uniflow.VersionExistsError):
        flow(2.0)
    assert flow.last_run.status == "failed"  # type: ignore[attr-defined]
    assert flow.last_run.steps[0].status == "failed"  # type: ignore[attr-defined]
    assert [v.version for v in ModelRegistry().list_versions("fixed")] == ["v1.0.0"]


def test_a_model_returned_by_nested_steps_is_registered_once(repo: Path) -> None:
    @step
    def inner() -> Model:
        return Model(data=np.ones(2), name="once", register=True)

    @step
    def outer() -> tuple[Model, int]:
        return inner(), 1

    model, _ = outer()
    assert model.version == "v1.0.0"
    assert [v.version for v in ModelRegistry().list_versions("once")] == ["v1.0.0"]
    assert ModelRegistry().get("once").lineage["step"]["name"] == "inner"


def test_model_validates_its_name_and_version_early() -> None:
    with pytest.raises(uniflow.InvalidNameError):
        Model(data=1, name="Bad/Name", register=True)
    with pytest.raises(uniflow.InvalidVersionError):
        Model(data=1, name="ok", version="latest")
    assert "register=True" in repr(Model(data=[1], name="ok", register=True))
