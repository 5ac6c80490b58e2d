#!/usr/bin/env python3
"""UniFlow benchmarks: the numbers of DESIGN section 6, measured against this machine and peers.

Usage::

    python -m benchmarks.run [--quick] [--smoke] [--peers] [--scaling] [--migrate] [--json OUT]
                             [--size-mib N] [--cache-dir DIR]

Every figure is the median of several runs (the samples are kept under ``"samples"`` in the
JSON). Times are seconds unless the key says otherwise (``promote_ms``, ``*_pct``).

Modes:
  (default)  1 GiB file, full repetition counts, 100 models x 100 versions list repository.
  --quick    same 1 GiB file and keys, fewer repetitions; the 100x100 list repository is used
             when already cached, otherwise a 30x30 one is built (noted in the JSON); no peers.
  --smoke    tiny sizes (8 MiB file, 3 models x 3 versions): every non-peer key in seconds.
  (every mode also times the web UI, `ui_overview_ms` and `ui_model_page_ms`, on the list
  repository, when the `ui` extra is installed)
  --peers    also DVC, MLflow and GTO, each installed into its own venv under the cache dir.
  --migrate  `import_mlflow` of 100 fine-tunes of a 10 MiB model (5 of 1 MiB with --smoke);
             needs the mlflow extra in this interpreter (docs/migrate.md).
  --scaling  register/load versus model size and `models list` versus number of versions
             (data for benchmarks/plot.py).

Only the standard library, numpy and the project itself are needed (safetensors is used by
the tests to check the generated file; the writer here streams the same format so a 4 GiB
file never needs 8 GiB of memory).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import listing, memory, remote, stream, transfer
from benchmarks.harness import (
    MIB,
    Results,
    dirty_mib,
    fsync_path,
    git_repo,
    log,
    median,
    object_sizes,
    read_all,
    rmtree,
    run,
    section,
    sync,
    wall,
)

HERE = Path(__file__).resolve().parent

BENCH_SCHEMA = 1  # bump when a cached artefact (file layout, list repo) must be rebuilt
MODEL_NAME = "bench_model"

CORE_KEYS = [
    "cp_fsync_1g",
    "cat_1g",
    "register_1g",
    "register_1g_again",
    "load_1g_verified",
    "head_change_new_bytes_pct",
    "header_shift_new_bytes_pct",
    "list_100x100",
    "version_cli",
    "promote_ms",
]
TENSOR_TABLE_KEYS = [
    "register_1g_tensors",
    "register_1g_no_tensors",
    "register_tensor_overhead_pct",
    "register_tensor_overhead_paired_pct",
    "register_again_tensors",
    "register_again_no_tensors",
    "register_again_tensor_overhead_pct",
    "register_cpu_tensors",
    "register_cpu_no_tensors",
    "register_cpu_tensor_overhead_pct",
    "diff_1g_ms",
    "diff_1g_cli",
    "partial_load_head_ms",
    "full_load_1g_ms",
    "partial_load_head_vs_full",
    "partial_load_head_remote_ms",
    "full_load_1g_remote_ms",
    "partial_load_head_fetched_bytes",
    "partial_load_head_fetched_pct",
]
PEER_KEYS = ["dvc_add_1g", "gto_show_1000", "mlflow_log_register_1g", "mlflow_import"]

# mode -> repetition counts and sizes
MODES: dict[str, dict[str, Any]] = {
    "full": dict(
        size_mib=1024,
        cat=5,
        cp=5,
        pipeline=5,
        again=1,
        list_dims=(100, 100),
        list_runs=10,
        version_runs=20,
        promote_runs=30,
        peer_runs=3,
        import_runs=5,
        remote_runs=3,
        resolve_versions=1000,
        resolve_runs=10,
        tensor_runs=5,
        transfer_runs=3,
    ),
    "quick": dict(
        size_mib=1024,
        cat=3,
        cp=3,
        pipeline=2,
        again=1,
        list_dims=(100, 100),
        list_runs=5,
        version_runs=10,
        promote_runs=10,
        peer_runs=1,
        import_runs=3,
        remote_runs=2,
        resolve_versions=1000,
        resolve_runs=5,
        tensor_runs=3,
        transfer_runs=1,
    ),
    "smoke": dict(
        size_mib=8,
        cat=3,
        cp=3,
        pipeline=2,
        again=1,
        list_dims=(3, 3),
        list_runs=5,
        version_runs=10,
        promote_runs=5,
        peer_runs=1,
        import_runs=3,
        remote_runs=1,
        resolve_versions=20,
        resolve_runs=3,
        tensor_runs=2,
        transfer_runs=1,
    ),
}
QUICK_FALLBACK_LIST_DIMS = (30, 30)

# Round 1 as DESIGN section 6 keeps it. Two of its first goals were ill-posed and are retired
# there: ">= 4x faster than dvc add" (DVC does not fsync; `dvc_add_sync_vs_register`, the
# durable comparison, is reported without a goal) and "verified load <= 2.5x cat" (a page-cache
# cat is faster than BLAKE3 can hash on 2 cores): verified loads are judged against the hash
# limit measured in the same run (`hash_1g`), with the same factor. "register <= 1.4x cp +
# fsync" gave way to round 2's 1.2x (benchmarks/stream.py); the re-register goal is 1.0x.
GOALS = [
    # (name, key, op, threshold, text)
    (
        "re-register vs cp+fsync",
        "register_1g_again_vs_cp_fsync",
        "<=",
        1.0,
        "re-register 1 GiB (same bytes) <= 1.0x cp + fsync",
    ),
    ("head change dedup", "head_change_new_bytes_pct", "<=", 2.0, "new bytes <= 2% after a head change"),
    ("header shift dedup", "header_shift_new_bytes_pct", "<=", 5.0, "new bytes <= 5% after a header shift"),
    (
        "load vs hash limit",
        "load_vs_hash",
        "<=",
        2.5,
        "verified first load by stage <= 2.5x BLAKE3 of the bytes on both cores",
    ),
    (
        "load vs hash limit (cached)",
        "load_cached_vs_hash",
        "<=",
        2.5,
        "same, second load (materialized file cached)",
    ),
    ("models list", "list_100x100", "<=", 0.3, "`uniflow models list` 100x100 <= 0.3 s wall"),
    ("--version", "version_cli", "<=", 0.15, "`uniflow --version` <= 0.15 s wall"),
    (
        "import is light",
        "import_heavy_modules_count",
        "<=",
        0,
        "`import uniflow` loads no torch/sklearn/fsspec",
    ),
    ("promote", "promote_ms", "<=", 50.0, "promote <= 50 ms in process"),
    (
        "ui overview",
        "ui_overview_ms",
        "<=",
        200.0,
        "`uniflow ui` overview page 100x100 <= 200 ms server time",
    ),
    (
        "ui model page",
        "ui_model_page_ms",
        "<=",
        200.0,
        "`uniflow ui` model page (100 versions) <= 200 ms server time",
    ),
    *remote.GOALS,
    *transfer.GOALS,
    *stream.GOALS,
    *memory.GOALS,
    (
        "tensor digests",
        "register_tensor_overhead_pct",
        "<=",
        5.0,
        "per-tensor digests cost <= 5% of register",
    ),
    ("diff", "diff_1g_ms", "<=", 100.0, "diff of two 1 GiB versions <= 100 ms in process"),
    ("diff CLI", "diff_1g_cli", "<=", 0.3, "`uniflow models diff` of two 1 GiB versions <= 0.3 s wall"),
]
GOALS += listing.GOALS  # benchmarks/listing.py: models list NAME at 10k/100k, models list 1000x100
UI_KEYS = ["ui_overview_ms", "ui_model_page_ms"]


# --------------------------------------------------------------------------- the model file


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


def _gen_tensor(seed: int, index: int, shape: tuple[int, ...]) -> Any:
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
        return _gen_tensor(self.seed, self.index, self.shape).tobytes(order=order)


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


# --------------------------------------------------------------------------- machine limits


def bench_cat(res: Results, f: Path, runs: int) -> None:
    wall(["sh", "-c", 'cat "$0" > /dev/null', str(f)])  # warm the page cache
    samples = [wall(["sh", "-c", 'cat "$0" > /dev/null', str(f)]) for _ in range(runs)]
    res.add("cat_1g", samples, "cat FILE > /dev/null, page cache warm, whole process")


def bench_hash(res: Results, f: Path, runs: int) -> None:
    """The hash limit: BLAKE3 of the file's bytes (page cache warm, mapped) on both cores, in
    process. A verified load hashes every byte once, so it cannot beat this (DESIGN section
    6 judges verified loads against it, not against `cat`)."""
    import mmap  # noqa: PLC0415

    import blake3  # noqa: PLC0415

    def once() -> float:
        with open(f, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            t0 = time.perf_counter()
            with memoryview(mm) as view:
                blake3.blake3(view, max_threads=blake3.blake3.AUTO).digest()
            return time.perf_counter() - t0

    once()  # warm the page cache and the mapping path
    res.add("hash_1g", [once() for _ in range(runs)], "BLAKE3 of FILE on both cores, mapped, page cache warm")


def bench_cp_fsync(res: Results, f: Path, work: Path, runs: int) -> None:
    samples = []
    dst = work / "copy.safetensors"
    for _ in range(runs):
        if dst.exists():
            dst.unlink()
        sync()
        t0 = time.perf_counter()
        run(["cp", str(f), str(dst)])
        fsync_path(dst)
        fsync_path(work)
        samples.append(time.perf_counter() - t0)
    dst.unlink()
    res.add("cp_fsync_1g", samples, "cp FILE COPY + fsync(COPY) + fsync(dir), same filesystem")


# --------------------------------------------------------------------------- uniflow in process


def registry_class() -> Any:
    from uniflow import ModelRegistry  # noqa: PLC0415

    return ModelRegistry


def bench_register_load(res: Results, f: Path, work: Path, runs: int, again: int) -> None:
    ModelRegistry = registry_class()
    reg_s, again_s, load_s, cached_s, dirty = [], [], [], [], []
    size = f.stat().st_size
    for i in range(runs):
        repo = git_repo(work / "reg")
        gc.collect()
        sync()
        t0 = time.perf_counter()
        ModelRegistry(repo).register(model=str(f), name=MODEL_NAME, version="v1.0.0")
        reg_s.append(time.perf_counter() - t0)
        d = dirty_mib()
        if d is not None:
            dirty.append(d)
        for j in range(again):
            sync()
            t0 = time.perf_counter()
            ModelRegistry(repo).register(model=str(f), name=MODEL_NAME, version=f"v1.0.{j + 1}")
            again_s.append(time.perf_counter() - t0)
        ModelRegistry(repo).promote(MODEL_NAME, "v1.0.0", "production")
        gc.collect()
        t0 = time.perf_counter()
        p = ModelRegistry(repo).load_path(MODEL_NAME, stage="production")
        n = read_all(Path(p))
        load_s.append(time.perf_counter() - t0)
        if n != size:
            raise RuntimeError(f"load_path returned {n} bytes, expected {size}")
        t0 = time.perf_counter()
        p = ModelRegistry(repo).load_path(MODEL_NAME, stage="production")
        read_all(Path(p))
        cached_s.append(time.perf_counter() - t0)
        log(
            f"    sample {i + 1}/{runs}: register {reg_s[-1]:.2f} s, again {again_s[-1]:.2f} s, "
            f"load {load_s[-1]:.2f} s, load again {cached_s[-1]:.2f} s"
        )
    rmtree(work / "reg")
    res.add(
        "register_1g",
        reg_s,
        "ModelRegistry(repo).register(model=FILE, ...) in a fresh repo "
        "(git init + 1 commit), in process, durable",
    )
    res.add("register_1g_again", again_s, "the same file registered again as a new version")
    res.add(
        "load_1g_verified",
        load_s,
        "promote to production; fresh registry; "
        "load_path(name, stage='production') + read every byte; first load in the repo",
    )
    res.add("load_1g_cached", cached_s, "a second load_path + read of the same version")
    if dirty:
        res.add(
            "register_dirty_mib_after",
            dirty,
            "MiB of dirty page cache right after register returned (≈0 if it fsynced)",
        )


def bench_dedup(res: Results, files: dict[str, Path], work: Path) -> None:
    ModelRegistry = registry_class()
    repo = git_repo(work / "dedup")
    size = files["base"].stat().st_size
    reg = ModelRegistry(repo)
    reg.register(model=str(files["base"]), name=MODEL_NAME, version="v1.0.0")
    before = object_sizes(repo)
    t0 = time.perf_counter()
    reg.register(model=str(files["head"]), name=MODEL_NAME, version="v2.0.0")
    t_head = time.perf_counter() - t0
    after = object_sizes(repo)
    new = sum(s for p, s in after.items() if p not in before)
    res.value(
        "head_change_new_bytes_pct",
        round(new / size * 100, 4),
        "v2 changes the first tensor in header order (10x1024 f32); new object bytes / file size * 100",
    )
    res.value("head_change_new_bytes", new)
    res.value("register_head_change_s", round(t_head, 4))
    t0 = time.perf_counter()
    reg.register(model=str(files["shift"]), name=MODEL_NAME, version="v3.0.0")
    t_shift = time.perf_counter() - t0
    after2 = object_sizes(repo)
    new2 = sum(s for p, s in after2.items() if p not in after)
    res.value(
        "header_shift_new_bytes_pct",
        round(new2 / size * 100, 4),
        "v3 = v1 tensors plus one tensor with a long name: the header grows and every "
        "data offset shifts; new object bytes / file size * 100",
    )
    res.value("header_shift_new_bytes", new2)
    res.value("register_header_shift_s", round(t_shift, 4))
    res.value("objects_per_version", len(before))
    rmtree(repo)


def bench_promote(res: Results, work: Path, runs: int) -> None:
    ModelRegistry = registry_class()
    repo = git_repo(work / "promote")
    src = work / "tiny.bin"
    reg = ModelRegistry(repo)
    for v in ("v1.0.0", "v1.1.0"):
        src.write_bytes(os.urandom(4096))
        reg.register(model=str(src), name=MODEL_NAME, version=v)
    reg.promote(MODEL_NAME, "v1.0.0", "staging")  # warm
    samples = []
    versions, stages = ("v1.0.0", "v1.1.0"), ("production", "staging")
    for i in range(runs):
        v, s = versions[i % 2], stages[(i // 2) % 2]
        t0 = time.perf_counter()
        reg.promote(MODEL_NAME, v, s)
        samples.append((time.perf_counter() - t0) * 1000)
    rmtree(repo)
    res.add("promote_ms", samples, "in-process registry.promote(), versions and stages alternating")


# --------------------------------------------------------------------------- the CLI


def cli_command() -> tuple[list[str] | None, str]:
    """The console script, or ``python -m uniflow``; None when neither answers --version."""
    exe = Path(sys.executable).parent / "uniflow"
    candidates = []
    if exe.exists():
        candidates.append([str(exe)])
    found = shutil.which("uniflow")
    if found and [found] not in candidates:
        candidates.append([found])
    candidates.append([sys.executable, "-m", "uniflow"])
    errors = []
    for cmd in candidates:
        proc = run([*cmd, "--version"], check=False, timeout=60)
        if proc.returncode == 0:
            return cmd, ""
        errors.append(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()[-200:]}")
    return None, "; ".join(errors)


def list_repo(cache: Path, dims: tuple[int, int], rebuild: bool = False) -> Path:
    """A repository with dims[0] models x dims[1] versions, built with the API and cached."""
    import uniflow

    ModelRegistry = registry_class()
    n_models, n_versions = dims
    key = f"list-{n_models}x{n_versions}-s{BENCH_SCHEMA}-u{uniflow.__version__}"
    repo = cache / "repos" / key
    done = repo / ".bench-complete"
    if done.exists() and not rebuild:
        return repo
    log(f"building {key} ({n_models * n_versions} registers; cached afterwards)")
    git_repo(repo)
    reg = ModelRegistry(repo)
    src = repo.parent / f"{key}.src"
    t0 = time.perf_counter()
    for m in range(n_models):
        name = f"model_{m:03d}"
        for v in range(n_versions):
            src.write_bytes(f"{name} version {v} ".encode() * 8)
            reg.register(
                model=str(src),
                name=name,
                version=f"v1.{v}.0",
                metrics={"accuracy": 0.5 + v / (2 * n_versions)},
            )
        reg.promote(name, f"v1.{n_versions - 1}.0", "production")
        if n_versions > 1:
            reg.promote(name, f"v1.{n_versions - 2}.0", "staging")
        if (m + 1) % max(n_models // 10, 1) == 0:
            el = time.perf_counter() - t0
            log(
                f"    {m + 1}/{n_models} models, {el:.0f} s "
                f"({el / ((m + 1) * n_versions) * 1000:.1f} ms/register)"
            )
    src.unlink()
    done.write_text(
        json.dumps({"models": n_models, "versions": n_versions, "build_seconds": time.perf_counter() - t0})
    )
    return repo


def bench_cli(res: Results, cache: Path, mode: dict[str, Any], quick: bool, rebuild: bool) -> None:
    cmd, why = cli_command()
    if cmd is None:
        res.fail(["list_100x100", "version_cli"], f"no working uniflow CLI: {why}")
        return
    res.value("cli_command", " ".join(cmd))
    samples = [wall([*cmd, "--version"]) for _ in range(mode["version_runs"] + 1)][1:]
    res.add("version_cli", samples, "`uniflow --version`, whole process wall time")

    dims = tuple(mode["list_dims"])
    note = ""
    if quick:
        import uniflow

        key = f"list-{dims[0]}x{dims[1]}-s{BENCH_SCHEMA}-u{uniflow.__version__}"
        if not (cache / "repos" / key / ".bench-complete").exists():
            dims = QUICK_FALLBACK_LIST_DIMS
            note = f" (--quick: 100x100 repo not cached, measured on {dims[0]}x{dims[1]})"
    repo = list_repo(cache, dims, rebuild)  # type: ignore[arg-type]
    out = run([*cmd, "models", "list"], cwd=repo, check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or len(lines) < dims[0]:
        log(f"cached list repository looks stale (exit {out.returncode}, {len(lines)} lines): rebuilding")
        repo = list_repo(cache, dims, rebuild=True)  # type: ignore[arg-type]
        out = run([*cmd, "models", "list"], cwd=repo)
        lines = out.stdout.strip().splitlines()
    res.value("list_dims", list(dims))
    samples = [wall([*cmd, "models", "list"], cwd=repo) for _ in range(mode["list_runs"])]
    res.add(
        "list_100x100",
        samples,
        f"`uniflow models list` in a repo of {dims[0]} models x {dims[1]} versions, whole process "
        f"wall time; output {len(lines)} lines{note}",
    )
    name = "model_000"
    samples = [wall([*cmd, "models", "list", name], cwd=repo) for _ in range(mode["list_runs"])]
    res.add("list_versions_cli", samples, f"`uniflow models list {name}` ({dims[1]} versions)")


def _server_ms(url: str) -> float:
    """GET ``url``; the app's own time from its ``Server-Timing: app;dur=<ms>`` header."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=120) as resp:
        resp.read()
        timing = resp.headers.get("Server-Timing", "")
    for part in timing.split(";"):
        if part.strip().startswith("dur="):
            return float(part.strip()[4:])
    raise RuntimeError(f"no Server-Timing header from {url}")


