"""A small, real registry for the UI tests, the notebook and the screenshots (no tests here).

``build_demo(path)`` makes a Git repository with code commits between registrations and:

- ``sentiment_classifier``: six versions of a real PyTorch text classifier (trained with
  different step counts), metrics, params, tags, a Markdown card, promotions, an
  archival and a rollback;
- ``churn_model``: three scikit-learn logistic regressions;
- ``xss_probe``: a version whose description, tag, param and metric key carry a planted
  ``<script>`` and ``onerror=`` (they must show as text and never run).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada Lovelace",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada Lovelace",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}

PLANTED_SCRIPT = "<script>window.__pwned = 1; alert('pwned')</script>"
PLANTED_ONERROR = '<img src="x" onerror="window.__pwned = 1; alert(1)">'

CARD = """# Sentiment classifier

An embedding-bag text classifier for **product reviews** (English).

- trained on `reviews-2024-05`
- evaluated on a held-out split

See [the training notes](https://example.com/notes) for details.
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, check=True, capture_output=True, timeout=60
    )


def _commit(repo: Path, message: str, content: str) -> None:
    (repo / "train.py").write_text(content)
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-q", "-m", message)


def build_demo(path: Path, *, sentiment_versions: int = 6) -> Path:
    """Create the demo repository at ``path`` (must not exist or be empty); returns it."""
    for k, v in GIT_ENV.items():
        os.environ.setdefault(k, v)
    import torch  # noqa: F401  (the models below are real torch and sklearn models)

    from tests._models import trained_sentiment_net
    from uniflow import ModelRegistry

    path.mkdir(parents=True, exist_ok=True)
    _git(path, "init", "-q", "-b", "main")
    _commit(path, "initial training script", "print('training v0')\n")
    reg = ModelRegistry(path)
    accuracies = [0.81, 0.84, 0.86, 0.85, 0.89, 0.91]
    for i in range(sentiment_versions):
        if i:
            _commit(path, f"training: tweak {i} (lr schedule)", f"print('training v{i}')\n")
        acc = accuracies[i % len(accuracies)]
        reg.register(
            model=trained_sentiment_net(seed=i, steps=5 + i),
            name="sentiment_classifier",
            version=f"v1.{i}.0",
            framework="pytorch",
            metrics={"accuracy": acc, "f1": round(acc - 0.02, 3), "loss": round(1.2 - acc, 3)},
            params={"lr": 0.1, "steps": 5 + i, "optimizer": {"name": "sgd", "momentum": 0.0}},
            tags={"language": "en", "dataset": "reviews-2024-05"},
            description=CARD,
        )
    reg.promote("sentiment_classifier", "v1.0.0", "staging", reason="first candidate")
    reg.promote("sentiment_classifier", "v1.0.0", "production", reason="passed review")
    reg.promote("sentiment_classifier", "v1.2.0", "staging")
    reg.promote("sentiment_classifier", "v1.2.0", "production", reason="better accuracy")
    reg.rollback("sentiment_classifier", "production", reason="latency regression")
    reg.archive("sentiment_classifier", "v1.1.0", reason="superseded")
    reg.promote("sentiment_classifier", f"v1.{sentiment_versions - 1}.0", "staging")

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    for i, c in enumerate((0.1, 1.0, 10.0)):
        model = LogisticRegression(C=c, max_iter=200).fit(x, y)
        reg.register(
            model=model,
            name="churn_model",
            version=f"v0.{i + 1}.0",
            framework="sklearn",
            metrics={"auc": round(0.7 + 0.05 * i, 3)},
            params={"C": c},
        )
    reg.promote("churn_model", "v0.3.0", "production")

    probe = path / "probe.bin"
    probe.write_bytes(b"probe model bytes\n")
    reg.register(
        model=str(probe),
        name="xss_probe",
        version="v1.0.0",
        metrics={"score": 0.5, PLANTED_ONERROR: 1.0},
        tags={"note": PLANTED_SCRIPT, "img": PLANTED_ONERROR},
        params={"html": PLANTED_ONERROR},
        description=f"Planted: {PLANTED_SCRIPT} and {PLANTED_ONERROR}\n\n"
        "[click](javascript:window.__pwned=1)",
    )
    reg.register(
        model=str(probe),
        name="xss_probe",
        version="v1.0.1",
        metrics={"score": 0.6},
        description=PLANTED_ONERROR,
        tags={"note": PLANTED_ONERROR},
    )
    probe.unlink()
    return path


if __name__ == "__main__":  # python -m tests.ui._demo DIR
    import sys

    print(build_demo(Path(sys.argv[1])))
