"""Peers for benchmarks/run.py --peers: DVC, MLflow and GTO on the same file and machine.

Each tool lives in its own venv under ``<cache>/peers/<tool>`` (created with ``python -m venv``
and ``pip install``; torch is pinned to 2.13.0 through a constraint file in case anything asks
for it). A tool that cannot be installed or run is reported as null with a note, never a crash.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Results, git_env, git_repo, log, rmtree, run, sync, wall

TORCH_PIN = "torch==2.13.0"
TOOLS = {"dvc": ("dvc", "dvc"), "mlflow": ("mlflow", "mlflow"), "gto": ("gto", "gto")}  # tool: (pip, import)


class PeerUnavailable(RuntimeError):
    pass


def peer_env() -> dict[str, str]:
    env = git_env()
    env.update(
        DVC_NO_ANALYTICS="1",
        DO_NOT_TRACK="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        GTO_NO_ANALYTICS="1",
        ITERATIVE_DO_NOT_TRACK="1",
        PYTHONWARNINGS="ignore",
    )
    return env


def ensure_venv(cache: Path, tool: str) -> Path:
    """Path of the tool venv's bin directory, installing it on first use."""
    pip_name, import_name = TOOLS[tool]
    root = cache / "peers"
    root.mkdir(parents=True, exist_ok=True)
    constraints = root / "constraints.txt"
    constraints.write_text(TORCH_PIN + "\n")
    venv = root / tool
    marker = venv / ".bench-ok"
    py = venv / "bin" / "python"
    if marker.exists() and py.exists():
        return venv / "bin"
    if (
        py.exists()
        and subprocess.run([str(py), "-c", f"import {import_name}"], capture_output=True).returncode == 0
    ):
        marker.write_text("ok\n")
        return venv / "bin"
    log(f"installing {pip_name} into {venv} (once)")
    logf = root / f"{tool}.log"
    try:
        run([sys.executable, "-m", "venv", "--clear", str(venv)], timeout=600)
        _pip_install(py, pip_name, import_name, constraints, logf)
    except PeerUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001
        raise PeerUnavailable(f"cannot set up {tool}: {type(exc).__name__}: {str(exc)[:400]}") from exc
    marker.write_text("ok\n")
    return venv / "bin"


def ensure_extra(cache: Path, tool: str, pip_name: str, import_name: str) -> Path:
    """The tool venv's bin directory with ``pip_name`` installed into it too (once), e.g.
    ``dvc-s3`` for DVC's S3 remotes; same constraints as :func:`ensure_venv`."""
    bin_dir = ensure_venv(cache, tool)
    py = bin_dir / "python"
    if subprocess.run([str(py), "-c", f"import {import_name}"], capture_output=True).returncode == 0:
        return bin_dir
    root = cache / "peers"
    log(f"installing {pip_name} into {bin_dir.parent} (once)")
    _pip_install(py, pip_name, import_name, root / "constraints.txt", root / f"{tool}-{pip_name}.log")
    return bin_dir


def _pip_install(py: Path, pip_name: str, import_name: str, constraints: Path, logf: Path) -> None:
    """``pip install pip_name`` into the venv of ``py`` (log in ``logf``), then import it."""
    with open(logf, "w") as fh:
        proc = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--constraint", str(constraints), pip_name],
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=3600,
        )
    if proc.returncode != 0:
        tail = [ln for ln in logf.read_text().splitlines() if not ln.startswith("WARNING: Location")]
        raise PeerUnavailable(f"pip install {pip_name} failed: {' | '.join(tail[-5:])}")
    run([str(py), "-c", f"import {import_name}"], timeout=300)


