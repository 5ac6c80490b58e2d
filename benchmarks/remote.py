"""Benchmarks of a registry read by Git URL (``uniflow get``; docs/remote.md), for benchmarks/run.py.

* ``get_1g``: ``uniflow get file://<bare> NAME --stage production -o OUT`` of the 1 GiB file,
  whole process, with a fresh per-user cache (no mirror, no chunk), the bytes coming from a
  directory blob remote; against ``cp`` of the same file (``cp_1g``, and ``cp_1g_fsync``:
  our output is fsynced) and, with ``--peers``, ``dvc get`` of the same file from a DVC
  repository whose remote is a directory too (``dvc_get_1g``).
* ``get_1g_cached``: the same get again into a new OUT (mirror and chunks cached).
* ``resolve_ms``: a get whose bytes are cached, over ``git daemon`` (``uploadpack.allowFilter``
  on), in a repository whose model has 1,000 versions: one ``git ls-remote``, the version
  resolved and its (small) files written; whole process, milliseconds.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from benchmarks.harness import (
    MODEL_NAME,
    Results,
    fsync_path,
    git_env,
    git_repo,
    log,
    rmtree,
    run,
    sync,
    wall,
)

REMOTE_KEYS = ["cp_1g", "cp_1g_fsync", "get_1g", "get_1g_cached", "resolve_ms"]
NAME = MODEL_NAME
SCHEMA = 1


def _publisher(srv: Path, clone_dir: Path) -> tuple[Path, Path, Path]:
    """A bare repository ``<srv>/models.git`` (filters allowed) and a clone at ``clone_dir``
    whose committed config names the directory blob remote ``<srv>/blobs``; returns
    ``(bare, blobs, clone)``."""
    bare, blobs = srv / "models.git", srv / "blobs"
    env = git_env()
    run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], env=env)
    run(["git", "-C", str(bare), "config", "uploadpack.allowFilter", "true"], env=env)
    clone = git_repo(clone_dir)
    (clone / ".uniflow").mkdir()
    (clone / ".uniflow" / "config.toml").write_text(f'[remotes.origin]\nurl = "{blobs}"\n')
    run(["git", "add", ".uniflow/config.toml"], cwd=clone, env=env)
    run(["git", "commit", "-q", "-m", "blob remote"], cwd=clone, env=env)
    run(["git", "remote", "add", "origin", str(bare)], cwd=clone, env=env)
    run(["git", "push", "-q", "origin", "main"], cwd=clone, env=env)
    return bare, blobs, clone


def _publish(work: Path, f: Path) -> tuple[Path, Path]:
    """A bare repository with one code commit and ``NAME`` v1.0.0 (the file) in production,
    its chunks pushed to the directory blob remote beside it; returns ``(bare, blobs)``."""
    from uniflow import ModelRegistry

    srv = work / "srv"
    rmtree(srv)
    srv.mkdir(parents=True)
    bare, blobs, clone = _publisher(srv, work / "publisher")
    with ModelRegistry(clone) as reg:
        reg.register(model=str(f), name=NAME, version="v1.0.0")
        reg.promote(NAME, "v1.0.0", "production")
        reg.push()
    rmtree(clone)
    return bare, blobs


def bench_get(res: Results, f: Path, work: Path, cmd: list[str], runs: int) -> None:
    bare, _blobs = _publish(work, f)
    url = f"file://{bare}"
    cp_s, cpf_s, get_s, cached_s = [], [], [], []
    dst = work / "copy.bin"
    for i in range(runs):
        for samples, durable in ((cp_s, False), (cpf_s, True)):
            dst.unlink(missing_ok=True)
            sync()
            t0 = time.perf_counter()
            run(["cp", str(f), str(dst)])
            if durable:
                fsync_path(dst)
                fsync_path(work)
            samples.append(time.perf_counter() - t0)
        dst.unlink(missing_ok=True)
        cache = work / "user-cache"
        rmtree(cache)
        rmtree(work / "out")
        rmtree(work / "out2")
        env = {**git_env(), "UNIFLOW_CACHE_DIR": str(cache)}
        sync()
        get_s.append(
            wall([*cmd, "get", url, NAME, "--stage", "production", "-o", str(work / "out")], env=env)
        )
        rmtree(work / "out")
        sync()
        cached_s.append(
            wall([*cmd, "get", url, NAME, "--stage", "production", "-o", str(work / "out2")], env=env)
        )
        size = sum(p.stat().st_size for p in (work / "out2").iterdir())
        if size != f.stat().st_size:
            raise RuntimeError(f"get wrote {size} bytes, expected {f.stat().st_size}")
        log(
            f"    sample {i + 1}/{runs}: cp {cp_s[-1]:.2f} s, cp+fsync {cpf_s[-1]:.2f} s, "
            f"get {get_s[-1]:.2f} s, get cached {cached_s[-1]:.2f} s"
        )
    rmtree(work / "user-cache")
    rmtree(work / "out2")
    res.add("cp_1g", cp_s, "cp FILE COPY (no fsync), same filesystem")
    res.add("cp_1g_fsync", cpf_s, "cp FILE COPY + fsync(COPY) + fsync(dir)")
    res.add(
        "get_1g",
        get_s,
        "`uniflow get file://BARE NAME --stage production -o OUT`, whole process, fresh "
        "per-user cache, directory blob remote; output fsynced",
    )
    res.add("get_1g_cached", cached_s, "the same get into a new OUT, mirror and chunks cached")


def _versions_repo(cache: Path, n: int) -> Path:
    """``<cache>/repos/remote-<n>``: a bare repository whose model has ``n`` small versions
    (the newest in production), its blob remote beside it; built once and cached."""
    from uniflow import ModelRegistry

    root = cache / "repos" / f"remote-{n}-s{SCHEMA}"
    done = root / ".bench-complete"
    if done.exists():
        return root
    log(f"building a repository with {n} versions (cached afterwards)")
    rmtree(root)
    root.mkdir(parents=True)
    bare, blobs, clone = _publisher(root / "srv", root / "publisher")
    src = root / "weights.bin"
    with ModelRegistry(clone) as reg:
        for v in range(n):
            src.write_bytes(f"{NAME} version {v} ".encode() * 64)
            reg.register(model=str(src), name=NAME, version=f"v1.{v}.0", metrics={"accuracy": v / n})
        reg.promote(NAME, f"v1.{n - 1}.0", "production")
        reg.push()
    rmtree(clone)
    done.write_text("ok\n")
    return root


def _daemon(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            f"--base-path={base}",
            "--export-all",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # bounded
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"git://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("git daemon did not start")


def bench_resolve(res: Results, cache: Path, work: Path, cmd: list[str], n_versions: int, runs: int) -> None:
    root = _versions_repo(cache, n_versions)
    proc, base = _daemon(root / "srv")
    try:
        url = f"{base}/models.git"
        env = {**git_env(), "UNIFLOW_CACHE_DIR": str(work / "resolve-cache")}
        blob = str(root / "srv" / "blobs")  # a directory: named by the caller for a network URL
        rmtree(work / "resolve-cache")
        first = wall(
            [*cmd, "get", url, NAME, "--stage", "production", "-o", str(work / "r0"), "--blob", blob], env=env
        )
        samples = []
        for i in range(runs):
            out = work / f"r{i + 1}"
            samples.append(
                wall(
                    [*cmd, "get", url, NAME, "--stage", "production", "-o", str(out), "--blob", blob], env=env
                )
                * 1000
            )
            rmtree(out)
        rmtree(work / "r0")
        rmtree(work / "resolve-cache")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    res.value("resolve_versions", n_versions)
    res.value("resolve_first_s", round(first, 4), "the first get of that model: mirror and chunk fetched")
    res.add(
        "resolve_ms",
        samples,
        f"`uniflow get git://... NAME --stage production` over git daemon, "
        f"{n_versions} versions, bytes and mirror cached (one ls-remote), whole process, ms",
    )


# --------------------------------------------------------------------------- DVC


def bench_dvc_get(res: Results, f: Path, work: Path, bin_dir: Path, runs: int) -> None:
    """``dvc get REPO model.safetensors -o OUT``: REPO a Git repository tracking the file with
    DVC, its DVC remote a directory (like our blob remote); fresh caches for every run."""
    from benchmarks.peers import peer_env

    env = peer_env()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    dvc = str(bin_dir / "dvc")
    repo = git_repo(work / "dvc-src")
    store = work / "dvc-store"
    rmtree(store)
    run([dvc, "init", "-q"], cwd=repo, env=env)
    run([dvc, "config", "core.analytics", "false"], cwd=repo, env=env)
    run([dvc, "remote", "add", "-d", "store", str(store)], cwd=repo, env=env)
    run(["cp", str(f), str(repo / "model.safetensors")])
    run([dvc, "add", "model.safetensors"], cwd=repo, env=env, timeout=1800)
    run(["git", "add", "-A"], cwd=repo, env=env)
    run(["git", "commit", "-q", "-m", "model"], cwd=repo, env=env)
    run([dvc, "push", "-q"], cwd=repo, env=env, timeout=1800)
    rmtree(repo / ".dvc" / "cache")  # the bytes come from the remote, as for uniflow get
    samples = []
    for i in range(runs):
        home = work / "dvc-home"
        rmtree(home)
        home.mkdir()
        out = work / "dvc-out.safetensors"
        out.unlink(missing_ok=True)
        run_env = {
            **env,
            "HOME": str(home),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "DVC_SITE_CACHE_DIR": str(home / "site"),
        }
        sync()
        samples.append(
            wall([dvc, "get", str(repo), "model.safetensors", "-o", str(out)], env=run_env, timeout=1800)
        )
        if out.stat().st_size != f.stat().st_size:
            raise RuntimeError("dvc get wrote a different size")
        log(f"    dvc get sample {i + 1}/{runs}: {samples[-1]:.2f} s")
        out.unlink()
    rmtree(work / "dvc-home")
    rmtree(repo)
    rmtree(store)
    res.add(
        "dvc_get_1g",
        samples,
        "`dvc get REPO FILE -o OUT` (directory DVC remote, fresh caches), whole process",
    )


def compute(res: Results) -> None:
    for key, num, den in (
        ("get_1g_vs_cp", "get_1g", "cp_1g"),
        ("get_1g_vs_cp_fsync", "get_1g", "cp_1g_fsync"),
        ("get_1g_cached_vs_cp", "get_1g_cached", "cp_1g"),
        ("dvc_get_vs_get", "dvc_get_1g", "get_1g"),
    ):
        a, b = res.get(num), res.get(den)
        res.values[key] = round(a / b, 4) if a is not None and b else None


GOALS: list[tuple[str, str, str, float, str]] = [
    ("get vs cp", "get_1g_vs_cp", "<=", 1.5, "`uniflow get` 1 GiB (fresh cache) <= 1.5x cp"),
    ("get vs dvc get", "dvc_get_vs_get", ">=", 3.0, "`uniflow get` >= 3x faster than `dvc get`"),
    ("resolve", "resolve_ms", "<=", 500.0, "a cached get over git daemon, 1,000 versions <= 500 ms"),
]
