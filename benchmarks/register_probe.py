"""Probe (not part of ``benchmarks.run``): ``ModelRegistry().register`` of one file against
``cp`` + fsync, for two source trees of uniflow (e.g. chunk files against packs).

Each round, in a rotating order: ``cp SOURCE COPY`` + fsync of the copy and its directory
(``benchmarks.run``'s ``cp_fsync_1g``), and for each tree a child process (``PYTHONPATH`` =
the tree) that registers the file into a fresh repository (the call alone is timed, after
a ``sync``), then loads it once (``load_path`` and a read of the file, from a cold
materialized-file cache; the chunks are in the page cache). Prints wall seconds (min and
median) and the ratios to ``cp`` (per-round ratio: median and min).

``python -m benchmarks.register_probe --tree before=/path/a --tree after=/path/b
[--size-mib 1024] [--rounds 5] [--dir D]``
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
import json, os, subprocess, sys, time
from pathlib import Path
from uniflow import ModelRegistry
src, repo = sys.argv[1], Path(sys.argv[2])
subprocess.run(["git", "init", "-q", str(repo)], check=True)
os.sync()
t0 = time.perf_counter()
ModelRegistry(repo).register(model=src, name="m", version="v1.0.0")
reg = time.perf_counter() - t0
t0 = time.perf_counter()
path = Path(ModelRegistry(repo).load_path("m", "v1.0.0"))
files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
n = 0
for f in files:
    with open(f, "rb", buffering=0) as fh:
        while chunk := fh.read(8 << 20):
            n += len(chunk)
load = time.perf_counter() - t0
print(json.dumps({"register": reg, "load": load, "bytes": n}))
"""

_ENV = {
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@example.com",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@example.com",
}


def register_in(tree: Path, src: Path, work: Path) -> dict[str, float]:
    repo = work / "repo"
    env = {**os.environ, **_ENV, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(repo)],
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", action="append", required=True, help="LABEL=PATH of a uniflow source tree")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    trees = [(t.split("=", 1)[0], Path(t.split("=", 1)[1])) for t in args.tree]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="uniflow-register-probe-") as tmp:
        work = Path(tmp)
        src = work / "source.bin"
        with open(src, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        samples: dict[str, list[float]] = {"cp": []}
        for label, _ in trees:
            samples[f"{label} register"], samples[f"{label} load"] = [], []
        steps = ["cp", *[label for label, _ in trees]]
        for r in range(args.rounds):
            for step in steps[r % len(steps) :] + steps[: r % len(steps)]:
                if step == "cp":
                    samples["cp"].append(cp_fsync(src, work))
                    continue
                got = register_in(dict(trees)[step], src, work)
                samples[f"{step} register"].append(got["register"])
                samples[f"{step} load"].append(got["load"])
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in samples.items()), flush=True)
        for key, values in samples.items():
            line = f"{key:>20}: min {min(values):.2f}s median {statistics.median(values):.2f}s"
            if key != "cp":
                ratios = [v / c for v, c in zip(values, samples["cp"], strict=True)]
                line += f"   x cp+fsync: median {statistics.median(ratios):.2f} min {min(ratios):.2f}"
            print(line)


if __name__ == "__main__":
    main()
