"""examples/registry-tour.ipynb runs top to bottom in a real kernel (nbclient) and shows the
registry's HTML tables, SVG charts, DataFrames and the matplotlib plot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts a Jupyter kernel

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "registry-tour.ipynb"


def _outputs(cell: dict) -> dict[str, str]:
    data: dict[str, str] = {}
    for out in cell.get("outputs", []):
        assert out["output_type"] != "error", "".join(out.get("traceback", []))
        for mime, value in out.get("data", {}).items():
            data[mime] = data.get(mime, "") + (value if isinstance(value, str) else str(value))
    return data


def test_registry_tour_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's repository goes here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    by_source = {c.source.splitlines()[-1]: _outputs(c) for c in code}

    versions = by_source['registry.list_versions("churn")']["text/html"]
    assert '<table class="uniflow-versions"' in versions
    assert versions.count('class="chart metric-chart"') == 2  # accuracy, f1
    for v in ("v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"):
        assert versions.count(f'data-version="{v}"') == 2  # one point per chart
    comparison = by_source["comparison"]["text/html"]
    assert '<table class="uniflow-compare"' in comparison and "(+" in comparison
    assert "<table" in by_source["comparison.to_pandas()"]["text/html"]  # a DataFrame
    history = by_source['registry.history("churn")']["text/html"]
    assert '<table class="uniflow-events"' in history and "production" in history
    card = by_source['registry.get("churn", stage="production")']["text/html"]
    assert "churn v1.2.0" in card and "<strong>C = 0.1</strong>" in card  # the description, as Markdown
    frame = by_source['registry.versions_frame("churn")']["text/html"]
    assert "accuracy" in frame and "param.C" in frame
    png = by_source['registry.plot("churn", "accuracy")']
    assert "image/png" in png and len(png["image/png"]) > 5000
    assert "array([" in by_source["production.predict(X_test[:5])"]["text/plain"]
