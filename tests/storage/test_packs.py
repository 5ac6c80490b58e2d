"""Packs (``_storage.packs``): round trips on real files, the exact format, forged indexes
refused, corruption named, a newer format refused with "upgrade", and SIGKILL at every step
of writing a pack leaving nothing torn in sight."""

from __future__ import annotations

import mmap
import os
import random
import struct
import subprocess
import sys
import threading
from pathlib import Path

import blake3
import pytest

from tests.helpers import ROOT
from uniflow._errors import CorruptChunkError, IntegrityError, MissingChunkError, RepositoryError
from uniflow._storage.fsio import preallocate
from uniflow._storage.packs import (
    DATA_START,
    CorruptPackError,
    NewerFormatError,
    PackIndex,
    PackReader,
    PackSet,
    pack_dir,
    read_pack_tail,
    scan_packs,
)
from uniflow._storage.packwriter import (
    DIRECT_ENV,
    FLUSH_STEP,
    PREALLOC_AHEAD,
    STAGE,
    PackStream,
    PackWriter,
    WindowPool,
    _set_direct,
    _Staged,
    recover_packs,
)


def chunk(rng: random.Random, size: int) -> tuple[str, bytes]:
    data = rng.randbytes(size)
    return blake3.blake3(data).hexdigest(), data


def write_pack(root: Path, chunks: list[tuple[str, bytes]]) -> PackIndex:
    with PackWriter(root) as w:
        for name, data in chunks:
            w.add(name, data)
        index = w.finish()
    assert index is not None
    return index


def some_chunks(n: int = 5, seed: int = 1) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    return [chunk(rng, rng.randrange(1, 5000)) for _ in range(n)]


# ---------------------------------------------------------------------- round trips
def test_round_trip_many_chunks_over_several_packs(tmp_path: Path) -> None:
    rng = random.Random(25)
    chunks = [chunk(rng, rng.randrange(1, 300_000)) for _ in range(300)]
    indexes = []
    w = PackWriter(tmp_path, target=4 << 20)
    for name, data in chunks:
        assert w.add(name, data)
        if w.full:
            indexes.append(w.finish())
            w = PackWriter(tmp_path, target=4 << 20)
    indexes.append(w.finish())
    assert len(indexes) > 5 and all(i is not None for i in indexes)
    assert sorted(scan_packs(tmp_path).complete) == sorted(i.name for i in indexes if i)
    assert sorted(os.listdir(tmp_path / "tmp")) == []

    where = {e.name: i.name for i in indexes if i for e in i.entries()}
    out = tmp_path / "out.bin"
    fd = os.open(out, os.O_RDWR | os.O_CREAT, 0o644)
    buf = bytearray(64)  # too small: the reader makes a larger one
    try:
        offset = 0
        for name, data in chunks:
            with PackReader(tmp_path, where[name]) as r:
                assert r.read_chunk(name) == data
                assert r.copy_chunk_into(name, fd, offset, buf) == len(data)
            offset += len(data)
    finally:
        os.close(fd)
    assert out.read_bytes() == b"".join(d for _, d in chunks)


def test_pack_is_named_by_its_index_and_identical_content_gives_one_pack(tmp_path: Path) -> None:
    chunks = some_chunks(20)
    a = write_pack(tmp_path, chunks)
    b = write_pack(tmp_path, chunks)  # the same chunks in the same order: the same bytes
    assert a.name == b.name
    idx = (pack_dir(tmp_path) / f"{a.name}.idx").read_bytes()
    assert blake3.blake3(idx[:-32]).hexdigest() == a.name == idx[-32:].hex()
    assert sorted(os.listdir(pack_dir(tmp_path))) == [f"{a.name}.idx", f"{a.name}.pack"]
    c = write_pack(tmp_path, chunks[::-1])  # another order is another pack
    assert c.name != a.name


