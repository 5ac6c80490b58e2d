"""A real MLflow registry (sqlite + a file artifact store), built with MLflow's own API."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

mlflow = pytest.importorskip("mlflow", reason="the import-test extra (mlflow) is not installed")

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")


@dataclass
class Built:
    uri: str
    client: Any
    artifacts: dict[tuple[str, int], dict[str, bytes]] = field(default_factory=dict)
    metrics: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    src_root: Path | None = None  #: where the model files are written before logging (default: beside the db)


def model_files(seed: int, size: int = 4096) -> dict[str, bytes]:
    """A small model directory: a weights file, a config, an executable script."""
    import random

    rnd = random.Random(seed)
    return {
        "weights.bin": bytes(rnd.getrandbits(8) for _ in range(size)),
        "config.json": f'{{"seed": {seed}}}\n'.encode(),
        "sub/predict.sh": b"#!/bin/sh\necho predict\n",
    }


def log_version(b: Built, exp_id: str, model: str, seed: int, acc: float, **mv_kwargs: Any) -> Any:
    client = b.client
    run = client.create_run(exp_id, run_name=f"train-{seed}")
    rid = run.info.run_id
    client.log_metric(rid, "accuracy", acc - 0.1)
    client.log_metric(rid, "accuracy", acc)  # the latest value is the one that counts
    client.log_metric(rid, "loss", 1 - acc)
    client.log_param(rid, "lr", "0.01")
    client.log_param(rid, "seed", str(seed))
    base = b.src_root or Path(b.uri.removeprefix("sqlite:///")).parent
    src = base / f"src-{model}-{seed}"
    files = model_files(seed)
    for rel, data in files.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (src / "sub/predict.sh").chmod(0o755)
    client.log_artifacts(rid, str(src), artifact_path="model")
    client.set_terminated(rid)
    mv = client.create_model_version(model, source=f"{run.info.artifact_uri}/model", run_id=rid, **mv_kwargs)
    b.artifacts[(model, int(mv.version))] = files
    b.metrics[(model, int(mv.version))] = {"accuracy": acc, "loss": 1 - acc}
    time.sleep(0.01)  # distinct millisecond timestamps
    return mv


def build_registry(root: Path) -> Built:
    """Two models: 'clf' (3 versions: v1 Archived, v2 Production, v3 alias champion, v3 Staging
    later) and 'Fraud Detector' (2 versions, v2 Staging); tags and descriptions everywhere."""
    from mlflow import MlflowClient

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    b = Built(uri, MlflowClient(tracking_uri=uri, registry_uri=uri))
    c = b.client
    exp = c.create_experiment("training", artifact_location=(root / "artifacts").as_uri())
    c.create_registered_model("clf", tags={"team": "nlp"}, description="sentiment classifier")
    c.create_registered_model("Fraud Detector", description="fraud model")
    log_version(b, exp, "clf", 1, 0.80, tags={"data": "2024-01"}, description="first")
    log_version(b, exp, "Fraud Detector", 11, 0.70)
    log_version(b, exp, "clf", 2, 0.85, tags={"data": "2024-02"})
    log_version(b, exp, "clf", 3, 0.90, description="third")
    log_version(b, exp, "Fraud Detector", 12, 0.75)
    c.transition_model_version_stage("clf", "1", "Production")
    time.sleep(0.01)
    c.transition_model_version_stage("clf", "2", "Production", archive_existing_versions=True)
    time.sleep(0.01)
    c.set_registered_model_alias("clf", "champion", "3")
    c.transition_model_version_stage("Fraud Detector", "2", "Staging")
    return b


def build_file_store(root: Path) -> Built:
    """A real MLflow 3 file store ``root/mlruns`` (MLflow 3 refuses to open one unless
    ``MLFLOW_ALLOW_FILE_STORE`` is set: call this in a subprocess of its own). Model 'clf':
    v1 (seed 21) Production; v2 (seed 22) alias 'champion', then Staging (so the alias's stage
    is left with no holder: a uniflow version holds one stage)."""
    import mlflow
    from mlflow import MlflowClient

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    root.mkdir(parents=True, exist_ok=True)
    uri = (root / "mlruns").as_uri()
    mlflow.set_tracking_uri(uri)  # MLflow's file store opens a default client of its own
    b = Built(uri, MlflowClient(tracking_uri=uri, registry_uri=uri), src_root=root)
    c = b.client
    exp = c.create_experiment("training")
    c.create_registered_model("clf", description="file-store classifier")
    log_version(b, exp, "clf", 21, 0.81)
    log_version(b, exp, "clf", 22, 0.82)
    c.transition_model_version_stage("clf", "1", "Production")
    c.set_registered_model_alias("clf", "champion", "2")
    time.sleep(0.01)
    c.transition_model_version_stage("clf", "2", "Staging")
    return b
