"""The user's own examples (shared/seed/model-registry.md), verbatim, against a real torch model."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests._models import trained_sentiment_net

SEED = Path(__file__).resolve().parents[2] / "shared" / "seed" / "model-registry.md"

REGISTER = """from uniflow import ModelRegistry, ModelStage

registry = ModelRegistry()

# Register a trained model
version = registry.register(
    model=my_model,
    name="sentiment_classifier",
    version="v1.0.0",
    framework="pytorch",
    metrics={"accuracy": 0.95, "f1": 0.94},
    tags={"language": "en", "architecture": "bert"}
)

print(f"Registered model: {version.name} version {version.version}")
"""

LOAD = """# Load specific version
model = registry.load("sentiment_classifier", version="v1.0.0")

# Load latest production model
prod_model = registry.load("sentiment_classifier", stage=ModelStage.PRODUCTION)
"""

PROMOTE = """# Promote to Staging
registry.promote("sentiment_classifier", "v1.0.0", ModelStage.STAGING)

# Promote to Production
registry.promote("sentiment_classifier", "v1.0.0", ModelStage.PRODUCTION)
"""

COMPARE = """comparison = registry.compare_versions(
    "sentiment_classifier", 
    ["v1.0.0", "v1.1.0"]
)

print(comparison)
"""

CLI = """# List all models
uniflow models list

# List versions of a model
uniflow models list sentiment_classifier

# Promote a model
uniflow models promote sentiment_classifier v1.0.0 --to production
"""


def _blocks(lang: str) -> list[str]:
    text = SEED.read_text()
    return [b if b.endswith("\n") else b + "\n" for b in re.findall(rf"```{lang}\n(.*?)```", text, re.S)]


@pytest.mark.skipif(not SEED.exists(), reason="shared/seed is not beside this checkout")
def test_the_snippets_here_are_the_seed_verbatim() -> None:
    py = _blocks("python")
    for snippet in (REGISTER, LOAD, PROMOTE, COMPARE):
        assert snippet in py, f"seed example drifted:\n{snippet}"
    assert CLI in _blocks("bash")


def test_seed_python_examples_run_as_written(repo: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(repo)
    my_model = trained_sentiment_net(seed=1)
    ns: dict = {"my_model": my_model}
    exec(REGISTER, ns)
    assert capsys.readouterr().out == "Registered model: sentiment_classifier version v1.0.0\n"

    # the comparison example needs a second version
    registry = ns["registry"]
    registry.register(
        model=trained_sentiment_net(seed=2),
        name="sentiment_classifier",
        version="v1.1.0",
        framework="pytorch",
        metrics={"accuracy": 0.96, "f1": 0.95},
        tags={"language": "en"},
    )
    exec(PROMOTE, ns)
    exec(LOAD, ns)
    tokens = torch.randint(0, 2000, (8, 12))
    for loaded in (ns["model"], ns["prod_model"]):
        assert type(loaded).__name__ == "SentimentNet"
        assert torch.equal(loaded(tokens), my_model(tokens))
    assert registry.get("sentiment_classifier", stage="production").version == "v1.0.0"

    exec(COMPARE, ns)
    out = capsys.readouterr().out
    assert "accuracy" in out and "0.95" in out and "0.96" in out and "+0.01" in out
    assert "v1.0.0" in out and "v1.1.0" in out


def test_seed_cli_examples_run_as_written(repo: Path) -> None:
    from uniflow import ModelRegistry

    ModelRegistry(repo).register(
        model=trained_sentiment_net(),
        name="sentiment_classifier",
        version="v1.0.0",
        framework="pytorch",
        metrics={"accuracy": 0.95},
    )
    expected = iter(["sentiment_classifier", "v1.0.0", "production"])
    for line in CLI.splitlines():
        if not line.startswith("uniflow "):
            continue
        args = line.split()[1:]
        r = subprocess.run(
            [sys.executable, "-m", "uniflow", *args], cwd=repo, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, (line, r.stderr)
        assert next(expected) in r.stdout, (line, r.stdout)
    assert ModelRegistry(repo).get("sentiment_classifier", stage="production").version == "v1.0.0"


def test_the_readme_quickstart_runs_end_to_end(tmp_path: Path) -> None:
    """`bash scripts/quickstart.sh` runs examples/quickstart.py: register, promote, compare,
    load a real torch model and verify, in a fresh repository."""
    root = Path(__file__).resolve().parent.parent
    work = tmp_path / "qs"
    r = subprocess.run(
        [sys.executable, str(root / "examples" / "quickstart.py"), str(work)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "outputs identical to the trained model: True" in r.stdout
    assert "verify: 0 problems" in r.stdout
    assert "promoted v1.1.0 to production" in r.stdout
    log = subprocess.run(
        ["git", "log", "--oneline", "refs/uniflow/models/sentiment_classifier"],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(log) == 5  # two registers, three promotions
