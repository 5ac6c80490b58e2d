"""Helpers the tests share (not tests): throwaway Git repositories, the CLI in a subprocess,
bare remotes and clones, random model directories. Fixtures live in conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test User",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test User",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str, check: bool = True) -> str:
    env = {**os.environ, **GIT_ENV}
    r = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {r.stderr}")
    return r.stdout


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    (path / "train.py").write_text("print('training')\n")
    git(path, "add", "train.py")
    git(path, "commit", "-q", "-m", "initial code")
    return path


def run_py(code: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (tests' helper modules importable)."""
    env = {**os.environ, **GIT_ENV, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def cli(cwd: Path, *args: str, code: int | None = 0, env: dict[str, str] | None = None,
        stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m uniflow ARGS`` in ``cwd``; asserts the exit code unless ``code`` is None."""
    full = {**os.environ, **GIT_ENV, "UNIFLOW_FORCE_TTY": "0", **(env or {})}
    r = subprocess.run([sys.executable, "-m", "uniflow", *args], cwd=cwd, env=full, capture_output=True, text=True,
                       timeout=timeout, input=stdin, check=False)
    if code is not None:
        assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
    return r


def write_config(repo: Path, text: str) -> None:
    d = repo / ".uniflow"
    d.mkdir(exist_ok=True)
    (d / "config.toml").write_text(text)


def shared_setup(tmp_path: Path, remote_url: str | None = None, blob_url: str | None = None,
                 config_extra: str = "") -> tuple[Path, Path]:
    """A bare repository ``remote.git`` and a first clone ``a`` whose main holds train.py and
    a committed ``.uniflow/config.toml`` naming the blob remote; returns ``(bare, a)``."""
    bare = tmp_path / "srv" / "remote.git"
    bare.parent.mkdir(parents=True, exist_ok=True)
    git(bare.parent, "init", "-q", "--bare", "-b", "main", str(bare))
    a = tmp_path / "a"
    git(tmp_path, "clone", "-q", remote_url or str(bare), str(a))
    (a / "train.py").write_text("print('train')\n")
    blob = blob_url or str(tmp_path / "blobs")
    write_config(a, f'[remotes.origin]\nurl = "{blob}"\n{config_extra}')
    git(a, "add", "train.py", ".uniflow/config.toml")
    git(a, "commit", "-q", "-m", "initial code")
    git(a, "push", "-q", "origin", "main")
    return bare, a


def clone(url: str | Path, dest: Path) -> Path:
    git(dest.parent, "clone", "-q", str(url), str(dest))
    return dest


def model_dir(path: Path, n_files: int, size: int = 64 << 10, seed: int = 0) -> Path:
    """A directory of ``n_files`` random files (each smaller than a chunk: one chunk each)."""
    import random

    rnd = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (path / f"part-{i:03d}.bin").write_bytes(rnd.randbytes(size))
    return path


def open_registry(path: Path) -> Any:
    from uniflow import ModelRegistry

    return ModelRegistry(path)  # its store fetches missing chunks from the blob remotes


def tree_bytes(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def log_subjects(repo: Path, ref: str) -> list[str]:
    return git(repo, "log", "--format=%s", ref).splitlines()
