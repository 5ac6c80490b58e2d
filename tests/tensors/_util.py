"""Helpers (no tests) for the tensor tests: a real torch model with a body, a head and many
tensors, fine-tuning only its head, and what lies in a store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from uniflow._records.manifest import FileEntry


class TinyLM(nn.Module):
    """A small real language-model-shaped network: embedding, MLP blocks, classifier head.

    safetensors orders tensors by name, so ``blocks.*`` come first, then ``embed.weight``,
    then the small ``head.*`` at the end of the file."""

    def __init__(
        self, vocab: int = 8192, dim: int = 256, hidden: int = 1024, depth: int = 4, classes: int = 4
    ) -> None:
        super().__init__()
        self.vocab, self.dim, self.hidden, self.depth, self.classes = vocab, dim, hidden, depth, classes
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)) for _ in range(depth)
        )
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens).mean(dim=1)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


def tiny_lm(seed: int = 0, **kwargs: Any) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM(**kwargs).eval()


def fine_tune_head(model: nn.Module, steps: int = 5, seed: int = 1) -> nn.Module:
    """Train only ``model.head`` (the rest frozen) on random data for a few steps."""
    torch.manual_seed(seed)
    head = model.head  # type: ignore[union-attr]
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    vocab = model.embed.num_embeddings  # type: ignore[union-attr]
    x = torch.randint(0, vocab, (32, 8))
    y = torch.randint(0, head.out_features, (32,))
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def store_bytes(repo: Path) -> int:
    """Bytes of the chunks stored in ``repo/.git/uniflow``: chunk files and packs."""
    store = repo / ".git" / "uniflow"
    files = [*(store / "objects").rglob("*"), *(store / "packs").glob("*.pack")]
    return sum(p.stat().st_size for p in files if p.is_file())


def chunks_under(entry: FileEntry, names: set[str]) -> dict[str, int]:
    """``{digest hex: size}`` of the chunks of a manifest file entry overlapping the byte
    ranges of the tensors ``names`` (computed here, independently of uniflow's reader)."""
    ranges = [(t.begin, t.end) for t in entry.tensors or () if t.name in names and t.end > t.begin]
    out: dict[str, int] = {}
    pos = 0
    for digest, size in entry.chunks:
        if any(b < pos + size and pos < e for b, e in ranges):
            out[digest.hex()] = size
        pos += size
    return out
