"""UniFlow quickstart: register, promote, compare and load a real PyTorch model.

Runs in a fresh temporary Git repository (or the directory given as the first argument)
and prints what it does at each step.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from uniflow import ModelRegistry, ModelStage


class SentimentNet(nn.Module):
    """A small text classifier: bag of embeddings, one hidden layer, two classes."""

    def __init__(self, vocab_size: int = 5000, dim: int = 128, classes: int = 2) -> None:
        super().__init__()
        self.vocab_size, self.dim, self.classes = vocab_size, dim, classes
        self.embed = nn.EmbeddingBag(vocab_size, dim)
        self.hidden = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(self.embed(tokens))))


def train(model: SentimentNet, x: torch.Tensor, y: torch.Tensor, steps: int) -> dict[str, float]:
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    tp = int(((pred == 1) & (y == 1)).sum())
    precision = tp / max(int((pred == 1).sum()), 1)
    recall = tp / max(int((y == 1).sum()), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return {"accuracy": round(float((pred == y).float().mean()), 4), "f1": round(f1, 4)}


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def main() -> None:
    workdir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="uniflow-quickstart-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / ".git").exists():
        git(workdir, "init", "-q")
        git(workdir, "config", "user.name", "UniFlow Quickstart")
        git(workdir, "config", "user.email", "quickstart@uniflow.invalid")
        (workdir / "train.py").write_text("# the training code lives here\n")
        git(workdir, "add", "train.py")
        git(workdir, "commit", "-q", "-m", "training code")
    print(f"repository: {workdir}")

    torch.manual_seed(0)
    x = torch.randint(0, 5000, (512, 20))
    y = (x.float().mean(dim=1) > 2500).long()
    noise = torch.rand(512) < 0.1  # 10% label noise keeps the metrics honest
    y = torch.where(noise, 1 - y, y)

    registry = ModelRegistry(workdir)
    model_v1 = SentimentNet()
    metrics_v1 = train(model_v1, x, y, steps=3)
    v1 = registry.register(model=model_v1, name="sentiment_classifier", version="v1.0.0", framework="pytorch",
                           metrics=metrics_v1, tags={"language": "en", "architecture": "bag-of-embeddings"})
    print(f"registered {v1.name} {v1.version}: {v1.size / 1e6:.1f} MB, metrics {v1.metrics}")

    model_v2 = SentimentNet()
    model_v2.load_state_dict(model_v1.state_dict())
    metrics_v2 = train(model_v2, x, y, steps=12)  # keep training: a fine-tune of v1
    v2 = registry.register(model=model_v2, name="sentiment_classifier", version="v1.1.0", framework="pytorch",
                           metrics=metrics_v2, tags={"language": "en", "architecture": "bag-of-embeddings"})
    print(f"registered {v2.name} {v2.version}: metrics {v2.metrics}")

    registry.promote("sentiment_classifier", "v1.0.0", ModelStage.STAGING)
    registry.promote("sentiment_classifier", "v1.0.0", ModelStage.PRODUCTION)
    print("promoted v1.0.0 to staging, then to production")

    comparison = registry.compare_versions("sentiment_classifier", ["v1.0.0", "v1.1.0"])
    print(comparison)

    better = "v1.1.0" if metrics_v2["accuracy"] >= metrics_v1["accuracy"] else "v1.0.0"
    registry.promote("sentiment_classifier", better, "production", reason="best accuracy in comparison")
    print(f"promoted {better} to production")

    prod = registry.load("sentiment_classifier", stage=ModelStage.PRODUCTION)
    expected = model_v2 if better == "v1.1.0" else model_v1
    with torch.no_grad():
        same = torch.equal(prod(x[:16]), expected(x[:16]))
    print(f"loaded production model: {type(prod).__name__}, outputs identical to the trained model: {same}")
    if not same:
        raise SystemExit("loaded model differs from the registered one")

    print("history:")
    for event in registry.history("sentiment_classifier"):
        print(f"  {event.seq:>2} {event.action:<8} {event.version:<7} {event.from_stage or '-'} -> {event.to_stage}")
    print(f"verify: {len(registry.verify().problems)} problems")
    print(f"inspect with: cd {workdir} && git log --oneline refs/uniflow/models/sentiment_classifier")


if __name__ == "__main__":
    main()
