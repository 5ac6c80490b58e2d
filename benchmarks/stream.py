"""Registering an in-memory model (issue 14, item 2): ``register(model=<state dict>)`` streams
the safetensors bytes from the tensors' memory into the store. Its yardstick is what a user
would do to keep the same model durably by hand: ``safetensors.torch.save_file`` + fsync.

Keys: ``save_fsync_state_dict_1g`` (``save_file`` of the state dict, fsync of the file and of
its directory), ``register_state_dict_1g`` (``ModelRegistry(fresh repo).register(sd, ...)``,
durable), ``register_state_dict_tmpfile_1g`` (the same through the temporary file that
register wrote before it streamed: ``TorchSerializer.stream`` patched to None), and the
ratios ``register_state_dict_vs_save_fsync`` (median of per-round ratios, the goal: <= 1.3)
and ``register_state_dict_tmpfile_vs_save_fsync``; ``*_cpu``: the CPU seconds (all threads of
this process) of each, which the other tenants of a shared machine disturb far less. The
three run back to back in each round, in a rotating order, so that drift hits them alike.

The state dict has the layout of the 1 GiB file of ``benchmarks.modelfile`` (200 float32 tensors,
a small head first) with the same random normal data, built in memory (``--size-mib``).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness import Results, fsync_path, git_repo, log, median, rmtree, sync

MODEL = "bench_state_dict"
KEYS = [
    "save_fsync_state_dict_1g",
    "register_state_dict_1g",
    "register_state_dict_tmpfile_1g",
    "register_state_dict_vs_save_fsync",
    "register_state_dict_tmpfile_vs_save_fsync",
    "save_fsync_state_dict_cpu",
    "register_state_dict_cpu",
    "register_state_dict_tmpfile_cpu",
]
GOALS = [
    (
        "register a state dict",
        "register_state_dict_vs_save_fsync",
        "<=",
        1.3,
        "register(model=<1 GiB state dict>) <= 1.3x safetensors save_file + fsync",
    ),
    (
        "register near the disk",
        "register_1g_vs_cp_fsync",
        "<=",
        1.2,
        "register 1 GiB file <= 1.2x cp + fsync (issue 14)",
    ),
]


def state_dict(size_bytes: int) -> dict[str, Any]:
    """The tensors of ``benchmarks.modelfile``'s model file, in memory (torch views of numpy arrays)."""
    import torch

    from benchmarks.modelfile import LazyTensors, gen_tensor

    lazy = LazyTensors(size_bytes)
    return {
        name: torch.from_numpy(gen_tensor(lazy.seed, i, shape)) for i, (name, shape) in enumerate(lazy.layout)
    }


@contextlib.contextmanager
def through_a_temporary_file() -> Iterator[None]:
    """Register as before streaming: the serializer writes model.safetensors to tmp/ first."""
    from uniflow.serializers._torch import TorchSerializer

    saved = TorchSerializer.stream
    TorchSerializer.stream = lambda self, obj, trust=False: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        TorchSerializer.stream = saved  # type: ignore[method-assign]


def measure_rounds(
    work: Path, sd: dict[str, Any], runs: int, kinds: tuple[str, ...] = ("save", "stream", "tmpfile")
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """``runs`` rounds of the ``kinds`` back to back, in a rotating order: ``save``
    (``save_file`` + fsync of the file and its directory), ``stream`` (register into a fresh
    repository, durable), ``tmpfile`` (the same through a temporary file). Wall seconds and
    CPU seconds (all threads of this process), per kind, in round order."""
    import safetensors.torch as st

    from uniflow import ModelRegistry

    samples: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}

    def save() -> tuple[float, float]:
        out = work / "saved.safetensors"
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        st.save_file(sd, str(out))
        fsync_path(out)
        fsync_path(work)
        t, c = time.perf_counter() - t0, time.process_time() - c0
        out.unlink()
        return t, c

    def register(kind: str) -> tuple[float, float]:
        repo = git_repo(work / "stream")
        ctx = through_a_temporary_file() if kind == "tmpfile" else contextlib.nullcontext()
        with ctx:
            gc.collect()
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            ModelRegistry(repo).register(sd, MODEL, version="v1.0.0")
            t, c = time.perf_counter() - t0, time.process_time() - c0
        rmtree(work / "stream")
        return t, c

    for i in range(runs):
        n = i % len(kinds)
        for kind in kinds[n:] + kinds[:n]:
            t, c = save() if kind == "save" else register(kind)
            samples[kind].append(t)
            cpu[kind].append(c)
        log(
            f"    round {i + 1}/{runs}: "
            + ", ".join(f"{k} {samples[k][-1]:.2f} s (CPU {cpu[k][-1]:.2f} s)" for k in kinds)
        )
    return samples, cpu


def bench_stream(res: Results, work: Path, size_mib: int, runs: int) -> None:
    sd = state_dict(size_mib << 20)
    samples, cpu = measure_rounds(work, sd, runs)
    res.add(
        "save_fsync_state_dict_1g",
        samples["save"],
        "safetensors.torch.save_file(state dict) + fsync(file) + fsync(dir)",
    )
    res.add(
        "register_state_dict_1g",
        samples["stream"],
        "ModelRegistry(fresh repo).register(state dict, ...): streamed from the tensors' memory, durable",
    )
    res.add(
        "register_state_dict_tmpfile_1g",
        samples["tmpfile"],
        "the same register through a temporary model.safetensors (the code path before streaming)",
    )
    res.add("save_fsync_state_dict_cpu", cpu["save"], "CPU seconds (all threads) of save_file + fsync")
    res.add("register_state_dict_cpu", cpu["stream"], "CPU seconds (all threads) of the streamed register")
    res.add(
        "register_state_dict_tmpfile_cpu",
        cpu["tmpfile"],
        "CPU seconds (all threads) of the tmp-file register",
    )
    for key, kind in (
        ("register_state_dict_vs_save_fsync", "stream"),
        ("register_state_dict_tmpfile_vs_save_fsync", "tmpfile"),
    ):
        pairs = [r / s for r, s in zip(samples[kind], samples["save"], strict=True)]
        res.value(
            key,
            round(median(pairs), 3),
            f"median over rounds of register ({kind}) / save_file + fsync, measured back to back",
        )
