"""benchmarks/run.py --migrate: `import_mlflow` of N fine-tuned versions of one model.

Builds an MLflow registry (sqlite + a local artifact store) with MLflow's own client: version
``i`` is a ``size_mib`` weights file equal to the base except for one 256 KiB block (a
"fine-tune" touching ~2.5 % of a 10 MiB model) plus a small config. Then imports it into an
empty Git repository and reports the time per version and the bytes uniflow stored against
the bytes MLflow's artifact store holds for the same versions. Needs the mlflow extra in the
running interpreter; otherwise the keys are null with a note.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

from benchmarks.harness import Results, log

KEYS = [
    "migrate_mlflow_per_version_s",
    "migrate_mlflow_stored_bytes",
    "migrate_mlflow_store_bytes",
    "migrate_mlflow_stored_ratio",
]
BLOCK = 256 << 10


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def build(root: Path, versions: int, size_mib: int) -> tuple[str, Path]:
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    store = root / "artifacts"
    exp = client.create_experiment("finetunes", artifact_location=store.as_uri())
    client.create_registered_model("llm-head")
    rnd = random.Random(7)
    base = bytearray(rnd.randbytes(size_mib << 20))
    src = root / "src"
    src.mkdir()
    for i in range(versions):
        weights = bytearray(base)
        off = (i * 7919 * 4096) % (len(base) - BLOCK)
        weights[off : off + BLOCK] = rnd.randbytes(BLOCK)
        (src / "model.bin").write_bytes(weights)
        (src / "config.json").write_text(f'{{"finetune": {i}}}\n')
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "loss", 1.0 / (i + 1))
        client.log_artifacts(run.info.run_id, str(src), artifact_path="model")
        client.set_terminated(run.info.run_id)
        client.create_model_version(
            "llm-head", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
        )
    return uri, store


def bench_mlflow_import(res: Results, work: Path, versions: int, size_mib: int) -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        res.fail(KEYS, "the mlflow extra is not installed (pip install 'uniflow[mlflow]')")
        return
    from uniflow import ModelRegistry

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    root = work / "mlflow-import"
    root.mkdir()
    t0 = time.perf_counter()
    uri, store = build(root, versions, size_mib)
    log(f"    built {versions} MLflow versions of {size_mib} MiB in {time.perf_counter() - t0:.1f} s")
    repo = root / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    with ModelRegistry(repo) as reg:
        t0 = time.perf_counter()
        report = reg.import_mlflow(tracking_uri=uri)
        elapsed = time.perf_counter() - t0
        assert report.ok and report.count("imported") == versions, report.to_dict()
        t1 = time.perf_counter()
        again = reg.import_mlflow(tracking_uri=uri)
        rerun = time.perf_counter() - t1
        assert again.count("skipped") == versions
    chunk_store = repo / ".git" / "uniflow"
    stored = _tree_bytes(chunk_store / "objects") + _tree_bytes(chunk_store / "packs")
    artifacts = _tree_bytes(store)
    res.value("migrate_mlflow_versions", versions)
    res.value("migrate_mlflow_size_mib", size_mib)
    res.value(
        "migrate_mlflow_per_version_s",
        round(elapsed / versions, 4),
        "import_mlflow wall time / versions (download through MLflow + register), sqlite + local store",
    )
    res.value("migrate_mlflow_rerun_s", round(rerun, 3), "a second import_mlflow: every version skipped")
    res.value(
        "migrate_mlflow_stored_bytes", stored, "bytes of .git/uniflow/objects and packs/ after the import"
    )
    res.value(
        "migrate_mlflow_store_bytes", artifacts, "bytes of MLflow's artifact store for the same versions"
    )
    res.value(
        "migrate_mlflow_stored_ratio",
        round(stored / artifacts, 4) if artifacts else None,
        "uniflow bytes / MLflow bytes",
    )
    log(
        f"    import: {elapsed / versions * 1000:.0f} ms/version; stored {stored / 2**20:.1f} MiB "
        f"vs MLflow {artifacts / 2**20:.1f} MiB; re-run {rerun:.1f} s"
    )
