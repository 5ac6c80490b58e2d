"""Helpers the tests share (not tests): throwaway Git repositories, the CLI in a subprocess,
bare remotes and clones, random model directories. Fixtures live in conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

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
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def cli(
    cwd: Path,
    *args: str,
    code: int | None = 0,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``python -m uniflow ARGS`` in ``cwd``; asserts the exit code unless ``code`` is None."""
    full = {**os.environ, **GIT_ENV, "UNIFLOW_FORCE_TTY": "0", **(env or {})}
    r = subprocess.run(
        [sys.executable, "-m", "uniflow", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        check=False,
    )
    if code is not None:
        assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
    return r


def write_config(repo: Path, text: str) -> None:
    d = repo / ".uniflow"
    d.mkdir(exist_ok=True)
    (d / "config.toml").write_text(text)


def shared_setup(
    tmp_path: Path, remote_url: str | None = None, blob_url: str | None = None, config_extra: str = ""
) -> tuple[Path, Path]:
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


# ---------------------------------------------------------------------- servers on loopback
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    """Wait (bounded) until something listens on 127.0.0.1:``port``."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


# ---------------------------------------------------------------------- a registry to read by URL
BIG_CODE_FILE = "data/big-code.bin"


def publish_registry(
    tmp_path: Path, *, blob_url: str | None = None, allow_filter: bool = True
) -> dict[str, Any]:
    """A bare repository ``srv/remote.git`` holding a 5 MiB code file on main, model ``clf``
    (v1.0.0 in production, v1.1.0 in development, directory models) and model ``arr`` (a
    numpy array), pushed with their chunks to the blob remote ``srv/blobs`` (or ``blob_url``)
    that the committed config names. Returns paths and ids for the tests."""
    import numpy as np

    blobs = tmp_path / "srv" / "blobs"
    bare, a = shared_setup(tmp_path, blob_url=blob_url or str(blobs))
    git(bare, "config", "uploadpack.allowFilter", "true" if allow_filter else "false")
    (a / "data").mkdir()
    (a / BIG_CODE_FILE).write_bytes(os.urandom(5 << 20))
    git(a, "add", BIG_CODE_FILE)
    git(a, "commit", "-q", "-m", "a large code-side file")
    git(a, "push", "-q", "origin", "main")
    reg = open_registry(a)
    v1 = model_dir(tmp_path / "m1", 3, seed=1)
    v2 = model_dir(tmp_path / "m2", 3, seed=2)
    reg.register(model=str(v1), name="clf", version="v1.0.0", metrics={"accuracy": 0.9})
    reg.register(model=str(v2), name="clf", version="v1.1.0", metrics={"accuracy": 0.95})
    reg.promote("clf", "v1.0.0", "production")
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    reg.register(model=array, name="arr", version="v1.0.0")
    reg.promote("arr", "v1.0.0", "production")
    reg.push()
    reg.close()
    return {
        "bare": bare,
        "clone": a,
        "blobs": blobs,
        "v1": v1,
        "v2": v2,
        "array": array,
        "big_blob": git(a, "rev-parse", f"HEAD:{BIG_CODE_FILE}").strip(),
    }


def mirror_objects(cache: Path) -> set[str]:
    """Every object id stored in the mirrors under ``cache`` (packs and loose), read without
    any git command that could fetch a missing object."""
    found: set[str] = set()
    for mirror in (cache / "mirrors").glob("*.git"):
        for idx in (mirror / "objects" / "pack").glob("*.idx"):
            with open(idx, "rb") as fh:
                out = subprocess.run(
                    ["git", "show-index"], stdin=fh, capture_output=True, text=True, check=True
                )
            found.update(line.split()[1] for line in out.stdout.splitlines() if len(line.split()) >= 2)
        for fan in (mirror / "objects").glob("[0-9a-f][0-9a-f]"):
            found.update(fan.name + p.name for p in fan.iterdir())
    return found


def serve_git_daemon(base: Path, *, receive_pack: bool = False) -> Iterator[str]:
    """Run ``git daemon`` on 127.0.0.1 serving ``base``; yields ``git://127.0.0.1:<port>`` and
    stops the daemon when resumed (a generator, for fixtures and for tests that stop it)."""
    port = free_port()
    args = ["git", "daemon", "--reuseaddr", f"--base-path={base}", "--export-all"]
    if receive_pack:
        args.append("--enable=receive-pack")
    proc = subprocess.Popen(
        [*args, "--listen=127.0.0.1", f"--port={port}", str(base)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        yield f"git://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ---------------------------------------------------------------------- where chunks live
class StoredChunk(NamedTuple):
    """One stored copy of a chunk: a chunk file (``offset`` 0) or a range of a pack."""

    digest: str
    path: Path
    offset: int
    length: int


def stored_chunks(store: Any) -> list[StoredChunk]:
    """Every stored copy of every chunk of an ``ObjectStore``: its chunk files, then the
    chunks of its complete packs, in the order they lie on disk."""
    from uniflow._storage.packs import PackReader, scan_packs

    out = [StoredChunk(d, p, 0, p.stat().st_size) for d, p in store.iter_objects()]
    for name in scan_packs(store.root).complete:
        with PackReader(store.root, name) as reader:
            path = store.root / "packs" / f"{name}.pack"
            entries = sorted(reader.index.entries(), key=lambda e: e.offset)
            out += [StoredChunk(e.name, path, e.offset, e.length) for e in entries]
    return out


def stored_bytes(store: Any) -> int:
    """Bytes of chunk data stored (every copy, chunk files and packs)."""
    return sum(c.length for c in stored_chunks(store))


def flip_stored_byte(chunk: StoredChunk, at: int) -> None:
    """Flip one bit of byte ``at`` (modulo its length) of a stored chunk, where it lives."""
    os.chmod(chunk.path, 0o644)
    with open(chunk.path, "r+b") as f:
        f.seek(chunk.offset + at % chunk.length)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x01]))


def stored_chunk_bytes(store_root: Path) -> dict[str, bytes]:
    """Every chunk of the store at ``store_root`` (``<git>/uniflow``), by digest: its bytes,
    read from its chunk file or its pack."""
    from uniflow._storage.store import ObjectStore

    out = {}
    for c in stored_chunks(ObjectStore(store_root)):
        with open(c.path, "rb") as f:
            f.seek(c.offset)
            out[c.digest] = f.read(c.length)
    return out


def remote_chunks(blobs: Path) -> set[str]:
    """Every chunk a directory blob remote holds: its loose chunk files and its packs' indexes."""
    from uniflow._storage.packs import PackIndex

    out = {p.parent.name + p.name for p in (blobs / "objects").glob("*/*") if p.is_file()}
    for idx in (blobs / "packs").glob("*.idx"):
        size = idx.with_suffix(".pack").stat().st_size
        out |= {e.name for e in PackIndex.parse(idx.read_bytes(), size, idx.stem).entries()}
    return out


def open_pack_files(under: Path) -> list[str]:
    """The pack and pack-index files below ``under`` this process holds open (Git's and
    uniflow's; other tests' registries may still be alive in the same process: their files
    are not counted)."""
    import os

    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(under)) and target.removesuffix(" (deleted)").endswith((".pack", ".idx")):
            out.append(target)
    return out


def numeric(value: object) -> bool:
    """Whether a benchmark figure is a number (a bool is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def benchmark_smoke(tmp: Path, *only: str, timeout: float = 600) -> dict[str, Any]:
    """The JSON of ``python -m benchmarks.run --smoke`` (``--only`` the sections named, if
    any) run in ``tmp`` with its own cache; the run must succeed."""
    import json

    out = tmp / "smoke.json"
    argv = [sys.executable, "-m", "benchmarks.run", "--smoke", *(["--only", ",".join(only)] if only else [])]
    proc = subprocess.run(
        [*argv, "--json", str(out), "--cache-dir", str(tmp / "cache")],
        cwd=tmp,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded
