"""Probe (not part of ``benchmarks.run``): ``ModelRegistry().register`` of one file against
``cp`` + fsync, for two source trees of uniflow (e.g. chunk files against packs).

Each round, in a rotating order: ``cp SOURCE COPY`` + fsync of the copy and its directory
(``benchmarks.run``'s ``cp_fsync_1g``), and for each tree a child process (``PYTHONPATH`` =
the tree) that registers the file into a fresh repository (the call alone is timed, after
a ``sync``, with its CPU seconds: ``getrusage`` of the process, all threads, and of the Git
processes it ran), then loads it once (``load_path`` and a read of the file, from a cold
materialized-file cache). Prints wall seconds (min and median), the ratios to ``cp``
(per-round ratio: median and min) and each register's CPU seconds per GiB (min and median).
The file is random bytes (``--kind opaque``) or a safetensors file of random float32
tensors (``--kind safetensors``: two 32 MiB weights and two 16 KiB vectors per layer).

``python -m benchmarks.register_probe --tree before=/path/a --tree after=/path/b
[--size-mib 1024] [--rounds 5] [--kind opaque|safetensors] [--no-load] [--dir D]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import cp_fsync

CHILD = r"""
import json, os, resource, subprocess, sys, time
from pathlib import Path
from uniflow import ModelRegistry
src, repo, load = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "load"
subprocess.run(["git", "init", "-q", str(repo)], check=True)

def cpu():
    return sum(
        r.ru_utime + r.ru_stime
        for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )

os.sync()
c0, t0 = cpu(), time.perf_counter()
ModelRegistry(repo).register(model=src, name="m", version="v1.0.0")
reg, reg_cpu = time.perf_counter() - t0, cpu() - c0
if not load:
    print(json.dumps({"register": reg, "cpu": reg_cpu, "load": 0.0, "bytes": os.path.getsize(src)}))
    sys.exit(0)
t0 = time.perf_counter()
path = Path(ModelRegistry(repo).load_path("m", "v1.0.0"))
files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
n = 0
for f in files:
    with open(f, "rb", buffering=0) as fh:
        while chunk := fh.read(8 << 20):
            n += len(chunk)
load = time.perf_counter() - t0
print(json.dumps({"register": reg, "cpu": reg_cpu, "load": load, "bytes": n}))
"""

_ENV = {
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@example.com",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@example.com",
}


def register_in(tree: Path, src: Path, work: Path, load: bool = True) -> dict[str, float]:
    repo = work / "repo"
    env = {**os.environ, **_ENV, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(repo), "load" if load else "no-load"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    shutil.rmtree(repo)
    result: dict[str, float] = json.loads(out.stdout)
    if result["bytes"] != src.stat().st_size:
        raise RuntimeError(f"{tree}: loaded {result['bytes']} bytes")
    return result


def write_source(path: Path, size_mib: int, kind: str) -> None:
    """``size_mib`` MiB of random bytes, or a safetensors file of random float32 tensors of
    about that size (per layer two 32 MiB weights, then two 16 KiB vectors)."""
    if kind == "opaque":
        with open(path, "wb") as f:
            for _ in range(size_mib):
                f.write(os.urandom(1 << 20))
        return
    import numpy as np  # noqa: PLC0415 (only for this kind)
    from safetensors.numpy import save_file  # noqa: PLC0415

    rng = np.random.default_rng(0)
    tensors = {}
    for i in range(max(1, size_mib // 64)):
        for name, shape in (("w1", (2048, 4096)), ("w2", (2048, 4096)), ("b", (4096,)), ("ln", (4096,))):
            tensors[f"layer{i}.{name}"] = rng.standard_normal(shape, dtype=np.float32)
    save_file(tensors, str(path))


def report(samples: dict[str, list[float]], cpu: dict[str, list[float]], gib: float) -> None:
    for key, values in samples.items():
        line = f"{key:>20}: min {min(values):.2f}s median {statistics.median(values):.2f}s"
        if key != "cp":
            ratios = [v / c for v, c in zip(values, samples["cp"], strict=True)]
            line += f"   x cp+fsync: median {statistics.median(ratios):.2f} min {min(ratios):.2f}"
        print(line)
    for label, values in cpu.items():
        per = [v / gib for v in values]
        print(f"{label:>20}: CPU s/GiB min {min(per):.2f} median {statistics.median(per):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", action="append", required=True, help="LABEL=PATH of a uniflow source tree")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--kind", choices=["opaque", "safetensors"], default="opaque")
    ap.add_argument("--no-load", action="store_true", help="time the register only")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    trees = [(t.split("=", 1)[0], Path(t.split("=", 1)[1])) for t in args.tree]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="uniflow-register-probe-") as tmp:
        work = Path(tmp)
        src = work / ("model.safetensors" if args.kind == "safetensors" else "source.bin")
        write_source(src, args.size_mib, args.kind)
        gib = src.stat().st_size / (1 << 30)
        samples: dict[str, list[float]] = {"cp": []}
        cpu: dict[str, list[float]] = {}
        for label, _ in trees:
            samples[f"{label} register"], cpu[f"{label} register"] = [], []
            if not args.no_load:
                samples[f"{label} load"] = []
        steps = ["cp", *[label for label, _ in trees]]
        for r in range(args.rounds):
            for step in steps[r % len(steps) :] + steps[: r % len(steps)]:
                if step == "cp":
                    samples["cp"].append(cp_fsync(src, work))
                    continue
                got = register_in(dict(trees)[step], src, work, load=not args.no_load)
                samples[f"{step} register"].append(got["register"])
                cpu[f"{step} register"].append(got["cpu"])
                if not args.no_load:
                    samples[f"{step} load"].append(got["load"])
            line = ", ".join(f"{k} {v[-1]:.2f}s" for k, v in samples.items())
            line += "; CPU s/GiB " + ", ".join(f"{k} {v[-1] / gib:.2f}" for k, v in cpu.items())
            print(f"round {r + 1}: {line}", flush=True)
        report(samples, cpu, gib)


if __name__ == "__main__":
    main()