def bench_ui(res: Results, cache: Path, mode: dict[str, Any], quick: bool, rebuild: bool) -> None:
    """Server time of the UI's overview and model page on the list repository (``uniflow ui``
    as a subprocess on a free loopback port; the first request of each page reported apart)."""
    import re
    import subprocess
    import urllib.request

    cmd, why = cli_command()
    if cmd is None:
        res.fail(UI_KEYS, f"no working uniflow CLI: {why}")
        return
    dims = tuple(mode["list_dims"])
    if quick:
        import uniflow

        key = f"list-{dims[0]}x{dims[1]}-s{BENCH_SCHEMA}-u{uniflow.__version__}"
        if not (cache / "repos" / key / ".bench-complete").exists():
            dims = QUICK_FALLBACK_LIST_DIMS
    repo = list_repo(cache, dims, rebuild)  # type: ignore[arg-type]
    proc = subprocess.Popen(
        [*cmd, "ui", "--port", "0"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"http://\S+/", line)
        if not found:
            raise RuntimeError(
                f"uniflow ui printed no URL: {line!r} {proc.stderr.read() if proc.stderr else ''}"
            )
        url = found.group(0)
        deadline = time.monotonic() + 60
        while True:  # the server is up when /healthz answers
            try:
                urllib.request.urlopen(url + "healthz", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        model = f"models/model_{dims[0] // 2:03d}"
        t0 = time.perf_counter()
        res.value(
            "ui_overview_first_ms",
            round(_server_ms(url), 3),
            "first overview request (waits for the start-up read of what the overview needs)",
        )
        res.value("ui_start_to_overview_s", round(time.perf_counter() - t0, 3))
        res.value("ui_model_page_first_ms", round(_server_ms(url + model), 3))
        runs = mode["list_runs"] * 2
        res.add(
            "ui_overview_ms",
            [_server_ms(url) for _ in range(runs)],
            f"`uniflow ui` GET / in a repo of {dims[0]} models x {dims[1]} versions: the app's time "
            "(Server-Timing), warm cache keyed by the refs' fingerprint (git for-each-ref per request)",
        )
        res.add(
            "ui_model_page_ms",
            [_server_ms(url + model) for _ in range(runs)],
            f"`uniflow ui` GET /{model} ({dims[1]} versions, charts and timeline): the app's time",
        )
        res.value("ui_dims", list(dims))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def bench_import(res: Results) -> None:
    code = (
        "import sys, time; t=time.perf_counter(); import uniflow; "
        "t=time.perf_counter()-t; heavy=sorted(m for m in ('torch','sklearn','fsspec','rich.console',"
        "'dulwich','numpy') if m in sys.modules); print(t); print(','.join(heavy))"
    )
    out = run([sys.executable, "-c", code]).stdout.split("\n")
    heavy = [m for m in out[1].split(",") if m]
    bad = [m for m in heavy if m in ("torch", "sklearn", "fsspec", "rich.console")]
    res.value("import_uniflow_s", round(float(out[0]), 6))
    res.value("import_heavy_modules", heavy)
    res.value(
        "import_heavy_modules_count",
        len(bad),
        "torch/sklearn/fsspec/rich.console found in sys.modules after `import uniflow`",
    )
    samples = [wall([sys.executable, "-c", "import uniflow"]) for _ in range(6)][1:]
    res.add("import_uniflow_process", samples, "`python -c 'import uniflow'` wall time")


# --------------------------------------------------------------------------- scaling


def bench_scaling(res: Results, cache: Path, work: Path, max_mib: int, max_versions: int) -> None:
    ModelRegistry = registry_class()
    sizes = [s for s in (16, 64, 256, 1024, 2048, 4096) if s <= max_mib]
    by_size = []
    for s in sizes:
        f = model_files(cache, s, kinds=("base",))["base"]
        wall(["sh", "-c", 'cat "$0" > /dev/null', str(f)])
        cat = wall(["sh", "-c", 'cat "$0" > /dev/null', str(f)])
        dst = work / "copy.bin"
        sync()
        t0 = time.perf_counter()
        run(["cp", str(f), str(dst)])
        fd = os.open(dst, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        cp = time.perf_counter() - t0
        dst.unlink()
        repo = git_repo(work / "scale")
        sync()
        t0 = time.perf_counter()
        ModelRegistry(repo).register(model=str(f), name=MODEL_NAME, version="v1.0.0")
        reg = time.perf_counter() - t0
        ModelRegistry(repo).promote(MODEL_NAME, "v1.0.0", "production")
        t0 = time.perf_counter()
        read_all(Path(ModelRegistry(repo).load_path(MODEL_NAME, stage="production")))
        load = time.perf_counter() - t0
        rmtree(repo)
        row = {"size_mib": s, "cat": cat, "cp_fsync": cp, "register": reg, "load_verified": load}
        log(f"    scaling size {row}")
        by_size.append(row)
    cmd, why = cli_command()
    by_versions = []
    if cmd is not None:
        repo = git_repo(work / "scale-versions")
        reg = ModelRegistry(repo)
        src = work / "tiny.bin"
        checkpoints = [c for c in (10, 30, 100, 300, 1000, 3000, 10000) if c <= max_versions]
        n = 0
        t_reg = time.perf_counter()
        for c in checkpoints:
            while n < c:
                src.write_bytes(f"version {n} ".encode() * 8)
                reg.register(model=str(src), name=MODEL_NAME, version=f"v1.{n}.0")
                n += 1
            t_build = time.perf_counter() - t_reg
            lv = median([wall([*cmd, "models", "list", MODEL_NAME], cwd=repo) for _ in range(3)])
            lm = median([wall([*cmd, "models", "list"], cwd=repo) for _ in range(3)])
            row = {"versions": c, "list_name": lv, "list": lm, "build_seconds": t_build}
            log(f"    scaling versions {row}")
            by_versions.append(row)
        rmtree(repo)
        for c in (100_000,):  # beyond what the API builds in reasonable time: git fast-import
            if c <= max_versions:
                by_versions.append(listing.scaling_point(cache, cmd, c))
                log(f"    scaling versions {by_versions[-1]}")
    else:
        res.notes["scaling_versions"] = f"no CLI: {why}"
    res.value("scaling", {"by_size": by_size, "by_versions": by_versions})


# --------------------------------------------------------------------------- report


def machine_info(cache: Path) -> dict[str, Any]:
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    fs = run(["df", "-T", str(cache)], check=False).stdout.strip().splitlines()
    fstype = fs[-1].split()[1] if len(fs) > 1 else None
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "filesystem": fstype,
        "df": fs[-1] if fs else None,
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": run(["git", "--version"], check=False).stdout.strip(),
    }
    try:
        import uniflow

        info["uniflow"] = uniflow.__version__
        commit = run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"], check=False)
        info["uniflow_commit"] = commit.stdout.strip() or None
        dirty = run(["git", "-C", str(HERE.parent), "status", "--porcelain", "--", "uniflow"], check=False)
        info["uniflow_dirty"] = bool(dirty.stdout.strip())
    except Exception:  # noqa: BLE001
        info["uniflow"] = None
    return info


def _loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def ratio(res: Results, key: str, num: str, den: str) -> None:
    a, b = res.get(num), res.get(den)
    res.values[key] = round(a / b, 4) if a is not None and b else None


def compute_ratios(res: Results) -> None:
    ratio(res, "register_1g_vs_cp_fsync", "register_1g", "cp_fsync_1g")
    ratio(res, "register_1g_again_vs_cp_fsync", "register_1g_again", "cp_fsync_1g")
    ratio(res, "load_vs_cat", "load_1g_verified", "cat_1g")
    ratio(res, "load_cached_vs_cat", "load_1g_cached", "cat_1g")
    ratio(res, "load_vs_hash", "load_1g_verified", "hash_1g")
    ratio(res, "load_cached_vs_hash", "load_1g_cached", "hash_1g")
    ratio(res, "dvc_add_vs_register", "dvc_add_1g", "register_1g")
    ratio(res, "dvc_add_sync_vs_register", "dvc_add_1g_plus_sync", "register_1g")
    ratio(res, "mlflow_log_register_vs_register", "mlflow_log_register_1g", "register_1g")
    ratio(res, "gto_show_1000_vs_list_100x100", "gto_show_1000", "list_100x100")
    ratio(res, "mlflow_import_vs_version_cli", "mlflow_import", "version_cli")
    remote.compute(res)
    transfer.compute(res)


def evaluate_goals(res: Results) -> list[dict[str, Any]]:
    out = []
    for name, key, op, thr, text in GOALS:
        v = res.get(key)
        ok = None if v is None else (v <= thr if op == "<=" else v >= thr)
        out.append({"name": name, "key": key, "value": v, "goal": f"{op} {thr}", "pass": ok, "text": text})
    return out


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def print_table(res: Results, goals: list[dict[str, Any]]) -> None:
    keys = [
        *CORE_KEYS,
        "load_1g_cached",
        "register_dirty_mib_after",
        "list_versions_cli",
        "import_uniflow_s",
        "import_uniflow_process",
        *UI_KEYS,
        "ui_overview_first_ms",
        *TENSOR_TABLE_KEYS,
        *PEER_KEYS,
        *remote.REMOTE_KEYS,
        *memory.KEYS,
        "resolve_first_s",
        "dvc_get_1g",
        *transfer.TABLE_KEYS,
    ]
    print(f"\n{'figure':<34} {'median':>10}  samples")
    for k in keys:
        if k not in res.values:
            continue
        s = res.samples.get(k)
        ss = ", ".join(fmt(x) for x in s) if s else ""
        print(f"{k:<34} {fmt(res.values[k]):>10}  {ss[:60]}")
        if res.values[k] is None and k in res.notes:
            print(f"{'':<34} {'':>10}  ({res.notes[k][:100]})")
    print("\nratios")
    for k in (
        "register_1g_vs_cp_fsync",
        "register_1g_again_vs_cp_fsync",
        "load_vs_cat",
        "load_cached_vs_cat",
        "load_vs_hash",
        "load_cached_vs_hash",
        "dvc_add_vs_register",
        "dvc_add_sync_vs_register",
        "mlflow_log_register_vs_register",
        "gto_show_1000_vs_list_100x100",
        "mlflow_import_vs_version_cli",
        "get_1g_vs_cp",
        "get_1g_vs_cp_fsync",
        "get_1g_cached_vs_cp",
        "dvc_get_vs_get",
        *transfer.RATIO_KEYS,
    ):
        print(f"  {k:<36} {fmt(res.values.get(k)):>8}")
    print("\ngoals (DESIGN section 6)")
    for g in goals:
        mark = {True: "PASS", False: "FAIL", None: "----"}[g["pass"]]
        print(f"  {mark}  {g['text']:<52} value {fmt(g['value'])}")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="1 GiB, fewer repetitions, no peers (< 3 min)")
    g.add_argument("--smoke", action="store_true", help="tiny sizes; runs in seconds")
    ap.add_argument("--peers", action="store_true", help="also measure DVC, MLflow and GTO")
    ap.add_argument("--scaling", action="store_true", help="register/load vs size, list vs versions")
    ap.add_argument(
        "--migrate",
        action="store_true",
        help="import_mlflow of 100 fine-tunes of a 10 MiB model (needs the mlflow extra)",
    )
    ap.add_argument("--scaling-max-mib", type=int, default=4096)
    ap.add_argument("--scaling-max-versions", type=int, default=100000)
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    ap.add_argument("--size-mib", type=int, help="size of the model file (default 1024; smoke 8)")
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("UNIFLOW_BENCH_CACHE", "~/.cache/uniflow-bench")).expanduser(),
    )
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached list repository")
    ap.add_argument(
        "--only",
        help="comma-separated sections: "
        "machine,register,dedup,promote,cli,ui,import,memory,remote,tensors,listing,stream,transfer,peers,"
        "scaling,migrate",
    )
    memory.add_args(ap)
    args = ap.parse_args(argv)

    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    mode = dict(MODES[mode_name])
    if args.size_mib:
        mode["size_mib"] = args.size_mib
    cache: Path = args.cache_dir.expanduser().resolve()
    cache.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None

    def want(s: str) -> bool:
        return only is None or s in only

    res = Results()
    started = time.perf_counter()
    meta = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "mode": mode_name,
        "size_mib": mode["size_mib"],
        "argv": sys.argv[1:],
        "cache_dir": str(cache),
        "schema": BENCH_SCHEMA,
        "runs": {k: v for k, v in mode.items() if k != "size_mib"},
    }
    meta["machine"] = machine_info(cache)
    meta["loadavg_start"] = _loadavg()
    log(f"mode {mode_name}, {mode['size_mib']} MiB, cache {cache}")

    work = Path(tempfile.mkdtemp(prefix="work-", dir=cache))
    try:
        files = model_files(cache, mode["size_mib"])
        f = files["base"]
        meta["file_bytes"] = f.stat().st_size

        if want("machine"):
            section(res, ["cat_1g"], "cat")(lambda: bench_cat(res, f, mode["cat"]))
            section(res, ["hash_1g"], "hash limit")(lambda: bench_hash(res, f, mode["cat"]))
            section(res, ["cp_fsync_1g"], "cp + fsync")(lambda: bench_cp_fsync(res, f, work, mode["cp"]))

        registry_ok = True
        try:
            registry_class()
        except Exception as exc:  # noqa: BLE001
            registry_ok = False
            res.fail(
                [
                    "register_1g",
                    "register_1g_again",
                    "load_1g_verified",
                    "head_change_new_bytes_pct",
                    "header_shift_new_bytes_pct",
                    "promote_ms",
                ],
                f"uniflow.ModelRegistry unavailable: {type(exc).__name__}: {exc}",
            )
        if registry_ok:
            if want("register"):
                section(res, ["register_1g", "register_1g_again", "load_1g_verified"], "register + load")(
                    lambda: bench_register_load(res, f, work, mode["pipeline"], mode["again"])
                )
            if want("dedup"):
                section(res, ["head_change_new_bytes_pct", "header_shift_new_bytes_pct"], "dedup")(
                    lambda: bench_dedup(res, files, work)
                )
            if want("promote"):
                section(res, ["promote_ms"], "promote")(
                    lambda: bench_promote(res, work, mode["promote_runs"])
                )
            if want("tensors"):  # benchmarks/tensors.py: digests at register, diff, partial loads
                from benchmarks.tensors import KEYS as TENSOR_KEYS
                from benchmarks.tensors import bench_tensors

                section(res, TENSOR_KEYS, "tensors")(
                    lambda: bench_tensors(res, files, work, cli_command()[0], mode["tensor_runs"])
                )
            if want("stream"):  # benchmarks/stream.py: register(model=<state dict>) vs save_file + fsync
                section(res, stream.KEYS, "stream (register a state dict)")(
                    lambda: stream.bench_stream(res, work, mode["size_mib"], mode["tensor_runs"])
                )
        if want("cli"):
            if registry_ok:
                section(res, ["list_100x100", "version_cli"], "CLI")(
                    lambda: bench_cli(res, cache, mode, args.quick, args.rebuild)
                )
            else:
                res.fail(["list_100x100"], "uniflow.ModelRegistry unavailable")
                cmd, why = cli_command()
                if cmd is None:
                    res.fail(["version_cli"], f"no working uniflow CLI: {why}")
                else:
                    res.add(
                        "version_cli",
                        [wall([*cmd, "--version"]) for _ in range(mode["version_runs"])],
                        "`uniflow --version`, whole process wall time",
                    )
        if want("ui"):
            if registry_ok:
                section(res, UI_KEYS, "ui")(lambda: bench_ui(res, cache, mode, args.quick, args.rebuild))
            else:
                res.fail(UI_KEYS, "uniflow.ModelRegistry unavailable")
        if want("import"):
            section(res, ["import_heavy_modules_count"], "import")(lambda: bench_import(res))
        if want("listing") and registry_ok:  # benchmarks/listing.py

            def _listing() -> None:
                cmd, why = cli_command()
                if cmd is None:
                    raise RuntimeError(f"no working uniflow CLI: {why}")
                listing.bench_listing(res, cache, cmd, mode_name)

            section(res, listing.KEYS, "listing")(_listing)
        if want("memory") and registry_ok:  # benchmarks/memory.py: peak RssAnon of whole processes
            section(res, memory.KEYS, "memory (peak anonymous)")(
                lambda: memory.bench_memory(res, cache, work, mode_name, mode["size_mib"], args.mem_4g)
            )
        if want("remote") and registry_ok:

            def _remote() -> None:
                cmd, why = cli_command()
                if cmd is None:
                    raise RuntimeError(f"no working uniflow CLI: {why}")
                remote.bench_get(res, f, work, cmd, mode["remote_runs"])
                remote.bench_resolve(res, cache, work, cmd, mode["resolve_versions"], mode["resolve_runs"])

            section(res, remote.REMOTE_KEYS, "remote (uniflow get)")(_remote)
            if args.peers:
                from benchmarks import peers

                def _dvc_get() -> None:
                    bin_dir = peers.ensure_venv(cache, "dvc")
                    res.value("dvc_get_version", peers.version_of(bin_dir, "dvc"))
                    remote.bench_dvc_get(res, f, work, bin_dir, mode["peer_runs"])

                section(res, ["dvc_get_1g"], "peer dvc get")(_dvc_get)
        if want("transfer") and registry_ok:  # benchmarks/transfer.py: push/pull against DVC
            section(res, transfer.UNIFLOW_KEYS + (transfer.DVC_KEYS if args.peers else []), "transfer")(
                lambda: transfer.main(res, files, work, cache, mode, args.peers, cli_command()[0])
            )
        if args.peers and want("peers"):
            from benchmarks import peers

            def _peers() -> None:
                peers.bench_all(res, f, cache, work, runs=mode["peer_runs"], import_runs=mode["import_runs"])

            section(res, PEER_KEYS, "peers")(_peers)
        if args.migrate and registry_ok and want("migrate"):
            from benchmarks import migrate

            n, mib = (5, 1) if args.smoke else (100, 10)
            section(res, migrate.KEYS, "migrate (MLflow import)")(
                lambda: migrate.bench_mlflow_import(res, work, n, mib)
            )
        if args.scaling and registry_ok and want("scaling"):
            section(res, ["scaling"], "scaling")(
                lambda: bench_scaling(res, cache, work, args.scaling_max_mib, args.scaling_max_versions)
            )
    finally:
        rmtree(work)

    compute_ratios(res)
    goals = evaluate_goals(res)
    meta["seconds"] = round(time.perf_counter() - started, 1)
    meta["loadavg_end"] = _loadavg()
    out = {
        **res.values,
        "samples": res.samples,
        "notes": res.notes,
        "goals": {g["name"]: g for g in goals},
        "meta": meta,
    }
    print_table(res, goals)
    print(f"\n{meta['seconds']} s in all", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