def test_exact_bytes_of_a_pack_and_its_index(tmp_path: Path) -> None:
    (n1, d1), (n2, d2) = [(blake3.blake3(d).hexdigest(), d) for d in (b"hello ", b"packs")]
    index = write_pack(tmp_path, [(n1, d1), (n2, d2)])
    entries = sorted([(bytes.fromhex(n1), 16, 6), (bytes.fromhex(n2), 22, 5)])
    size = 16 + 11 + 64 + 2 * 48 + 16
    body = b"UFLPIDX\n" + struct.pack("<IIQQ", 1, 0, 2, size)
    body += b"".join(struct.pack("<32sQQ", *e) for e in entries)
    idx = body + blake3.blake3(body).digest()
    pack = b"UFLPACK\n" + struct.pack("<II", 1, 0) + b"hello packs" + idx + struct.pack("<Q", len(idx))
    pack += b"UFLPEND\n"
    assert (pack_dir(tmp_path) / f"{index.name}.idx").read_bytes() == idx
    assert (pack_dir(tmp_path) / f"{index.name}.pack").read_bytes() == pack
    assert len(pack) == size and index.name == blake3.blake3(body).hexdigest()
    assert read_pack_tail(tmp_path, index.name).raw == idx


def test_writer_edges(tmp_path: Path) -> None:
    (name, data), *_ = some_chunks(1)
    w = PackWriter(tmp_path)
    assert w.add(name, data) and not w.add(name, data)  # a chunk goes in once
    assert name in w
    with pytest.raises(ValueError):
        w.add(blake3.blake3(b"").hexdigest(), b"")
    with pytest.raises(IntegrityError):
        w.add("not a name", data)
    assert w.finish() is not None
    with pytest.raises(RuntimeError):
        w.add(name, data)
    assert PackWriter(tmp_path).finish() is None  # an empty pack is never written
    with pytest.raises(OSError), PackWriter(tmp_path) as w2:
        w2.add(name, data)
        raise OSError("the caller failed")  # leaving by an exception discards the pack
    assert len(os.listdir(pack_dir(tmp_path))) == 2 and os.listdir(tmp_path / "tmp") == []


