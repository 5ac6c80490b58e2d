"""The benchmark's model file: a safetensors file of 200 float32 tensors of random normal
data (a small head first), written from lazily generated tensors so that a 4 GiB file never
sits in memory, and its two variants (the head changed; a tensor added, which shifts the
header). Cached by size under the cache directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from benchmarks.harness import MIB, log

BENCH_SCHEMA = 1  # bump when a cached artefact (file layout, list repo) must be rebuilt


def tensor_layout(size_bytes: int, n_tensors: int = 200) -> list[tuple[str, tuple[int, ...]]]:
    """~n float32 tensors summing to about ``size_bytes``; a small classifier head sorts first."""
    head = ("classifier.weight", (10, 1024))
    rest = max(size_bytes - 10 * 1024 * 4, 4096)
    per = rest // (n_tensors - 1) // 4  # floats per body tensor
    cols = 1024 if per >= 1024 else per
    rows = max(per // cols, 1)
    body = [(f"layers.{i:03d}.weight", (rows, cols)) for i in range(n_tensors - 1)]
    return [head, *body]


def write_safetensors(path: Path, tensors: list[tuple[str, Any]]) -> None:
    """Stream a safetensors file exactly as ``safetensors.numpy.save_file`` lays it out.

    Same dtype for every tensor here, so the order is by name; compact JSON header padded with
    spaces to 8 bytes. tests/test_benchmarks.py checks byte equality with save_file.
    """
    import numpy as np

    # items are numpy arrays or _Deferred stand-ins (dtype, shape, nbytes, tobytes)
    dtypes = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int64"): "I64"}
    items = sorted(tensors, key=lambda kv: kv[0])
    header: dict[str, Any] = {}
    offset = 0
    for name, arr in items:
        n = arr.nbytes
        header[name] = {
            "dtype": dtypes[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        for _name, arr in items:
            fh.write(arr.tobytes(order="C"))
    os.replace(tmp, path)


def gen_tensor(seed: int, index: int, shape: tuple[int, ...]) -> Any:
    import numpy as np

    rng = np.random.default_rng([seed, index])
    return rng.standard_normal(size=shape, dtype=np.float32)


class LazyTensors:
    """Tensors generated on demand (one at a time) so big files stream with little memory."""

    def __init__(self, size_bytes: int, seed: int = 1234) -> None:
        self.layout = tensor_layout(size_bytes)
        self.seed = seed

    def items(self, overrides: dict[str, Any] | None = None) -> list[tuple[str, Any]]:
        overrides = overrides or {}
        out = []
        for i, (name, shape) in enumerate(self.layout):
            out.append((name, _Deferred(self.seed, i, shape, overrides.get(name))))
        for name, arr in overrides.items():
            if name not in dict(self.layout):
                out.append((name, arr))
        return out


class _Deferred:
    """Looks enough like an ndarray for write_safetensors; generates its data when written."""

    def __init__(self, seed: int, index: int, shape: tuple[int, ...], override: Any = None) -> None:
        import numpy as np

        self.seed, self.index, self.shape, self.override = seed, index, shape, override
        self.dtype = np.dtype("float32")
        n = 1
        for d in shape:
            n *= d
        self.nbytes = n * 4

    def tobytes(self, order: str = "C") -> bytes:
        if self.override is not None:
            return self.override.tobytes(order=order)
        return gen_tensor(self.seed, self.index, self.shape).tobytes(order=order)


def model_files(
    cache: Path, size_mib: int, kinds: tuple[str, ...] = ("base", "head", "shift")
) -> dict[str, Path]:
    """The base file and its two variants (head change, header shift), cached by size."""
    import numpy as np

    d = cache / "files"
    d.mkdir(parents=True, exist_ok=True)
    stem = f"model-{size_mib}mib-s{BENCH_SCHEMA}"
    paths = {
        "base": d / f"{stem}.safetensors",
        "head": d / f"{stem}-head.safetensors",
        "shift": d / f"{stem}-shift.safetensors",
    }
    lazy = LazyTensors(size_mib * MIB)
    head_name, head_shape = lazy.layout[0]
    new_head = np.random.default_rng(99).standard_normal(size=head_shape, dtype=np.float32)
    extra = {
        "zz.extra_tensor_with_a_much_longer_name_that_grows_the_header.weight": np.arange(
            64, dtype=np.float32
        )
    }
    plans = {"base": {}, "head": {head_name: new_head}, "shift": extra}
    for kind, path in paths.items():
        if kind in kinds and not path.exists():
            log(f"generating {path.name} ({size_mib} MiB)")
            write_safetensors(path, lazy.items(plans[kind]))
    return paths
