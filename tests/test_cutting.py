"""Tensor-aligned, parallel chunking (issue 25, item 2: ``uniflow._storage.cutting``).

What a user relies on: a tensor file is cut at its tensors' edges so that a fine-tune of one
tensor, or a re-save whose header moved every tensor, stores a few percent of new bytes;
any other file gets exactly the chunks it got before (so it dedups against old versions);
the threads change nothing but the speed; a file is read in bounded windows.
"""

from __future__ import annotations

import os
import random
import threading
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import blake3
import numpy as np
import pytest
from safetensors.numpy import save_file

from uniflow._errors import InvalidPathError, UsageError
from uniflow._records.tensors import TensorScan
from uniflow._storage.chunking import CHUNK_PARAMS, chunker
from uniflow._storage.cutting import (
    TENSOR_STEP,
    FileReader,
    MemoryReader,
    Piece,
    covering,
    cut,
    cut_ends,
    cut_file,
    plan,
)
from uniflow._storage.ingest import FileSource
from uniflow._storage.segments import Segments

MIB = 1 << 20
MIN, MAX = CHUNK_PARAMS["min_size"], CHUNK_PARAMS["max_size"]


# ---------------------------------------------------------------------- helpers
def _random(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8).tobytes()


def _sequential(data: bytes, ranges: Sequence[tuple[int, int]]) -> list[int]:
    """The rule, computed the slow way: every run of the plan cut alone (by FastCDC, or
    every ``step`` bytes)."""
    out: list[int] = []
    for p in plan(len(data), ranges):
        if not p.run:
            out.append(p.end)
            continue
        if p.step:
            ends = [*range(p.begin + p.step, p.end, p.step), p.end]
        else:
            run = memoryview(data)[p.begin : p.end]
            ends = [p.begin + c.offset + c.length for c in chunker().cut_buf(run)]
        if p.merge_tail and len(ends) >= 2 and ends[-1] - ends[-2] < MIN:
            del ends[-2]
        out += ends
    return out


def _file_reader(path: Path, fd: int, segment: int) -> FileReader:
    src = FileSource(fd, path)
    return FileReader(src.size, src.read_into, segment=segment)


def _chunks_of(
    path: Path, ranges: Sequence[tuple[int, int]], *, threads: int = 2, segment: int = 8 * MIB
) -> dict[str, int]:
    """Chunk name -> size of a file on disk cut by :func:`cut` (read through ``FileSource``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        out: dict[str, int] = {}
        for _, view in cut(_file_reader(path, fd, segment), ranges, threads=threads):
            with view:
                out[blake3.blake3(view).hexdigest()] = len(view)
        return out
    finally:
        os.close(fd)


def _file_cut_ends(reader: FileReader, data: bytes, ranges: Sequence[tuple[int, int]] = ()) -> list[int]:
    """Where :func:`cut_file` (one thread, one pass) ends the chunks, each view checked to
    hold the file's bytes at its offset."""
    out: list[int] = []
    for offset, view in cut_file(reader, ranges):
        with view:
            assert offset == (out[-1] if out else 0) and view == memoryview(data)[offset : offset + len(view)]
            out.append(offset + len(view))
    return out


def _new_share(before: dict[str, int], after: dict[str, int]) -> float:
    return sum(n for d, n in after.items() if d not in before) / sum(after.values())


def _tensor_ranges(path: Path) -> list[tuple[int, int]]:
    return list(TensorScan("safetensors")(memoryview(path.read_bytes())))