def test_stream_rolls_over_finishes_in_the_background_and_keeps_order(tmp_path: Path) -> None:
    rng = random.Random(4)
    chunks = [chunk(rng, rng.randrange(1, 200_000)) for _ in range(300)]
    stream = PackStream(tmp_path, target=2 << 20)
    threads = [threading.Thread(target=lambda k=k: [stream.add(*c) for c in chunks[k::4]]) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not stream.add(*chunks[0])  # once per stream, whatever pack holds it
    indexes = stream.close()
    assert len(indexes) > 5 and sorted(scan_packs(tmp_path).complete) == sorted(i.name for i in indexes)
    where = {e.name: i.name for i in indexes for e in i.entries()}
    assert sorted(where) == sorted(n for n, _ in chunks)
    for name, data in chunks:
        with PackReader(tmp_path, where[name]) as r:
            assert r.read_chunk(name) == data


def test_stream_abort_keeps_only_finished_packs(tmp_path: Path) -> None:
    rng = random.Random(5)
    with pytest.raises(KeyError), PackStream(tmp_path, target=1 << 20) as stream:
        for _ in range(40):
            stream.add(*chunk(rng, 100_000))
        raise KeyError("the register failed")
    scan = scan_packs(tmp_path)
    assert len(scan.complete) == 3 and not scan.unindexed and not scan.invalid
    assert os.listdir(tmp_path / "tmp") == []


def test_concurrent_adds_give_a_valid_pack(tmp_path: Path) -> None:
    rng = random.Random(3)
    chunks = [chunk(rng, rng.randrange(1, 100_000)) for _ in range(400)]
    w = PackWriter(tmp_path)
    threads = [threading.Thread(target=lambda k=k: [w.add(*c) for c in chunks[k::8]]) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    index = w.finish()
    assert index is not None and len(index) == 400
    with PackReader(tmp_path, index.name) as r:
        assert all(r.read_chunk(n) == d for n, d in chunks)


def test_named_temporary_file_without_o_tmpfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    chunks = some_chunks(10)
    w = PackWriter(tmp_path)
    for c in chunks:
        w.add(*c)
    assert [p.name.split(".")[0] for p in (tmp_path / "tmp").iterdir()] == ["pack"]
    index = w.finish()
    assert index is not None and os.listdir(tmp_path / "tmp") == []
    with PackReader(tmp_path, index.name) as r:
        assert all(r.read_chunk(n) == d for n, d in chunks)


def pack_bytes(root: Path, chunks: list[tuple[str, bytes]], *, durable: bool) -> bytes:
    with PackWriter(root, durable=durable) as w:
        for name, data in chunks:
            w.add(name, data)
        index = w.finish()
    assert index is not None
    return (pack_dir(root) / f"{index.name}.pack").read_bytes()


@pytest.mark.parametrize("ends", ["at a window's end", "its tail across a window's end", "mid-window"])
def test_direct_writes_give_the_same_pack_as_buffered_ones(
    tmp_path: Path, ends: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With UNIFLOW_DIRECT_PACKS=1 a durable pack is staged and written with O_DIRECT:
    chunks crossing windows, data or index ending on a window's edge, the last window
    rounded up and cut back, give exactly the bytes plain pwrites give (a download cache's
    pack)."""
    rng = random.Random(7)
    # 16 header bytes, then chunks; the last one sized to put the pack's end where the case says
    sizes = [3 << 20, 5 << 20, (1 << 20) + 17]
    used = DATA_START + sum(sizes)
    tail = 32 + 48 * 4 + 32 + 16  # index head, 4 entries, checksum; the pack tail
    last = {
        "at a window's end": 2 * STAGE - used,
        "its tail across a window's end": 2 * STAGE - used - tail // 2,
        "mid-window": 12_345,
    }[ends]
    chunks = [chunk(rng, n) for n in [*sizes, last]]
    monkeypatch.setenv(DIRECT_ENV, "1")
    direct = pack_bytes(tmp_path / "direct", chunks, durable=True)
    buffered = pack_bytes(tmp_path / "buffered", chunks, durable=False)
    assert direct == buffered and len(direct) == used + last + tail
    assert os.listdir(tmp_path / "direct" / "tmp") == []


def _direct(fd: int) -> bool:
    """Whether ``fd`` is open with O_DIRECT (its flags in /proc/self/fdinfo, octal)."""
    info = Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
    flags = next(x for x in info if x.startswith("flags:"))
    return bool(int(flags.split()[1], 8) & getattr(os, "O_DIRECT", 0))


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="O_DIRECT is Linux's")
def test_durable_packs_go_through_the_page_cache_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default a durable pack is written through the page cache (what reads it next, a
    push or a load, finds it in memory); UNIFLOW_DIRECT_PACKS=1 asks for O_DIRECT."""
    monkeypatch.delenv(DIRECT_ENV, raising=False)
    with PackWriter(tmp_path / "plain", durable=True) as w:
        assert not _direct(w._fd)
        w.abort()
    probe = os.open(tmp_path / "probe", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if not _set_direct(probe, True):
            pytest.skip("this file system refuses O_DIRECT")
    finally:
        os.close(probe)
    monkeypatch.setenv(DIRECT_ENV, "1")
    with PackWriter(tmp_path / "direct", durable=True) as w:
        assert _direct(w._fd)
        w.abort()


def test_a_refused_direct_write_is_written_plainly(tmp_path: Path) -> None:
    """A direct write the file system refuses (EINVAL; here a length that is no whole
    block, which ext4 refuses and a file system with larger blocks refuses of a page) is
    written again without O_DIRECT, and so is every write after it."""
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if not _set_direct(fd, True):
            pytest.skip("this file system takes no O_DIRECT at all")
        staged = _Staged(fd, WindowPool())
        buf = mmap.mmap(-1, STAGE)
        buf[:8192] = b"x" * 8192
        staged._write(buf, 0, 100)  # refused where a direct write needs whole blocks
        staged._write(buf, 4096, 4096)
        staged.finish(8192)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"x" * 100 + bytes(3996) + b"x" * 4096


def _can_preallocate(directory: Path) -> bool:
    fd = os.open(directory / "probe", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        return preallocate(fd, 1 << 20)
    finally:
        os.close(fd)
        os.unlink(directory / "probe")


def test_a_durable_pack_reserves_its_blocks_and_ends_at_its_tail(tmp_path: Path) -> None:
    """A durable pack has its blocks reserved ahead of its writes (they then find them
    allocated), PREALLOC_AHEAD past the last, and the blocks it did not use are gone once it
    is finished: the file is exactly its bytes, readable chunk by chunk."""
    if not _can_preallocate(tmp_path):
        pytest.skip("this file system cannot reserve blocks (fallocate)")
    rng = random.Random(7)
    chunks = [chunk(rng, 7 << 20) for _ in range(6)]  # 42 MiB: past the first reservation
    with PackWriter(tmp_path, target=1 << 30) as w:
        assert os.fstat(w._fd).st_blocks * 512 >= DATA_START + PREALLOC_AHEAD  # the header's write
        for name, data in chunks:
            w.add(name, data)
        # the fifth write reached past the first reservation: reserved again, ahead of it
        assert os.fstat(w._fd).st_blocks * 512 >= DATA_START + 5 * (7 << 20) + PREALLOC_AHEAD
        index = w.finish()
    assert index is not None
    st = (pack_dir(tmp_path) / f"{index.name}.pack").stat()
    data_end = DATA_START + sum(len(d) for _, d in chunks)
    assert st.st_size == data_end + len(index.raw) + 16
    assert st.st_blocks * 512 < st.st_size + (1 << 20)  # the reserved rest was released
    with PackReader(tmp_path, index.name) as r:
        assert [r.read_chunk(n) for n, _ in chunks] == [d for _, d in chunks]


def test_preallocate_where_it_cannot_writes_nothing() -> None:
    """Where no blocks can be reserved (here a pipe) preallocate says so and writes nothing
    (posix_fallocate would fall back to writing zeros)."""
    r, w = os.pipe()
    try:
        assert preallocate(w, 4096) is False
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            os.read(r, 1)
    finally:
        os.close(r)
        os.close(w)


def test_writeback_starts_once_for_every_window_written_whole(tmp_path: Path) -> None:
    """Writes that complete a FLUSH_STEP window of a durable pack, in any order and from
    several threads, start its writeback once; a window not yet whole waits for the fsync."""
    rng = random.Random(3)
    size = 256 << 10
    chunks = [chunk(rng, size) for _ in range(FLUSH_STEP * 5 // 2 // size)]
    w = PackWriter(tmp_path, target=1 << 30)
    slots: list[tuple[int, bytes]] = []
    for n, d in chunks:
        offset = w.reserve(n, len(d))
        assert offset is not None
        slots.append((offset, d))
    rng.shuffle(slots)

    def write(part: list[tuple[int, bytes]]) -> None:
        for offset, d in part:
            w.write_reserved(offset, memoryview(d))

    threads = [threading.Thread(target=write, args=(slots[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert list(w._filled) == [2]  # windows 0 and 1 were whole, and handed to writeback
    assert w._filled[2] == DATA_START + len(chunks) * size - 2 * FLUSH_STEP
    assert w.finish() is not None


# ---------------------------------------------------------------------- forged indexes
def forge(
    root: Path, pack: bytes, entries: list[tuple[bytes, int, int]], *, version: int = 1,
    magic: bytes = b"UFLPIDX\n", reserved: int = 0, size: int | None = None, pack_version: int = 1,
) -> str:  # fmt: skip
    """A pack whose index says what the test wants, with a valid checksum, named by it (so
    only the structural checks can refuse it); the pack's tail holds the same index."""
    data = pack[:8] + struct.pack("<I", pack_version) + pack[12:]
    n = len(entries)
    total = len(data) + 64 + 48 * n + 16 if size is None else size
    body = magic + struct.pack("<IIQQ", version, reserved, n, total)
    body += b"".join(struct.pack("<32sQQ", *e) for e in entries)
    idx = body + blake3.blake3(body).digest()
    name = blake3.blake3(body).hexdigest()
    full = data + idx + struct.pack("<Q", len(idx)) + b"UFLPEND\n"
    (pack_dir(root) / f"{name}.pack").write_bytes(full)
    (pack_dir(root) / f"{name}.idx").write_bytes(idx)
    return name


def data_area(root: Path, index: PackIndex) -> bytes:
    raw = (pack_dir(root) / f"{index.name}.pack").read_bytes()
    return raw[: index.pack_size - len(index.raw) - 16]


def good_entries(index: PackIndex) -> list[tuple[bytes, int, int]]:
    return [(bytes.fromhex(e.name), e.offset, e.length) for e in index.entries()]


FORGERIES = {
    "overlapping ranges": (lambda es: [es[0], (es[1][0], es[0][1], es[1][2]), *es[2:]], "overlaps"),
    "offset past the end": (lambda es: [*es[:-1], (es[-1][0], 1 << 40, es[-1][2])], "past the end"),
    "length past the end": (lambda es: [*es[:-1], (es[-1][0], es[-1][1], es[-1][2] + 1)], "past the end"),
    "a chunk named twice": (lambda es: [es[0], (es[0][0], *es[1][1:]), *es[2:]], "twice"),
    "unsorted entries": (lambda es: [es[1], es[0], *es[2:]], "not sorted"),
    "a gap": (lambda es: [*es[:-1], (es[-1][0], es[-1][1], es[-1][2] - 1)], "belong to no chunk"),
    "an empty range": (lambda es: [*es[:-1], (es[-1][0], es[-1][1] + es[-1][2], 0)], "empty range"),
    "a range in the header": (lambda es: [(es[0][0], 0, es[0][2]), *es[1:]], "before the pack's data"),
}


@pytest.mark.parametrize("case", sorted(FORGERIES))
def test_forged_index_is_refused(tmp_path: Path, case: str) -> None:
    index = write_pack(tmp_path, some_chunks(5))
    change, reason = FORGERIES[case]
    entries = change(sorted(good_entries(index), key=lambda e: e[1]))
    if case != "unsorted entries":
        entries.sort()
    name = forge(tmp_path, data_area(tmp_path, index), entries)
    with pytest.raises(CorruptPackError, match=reason) as err:
        PackReader(tmp_path, name)
    assert "\n" not in str(err.value)
    assert scan_packs(tmp_path).invalid.keys() == {name}


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"magic": b"NOTANIDX"}, "bad magic"),
        ({"version": 0}, "invalid format version"),
        ({"reserved": 1}, "reserved"),
        ({"size": 12345}, "describes a pack of 12345 bytes"),
    ],
)
def test_forged_header_is_refused(tmp_path: Path, kw: dict[str, object], reason: str) -> None:
    index = write_pack(tmp_path, some_chunks(3))
    name = forge(tmp_path, data_area(tmp_path, index), good_entries(index), **kw)  # type: ignore[arg-type]
    with pytest.raises(CorruptPackError, match=reason):
        PackReader(tmp_path, name)


def test_checksum_mismatch_and_foreign_index_are_refused(tmp_path: Path) -> None:
    a = write_pack(tmp_path, some_chunks(3, seed=1))
    b = write_pack(tmp_path, some_chunks(3, seed=2))
    idx_a = pack_dir(tmp_path) / f"{a.name}.idx"
    raw = bytearray(idx_a.read_bytes())
    raw[40] ^= 1  # inside the first entry's name
    idx_a.chmod(0o644)
    idx_a.write_bytes(bytes(raw))
    with pytest.raises(CorruptPackError, match="checksum mismatch"):
        PackReader(tmp_path, a.name)
    idx_a.write_bytes((pack_dir(tmp_path) / f"{b.name}.idx").read_bytes())
    with pytest.raises(CorruptPackError, match="belongs to pack"):
        PackReader(tmp_path, a.name)


def test_an_index_too_large_for_its_pack_is_refused_unread(tmp_path: Path) -> None:
    index = write_pack(tmp_path, some_chunks(3))
    idx = pack_dir(tmp_path) / f"{index.name}.idx"
    idx.chmod(0o644)
    os.truncate(idx, 1 << 40)  # a sparse terabyte: reading it would exhaust memory
    with pytest.raises(CorruptPackError, match="cannot describe a pack of"):
        PackReader(tmp_path, index.name)


def test_index_and_pack_tail_must_agree(tmp_path: Path) -> None:
    index = write_pack(tmp_path, some_chunks(3))
    pack = pack_dir(tmp_path) / f"{index.name}.pack"
    raw = bytearray(pack.read_bytes())
    raw[-20] ^= 1  # the checksum at the end of the tail copy of the index
    pack.chmod(0o644)
    pack.write_bytes(bytes(raw))
    with pytest.raises(CorruptPackError, match="differs from its .idx"):
        PackReader(tmp_path, index.name)


def test_links_and_missing_files_are_refused(tmp_path: Path) -> None:
    index = write_pack(tmp_path, some_chunks(3))
    d = pack_dir(tmp_path)
    (d / f"{index.name}.idx").rename(tmp_path / "elsewhere.idx")
    with pytest.raises(MissingChunkError, match="idx is missing"):
        PackReader(tmp_path, index.name)
    (d / f"{index.name}.idx").symlink_to(tmp_path / "elsewhere.idx")
    with pytest.raises(CorruptPackError, match="is a symlink, not a regular file"):
        PackReader(tmp_path, index.name)
    with pytest.raises(IntegrityError, match="invalid pack name"):
        PackReader(tmp_path, "../" + index.name[3:])


def test_a_fifo_planted_as_a_pack_is_refused_without_waiting(tmp_path: Path) -> None:
    """A pack directory that is not ours (a directory blob remote) may hold a FIFO under a
    pack's name: opening it must not wait for a writer that never comes."""
    import signal

    index = write_pack(tmp_path, some_chunks(3))
    pack = pack_dir(tmp_path) / f"{index.name}.pack"
    pack.unlink()
    os.mkfifo(pack)
    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("opening the FIFO blocked"))
    signal.alarm(5)
    try:
        with pytest.raises(CorruptPackError, match="is a FIFO, not a regular file"):
            PackReader(tmp_path, index.name)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------- corrupted bytes, versions
def test_a_flipped_byte_is_an_integrity_error_naming_the_chunk(tmp_path: Path) -> None:
    chunks = some_chunks(6)
    index = write_pack(tmp_path, chunks)
    victim = sorted(index.entries(), key=lambda e: e.offset)[3]
    pack = pack_dir(tmp_path) / f"{index.name}.pack"
    raw = bytearray(pack.read_bytes())
    raw[victim.offset + victim.length // 2] ^= 0x40
    pack.chmod(0o644)
    pack.write_bytes(bytes(raw))
    out = tmp_path / "out"
    fd = os.open(out, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with PackReader(tmp_path, index.name) as r:
            with pytest.raises(CorruptChunkError, match=victim.name[:16]) as err:
                r.read_chunk(victim.name)
            assert err.value.digest == victim.name and index.name[:16] in str(err.value)
            with pytest.raises(CorruptChunkError, match=victim.name[:16]):
                r.copy_chunk_into(victim.name, fd, 0)
            assert os.fstat(fd).st_size == 0  # nothing unverified was written
            others = [(n, d) for n, d in chunks if n != victim.name]
            assert all(r.read_chunk(n) == d for n, d in others)
            with pytest.raises(MissingChunkError):
                r.read_chunk(blake3.blake3(b"absent").hexdigest())
    finally:
        os.close(fd)


def test_a_pack_of_a_newer_format_asks_for_an_upgrade(tmp_path: Path) -> None:
    index = write_pack(tmp_path, some_chunks(3))
    name = forge(tmp_path, data_area(tmp_path, index), good_entries(index), version=2, pack_version=2)
    with pytest.raises(NewerFormatError, match="newer uniflow.*upgrade uniflow") as err:
        PackReader(tmp_path, name)
    assert isinstance(err.value, RepositoryError) and "\n" not in str(err.value)
    # a newer pack under a current index: the pack's own header says so too
    name = forge(tmp_path, data_area(tmp_path, index), good_entries(index), pack_version=2)
    with pytest.raises(NewerFormatError, match="upgrade uniflow"):
        PackReader(tmp_path, name)


# ---------------------------------------------------------------------- scanning, recovery
def test_scan_classifies_and_recover_reindexes_from_the_tail(tmp_path: Path) -> None:
    a = write_pack(tmp_path, some_chunks(3, seed=1))
    b = write_pack(tmp_path, some_chunks(3, seed=2))
    c = write_pack(tmp_path, some_chunks(3, seed=3))
    d = pack_dir(tmp_path)
    (d / f"{b.name}.idx").unlink()
    (d / f"{c.name}.pack").unlink()
    (d / "stray").write_text("x")
    scan = scan_packs(tmp_path)
    assert (scan.complete, scan.unindexed, scan.orphan_indexes, scan.other) == (
        [a.name], [b.name], [c.name], ["stray"],
    )  # fmt: skip
    assert recover_packs(tmp_path) == [b.name]
    assert sorted(scan_packs(tmp_path).complete) == sorted([a.name, b.name])
    assert (d / f"{b.name}.idx").read_bytes() == b.raw


# ---------------------------------------------------------------------- crash safety
WRITER = """
import os, random, sys
import blake3
from pathlib import Path
from uniflow._storage.packwriter import PackStream
root = Path(sys.argv[1])
rng = random.Random(7)
stream = PackStream(root, target=1 << 20)
for i in range(60):
    data = rng.randbytes(rng.randrange(1, 100_000))
    stream.add(blake3.blake3(data).hexdigest(), data)
stream.close()
"""

POINTS = ["pack-chunk-written", "pack-written", "pack-synced", "pack-linked", "pack-indexed", "pack-done"]


def _expected() -> dict[str, bytes]:
    rng = random.Random(7)
    chunks = [rng.randbytes(rng.randrange(1, 100_000)) for _ in range(60)]
    return {blake3.blake3(d).hexdigest(): d for d in chunks}


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_each_step_leaves_no_torn_pack_in_sight(tmp_path: Path, point: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "UNIFLOW_TEST_KILL_AT": point}
    r = subprocess.run(
        [sys.executable, "-c", WRITER, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == -9, r.stderr
    expected = _expected()
    scan = scan_packs(tmp_path)
    assert scan.invalid == {} and scan.other == [] and scan.orphan_indexes == []
    # what a kill leaves: before the link nothing is visible; after it, a complete pack
    # (indexed, or not yet: then its tail index is whole and recover_packs completes it)
    visible = {"pack-chunk-written": 0, "pack-written": 0, "pack-synced": 0}.get(point, 1)
    assert len(scan.complete) + len(scan.unindexed) == visible
    assert len(scan.unindexed) == (1 if point == "pack-linked" else 0)
    assert recover_packs(tmp_path) == scan.unindexed
    for name in scan_packs(tmp_path).complete:
        with PackReader(tmp_path, name) as reader:
            for entry in reader.index.entries():
                assert reader.read_chunk(entry.name) == expected[entry.name]
    assert os.listdir(tmp_path / "tmp") == []  # the unnamed inode died with the process


def test_a_truncated_pack_is_refused(tmp_path: Path) -> None:
    index = write_pack(tmp_path, some_chunks(4))
    pack = pack_dir(tmp_path) / f"{index.name}.pack"
    pack.chmod(0o644)
    os.truncate(pack, index.pack_size - 100)
    with pytest.raises(CorruptPackError, match="the pack has"):
        PackReader(tmp_path, index.name)


def test_iter_chunks_gives_verified_chunks_in_pack_order(tmp_path: Path) -> None:
    chunks = some_chunks(8)
    index = write_pack(tmp_path, chunks)
    with PackReader(tmp_path, index.name) as r:
        assert list(r.iter_chunks()) == chunks  # written in this order
        wanted = {chunks[1][0], chunks[5][0]}
        assert list(r.iter_chunks(wanted)) == [chunks[1], chunks[5]]


# ---------------------------------------------------------------------- a store's packs
def test_pack_set_finds_chunks_across_packs_and_bounds_open_packs(tmp_path: Path) -> None:
    rng = random.Random(6)
    groups = [[chunk(rng, rng.randrange(1, 50_000)) for _ in range(10)] for _ in range(5)]
    for g in groups[:4]:
        write_pack(tmp_path, g)
    packs = PackSet(tmp_path, max_open=2)
    assert packs.refresh() == 4 and packs.open_count == 2
    out = tmp_path / "out"
    fd = os.open(out, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for g in groups[:4]:
            for name, data in g:
                assert packs.read_chunk(name) == data
                assert packs.copy_chunk_into(name, fd, 0) == len(data)
                assert packs.open_count <= 2
        later = write_pack(tmp_path, groups[4])  # written after the set was built
        name, data = groups[4][3]
        assert name in packs and packs.pack_of(name) == later.name
        assert packs.read_chunk(name) == data
        with pytest.raises(MissingChunkError):
            packs.read_chunk(blake3.blake3(b"nowhere").hexdigest())
    finally:
        os.close(fd)
        packs.close()
    assert packs.open_count == 0 and packs.read_chunk(groups[0][0][0]) == groups[0][0][1]


def test_pack_set_skips_an_invalid_pack_and_serves_the_others(tmp_path: Path) -> None:
    good = some_chunks(4, seed=8)
    bad = some_chunks(4, seed=9)
    write_pack(tmp_path, good)
    index = write_pack(tmp_path, bad)
    idx = pack_dir(tmp_path) / f"{index.name}.idx"
    raw = bytearray(idx.read_bytes())
    raw[50] ^= 1
    idx.chmod(0o644)
    idx.write_bytes(bytes(raw))
    packs = PackSet(tmp_path)
    assert packs.refresh() == 1 and list(packs.invalid) == [index.name]
    assert "checksum mismatch" in packs.invalid[index.name]
    assert all(packs.read_chunk(n) == d for n, d in good)
    with pytest.raises(MissingChunkError):
        packs.read_chunk(bad[0][0])
    packs.close()
