"""Probe (not part of ``benchmarks.run``): writing chunks durably as packs against loose files.

The same source file (random bytes, 1 GiB by default) cut into chunks of about 1 MiB
(uniform 0.5-1.5 MiB, named by BLAKE3 beforehand: the hashing is not timed, it is the same
for every way) is written durably four ways, back to back in each round, in a rotating
order, ``--rounds`` rounds (5):

* ``packs``: :class:`uniflow._storage.packwriter.PackStream`, packs of 64 MiB, one thread:
  each chunk read (``pread``) into a reused buffer and appended with ``pwrite``; per pack one
  fsync of the pack, one of its index, one of ``packs/``, on the stream's finishing thread
  while the next pack fills; ``packs16``: the same from 16 threads (as register's writers);
* ``loose``: what ``ObjectStore`` does today: ``write_immutable`` per chunk (an unnamed inode,
  ``copy_file_range`` from the source, fsync, ``linkat``) into ``objects/<2 hex>/``, from 16
  threads, then an fsync of each fan-out directory touched;
* ``cp``: ``cp SOURCE COPY`` + fsync of the copy and of its directory (``benchmarks.run``'s
  ``cp_fsync_1g``).

Prints wall seconds (min and median) for each, and the ratios to ``cp`` (median and min of the
per-round ratios). ``python -m benchmarks.packs_probe [--size-mib N] [--rounds N] [--dir D]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3

from uniflow._storage.fsio import fsync_dir, write_immutable
from uniflow._storage.ingest import read_full
from uniflow._storage.packwriter import PackStream

Chunk = tuple[str, int, int]  # name, offset in the source, length


def make_source(path: Path, size: int) -> list[Chunk]:
    """Write ``size`` random bytes to ``path``; its chunks (name, offset, length)."""
    rng = random.Random(25)
    chunks: list[Chunk] = []
    with open(path, "wb") as f:
        pos = 0
        while pos < size:
            n = min(rng.randrange(512 << 10, 1536 << 10), size - pos)
            data = os.urandom(n)
            f.write(data)
            chunks.append((blake3.blake3(data).hexdigest(), pos, n))
            pos += n
        f.flush()
        os.fsync(f.fileno())
    return chunks


_local = threading.local()


def _read(fd: int, offset: int, length: int) -> memoryview:
    """The chunk's bytes, read into this thread's reused buffer (as register's window pool)."""
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(2 << 20)
    view = memoryview(buf)[:length]
    read_full(fd, view, offset)
    return view


def _packs(src: Path, chunks: list[Chunk], out: Path, threads: int) -> None:
    fd = os.open(src, os.O_RDONLY)

    def one(chunk: Chunk) -> None:
        name, offset, length = chunk
        with _read(fd, offset, length) as data:
            stream.add(name, data)

    try:
        stream = PackStream(out)
        if threads == 1:
            for c in chunks:
                one(c)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(one, chunks))
        stream.close()
    finally:
        os.close(fd)


def as_packs(src: Path, chunks: list[Chunk], out: Path) -> None:
    _packs(src, chunks, out, 1)


def as_packs16(src: Path, chunks: list[Chunk], out: Path) -> None:
    _packs(src, chunks, out, 16)


def as_loose(src: Path, chunks: list[Chunk], out: Path) -> None:
    objects, tmp = out / "objects", out / "tmp"
    tmp.mkdir(parents=True)
    fanout = {name[:2] for name, _, _ in chunks}
    for d in fanout:
        (objects / d).mkdir(parents=True, exist_ok=True)
    fd = os.open(src, os.O_RDONLY)

    def one(chunk: Chunk) -> None:
        name, offset, length = chunk
        with _read(fd, offset, length) as data:  # the store hashes these bytes, then copies in the kernel
            write_immutable(objects / name[:2] / name[2:], tmp, data, src=(fd, offset))

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, chunks))
        for d in fanout:
            fsync_dir(objects / d)
    finally:
        os.close(fd)


def as_cp(src: Path, _chunks: list[Chunk], out: Path) -> None:
    out.mkdir()
    dst = out / "copy"
    subprocess.run(["cp", str(src), str(dst)], check=True)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(out)


WAYS: dict[str, Callable[[Path, list[Chunk], Path], None]] = {
    "packs": as_packs,
    "packs16": as_packs16,
    "loose": as_loose,
    "cp": as_cp,
}


def _clear(path: Path) -> None:
    if path.exists():
        for p in path.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a new one in cwd)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="packs_probe.", dir=args.dir or Path.cwd()))
    try:
        src = work / "source.bin"
        chunks = make_source(src, args.size_mib << 20)
        times: dict[str, list[float]] = {w: [] for w in WAYS}
        order = list(WAYS)
        for r in range(args.rounds):
            for way in order[r % len(order) :] + order[: r % len(order)]:
                out = work / way
                os.sync()
                t0 = time.perf_counter()
                WAYS[way](src, chunks, out)
                times[way].append(time.perf_counter() - t0)
                _clear(out)
        report(times, len(chunks), args.size_mib)
    finally:
        _clear(work)


def report(times: dict[str, list[float]], n_chunks: int, size_mib: int) -> None:
    print(f"{size_mib} MiB in {n_chunks} chunks, {len(times['cp'])} interleaved rounds (wall seconds)")
    for way, xs in times.items():
        every = [round(x, 2) for x in xs]
        print(f"  {way:7s} min {min(xs):6.2f}  median {statistics.median(xs):6.2f}  all {every}")
    for way in ("packs", "packs16", "loose"):
        ratios = [a / b for a, b in zip(times[way], times["cp"], strict=True)]
        print(f"  {way} / cp per round: median {statistics.median(ratios):.2f}  min {min(ratios):.2f}")
    ratios = [a / b for a, b in zip(times["packs"], times["loose"], strict=True)]
    print(f"  packs / loose per round: median {statistics.median(ratios):.2f}  min {min(ratios):.2f}")


if __name__ == "__main__":
    main()
