"""Content-defined chunking: a small change to a safetensors file stores a few percent of new bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from uniflow import ModelRegistry


def _stored_bytes(reg: ModelRegistry) -> int:
    """Bytes on disk for the chunks: their packs (and any chunk files)."""
    packs = reg.store.root / "packs"
    chunk_files = sum(p.stat().st_size for _, p in reg.store.iter_objects())
    return chunk_files + sum(p.stat().st_size for p in packs.glob("*.pack"))


def _tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {"head.bias": rng.standard_normal(16, dtype=np.float32)}
    for i in range(24):
        out[f"layers.{i:02d}.weight"] = rng.standard_normal((512, 512), dtype=np.float32)  # 1 MiB each
    return out


def test_changing_one_small_tensor_stores_a_few_percent(registry: ModelRegistry, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = _tensors(rng)
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    registry.register(model=path, name="lm", version="v1.0.0")
    before = _stored_bytes(registry)
    size = path.stat().st_size

    tensors["head.bias"] = tensors["head.bias"] + 1.0  # fine-tune only the head
    save_file(tensors, str(path))
    registry.register(model=path, name="lm", version="v1.1.0")
    new_pct = 100 * (_stored_bytes(registry) - before) / size
    assert new_pct < 10, f"{new_pct:.1f}% of the file stored again"

    # a re-save whose header grows shifts every offset; most chunks are still shared
    before = _stored_bytes(registry)
    tensors["a_much_longer_tensor_name_that_grows_the_header.extra"] = np.zeros(4, dtype=np.float32)
    save_file(tensors, str(path))
    registry.register(model=path, name="lm", version="v1.2.0")
    shift_pct = 100 * (_stored_bytes(registry) - before) / size
    assert shift_pct < 15, f"{shift_pct:.1f}% of the file stored again after a header shift"

    cmp = registry.compare_versions("lm", ["v1.0.0", "v1.1.0"]).to_dict()
    assert cmp["shared_bytes"]["v1.1.0"] > 0.85 * size


def test_identical_content_across_models_is_stored_once(registry: ModelRegistry, tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(np.random.default_rng(1).bytes(5 * 1024 * 1024))
    registry.register(model=path, name="a", version="v1.0.0")
    once = _stored_bytes(registry)
    assert once >= 5 * 1024 * 1024
    registry.register(model=path, name="b", version="v1.0.0")
    registry.register(model=path, name="a", version="v2.0.0")
    assert _stored_bytes(registry) == once