# ---------------------------------------------------------------------- the rule
def test_large_regions_are_cut_alone_and_short_runs_are_glued_or_grouped() -> None:
    k = 1024
    # header 10 KiB, a 1 MiB tensor, a 4 KiB bias, a 2 MiB tensor, then 300 KiB of small ones
    size = 10 * k + MIB + 4 * k + 2 * MIB + 100 * k + 100 * k + 100 * k
    t1 = (10 * k, 10 * k + MIB)
    bias = (t1[1], t1[1] + 4 * k)
    t2 = (bias[1], bias[1] + 2 * MIB)
    smalls = [(t2[1] + i * 100 * k, t2[1] + (i + 1) * 100 * k) for i in range(3)]
    pieces = plan(size, [t1, bias, t2, *smalls])
    assert pieces == [
        Piece(0, t1[0], t1[1], True, True, TENSOR_STEP),  # the header is glued to t1's first chunk
        Piece(bias[0], t2[0], t2[1], True, True, TENSOR_STEP),  # the bias to t2's
        Piece(smalls[0][0], smalls[0][0], size, False),  # 300 KiB of small ones: one chunk
    ]
    # small ones at the end holding less than the minimum: the file's last chunk, alone
    assert plan(t2[1] + 8, [t1, bias, t2, (t2[1], t2[1] + 8)])[-2:] == [
        Piece(bias[0], t2[0], t2[1], True, True, TENSOR_STEP),
        Piece(t2[1], t2[1], t2[1] + 8, False),
    ]
    assert plan(100, [(10, 20)]) == [Piece(0, 0, 100, False)]  # a small file: one chunk
    assert plan(0) == []
    assert plan(5 * MIB) == [Piece(0, 0, 5 * MIB, True, False)]  # no ranges: one FastCDC run


def test_small_tensors_are_grouped_from_the_end_so_the_header_size_does_not_matter() -> None:
    sizes = [60_000, 100_000, 250_000, 30_000, 200_000, 90_000, 120_000]

    def groups(header: int) -> list[tuple[int, int]]:
        edges = [header]
        for n in sizes:
            edges.append(edges[-1] + n)
        pieces = plan(
            edges[-1] + 2 * MIB, [*zip(edges, edges[1:], strict=False), (edges[-1], edges[-1] + 2 * MIB)]
        )
        return [(p.lo - header, p.end - header) for p in pieces[:-1]]  # relative to the first tensor

    small, grown = groups(4_000), groups(40_000)
    assert small[1:] == grown[1:] and len(small) >= 2  # only the group holding the header differs
    assert all(hi - lo >= MIN for lo, hi in small[1:])
    assert all(hi - lo < 3 * MIN for lo, hi in small)


def test_bad_ranges_are_refused_with_a_clear_error() -> None:
    for ranges in ([(10, 5)], [(0, 200)], [(50, 60), (40, 55)], [(-1, 4)]):
        with pytest.raises(UsageError, match="not inside"):
            plan(100, ranges)


# ---------------------------------------------------------------------- threads change nothing
def test_a_file_without_ranges_gets_the_chunks_fastcdc_cuts_from_it_whole(tmp_path: Path) -> None:
    data = _random(40 * MIB + 12345, 1)
    whole = [c.offset + c.length for c in chunker().cut_buf(data)]
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        for threads, segment in ((1, 8 * MIB), (2, 3 * MIB), (3, MIB), (2, 64 * MIB)):
            assert cut_ends(MemoryReader(data, segment), threads=threads) == whole
            assert cut_ends(_file_reader(path, fd, segment), threads=threads) == whole
            assert _file_cut_ends(_file_reader(path, fd, segment), data) == whole
    finally:
        os.close(fd)


def test_parallel_cutting_is_the_sequential_rule_for_any_ranges_units_and_parts() -> None:
    data = _random(24 * MIB, 2)
    size = len(data)
    rng = random.Random(3)
    for _ in range(12):
        points = set(rng.sample(range(1, size), rng.randint(1, 40)))
        for _ in range(rng.randint(0, 4)):  # clusters of tensors smaller than a chunk
            at = rng.randrange(size - 4 * MIB)
            for _ in range(rng.randint(1, 25)):
                at += rng.choice([8, 1000, 50_000, 200_000, 300_000])
                points.add(at)
        edges = sorted(points)
        ranges = list(zip(edges[::2], edges[1::2], strict=False))
        expect = _sequential(data, ranges)
        threads, segment = rng.choice([1, 2, 3]), rng.choice([MIB, 3 * MIB, 7_777_777, 16 * MIB])
        splits = sorted(rng.sample(range(1, size), rng.randint(0, 12)))
        parts = Segments([memoryview(data)[a:b] for a, b in zip([0, *splits], [*splits, size], strict=True)])
        assert cut_ends(MemoryReader(parts, segment), ranges, threads=threads) == expect

        def read_into(view: memoryview, pos: int) -> None:
            view[:] = data[pos : pos + len(view)]

        reader = FileReader(size, read_into, segment=segment)
        assert cut_ends(reader, ranges, threads=threads) == expect
        assert _file_cut_ends(FileReader(size, read_into, segment=segment), data, ranges) == expect
        lengths = [b - a for a, b in zip([0, *expect], expect, strict=False)]
        assert min(lengths[:-1], default=MIN) >= MIN  # every chunk but the last: the gate's floor and more
        assert max(lengths) <= MAX + 3 * MIN


