"""The CLI and the web UI, timed as a user meets them: `uniflow models list` over the
100 x 100 repository (built with the API once and cached), `uniflow --version`, the import
of the package, and the UI's pages (server time).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Results, git_repo, log, registry_class, run, wall
from benchmarks.modelfile import BENCH_SCHEMA

#: the list repository of --quick when the 100 x 100 one is not cached yet
QUICK_FALLBACK_LIST_DIMS = (30, 30)
UI_KEYS = ["ui_overview_ms", "ui_model_page_ms"]


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
