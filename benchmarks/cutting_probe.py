"""Probe (issue 25, item 2): FastCDC on one thread against ``_storage.cutting`` on two.

Cuts 1 GiB of random bytes held in memory, the same bytes as a file on disk (page cache
warm: read once first) and the same bytes with a tensor layout (ranges as a safetensors
file's, in memory and read from the file), round after round, the variants interleaved;
``cut_file`` is what a register of a file uses (one thread, each piece cut once). Prints
each variant's min and median wall seconds (and CPU seconds: the work done, which other
load on the machine does not inflate much) and the speed-ups (min/min, median/median and
the median of the per-round ratios).
Not a test: run it on an otherwise idle machine.

    PYTHONPATH=. .venv/bin/python benchmarks/cutting_probe.py [--gib 1] [--rounds 5] [--dir /tmp]
        [--file-segment-mib 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from uniflow._storage.chunking import chunker
from uniflow._storage.cutting import FILE_SEGMENT, FileReader, MemoryReader, cut, cut_file
from uniflow._storage.ingest import FileSource

MIB = 1 << 20


def drain(chunks: Iterator[tuple[int, memoryview]]) -> int:
    """How many chunks a cut gave, each view released (the buffers are reused)."""
    n = 0
    for _, view in chunks:
        n += 1
        view.release()
    return n


def _layout(size: int) -> list[tuple[int, int]]:
    """Tensor ranges like a transformer's: a header, then per layer a 4 KiB bias before a
    weight of 4 or 12 MiB, a 4 KiB norm, until the file is full."""
    ranges: list[tuple[int, int]] = []
    pos, i = 64 << 10, 0
    while True:
        for n in (4 << 10, (4 if i % 2 else 12) * MIB, 4 << 10):
            if pos + n > size:
                return ranges
            ranges.append((pos, pos + n))
            pos += n
        i += 1


def _variants(data: bytes, path: Path, fd: int, file_segment: int) -> dict[str, Callable[[], int]]:
    src = FileSource(fd, path)
    ranges = _layout(len(data))

    def file_reader() -> FileReader:
        return FileReader(src.size, src.read_into, file_segment)

    return {
        "memory, FastCDC whole (today)": lambda: sum(1 for _ in chunker().cut_buf(data)),
        "memory, cut 1 thread": lambda: drain(cut(MemoryReader(data), threads=1)),
        "memory, cut 2 threads": lambda: drain(cut(MemoryReader(data), threads=2)),
        "file, cut_file (register)": lambda: drain(cut_file(file_reader())),
        "file, cut 1 thread": lambda: drain(cut(file_reader(), threads=1)),
        "file, cut 2 threads": lambda: drain(cut(file_reader(), threads=2)),
        "tensors, cut 1 thread": lambda: drain(cut(MemoryReader(data), ranges, threads=1)),
        "tensors, cut 2 threads": lambda: drain(cut(MemoryReader(data), ranges, threads=2)),
        "tensor file, cut_file (register)": lambda: drain(cut_file(file_reader(), ranges)),
        "tensor file, cut 2 threads": lambda: drain(cut(file_reader(), ranges, threads=2)),
    }


def _report(times: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
    """Wall seconds (and CPU seconds of the process: the work, whatever else runs) per variant."""
    for name, ts in times.items():
        cs = cpu[name]
        print(
            f"{name:36s} min {min(ts):.3f}s  median {statistics.median(ts):.3f}s"
            f"  (CPU min {min(cs):.3f}s  median {statistics.median(cs):.3f}s)"
        )
    pairs = [
        ("memory, FastCDC whole (today)", "memory, cut 2 threads"),
        ("memory, cut 1 thread", "memory, cut 2 threads"),
        ("file, cut_file (register)", "file, cut 2 threads"),
        ("file, cut 1 thread", "file, cut 2 threads"),
        ("tensors, cut 1 thread", "tensors, cut 2 threads"),
        ("tensor file, cut_file (register)", "tensor file, cut 2 threads"),
    ]
    for one, two in pairs:
        a, b = times[one], times[two]
        per_round = statistics.median(x / y for x, y in zip(a, b, strict=True))
        medians = statistics.median(a) / statistics.median(b)
        print(f"{one} / {two}: min {min(a) / min(b):.2f}x  median {medians:.2f}x  per-round {per_round:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where the file is written (default: the temp dir)")
    ap.add_argument(
        "--file-segment-mib", type=int, default=FILE_SEGMENT >> 20, help="units of a file read from disk"
    )
    args = ap.parse_args()
    size = int(args.gib * (1 << 30))
    data = np.random.default_rng(0).integers(0, 256, size=size, dtype=np.uint8).tobytes()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "probe.bin"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            src = FileSource(fd, path)
            drain(cut_file(FileReader(src.size, src.read_into)))  # warm the page cache
            variants = _variants(data, path, fd, args.file_segment_mib * MIB)
            times: dict[str, list[float]] = {name: [] for name in variants}
            cpu: dict[str, list[float]] = {name: [] for name in variants}
            for r in range(args.rounds):
                for name, fn in variants.items():
                    c, t = time.process_time(), time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
                    cpu[name].append(time.process_time() - c)
                print(f"round {r + 1}: " + "  ".join(f"{ts[-1]:.3f}" for ts in times.values()), flush=True)
        finally:
            os.close(fd)
    _report(times, cpu)


if __name__ == "__main__":
    main()