def version_of(bin_dir: Path, dist: str) -> str | None:
    proc = run(
        [str(bin_dir / "python"), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        check=False,
    )
    return proc.stdout.strip() or None


# --------------------------------------------------------------------------- DVC


def bench_dvc(res: Results, f: Path, work: Path, bin_dir: Path, runs: int) -> None:
    env = peer_env()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    dvc = str(bin_dir / "dvc")
    samples, synced = [], []
    for i in range(runs):
        repo = git_repo(work / "dvc")
        run([dvc, "init", "-q"], cwd=repo, env=env)
        run([dvc, "config", "core.analytics", "false"], cwd=repo, env=env)
        run(["cp", str(f), str(repo / "model.safetensors")])
        sync()
        t0 = time.perf_counter()
        run([dvc, "add", "model.safetensors"], cwd=repo, env=env, timeout=1800)
        samples.append(time.perf_counter() - t0)
        sync()
        synced.append(time.perf_counter() - t0)
        log(f"    dvc add sample {i + 1}/{runs}: {samples[-1]:.2f} s (+sync {synced[-1]:.2f} s)")
        rmtree(repo)
    res.add(
        "dvc_add_1g",
        samples,
        "`dvc add FILE` (after git init && dvc init), whole process; "
        "the file is already in the workspace; DVC does not fsync",
    )
    res.add("dvc_add_1g_plus_sync", synced, "dvc add followed by a sync (durable like register)")


# --------------------------------------------------------------------------- MLflow

MLFLOW_SCRIPT = r"""
import json, os, sys, time
work, f = sys.argv[1], sys.argv[2]
import mlflow
from mlflow import MlflowClient
uri = f"sqlite:///{work}/mlflow.db"
mlflow.set_tracking_uri(uri)
mlflow.set_registry_uri(uri)
# untimed: creating the database (alembic migrations) and the experiment
exp = mlflow.create_experiment("bench", artifact_location=f"file://{work}/artifacts")
client = MlflowClient()
client.create_registered_model("bench_model")
t0 = time.perf_counter()
with mlflow.start_run(experiment_id=exp) as r:
    mlflow.log_artifact(f, artifact_path="model")
    mv = client.create_model_version("bench_model", source=f"{r.info.artifact_uri}/model",
                                     run_id=r.info.run_id)
t = time.perf_counter() - t0
os.sync()
print(json.dumps({"log_register": t, "plus_sync": time.perf_counter() - t0, "version": mv.version}))
"""


def bench_mlflow(res: Results, f: Path, work: Path, bin_dir: Path, runs: int, import_runs: int) -> None:
    env = peer_env()
    py = str(bin_dir / "python")
    samples = [wall([py, "-c", "import mlflow"], env=env) for _ in range(import_runs + 1)][1:]
    res.add("mlflow_import", samples, "`python -c 'import mlflow'` wall time (first run discarded)")
    script = work / "mlflow_bench.py"
    script.write_text(MLFLOW_SCRIPT)
    logs, synced = [], []
    for i in range(runs):
        d = work / "mlflow"
        rmtree(d)
        d.mkdir()
        sync()
        out = run([py, str(script), str(d), str(f)], env=env, timeout=1800).stdout.strip().splitlines()[-1]
        data = json.loads(out)
        logs.append(data["log_register"])
        synced.append(data["plus_sync"])
        log(f"    mlflow sample {i + 1}/{runs}: {logs[-1]:.2f} s (+sync {synced[-1]:.2f} s)")
        rmtree(d)
    res.add(
        "mlflow_log_register_1g",
        logs,
        "in one process after import and DB setup: start_run + log_artifact(FILE) + "
        "create_model_version from the run's artifact (sqlite tracking + registry, file artifacts)",
    )
    res.add("mlflow_log_register_1g_plus_sync", synced, "the same followed by os.sync()")


# --------------------------------------------------------------------------- GTO


def gto_repo(cache: Path, n_tags: int) -> Path:
    """n commits, each with a GTO registration tag ``model@v0.0.N`` (annotated, GTO's message)."""
    repo = cache / "repos" / f"gto-{n_tags}-s1"
    done = repo / ".git" / "bench-complete"
    if done.exists():
        return repo
    log(f"building GTO repository with {n_tags} tags (cached afterwards)")
    git_repo(repo)
    env = git_env()
    # n commits in one go with fast-import (each version at its own commit, as `gto register` does)
    lines = []
    ts = 1_700_000_000
    for i in range(1, n_tags + 1):
        content = f"model weights pointer {i}\n".encode()
        msg = f"train model {i}\n".encode()
        lines.append(b"commit refs/heads/main\n")
        lines.append(f"committer bench <bench@example.com> {ts + i} +0000\n".encode())
        lines.append(f"data {len(msg)}\n".encode() + msg)
        if i == 1:
            lines.append(b"from refs/heads/main^0\n")
        lines.append(f"M 100644 inline model.dvc\ndata {len(content)}\n".encode() + content + b"\n")
    proc = subprocess.run(
        ["git", "fast-import", "--quiet"], cwd=repo, env=env, input=b"".join(lines), capture_output=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git fast-import failed: {proc.stderr.decode()[-400:]}")
    run(["git", "reset", "-q", "--hard", "main"], cwd=repo, env=env)
    revs = run(["git", "rev-list", "--reverse", "main"], cwd=repo).stdout.split()[1:]  # skip initial commit
    for i, rev in enumerate(revs, start=1):
        version = f"v0.0.{i}"
        run(
            [
                "git",
                "tag",
                "-a",
                f"model@{version}",
                rev,
                "-m",
                f"Registering artifact model version {version}",
            ],
            cwd=repo,
            env=env,
        )
    done.write_text("ok\n")
    return repo


def bench_gto(res: Results, cache: Path, bin_dir: Path, runs: int, n_tags: int = 1000) -> None:
    env = peer_env()
    repo = gto_repo(cache, n_tags)
    gto = str(bin_dir / "gto")
    out = run([gto, "show"], cwd=repo, env=env, timeout=1800)  # also checks it parses our tags
    samples = [wall([gto, "show"], cwd=repo, env=env, timeout=1800) for _ in range(runs)]
    res.add(
        "gto_show_1000",
        samples,
        f"`gto show` in a repo with {n_tags} annotated tags model@v0.0.N "
        f"(GTO's register format), whole process; output {len(out.stdout.splitlines())} lines",
    )
    samples = [wall([gto, "show", "model"], cwd=repo, env=env, timeout=1800) for _ in range(runs)]
    res.add("gto_show_model_1000", samples, "`gto show model` (its versions) in the same repo")


# --------------------------------------------------------------------------- all


def bench_all(res: Results, f: Path, cache: Path, work: Path, runs: int, import_runs: int) -> None:
    versions: dict[str, Any] = {}
    jobs = [
        ("dvc", ["dvc_add_1g"], lambda b: bench_dvc(res, f, work, b, runs)),
        (
            "mlflow",
            ["mlflow_log_register_1g", "mlflow_import"],
            lambda b: bench_mlflow(res, f, work, b, runs, import_runs),
        ),
        ("gto", ["gto_show_1000"], lambda b: bench_gto(res, cache, b, runs)),
    ]
    for tool, keys, fn in jobs:
        log(f"--- peer {tool}")
        try:
            bin_dir = ensure_venv(cache, tool)
            versions[tool] = version_of(bin_dir, TOOLS[tool][0])
            fn(bin_dir)
        except Exception as exc:  # noqa: BLE001 - peers report, they do not crash the run
            import traceback

            traceback.print_exc(file=sys.stderr)
            res.fail(keys, f"{tool}: {type(exc).__name__}: {str(exc)[:500]}")
    res.value("peer_versions", versions)