def test_the_chunks_given_are_the_file_bytes_in_order(tmp_path: Path) -> None:
    data = _random(20 * MIB, 4)
    ranges = [(1000, 5 * MIB), (5 * MIB, 5 * MIB + 100), (5 * MIB + 100, 13 * MIB)]
    seen = bytearray()
    for offset, view in cut(MemoryReader(data, 2 * MIB), ranges, threads=2):
        with view:
            assert offset == len(seen)
            seen += view
    assert seen == data


def test_a_consumer_that_stops_early_leaves_no_thread_behind() -> None:
    data = _random(40 * MIB, 8)
    before = threading.active_count()
    chunks = cut(MemoryReader(data, 2 * MIB), [(100, 30 * MIB)], threads=2)
    for i, (_, view) in enumerate(chunks):
        view.release()
        if i == 3:
            break
    chunks.close()
    assert threading.active_count() == before


# ---------------------------------------------------------------------- files: bounded; refused when changed
def test_a_file_is_read_in_bounded_windows(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    with path.open("wb") as f:
        for i in range(12):
            f.write(_random(8 * MIB, 10 + i))
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = _file_reader(path, fd, 4 * MIB)
        tracemalloc.start()
        try:
            n = len(cut_ends(reader, threads=2))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        os.close(fd)
    assert n > 50
    assert peak < 40 * MIB, f"{peak / MIB:.0f} MiB held to cut a 96 MiB file"


def test_a_file_cut_short_while_it_is_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(_random(12 * MIB, 5))
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = _file_reader(path, fd, 2 * MIB)
        os.truncate(path, 5 * MIB)  # a training job still writing it, a copy in progress
        with pytest.raises(InvalidPathError, match="changed while it was being registered"):
            cut_ends(reader, threads=2)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- dedup of real safetensors files
def _model(seed: int = 0) -> dict[str, np.ndarray]:
    """~140 MiB in file order (safetensors sorts by name here): small first tensors, twelve
    layers of weights with biases and norms between them, and a 1 MiB head last."""
    rng = np.random.default_rng(seed)
    out = {"a.bias": rng.standard_normal(4096, dtype=np.float32)}  # 16 KiB, the first tensor
    out["embed.weight"] = rng.standard_normal((2000, 1024), dtype=np.float32)  # ~7.8 MiB
    for i in range(12):
        out[f"layers.{i:02d}.attn.weight"] = rng.standard_normal((1024, 1024), dtype=np.float32)
        out[f"layers.{i:02d}.attn.bias"] = rng.standard_normal(1024, dtype=np.float32)
        out[f"layers.{i:02d}.mlp.weight"] = rng.standard_normal((1024, 1900), dtype=np.float32)
        out[f"layers.{i:02d}.norm.weight"] = rng.standard_normal(1024, dtype=np.float32)
        out[f"layers.{i:02d}.z.proj"] = rng.standard_normal(70_000, dtype=np.float32)  # 273 KiB
    out["zz.head.weight"] = rng.standard_normal((256, 1024), dtype=np.float32)  # 1 MiB, the last tensor
    return out


@pytest.fixture(scope="module")
def model_v1(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], Path, dict[str, int]]:
    tensors = _model()
    path = tmp_path_factory.mktemp("model") / "v1.safetensors"
    save_file(tensors, str(path))
    return tensors, path, _chunks_of(path, _tensor_ranges(path))


