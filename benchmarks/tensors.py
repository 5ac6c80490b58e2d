"""Tensor-level figures (issue 12): what recording per-tensor digests costs at register, how
long a diff of two 1 GiB versions takes (in process and as a whole `uniflow models diff`
process), and a partial load of the head against a full verified load, locally and from a
fresh clone whose chunks are on a directory blob remote.

Keys: ``register_1g_tensors`` / ``register_1g_no_tensors`` (and ``register_tensor_overhead_pct``),
``register_again_tensors`` / ``register_again_no_tensors`` (``register_again_tensor_overhead_pct``),
``diff_1g_ms``, ``diff_1g_cli``, ``partial_load_head_ms``, ``full_load_1g_ms``
(``partial_load_head_vs_full``), ``partial_load_head_remote_ms``, ``full_load_1g_remote_ms``,
``partial_load_head_fetched_bytes`` (``..._pct`` of the file).
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness import Results, git_env, git_repo, log, median, object_sizes, rmtree, run, sync, wall

MODEL = "bench_tensors"
HEAD = "classifier.weight"  # the small head of benchmarks.modelfile.tensor_layout (first in the file)

KEYS = [
    "register_tensor_overhead_pct",
    "diff_1g_ms",
    "diff_1g_cli",
    "partial_load_head_ms",
    "full_load_1g_ms",
    "partial_load_head_remote_ms",
    "partial_load_head_fetched_bytes",
]


@contextlib.contextmanager
def no_tensor_digests() -> Iterator[None]:
    """Register as manifest format 1 did: no header parsing, no per-tensor hashing."""
    from uniflow._records import tensors as _tensors

    saved = _tensors.scan_for
    _tensors.scan_for = lambda path: None  # type: ignore[assignment]
    try:
        yield
    finally:
        _tensors.scan_for = saved  # type: ignore[assignment]


def _registry(repo: Path) -> Any:
    from uniflow import ModelRegistry

    return ModelRegistry(repo)


def bench_register_overhead(res: Results, f: Path, work: Path, runs: int) -> None:
    """Fresh-repository registers (durable, fsync-bound) and re-registers of the same bytes
    (every chunk present: CPU-bound, the worst case for the extra hashing), alternating the
    two code paths so that the machine's drift hits both alike."""
    fresh: dict[bool, list[float]] = {True: [], False: []}
    again: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}  # CPU seconds of the process (all threads)
    for i in range(runs):
        for with_digests in (True, False) if i % 2 == 0 else (False, True):
            repo = git_repo(work / "overhead")
            ctx = contextlib.nullcontext() if with_digests else no_tensor_digests()
            with ctx:
                gc.collect()
                sync()
                t0, c0 = time.perf_counter(), time.process_time()
                _registry(repo).register(str(f), MODEL, version="v1.0.0")
                fresh[with_digests].append(time.perf_counter() - t0)
                cpu[with_digests].append(time.process_time() - c0)
                sync()
                t0 = time.perf_counter()
                _registry(repo).register(str(f), MODEL, version="v1.0.1")
                again[with_digests].append(time.perf_counter() - t0)
            m = _registry(repo).repository.manifest(MODEL, "v1.0.0")
            assert (m.files[0].tensors is not None) == with_digests
            log(
                f"    sample {i + 1}/{runs} digests={with_digests}: register "
                f"{fresh[with_digests][-1]:.2f} s, "
                f"again {again[with_digests][-1]:.2f} s"
            )
    rmtree(work / "overhead")
    res.add(
        "register_1g_tensors",
        fresh[True],
        "register 1 GiB in a fresh repo, recording per-tensor digests (format 2)",
    )
    res.add(
        "register_1g_no_tensors", fresh[False], "the same without per-tensor digests (format 1's code path)"
    )
    res.add(
        "register_again_tensors", again[True], "the same file registered again (chunks present), with digests"
    )
    res.add("register_again_no_tensors", again[False], "the same, without per-tensor digests")
    res.add(
        "register_cpu_tensors", cpu[True], "CPU seconds (all threads) of the fresh register, with digests"
    )
    res.add("register_cpu_no_tensors", cpu[False], "the same, without per-tensor digests")
    # each pair ran back to back, so the median of the pairwise ratios drifts less than the ratio of medians
    res.value(
        "register_tensor_overhead_paired_pct",
        round((median([x / y for x, y in zip(fresh[True], fresh[False], strict=True)]) - 1) * 100, 2),
        "median over pairs run back to back of (with / without - 1) x 100",
    )
    for key, a, b in (
        ("register_tensor_overhead_pct", fresh[True], fresh[False]),
        ("register_again_tensor_overhead_pct", again[True], again[False]),
        ("register_cpu_tensor_overhead_pct", cpu[True], cpu[False]),
    ):
        res.value(
            key,
            round((median(a) / median(b) - 1) * 100, 2),
            "(median with digests / median without - 1) x 100",
        )


