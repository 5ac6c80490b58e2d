"""Real models the tests register (importable from a fresh process)."""

from __future__ import annotations

import torch
from torch import nn


class SentimentNet(nn.Module):
    """A small real text classifier: embedding bag + MLP head."""

    def __init__(self, vocab_size: int = 2000, dim: int = 64, classes: int = 2) -> None:
        super().__init__()
        self.vocab_size, self.dim, self.classes = vocab_size, dim, classes
        self.embed = nn.EmbeddingBag(vocab_size, dim)
        self.hidden = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(self.embed(tokens))))


def trained_sentiment_net(seed: int = 0, steps: int = 20) -> SentimentNet:
    torch.manual_seed(seed)
    model = SentimentNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randint(0, 2000, (64, 12))
    y = (x.float().mean(dim=1) > 1000).long()
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return model.eval()
