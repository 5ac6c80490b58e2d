"""Partial loads (issue 12): some tensors of a version, from the chunks under them only."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy

from tests.helpers import clone, flip_stored_byte, open_registry, run_py, shared_setup, stored_chunks
from tests.tensors._util import TinyLM, chunks_under, fine_tune_head, store_bytes, tiny_lm
from uniflow import IntegrityError, ModelRegistry, UsageError


def _equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_partial_load_returns_the_matching_tensors_equal_to_a_full_load(registry: ModelRegistry) -> None:
    model = tiny_lm()
    registry.register(model, "lm", version="v1.0.0")
    full = registry.load("lm", "v1.0.0", model=TinyLM()).state_dict()
    part = registry.load("lm", "v1.0.0", tensors=["head.*", "blocks.0.*"])
    assert set(part) == {
        "head.weight",
        "head.bias",
        "blocks.0.0.weight",
        "blocks.0.0.bias",
        "blocks.0.2.weight",
        "blocks.0.2.bias",
    }
    assert all(isinstance(t, torch.Tensor) for t in part.values())
    assert _equal(part, {k: full[k] for k in part})
    assert _equal(
        registry.load("lm", stage="development", tensors="embed.weight"),
        {"embed.weight": full["embed.weight"]},
    )


def test_an_unmatched_pattern_is_one_usage_error(registry: ModelRegistry) -> None:
    registry.register(tiny_lm(), "lm", version="v1.0.0")
    with pytest.raises(
        UsageError, match=r"no tensor of model 'lm' version 'v1.0.0' matches 'heads\.\*'"
    ) as info:
        registry.load("lm", "v1.0.0", tensors=["head.*", "heads.*"])
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="model="):
        registry.load("lm", "v1.0.0", tensors=["head.*"], model=TinyLM())
    with pytest.raises(UsageError, match="glob patterns"):
        registry.load("lm", "v1.0.0", tensors=[])


def test_partial_load_reads_only_the_chunks_under_the_tensors(registry: ModelRegistry) -> None:
    """A chunk nobody asked for may even be corrupt: only the chunks under the requested
    tensors are read; a corrupt chunk under one of them is an IntegrityError."""
    registry.register(tiny_lm(), "lm", version="v1.0.0")
    (entry,) = registry.repository.manifest("lm", "v1.0.0").files
    head = chunks_under(entry, {"head.weight", "head.bias"})
    body = chunks_under(entry, {"blocks.0.0.weight"})
    assert not set(head) & set(body)
    where = {c.digest: c for c in stored_chunks(registry.store)}
    for digest in body:  # corrupt every chunk of a tensor we do not ask for, where it lies
        c = where[digest]
        os.chmod(c.path, 0o644)
        with open(c.path, "r+b") as f:
            f.seek(c.offset)
            f.write(b"\0" * c.length)
    part = registry.load("lm", "v1.0.0", tensors=["head.*"])
    assert set(part) == {"head.weight", "head.bias"}
    with pytest.raises(
        IntegrityError, match=r"model 'lm' version 'v1.0.0' file 'model.safetensors'.*corrupted"
    ):
        registry.load("lm", "v1.0.0", tensors=["blocks.0.0.weight"])


def test_a_corrupted_chunk_under_a_requested_tensor_is_detected(registry: ModelRegistry) -> None:
    registry.register(tiny_lm(), "lm", version="v1.0.0")
    (entry,) = registry.repository.manifest("lm", "v1.0.0").files
    (digest, size), *_ = chunks_under(entry, {"head.weight"}).items()
    (stored,) = [c for c in stored_chunks(registry.store) if c.digest == digest]
    flip_stored_byte(stored, size // 2)
    with pytest.raises(IntegrityError, match=f"chunk {digest[:16]} is corrupted"):
        registry.load("lm", "v1.0.0", tensors=["head.weight"])


def test_a_fresh_clone_fetches_only_the_chunks_of_the_requested_tensors(tmp_path: Path) -> None:
    """Bare Git remote + directory blob remote; a fresh clone loads the head: exactly the
    chunks under the head arrive in its store (a small fraction of the model), and the
    tensors equal those of a full load."""
    bare, a = shared_setup(tmp_path)
    ra = open_registry(a)
    model = tiny_lm()
    ra.register(model, "lm", version="v1.0.0")
    ra.register(fine_tune_head(model), "lm", version="v1.1.0")
    ra.push()
    (entry,) = ra.repository.manifest("lm", "v1.1.0").files
    expected = chunks_under(entry, {"head.weight", "head.bias"})

    b = clone(bare, tmp_path / "b")
    rb = open_registry(b)
    rb.pull()
    assert store_bytes(b) == 0
    asked: list[list[str]] = []
    fetch = rb.store.fetcher

    def recording(store, digests):  # the store's fetcher, watched
        asked.append(list(digests))
        return fetch(store, digests)

    rb.store.fetcher = recording
    part = rb.load("lm", "v1.1.0", tensors=["head.*"])
    assert [sorted(d) for d in asked] == [sorted(expected)]
    arrived = store_bytes(b)
    assert arrived == sum(expected.values())
    assert arrived <= 0.1 * entry.size, (arrived, entry.size)
    full = rb.load("lm", "v1.1.0", model=TinyLM()).state_dict()
    assert _equal(part, {"head.weight": full["head.weight"], "head.bias": full["head.bias"]})
    assert store_bytes(b) >= entry.size  # the full load fetched the rest


def test_format_1_versions_have_no_tensor_data(registry: ModelRegistry, tmp_path: Path, monkeypatch) -> None:
    """A version registered before format 2 still loads; a partial load says why it cannot."""
    from uniflow._ops import register as _register
    from uniflow._records import tensors as _tensors

    with monkeypatch.context() as mp:  # what uniflow 0.1 wrote: format 1, no tensor lists
        mp.setattr(_register, "MANIFEST_FORMAT", 1)
        mp.setattr(_tensors, "scan_for", lambda path: None)
        registry.register(tiny_lm(), "lm", version="v1.0.0")
    m = registry.repository.manifest("lm", "v1.0.0")
    assert m.format == 1 and m.files[0].tensors is None
    assert isinstance(registry.load("lm", "v1.0.0", model=TinyLM()), TinyLM)
    with pytest.raises(UsageError, match=r"has no tensor data \(registered with manifest format 1\)"):
        registry.load("lm", "v1.0.0", tensors=["head.*"])


def test_numpy_safetensors_load_as_numpy_arrays_without_torch(tmp_path: Path, repo: Path) -> None:
    """A .safetensors of numpy arrays registered as a path loads partially in a process
    where torch cannot be imported: numpy arrays come back."""
    rng = np.random.default_rng(0)
    arrays = {
        "enc.w": rng.standard_normal((64, 64)).astype(np.float32),
        "dec.w": np.arange(10, dtype=np.int64),
    }
    save_numpy(arrays, str(tmp_path / "weights.safetensors"))
    ModelRegistry(repo).register(str(tmp_path / "weights.safetensors"), "np", version="v1.0.0")
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from uniflow import ModelRegistry\n"
        "out = ModelRegistry('.').load('np', 'v1.0.0', tensors=['dec.*', 'enc.w'])\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        "print(sorted((k, type(v).__name__, str(v.dtype)) for k, v in out.items()))\n"
        "np.save('enc.npy', out['enc.w'])\n"
    )
    r = run_py(code, repo)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[('dec.w', 'ndarray', 'int64'), ('enc.w', 'ndarray', 'float32')]"
    assert np.array_equal(np.load(repo / "enc.npy"), arrays["enc.w"])
