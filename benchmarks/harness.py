"""What every benchmark script shares: logging, subprocess timing, throwaway Git repositories,
page-cache control and the :class:`Results` collector (medians plus raw samples).

Used by :mod:`benchmarks.run` and :mod:`benchmarks.peers`; run them as modules from the
repository root (``python -m benchmarks.run``), so no ``sys.path`` edits are needed.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

MIB = 1 << 20

#: the model every in-process benchmark registers
MODEL_NAME = "bench_model"


def registry_class() -> Any:
    """``uniflow.ModelRegistry`` (imported when first needed: a broken install is reported,
    not raised at import)."""
    from uniflow import ModelRegistry  # noqa: PLC0415

    return ModelRegistry


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def rmtree(path: Path) -> None:
    """Remove a tree even when it holds read-only files and directories (the object store)."""
    if not path.exists():
        return

    def onerror(func: Callable[..., Any], p: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o755)
            os.chmod(p, 0o755)
        except OSError:
            pass
        func(p)

    shutil.rmtree(path, onerror=onerror)


def sync() -> None:
    """Flush unrelated dirty pages so that a timed write pays only for its own bytes."""
    os.sync()


def fsync_path(path: Path | str) -> None:
    """fsync one file or directory (what a durable copy of it costs)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cp_fsync(src: Path, work: Path) -> float:
    """Seconds of ``cp SRC WORK/copy.bin`` + fsync of the copy and of ``WORK`` (after a
    ``sync``): the durable copy every write benchmark is judged against. The copy is removed."""
    dst = work / "copy.bin"
    dst.unlink(missing_ok=True)
    sync()
    t0 = time.perf_counter()
    run(["cp", str(src), str(dst)])
    fsync_path(dst)
    fsync_path(work)
    took = time.perf_counter() - t0
    dst.unlink()
    return took


def run(
    cmd: list[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()[-800:]}"
        )
    return proc


def wall(
    cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float | None = None
) -> float:
    """Wall time of a whole process, which must succeed."""
    t0 = time.perf_counter()
    run(cmd, cwd=cwd, env=env, timeout=timeout)
    return time.perf_counter() - t0


def git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@example.com",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@example.com",
        GIT_CONFIG_NOSYSTEM="1",
    )
    return env


def git_repo(path: Path) -> Path:
    """A fresh Git repository with one commit."""
    rmtree(path)
    path.mkdir(parents=True)
    env = git_env()
    run(["git", "init", "-q", "-b", "main", str(path)], env=env)
    (path / "README.md").write_text("benchmark repository\n")
    run(["git", "add", "README.md"], cwd=path, env=env)
    run(["git", "commit", "-q", "-m", "initial commit"], cwd=path, env=env)
    return path


def dirty_mib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("Dirty:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def read_all(path: Path) -> int:
    """Read every byte of a file, or of every file under a directory."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    total = 0
    buf = bytearray(MIB)
    view = memoryview(buf)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while True:
                n = fh.readinto(view)
                if not n:
                    break
                total += n
    return total


def file_sizes(root: Path) -> dict[str, int]:
    """Every file under ``root`` (path -> size); empty if there is no such directory."""
    out: dict[str, int] = {}
    if root.is_dir():
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                p = os.path.join(dirpath, name)
                out[p] = os.path.getsize(p)
    return out


def store_sizes(store: Path) -> dict[str, int]:
    """The chunk files of a chunk store (``store`` is e.g. ``.git/uniflow``): loose chunks in
    ``objects/`` and packs with their indexes in ``packs/`` (format 3)."""
    return {**file_sizes(store / "objects"), **file_sizes(store / "packs")}


def object_sizes(repo: Path) -> dict[str, int]:
    """The chunk files of ``repo``'s own store (see :func:`store_sizes`)."""
    return store_sizes(repo / ".git" / "uniflow")


# --------------------------------------------------------------------------- results


class Results:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.samples: dict[str, list[float]] = {}
        self.notes: dict[str, str] = {}

    def add(self, key: str, samples: list[float], note: str | None = None) -> float:
        self.samples[key] = [round(s, 6) for s in samples]
        self.values[key] = round(median(samples), 6)
        if note:
            self.notes[key] = note
        return self.values[key]

    def value(self, key: str, value: float | int | None, note: str | None = None) -> None:
        self.values[key] = value
        if note:
            self.notes[key] = note

    def fail(self, keys: list[str], note: str) -> None:
        for k in keys:
            self.values.setdefault(k, None)
            if self.values[k] is None:
                self.notes[k] = note

    def get(self, key: str) -> float | None:
        v = self.values.get(key)
        return v if isinstance(v, (int, float)) else None


def section(res: Results, keys: list[str], what: str) -> Callable[[Callable[[], None]], None]:
    """Run one benchmark section; an exception records the keys as null with a note."""

    def deco(fn: Callable[[], None]) -> None:
        log(f"--- {what}")
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
            traceback.print_exc(file=sys.stderr)
            res.fail(keys, f"{what} failed: {type(exc).__name__}: {str(exc)[:500]}")
        log(f"    {what}: {time.perf_counter() - t0:.1f} s")

    return deco


def compile_package() -> None:
    """Byte-compile the uniflow package (what ``pip install`` does), so that a
    ``PYTHONDONTWRITEBYTECODE=1`` environment does not compile every module in every timed run."""
    import compileall

    import uniflow

    compileall.compile_dir(str(Path(uniflow.__file__).parent), quiet=1)