@pytest.mark.parametrize("changed", ["zz.head.weight", "a.bias", "layers.05.attn.bias"])
def test_fine_tuning_one_tensor_stores_under_two_percent(
    model_v1: tuple[dict[str, np.ndarray], Path, dict[str, int]], tmp_path: Path, changed: str
) -> None:
    tensors, _, before = model_v1
    tuned = dict(tensors)
    tuned[changed] = tensors[changed] + np.float32(0.01)
    path = tmp_path / "v2.safetensors"
    save_file(tuned, str(path))
    share = _new_share(before, _chunks_of(path, _tensor_ranges(path)))
    assert share <= 0.02, f"{100 * share:.2f}% of the bytes are new after changing {changed}"


def test_a_header_shift_stores_under_five_percent(
    model_v1: tuple[dict[str, np.ndarray], Path, dict[str, int]], tmp_path: Path
) -> None:
    tensors, v1, before = model_v1
    path = tmp_path / "v2.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "note": "re-saved with a longer header " * 20})
    assert _tensor_ranges(path)[0][0] != _tensor_ranges(v1)[0][0]  # every tensor moved
    share = _new_share(before, _chunks_of(path, _tensor_ranges(path)))
    assert share <= 0.05, f"{100 * share:.2f}% of the bytes are new after a header shift"


def test_a_large_tensor_is_made_of_its_own_chunks(
    model_v1: tuple[dict[str, np.ndarray], Path, dict[str, int]],
) -> None:
    _, path, _ = model_v1
    scan = TensorScan("safetensors")
    ranges = scan(memoryview(path.read_bytes()))
    ends = cut_ends(MemoryReader(path.read_bytes()), ranges)
    own = {t[0] for t in scan.found or () if covering(ends, t[3], t[4]) is not None}
    assert {"layers.03.mlp.weight", "layers.07.mlp.weight", "zz.head.weight"} <= own
    # the 4 KiB biases and norms (and the header) share the first chunk of the tensor after them
    assert not own & {
        "layers.03.attn.bias",
        "layers.03.attn.weight",
        "layers.03.norm.weight",
        "layers.03.z.proj",
    }
    assert covering(ends, 0, ends[0]) == range(1) and covering(ends, 1, ends[0]) is None


def test_inserting_bytes_at_the_start_of_an_opaque_file_changes_few_chunks(tmp_path: Path) -> None:
    data = _random(64 * MIB, 6)
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(data)
    b.write_bytes(_random(100, 7) + data)
    before, after = _chunks_of(a, (), segment=4 * MIB), _chunks_of(b, (), segment=4 * MIB)
    new = [d for d in after if d not in before]
    assert len(new) <= 3, f"{len(new)} of {len(after)} chunks are new"


def test_a_tensor_grown_along_its_first_dimension_keeps_its_leading_chunks(
    model_v1: tuple[dict[str, np.ndarray], Path, dict[str, int]], tmp_path: Path
) -> None:
    """A vocabulary extended at the end: the embedding's old rows keep their offsets inside
    the tensor, so its chunks before the new rows are stored already (tensor-relative steps)."""
    tensors, _, before = model_v1
    grown = dict(tensors)
    extra = np.random.default_rng(9).standard_normal((64, 1024), dtype=np.float32)
    grown["embed.weight"] = np.concatenate([tensors["embed.weight"], extra])
    path = tmp_path / "v2.safetensors"
    save_file(grown, str(path))
    after = _chunks_of(path, _tensor_ranges(path))
    share = _new_share(before, after)
    # the 256 KiB of new rows, the embedding's last chunk they join, and the header's chunk
    assert share <= 0.02, f"{100 * share:.2f}% of the bytes are new after extending the vocabulary"


def test_large_regions_of_a_tensor_file_are_cut_every_step_from_their_own_start() -> None:
    k = 1024
    size = 8 * k + 5 * MIB + 300 * k
    tensor = (8 * k, 8 * k + 5 * MIB + 300 * k)
    ends = cut_ends(MemoryReader(_random(size, 11)), [tensor])
    assert ends == [tensor[0] + (i + 1) * TENSOR_STEP for i in range(5)] + [size]
    # the same bytes without ranges: FastCDC's cuts, not the steps
    assert cut_ends(MemoryReader(_random(size, 11))) != ends
