"""Loads and ``uniflow get`` without waste (issue 25 item 5).

A cached copy or a get's output is checked against the chunk list, never against a hash of
the whole bytes; a copy whose recorded stamp is unchanged is not read again; a changed one
(bytes tampered with, size kept) is checked and rebuilt; a get does not read its output
back, and a second get of the same file copies the cache's verified copy: nothing fetched,
nothing hashed. Hashing is counted at the ``verify-chunks`` test point.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import cli, open_registry, shared_setup
from uniflow import ModelRegistry
from uniflow._storage.chunking import ChunkRef, FileRecord, chunk_digest
from uniflow._storage.fsio import copy_file
from uniflow._storage.verified import StampBook, holds_chunks
from uniflow._testhooks import COUNT_ENV

BIG = 12 << 20  # above sharing.remote.WHOLE_COPY_MIN, several chunks


def _hashes(count_dir: Path) -> int:
    """How many times a file was read and hashed against its chunk list so far (and reset)."""
    points = count_dir / "points"
    if not points.exists():
        return 0
    n = points.read_text().splitlines().count("verify-chunks")
    points.unlink()
    return n


def _flip_keeping_size(path: Path, offset: int) -> None:
    """Change one byte of ``path`` in place (same inode, same size: only the stamp's times move)."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 1]))


@pytest.fixture
def count_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "points"
    d.mkdir()
    monkeypatch.setenv(COUNT_ENV, str(d))
    return d


# ---------------------------------------------------------------------- the check itself
def _record_of(data: bytes, cuts: list[int]) -> FileRecord:
    chunks, start = [], 0
    for end in [*cuts, len(data)]:
        piece = data[start:end]
        chunks.append(ChunkRef(chunk_digest(piece), len(piece)))  # type: ignore[arg-type]
        start = end
    return FileRecord(len(data), "0" * 64, tuple(chunks))


@pytest.mark.parametrize("damage", ["none", "flipped", "truncated", "extended", "swapped"])
def test_a_file_is_checked_against_each_chunk(tmp_path: Path, damage: str) -> None:
    data = os.urandom(3 << 20)
    rec = _record_of(data, [1 << 20, (2 << 20) + 17])
    body = {
        "none": data,
        "flipped": data[:100] + bytes([data[100] ^ 1]) + data[101:],
        "truncated": data[:-1],
        "extended": data + b"\0",
        "swapped": data[1 << 20 : 2 << 20] + data[: 1 << 20] + data[2 << 20 :],
    }[damage]
    path = tmp_path / "f"
    path.write_bytes(body)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert holds_chunks(fd, rec) is (damage == "none")
    finally:
        os.close(fd)


def test_a_stamp_is_trusted_until_the_file_changes_and_a_forged_record_never(tmp_path: Path) -> None:
    book = StampBook(tmp_path / "stamps", tmp_path, lambda: b"k" * 32)
    digest = "ab" * 32
    path = tmp_path / "f"
    path.write_bytes(os.urandom(4096))
    with open(path, "rb") as f:
        assert not book.trusted(digest, f.fileno())  # nothing recorded
        book.record(digest, f.fileno())
        assert book.trusted(digest, f.fileno())
        assert not book.trusted("cd" * 32, f.fileno())  # recorded for another digest
    _flip_keeping_size(path, 7)
    with open(path, "rb") as f:
        assert not book.trusted(digest, f.fileno())  # same size, new mtime/ctime
        book.record(digest, f.fileno())
        record = tmp_path / "stamps" / digest[:2] / digest
        raw = bytearray(record.read_bytes())
        raw[-1] ^= 1  # a forged stamp
        record.write_bytes(bytes(raw))
        assert not book.trusted(digest, f.fileno())
        assert not record.exists()  # a record whose MAC fails is removed
        book.record(digest, f.fileno())
        assert not StampBook(tmp_path / "stamps", tmp_path, lambda: b"j" * 32).trusted(digest, f.fileno())
        assert not StampBook(tmp_path / "stamps", tmp_path, None).trusted(digest, f.fileno())


def test_copy_file_copies_every_byte_and_refuses_a_short_source(tmp_path: Path) -> None:
    data = os.urandom((5 << 20) + 3)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        assert copy_file(fin.fileno(), fout.fileno(), len(data), writeback=True) in (
            "reflink",
            "kernel",
            "read",
        )
    assert dst.read_bytes() == data
    with open(src, "rb") as fin, open(tmp_path / "short", "wb") as fout, pytest.raises(OSError):
        copy_file(fin.fileno(), fout.fileno(), len(data) + 10)


# ---------------------------------------------------------------------- loads
def test_a_cached_copy_is_not_rehashed_while_its_stamp_is_unchanged(
    registry: ModelRegistry, tmp_path: Path, count_dir: Path
) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(BIG))
    registry.register(str(src), "m", version="v1.0.0")
    root = registry.root
    first = Path(ModelRegistry(root).load_path("m")) / "model.bin"
    assert first.read_bytes() == src.read_bytes()
    assert _hashes(count_dir) == 0  # assembled from verified chunks: not read back

    for _ in range(2):
        again = Path(ModelRegistry(root).load_path("m")) / "model.bin"
        assert again.read_bytes() == src.read_bytes()
    assert _hashes(count_dir) == 0  # stamp unchanged: trusted without reading

    cached = [p for p in (registry.store.root / "cache" / "files").rglob("*") if p.is_file()]
    assert len(cached) == 1
    _flip_keeping_size(cached[0], BIG // 2)
    os.chmod(cached[0], 0o444)
    ModelRegistry(root).export("m", tmp_path / "out")
    assert (tmp_path / "out" / "model.bin").read_bytes() == src.read_bytes()  # rebuilt, then copied
    assert _hashes(count_dir) == 1  # the changed stamp sent it to a check, which failed
    ModelRegistry(root).load_path("m")
    assert _hashes(count_dir) == 0  # the rebuilt copy's stamp is recorded


# ---------------------------------------------------------------------- get by URL
def _published_big(tmp_path: Path) -> tuple[str, Path, bytes]:
    """A bare repository with model ``big`` v1.0.0 (one 12 MiB file), its chunks pushed to a
    directory blob remote; returns ``(url, blob remote, bytes)``."""
    blobs = tmp_path / "srv" / "blobs"
    bare, a = shared_setup(tmp_path, blob_url=str(blobs))
    data = os.urandom(BIG)
    (tmp_path / "big.bin").write_bytes(data)
    reg = open_registry(a)
    reg.register(str(tmp_path / "big.bin"), "big", version="v1.0.0")
    reg.push()
    reg.close()
    return f"file://{bare}", blobs, data


def test_a_second_get_copies_the_verified_cache_and_a_tampered_one_is_rebuilt(
    tmp_path: Path, count_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(cache))
    url, blobs, data = _published_big(tmp_path)
    work = tmp_path / "work"
    work.mkdir()

    cli(work, "get", url, "big", "v1.0.0", "-o", "one")
    assert (work / "one" / "big.bin").read_bytes() == data
    assert _hashes(count_dir) == 0  # the output is not read back
    shutil.rmtree(work / "one")  # the user removes it: the cache's copy stays, still trusted

    # Nothing can be downloaded now, nor read from the chunk cache: the copy serves.
    blobs.rename(tmp_path / "blobs-away")
    shutil.rmtree(cache / "store" / ".uniflow" / "objects")
    cli(work, "get", url, "big", "v1.0.0", "-o", "two")
    assert (work / "two" / "big.bin").read_bytes() == data
    assert _hashes(count_dir) == 0  # its stamp unchanged: not hashed

    # The kept copy changes (same size): the next get checks it, drops it and fetches again.
    (tmp_path / "blobs-away").rename(blobs)
    (kept,) = [p for p in (cache / "store" / ".uniflow" / "cache" / "files").rglob("*") if p.is_file()]
    _flip_keeping_size(kept, 12345)
    cli(work, "get", url, "big", "v1.0.0", "-o", "three")
    assert (work / "three" / "big.bin").read_bytes() == data
    assert _hashes(count_dir) == 1
    cli(work, "get", url, "big", "v1.0.0", "-o", "four")
    assert (work / "four" / "big.bin").read_bytes() == data
    assert _hashes(count_dir) == 0  # the third get's output is the verified copy now


def test_a_removed_link_keeps_a_stamp_and_a_chmod_or_a_rewrite_does_not(tmp_path: Path) -> None:
    book = StampBook(tmp_path / "stamps", tmp_path, lambda: b"k" * 32)
    digest = "ef" * 32
    path, other = tmp_path / "f", tmp_path / "g"
    path.write_bytes(os.urandom(4096))
    os.link(path, other)  # what a get's output kept as the cache's copy is
    with open(path, "rb") as f:
        book.record(digest, f.fileno())
        other.unlink()  # the user removes the output: the ctime moves, no byte changes
        assert book.trusted(digest, f.fileno())
        book.record(digest, f.fileno())
        os.chmod(path, 0o600)
        assert not book.trusted(digest, f.fileno())
        book.record(digest, f.fileno())
        st = os.stat(path)
        path.write_bytes(path.read_bytes())  # rewritten in place, same bytes, mtime set back
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert not book.trusted(digest, f.fileno())  # the ctime still moved


def test_a_range_longer_than_any_chunk_is_hashed_a_piece_at_a_time(tmp_path: Path) -> None:
    data = os.urandom((9 << 20) + 5)  # a record claiming one 9 MiB chunk (more than the longest cut)
    rec = _record_of(data, [])
    path = tmp_path / "f"
    path.write_bytes(data)
    with open(path, "rb") as f:
        assert holds_chunks(f.fileno(), rec)
    _flip_keeping_size(path, 6 << 20)
    with open(path, "rb") as f:
        assert not holds_chunks(f.fileno(), rec)
