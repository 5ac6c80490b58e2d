"""`--scaling`: register and verified load against the file's size (16 MiB to 4 GiB), and
`models list` against the number of versions (10 to 10,000 built with the API, 100,000 with
`git fast-import`); the data of benchmarks/plot.py's scaling figures.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks import listing
from benchmarks.commands import cli_command
from benchmarks.harness import (
    MODEL_NAME,
    Results,
    fsync_path,
    git_repo,
    log,
    median,
    read_all,
    registry_class,
    rmtree,
    run,
    sync,
    wall,
)
from benchmarks.modelfile import model_files


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
        fsync_path(dst)
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
