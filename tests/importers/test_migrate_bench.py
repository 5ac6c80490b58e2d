"""benchmarks/run.py --migrate runs end to end (smoke sizes) and reports its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import GIT_ENV, ROOT

pytest.importorskip("mlflow", reason="the import-test extra (mlflow) is not installed")


@pytest.mark.slow
def test_migrate_section_smoke(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--smoke",
            "--only",
            "migrate",
            "--migrate",
            "--json",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        cwd=ROOT,
        env={**__import__("os").environ, **GIT_ENV, "MLFLOW_DISABLE_TELEMETRY": "true"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(out.read_text())
    values = data.get("values", data)
    assert values["migrate_mlflow_versions"] == 5
    assert 0 < values["migrate_mlflow_per_version_s"] < 60
    assert 0 < values["migrate_mlflow_stored_bytes"] < values["migrate_mlflow_store_bytes"]