def bench_diff_and_partial(
    res: Results, files: dict[str, Path], work: Path, cmd: list[str] | None, runs: int
) -> None:
    """Two versions (v2 changes the head), then diff and partial loads, in process and by CLI."""
    repo = git_repo(work / "diff")
    reg = _registry(repo)
    for version, kind in (("v1.0.0", "base"), ("v2.0.0", "head")):  # one file name for both versions
        src = work / kind / "model.safetensors"
        src.parent.mkdir(parents=True, exist_ok=True)
        if not src.exists():
            os.link(files[kind], src)
        reg.register(str(src), MODEL, version=version)
        rmtree(src.parent)
    size = files["base"].stat().st_size

    samples = []
    for _ in range(runs + 1):
        gc.collect()
        t0 = time.perf_counter()
        d = _registry(repo).diff(MODEL, "v1.0.0", "v2.0.0")
        line = d.summary["line"]
        samples.append((time.perf_counter() - t0) * 1000)
    res.add(
        "diff_1g_ms", samples[1:], f"fresh ModelRegistry(repo).diff(v1, v2) + summary, in process: {line}"
    )
    if cmd is not None:
        cli = [wall([*cmd, "models", "diff", MODEL, "v1.0.0", "v2.0.0"], cwd=repo) for _ in range(runs + 1)]
        res.add("diff_1g_cli", cli[1:], "`uniflow models diff NAME v1 v2`, whole process wall time")
    else:
        res.fail(["diff_1g_cli"], "no working uniflow CLI")

    reg.load(MODEL, "v2.0.0", tensors=[HEAD])  # warm-up: imports torch (or numpy) once
    part, full = [], []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        out = _registry(repo).load(MODEL, "v2.0.0", tensors=[HEAD])
        part.append((time.perf_counter() - t0) * 1000)
        assert list(out) == [HEAD]
        shutil.rmtree(repo / ".git" / "uniflow" / "cache")  # a first, verified load each time
        gc.collect()
        t0 = time.perf_counter()
        path = _registry(repo).load_path(MODEL, "v2.0.0")
        full.append((time.perf_counter() - t0) * 1000)
        assert path.is_dir()
    res.add(
        "partial_load_head_ms",
        part,
        f"load(name, v2, tensors=['{HEAD}']): the head (40 KiB) as a tensor, verified, in process",
    )
    res.add(
        "full_load_1g_ms", full, "load_path(name, v2) with an empty cache: every chunk verified and assembled"
    )
    res.value("partial_load_head_vs_full", round(median(part) / median(full), 5))
    bench_remote_partial(res, repo, work, size, runs)
    rmtree(repo)


def bench_remote_partial(res: Results, repo: Path, work: Path, size: int, runs: int) -> None:
    """Push to a bare Git remote + directory blob remote; in fresh clones, load the head
    (only its chunks are fetched) and, for comparison, the whole version."""
    env = git_env()
    bare, blobs = work / "srv.git", work / "blobs"
    rmtree(bare)
    rmtree(blobs)
    run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], env=env)
    run(["git", "remote", "add", "origin", str(bare)], cwd=repo, env=env)
    (repo / ".uniflow").mkdir(exist_ok=True)
    (repo / ".uniflow" / "config.toml").write_text(f'[remotes.origin]\nurl = "{blobs}"\n')
    run(["git", "add", ".uniflow/config.toml"], cwd=repo, env=env)
    run(["git", "commit", "-q", "-m", "blob remote"], cwd=repo, env=env)
    run(["git", "push", "-q", "origin", "main"], cwd=repo, env=env)
    _registry(repo).push()
    part, full, fetched = [], [], []
    for i in range(runs):
        clone = work / f"clone-{i}"
        rmtree(clone)
        run(["git", "clone", "-q", str(bare), str(clone)], env=env)
        reg = _registry(clone)
        reg.pull()
        gc.collect()
        t0 = time.perf_counter()
        reg.load(MODEL, "v2.0.0", tensors=[HEAD])
        part.append((time.perf_counter() - t0) * 1000)
        fetched.append(sum(object_sizes(clone).values()))
        t0 = time.perf_counter()
        _registry(clone).load_path(MODEL, "v2.0.0")
        full.append((time.perf_counter() - t0) * 1000)
        rmtree(clone)
    res.add(
        "partial_load_head_remote_ms",
        part,
        "fresh clone, refs pulled, no chunk local: load(tensors=[head]) "
        "fetching from a directory blob remote",
    )
    res.add(
        "full_load_1g_remote_ms",
        full,
        "the rest of the version after that: load_path fetching every other chunk",
    )
    res.value(
        "partial_load_head_fetched_bytes",
        int(median(fetched)),
        "bytes that arrived in the clone's chunk store (objects/ and packs/) for the head",
    )
    res.value("partial_load_head_fetched_pct", round(median(fetched) / size * 100, 4))
    rmtree(bare)
    rmtree(blobs)


def bench_tensors(res: Results, files: dict[str, Path], work: Path, cmd: list[str] | None, runs: int) -> None:
    bench_register_overhead(res, files["base"], work, runs)
    bench_diff_and_partial(res, files, work, cmd, runs)
    os.sync()
