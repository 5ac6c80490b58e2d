"""Listing benchmarks: ``uniflow models list NAME`` at 10,000 and 100,000 versions, ``uniflow
models list`` over 1,000 models x 100 versions, loose and packed refs, and the peak anonymous
memory of the listing process (for benchmarks/run.py).

Registering 100,000 versions through the API would take hours, so :func:`build_repo` makes
the repositories with ``git fast-import``: one real version is registered through the API
(its chunks, its manifest as a template), and the other versions are written as exactly
the objects a register writes (manifest blob and card in a version commit on top of the
code commit, an annotated tag whose message is the card, one lifecycle commit per register
event with its ``state.json`` and ``event.json``), then the newest version is promoted to
production and the one before to staging through the API. Every version shares the
template's file (dedup), so any version can be loaded. The listing itself is always
measured through the real CLI, as whole processes.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Results, compile_package, git_env, git_repo, log, median, rmtree, run
from benchmarks.memory import peak_anon_kib

__all__ = ["KEYS", "GOALS", "build_repo", "bench_listing", "scaling_point"]

KEYS = [
    "list_name_10k",
    "list_name_10k_cpu",
    "list_name_10k_packed",
    "list_name_10k_cold",
    "list_name_json_10k",
    "list_name_json_10k_cpu",
    "list_name_100k",
    "list_name_100k_cpu",
    "list_name_100k_packed",
    "list_name_100k_anon_peak_kib",
    "list_name_json_100k",
    "list_name_json_100k_cpu",
    "list_1000x100",
    "list_1000x100_cpu",
    "list_1000x100_packed",
]
SCHEMA = 1
ACTOR = ("bench", "bench@example.com")


# --------------------------------------------------------------------------- the fast builder


def _data(payload: bytes) -> bytes:
    return b"data %d\n" % len(payload) + payload + b"\n"


def _dumps(obj: dict[str, Any]) -> bytes:  # as uniflow/_records/lifecycle.py writes state.json / event.json
    return (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode()


def build_repo(path: Path, models: list[str], n_versions: int, src: Path) -> Path:
    """A fresh repository at ``path`` holding ``n_versions`` versions of each of ``models``
    (``v1.0.0`` … ``v1.<n-1>.0``, metric ``accuracy``), the newest in production and the one
    before in staging; see the module docstring. Refs are left loose (as uniflow writes them)."""
    from datetime import UTC, datetime, timedelta

    from uniflow import ModelRegistry
    from uniflow._records.manifest import pack, render_card
    from uniflow._records.versions import MANIFEST_PATH, commit_message

    git_repo(path)
    env = git_env()
    reg = ModelRegistry(path)
    code = run(["git", "rev-parse", "HEAD"], cwd=path).stdout.strip()
    base = datetime(2026, 1, 1, tzinfo=UTC)
    proc = subprocess.Popen(
        ["git", "fast-import", "--quiet", "--done"], cwd=path, env=env, stdin=subprocess.PIPE
    )
    assert proc.stdin is not None
    out = proc.stdin
    who = f"{ACTOR[0]} <{ACTOR[1]}>".encode()
    mark = 0
    src.write_bytes(b"bench weights " * 64)
    reg.register(model=str(src), name=models[0], version="v1.0.0", metrics={"accuracy": 0.5})
    template = reg._repo.manifest(models[0], "v1.0.0")
    first_event = run(["git", "rev-parse", f"refs/uniflow/models/{models[0]}"], cwd=path).stdout.strip()
    try:
        for i, name in enumerate(models):
            seq = 1 if i == 0 else 0
            for v in range(1 if i == 0 else 0, n_versions):
                version = f"v1.{v}.0"
                when = base + timedelta(seconds=v)
                ts = int(when.timestamp())
                m = dataclasses.replace(
                    template,
                    name=name,
                    version=version,
                    created_at=when.isoformat(timespec="seconds"),
                    metrics={"accuracy": round(0.5 + v / (2 * n_versions), 6)},
                )
                card = render_card(m).encode()
                mark += 1
                out.write(b"commit refs/uniflow/bench-tmp\nmark :%d\n" % mark)
                out.write(b"author %s %d +0000\ncommitter %s %d +0000\n" % (who, ts, who, ts))
                out.write(_data(commit_message(name, version, m.metrics).encode()))
                out.write(b"from %s\n" % code.encode())
                out.write(b"M 100644 inline .uniflow/card/README.md\n" + _data(card))
                out.write(b"M 100644 inline %s\n" % MANIFEST_PATH.encode() + _data(pack(m)))
                out.write(b"\ntag models/%s/%s\nfrom :%d\n" % (name.encode(), version.encode(), mark))
                out.write(b"tagger %s %d +0000\n" % (who, ts) + _data(card))
                seq += 1
                event = {
                    "action": "register",
                    "version": version,
                    "from": None,
                    "to": "development",
                    "seq": seq,
                    "actor": who.decode(),
                    "at": when.isoformat(),
                }
                state = {"format": 1, "model": name, "seq": seq, "stage_of": {}, "past": {}}
                lref = f"refs/uniflow/models/{name}".encode()
                out.write(b"commit %s\n" % lref)
                out.write(b"committer %s %d +0000\n" % (who, ts))
                out.write(_data(f"register {name} {version}: -> development\n".encode()))
                if i == 0 and v == 1:
                    out.write(b"from %s\n" % first_event.encode())
                out.write(b"deleteall\n")
                out.write(b"M 100644 inline event.json\n" + _data(_dumps(event)))
                out.write(b"M 100644 inline state.json\n" + _data(_dumps(state)) + b"\n")
        out.write(b"done\n")
        out.close()
        if proc.wait() != 0:
            raise RuntimeError(f"git fast-import exited {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run(["git", "update-ref", "-d", "refs/uniflow/bench-tmp"], cwd=path, env=env, check=False)
    reg = ModelRegistry(path)
    for name in models:
        reg.promote(name, f"v1.{n_versions - 1}.0", "production")
        if n_versions > 1:
            reg.promote(name, f"v1.{n_versions - 2}.0", "staging")
    src.unlink()
    return path


def cached_repo(cache: Path, key: str, models: list[str], n_versions: int) -> Path:
    """:func:`build_repo` once per ``key`` under ``<cache>/repos`` (marked complete when done)."""
    import uniflow

    repo = cache / "repos" / f"{key}-s{SCHEMA}-u{uniflow.__version__}"
    done = repo / ".bench-complete"
    if done.exists():
        return repo
    rmtree(repo)
    log(f"building {repo.name} ({len(models)} x {n_versions} versions, git fast-import)")
    t0 = time.perf_counter()
    build_repo(repo, models, n_versions, repo.parent / f"{repo.name}.src")
    done.write_text(json.dumps({"build_seconds": round(time.perf_counter() - t0, 1)}))
    return repo


# --------------------------------------------------------------------------- measuring

#: mode -> (versions of the "10k" model, of the "100k" model, (models, versions) of the wide
#: repository, timed runs per figure)
SIZES: dict[str, dict[str, Any]] = {
    "full": {"small": 10_000, "large": 100_000, "wide": (1000, 100), "runs": 5},
    "quick": {"small": 10_000, "large": 100_000, "wide": (1000, 100), "runs": 3},
    "smoke": {"small": 30, "large": 100, "wide": (5, 5), "runs": 2},
}
GOALS = [
    (
        "models list NAME 10k",
        "list_name_10k",
        "<=",
        0.3,
        "`uniflow models list NAME`, 10,000 versions <= 0.3 s",
    ),
    (
        "models list NAME 100k",
        "list_name_100k",
        "<=",
        1.0,
        "`uniflow models list NAME`, 100,000 versions <= 1 s",
    ),
    (
        "models list 1000x100",
        "list_1000x100",
        "<=",
        1.0,
        "`uniflow models list`, 1,000 models x 100 versions <= 1 s",
    ),
]
MODEL = "bench_model"
RACY_SECONDS = 2.1  # uniflow/_records/listing.py RACY_NS, plus a margin


def settle(repo: Path, model: str = MODEL) -> None:
    """Wait until the model's loose-ref directory is older than the listing's racy window,
    so the next listing stores an index it will trust (a steady state, not a fresh change)."""
    d = repo / ".git" / "refs" / "tags" / "models" / model
    try:
        age = time.time() - d.stat().st_mtime
    except FileNotFoundError:
        return
    if age < RACY_SECONDS:
        time.sleep(RACY_SECONDS - age)


def packed_copy(repo: Path) -> Path:
    """A copy of ``repo`` (cached beside it) after ``git pack-refs --all``."""
    dst = repo.with_name(repo.name + "-packed")
    if (dst / ".bench-complete").exists():
        return dst
    rmtree(dst)
    run(["cp", "-a", str(repo), str(dst)])
    (dst / ".bench-complete").unlink()
    run(["git", "pack-refs", "--all"], cwd=dst, env=git_env())
    (dst / ".bench-complete").write_text("{}")
    return dst


def _timed(
    cmd: list[str], repo: Path, runs: int, *, warm: int = 1, cpu: list[float] | None = None
) -> list[float]:
    """Wall times of ``runs`` runs after ``warm`` untimed ones; with ``cpu``, the user + system
    CPU time of each timed run is appended to it (less sensitive to a busy machine)."""
    import resource

    from benchmarks.harness import wall

    for _ in range(warm):
        wall(cmd, cwd=repo, timeout=900)
    out = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.append(wall(cmd, cwd=repo, timeout=900))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if cpu is not None:
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return out


def _lines(cmd: list[str], repo: Path) -> int:
    return len(run(cmd, cwd=repo, timeout=900).stdout.splitlines())


def bench_listing(res: Results, cache: Path, cli: list[str], mode: str) -> None:
    """Every figure of :data:`KEYS` (see docs/benchmarks.md, "Listing")."""
    sizes = SIZES[mode]
    runs = sizes["runs"]
    compile_package()
    res.value("listing_sizes", {k: v for k, v in sizes.items() if k != "runs"})
    list_name = [*cli, "models", "list", MODEL]
    for label, n in (("10k", sizes["small"]), ("100k", sizes["large"])):
        loose = cached_repo(cache, f"listing-{n}", [MODEL], n)
        for key in (f"list_name_{label}", f"list_name_{label}_packed"):
            # the packed copy is made once the loose one is indexed: it inherits the derived
            # cache, whose listing it must not believe (other stamps) but whose rows it reuses
            repo = loose if key == f"list_name_{label}" else packed_copy(loose)
            settle(repo)
            cpu: list[float] = []
            samples = _timed(list_name, repo, runs, warm=2, cpu=cpu)
            rows = _lines(list_name, repo) - 1
            assert rows == n, f"{key}: {rows} rows listed, {n} expected"
            res.add(key, samples, f"`uniflow models list {MODEL}`, {n} versions, whole process, warm index")
            if key == f"list_name_{label}":
                res.add(f"{key}_cpu", cpu, "the same runs: user + system CPU seconds of the process")
        if label == "10k":
            from benchmarks.harness import wall

            rmtree(loose / ".git" / "uniflow" / "cache" / "git")  # a fresh clone: no derived cache at all
            res.add(
                "list_name_10k_cold",
                [wall(list_name, cwd=loose, timeout=3600)],
                f"the first `models list {MODEL}` without any derived cache ({n} versions read from Git)",
            )
        else:
            settle(loose)
            _timed(list_name, loose, 0, warm=1)
            res.add(
                "list_name_100k_anon_peak_kib",
                [float(peak_anon_kib(list_name, cwd=loose)[0]) for _ in range(min(runs, 3))],
                f"peak RssAnon (KiB) of `uniflow models list {MODEL}`, {n} versions (memory.py sampler)",
            )
        settle(loose)
        js = [*list_name, "--json"]
        cpu = []
        samples = _timed(js, loose, runs, warm=1, cpu=cpu)  # the first run renders the JSON rows
        got = json.loads(run(js, cwd=loose, timeout=900).stdout)
        assert len(got) == n, f"--json gave {len(got)} versions, {n} expected"
        res.add(
            f"list_name_json_{label}",
            samples,
            f"`uniflow models list {MODEL} --json`, {n} versions (every field of each), warm index",
        )
        res.add(f"list_name_json_{label}_cpu", cpu, "the same runs: user + system CPU seconds of the process")
    n_models, n_versions = sizes["wide"]
    models = [f"model_{i:03d}" for i in range(n_models)]
    wide = cached_repo(cache, f"listing-{n_models}x{n_versions}", models, n_versions)
    list_all = [*cli, "models", "list"]
    for key in ("list_1000x100", "list_1000x100_packed"):
        repo = wide if key == "list_1000x100" else packed_copy(wide)
        cpu = []
        samples = _timed(list_all, repo, runs, warm=2, cpu=cpu)
        assert _lines(list_all, repo) == n_models + 1
        res.add(
            key, samples, f"`uniflow models list`, {n_models} models x {n_versions} versions, whole process"
        )
        if key == "list_1000x100":
            res.add(f"{key}_cpu", cpu, "the same runs: user + system CPU seconds of the process")
    res.notes["listing"] = (
        "repositories built with git fast-import (benchmarks/listing.py); the uniflow package is "
        "byte-compiled first; each figure after warm-up runs (the index is built by the first)"
    )


def scaling_point(cache: Path, cli: list[str], n: int, runs: int = 3) -> dict[str, Any]:
    """One row of the scaling sweep for ``n`` versions, on a repository built by
    :func:`build_repo` (``uniflow models list NAME`` and ``uniflow models list``, medians)."""
    compile_package()
    repo = cached_repo(cache, f"listing-{n}", [MODEL], n)
    build = json.loads((repo / ".bench-complete").read_text()).get("build_seconds")  # when first built
    settle(repo)
    lv = median(_timed([*cli, "models", "list", MODEL], repo, runs, warm=2))
    lm = median(_timed([*cli, "models", "list"], repo, runs, warm=1))
    return {"versions": n, "list_name": lv, "list": lm, "build_seconds": build, "built_by": "git fast-import"}
