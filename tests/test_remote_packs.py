"""Blob remotes hold packs: push uploads packs, pull / get / partial loads read them by range,
old loose remotes keep working, hostile packs are refused (issue 25 items 3 and 4)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import blake3
import numpy as np
import pytest

from tests.helpers import (
    GIT_ENV,
    clone,
    git,
    model_dir,
    open_registry,
    remote_chunks,
    shared_setup,
    tree_bytes,
)
from uniflow import IntegrityError
from uniflow._storage.packs import END_MAGIC, FORMAT_VERSION, PACK_HEAD, PACK_MAGIC, PACK_TAIL, PackIndex
from uniflow.sharing import remotepacks

REPO_ROOT = Path(__file__).resolve().parent.parent
OLD_RELEASE = "324df3e"  # the last commit whose blob remotes held loose chunks only


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _pushed(tmp_path: Path, n: int = 6, seed: int = 1) -> tuple[Path, Path, object]:
    bare, a = shared_setup(tmp_path)
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / "src", n, seed=seed)), "m", version="v1.0.0")
    ra.push()
    return bare, a, ra


def _fresh_clone(tmp_path: Path, bare: Path, name: str = "b") -> object:
    b = clone(bare, tmp_path / name)
    rb = open_registry(b)
    rb.pull()
    return rb


# ---------------------------------------------------------------------- push writes packs
def test_push_writes_packs_with_marker_and_pull_reads_them(tmp_path: Path) -> None:
    bare, _, ra = _pushed(tmp_path)
    blobs = tmp_path / "blobs"
    assert not (blobs / "objects").exists(), "no loose chunk is pushed any more"
    packs = sorted(p.name for p in (blobs / "packs").iterdir())
    assert len(packs) == 2 and packs[0].endswith(".idx") and packs[1].endswith(".pack")
    assert json.loads((blobs / "uniflow-remote.json").read_text()) == {"format": 3}
    assert len(remote_chunks(blobs)) == 6
    assert ra.push().up_to_date is True  # nothing new: nothing sent
    rb = _fresh_clone(tmp_path, bare)
    assert tree_bytes(Path(rb.load_path("m", "v1.0.0"))) == tree_bytes(tmp_path / "src")


def test_push_sends_only_what_the_remote_lacks_as_a_new_pack(tmp_path: Path) -> None:
    _, a, ra = _pushed(tmp_path)
    blobs = tmp_path / "blobs"
    src2 = model_dir(tmp_path / "src2", 3, seed=9)
    shutil.copy(tmp_path / "src" / "part-000.bin", src2 / "shared.bin")  # on the remote already
    ra.register(str(src2), "m", version="v1.1.0")
    res = ra.push()
    assert res.chunks.present == 1 and res.chunks.transferred == 3
    assert len(list((blobs / "packs").glob("*.pack"))) == 2 and len(remote_chunks(blobs)) == 9


def test_push_of_one_gib_leaves_at_most_32_files(tmp_path: Path) -> None:
    _, a = shared_setup(tmp_path)
    ra = open_registry(a)
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "weights.bin", "wb") as f:
        for _ in range(64):
            f.write(os.urandom(16 << 20))
    ra.register(str(big), "big", version="v1.0.0")
    res = ra.push()
    files = _files(tmp_path / "blobs")
    assert res.chunks.bytes == 1 << 30
    assert len(files) <= 32, [p.name for p in files]


# ---------------------------------------------------------------------- mixed remotes
def test_mixed_remote_loose_chunks_and_packs(tmp_path: Path) -> None:
    """A remote with loose chunks (older uniflow) keeps serving them; a push adds packs for
    what is new only, and a clone reads both."""
    bare, a = shared_setup(tmp_path)
    blobs = tmp_path / "blobs"
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / "old", 3, seed=3)), "m", version="v1.0.0")
    ra.store.packs.refresh()
    for c in ra.store.packs.indexes().values():  # as an old client pushed them: loose
        for e in c.entries():
            target = blobs / "objects" / e.name[:2] / e.name[2:]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(ra.store.read_chunk(e.name))
    ra.register(str(model_dir(tmp_path / "new", 2, seed=4)), "m", version="v1.1.0")
    res = ra.push()
    assert res.chunks.present == 3 and res.chunks.transferred == 2
    assert len(remote_chunks(blobs)) == 5 and len(list((blobs / "packs").glob("*.pack"))) == 1
    rb = _fresh_clone(tmp_path, bare)
    assert tree_bytes(Path(rb.load_path("m", "v1.0.0"))) == tree_bytes(tmp_path / "old")
    assert tree_bytes(Path(rb.load_path("m", "v1.1.0"))) == tree_bytes(tmp_path / "new")


def test_remote_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    bare, _, ra = _pushed(tmp_path)
    (tmp_path / "blobs" / "uniflow-remote.json").write_text('{"format": 4}\n')
    rb = _fresh_clone(tmp_path, bare)
    with pytest.raises(Exception, match=r"written by a newer uniflow .*: upgrade uniflow$") as info:
        rb.load_path("m", "v1.0.0")
    assert "\n" not in str(info.value)
    ra.register(str(model_dir(tmp_path / "more", 1, seed=8)), "m", version="v1.1.0")
    with pytest.raises(Exception, match="upgrade uniflow"):
        ra.push()  # nothing is written to a remote of a newer layout


# ---------------------------------------------------------------------- hostile packs
def _write_pack(packs: Path, chunks: list[bytes], entries: list[tuple[bytes, int, int]] | None = None) -> str:
    """A pack of ``chunks`` in ``packs/``; ``entries`` (raw name, offset, length) replace the
    true ones in its index (a forged index whose checksum is right)."""
    data = bytearray(PACK_HEAD.pack(PACK_MAGIC, FORMAT_VERSION, 0))
    true = []
    for c in chunks:
        true.append((blake3.blake3(c).digest(), len(data), len(c)))
        data += c
    rows = sorted(entries if entries is not None else true)
    import struct

    n = len(rows)
    size = len(data) + 32 + 48 * n + 32 + PACK_TAIL.size
    body = bytearray(struct.pack("<8sIIQQ", b"UFLPIDX\n", 1, 0, n, size))
    for name, off, ln in rows:
        body += struct.pack("<32sQQ", name, off, ln)
    body += blake3.blake3(body).digest()
    name = body[-32:].hex()
    packs.mkdir(parents=True, exist_ok=True)
    (packs / f"{name}.pack").write_bytes(bytes(data) + bytes(body) + PACK_TAIL.pack(len(body), END_MAGIC))
    (packs / f"{name}.idx").write_bytes(bytes(body))
    return name


def _hostile_setup(tmp_path: Path) -> tuple[Path, Path, object]:
    """Version m/v1.0.0 pushed; its pack removed from the remote, to be replaced by a test."""
    bare, _, ra = _pushed(tmp_path, n=2, seed=5)
    shutil.rmtree(tmp_path / "blobs" / "packs")
    return bare, tmp_path / "blobs" / "packs", ra


def _chunks_of(ra: object) -> list[bytes]:
    store = ra.store  # type: ignore[attr-defined]
    store.packs.refresh()
    return [store.read_chunk(e.name) for i in store.packs.indexes().values() for e in i.entries()]


@pytest.mark.parametrize("flaw", ["overlap", "past_end", "duplicate"])
def test_forged_remote_index_is_refused_and_nothing_stored(tmp_path: Path, flaw: str) -> None:
    bare, packs, ra = _hostile_setup(tmp_path)
    a, b = _chunks_of(ra)
    na, nb = blake3.blake3(a).digest(), blake3.blake3(b).digest()
    entries = {
        "overlap": [(na, 16, len(a)), (nb, 16 + len(a) - 1, len(b))],
        "past_end": [(na, 16, len(a)), (nb, 16 + len(a), len(b) + 10)],
        "duplicate": [(na, 16, len(a)), (na, 16 + len(a), len(b))],
    }[flaw]
    _write_pack(packs, [a, b], entries)
    rb = _fresh_clone(tmp_path, bare)
    with pytest.raises(IntegrityError, match="refused, nothing was stored") as info:
        rb.load_path("m", "v1.0.0")
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "b" / ".git" / "uniflow" / "objects").rglob("*[0-9a-f]" * 1))


def test_pack_bytes_not_matching_names_are_refused(tmp_path: Path) -> None:
    bare, packs, ra = _hostile_setup(tmp_path)
    a, b = _chunks_of(ra)
    name = _write_pack(packs, [a, b])
    pack = packs / f"{name}.pack"
    raw = bytearray(pack.read_bytes())
    raw[20] ^= 0xFF
    pack.write_bytes(bytes(raw))
    rb = _fresh_clone(tmp_path, bare)
    with pytest.raises(IntegrityError, match="do not match its name") as info:
        rb.load_path("m", "v1.0.0")
    assert "\n" not in str(info.value)
    stored = {
        p.parent.name + p.name
        for p in (tmp_path / "b" / ".git" / "uniflow" / "objects").rglob("*")
        if p.is_file()
    }
    assert blake3.blake3(a).hexdigest() not in stored


def test_remote_index_larger_than_its_bound_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare, packs, ra = _hostile_setup(tmp_path)
    _write_pack(packs, _chunks_of(ra))
    monkeypatch.setattr(remotepacks, "MAX_INDEX_BYTES", 64)
    rb = _fresh_clone(tmp_path, bare)
    with pytest.raises(IntegrityError, match=r"index of \d+ bytes is larger than 64 bytes allowed"):
        rb.load_path("m", "v1.0.0")


def test_symlinked_pack_on_a_directory_remote_is_refused(tmp_path: Path) -> None:
    bare, packs, ra = _hostile_setup(tmp_path)
    name = _write_pack(tmp_path / "elsewhere", _chunks_of(ra))
    packs.mkdir()
    (packs / f"{name}.pack").symlink_to(tmp_path / "elsewhere" / f"{name}.pack")
    shutil.copy(tmp_path / "elsewhere" / f"{name}.idx", packs / f"{name}.idx")
    rb = _fresh_clone(tmp_path, bare)
    with pytest.raises(
        IntegrityError, match="is a symlink, not a regular file; nothing was read from it"
    ) as info:
        rb.load_path("m", "v1.0.0")
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------- partial loads
def _safetensors(path: Path, head: int = 40 << 10, body: int = 8 << 20) -> Path:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(1)
    save_file(
        {
            "body.weight": rng.integers(0, 255, body, dtype=np.uint8),
            "head.weight": rng.integers(0, 255, head, dtype=np.uint8),
        },
        str(path),
    )
    return path


def test_partial_head_load_from_a_packed_remote_fetches_little(tmp_path: Path) -> None:
    bare, a = shared_setup(tmp_path)
    ra = open_registry(a)
    (tmp_path / "st").mkdir()
    _safetensors(tmp_path / "st" / "model.safetensors")
    ra.register(str(tmp_path / "st" / "model.safetensors"), "st", version="v1.0.0")
    ra.push()
    assert list((tmp_path / "blobs" / "packs").glob("*.pack"))
    rb = _fresh_clone(tmp_path, bare)
    part = rb.load("st", "v1.0.0", tensors=["head.weight"])
    assert len(part["head.weight"]) == 40 << 10
    fetched = sum(p.stat().st_size for p in _files(tmp_path / "b" / ".git" / "uniflow" / "objects"))
    assert 0 < fetched <= 0.05 * (8 << 20), fetched


# ---------------------------------------------------------------------- gc
def test_gc_still_works_after_a_pack_push(tmp_path: Path) -> None:
    _, a, ra = _pushed(tmp_path)
    ra.gc()  # local only: the remote's packs are not gc's (out of scope)
    assert len(remote_chunks(tmp_path / "blobs")) == 6


# ---------------------------------------------------------------------- S3
def _s3_count(fs: object) -> dict[str, int]:
    counts: dict[str, int] = {}

    def count(event_name: str, **_: object) -> None:
        op = event_name.rsplit(".", 1)[-1]
        counts[op] = counts.get(op, 0) + 1

    fs.connect()  # type: ignore[attr-defined]
    fs.s3.meta.events.register("before-call.s3", count)  # type: ignore[attr-defined]
    return counts


def test_s3_push_is_a_few_dozen_requests_per_gib_and_pull_uses_ranges(tmp_path: Path, s3: str) -> None:
    from uniflow._records.config import RemoteSpec
    from uniflow._storage.store import ObjectStore
    from uniflow.sharing.blobs import download_chunks, upload_chunks
    from uniflow.sharing.blobstore import open_remote

    _, a = shared_setup(tmp_path, blob_url="s3://models/packed")
    ra = open_registry(a)
    big = tmp_path / "big"
    big.mkdir()
    (big / "w.bin").write_bytes(os.urandom(256 << 20))
    ra.register(str(big), "big", version="v1.0.0")
    store = ra.store
    store.packs.refresh()
    digests = [e.name for i in store.packs.indexes().values() for e in i.entries()]
    remote = open_remote(RemoteSpec("origin", "s3://models/packed"), a)
    counts = _s3_count(remote.fs)
    stats = upload_chunks(store, remote, digests)
    assert stats.bytes == 256 << 20
    puts = counts.get("PutObject", 0) + counts.get("UploadPart", 0)
    assert puts * 4 <= 48, counts  # per GiB: a few dozen, not ~850
    other = ObjectStore(tmp_path / "other")
    counts.clear()
    run = digests[:12]  # pushed in this order: adjacent in the first pack on the remote
    got = download_chunks(other, remote, run)
    assert got.transferred == 12
    # the marker, each pack's index once, then the 12 chunks in one or two range reads
    assert counts.get("GetObject", 0) <= 2 + len(store.packs.indexes()) + 2, counts
    for d in run:
        assert blake3.blake3(other.read_chunk(d)).hexdigest() == d


# ---------------------------------------------------------------------- the previous release
def _old_checkout(tmp_path: Path) -> Path:
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not run from a git checkout")
    probe = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "cat-file", "-e", f"{OLD_RELEASE}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"commit {OLD_RELEASE} is not in this repository")
    old = tmp_path / "old-uniflow"
    subprocess.run(
        ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", "-q", str(old), OLD_RELEASE],
        check=True,
        capture_output=True,
    )
    return old


def _old_client(old: Path, repo: Path, code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **GIT_ENV, "PYTHONPATH": str(old)}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_previous_release_against_a_packed_remote(
    tmp_path: Path, s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release before format 3 and packs on remotes, run as a process. A format-2 version
    (written as that release wrote it) on a directory remote it reads: its directory remote
    falls back to a store's ``packs/``, verifying every chunk; on S3 it cannot see packs and
    fails loudly (MissingChunkError). A format-3 version it refuses by its manifest's format.
    Never wrong bytes, never a silent success."""
    from tests.legacy_formats import register_as

    old = _old_checkout(tmp_path)
    load = "import uniflow; from uniflow import ModelRegistry; r = ModelRegistry('.'); r.pull(); "
    try:
        for url in (str(tmp_path / "blobs"), "s3://models/old"):
            work = tmp_path / ("dir" if "://" not in url else "s3")
            work.mkdir()
            bare, a = shared_setup(work, blob_url=url)
            ra = open_registry(a)
            register_as(2, ra, monkeypatch, str(model_dir(work / "src", 3, seed=2)), "m", version="v1.0.0")
            ra.register(str(model_dir(work / "src3", 3, seed=3)), "m", version="v2.0.0")
            ra.push()
            b = clone(bare, work / "b")
            proc = _old_client(
                old, b, load + "p = r.load_path('m', 'v1.0.0'); print(uniflow.__file__); print(p)"
            )
            if "://" not in url:
                assert proc.returncode == 0, proc.stderr
                assert str(old) in proc.stdout
                assert tree_bytes(Path(proc.stdout.split()[-1])) == tree_bytes(work / "src")
            else:
                assert proc.returncode != 0 and not proc.stdout
                assert "MissingChunkError" in proc.stderr and "is missing from the store" in proc.stderr
            proc = _old_client(old, b, load + "print(r.load_path('m', 'v2.0.0'))")
            assert proc.returncode != 0 and not proc.stdout
            assert "IntegrityError" in proc.stderr and "unsupported manifest format 3" in proc.stderr
    finally:
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(old)], check=False)


# ---------------------------------------------------------------------- failures while pushing
def test_interrupted_pack_push_resumes_sending_only_what_is_missing(tmp_path: Path) -> None:
    """A push killed after its first pack leaves whole packs only (each visible once its
    index is there); the next push sends only the packs' worth of chunks still missing."""
    bare, a = shared_setup(tmp_path)
    blobs = tmp_path / "blobs"
    ra = open_registry(a)
    for i in range(4):
        ra.register(str(model_dir(tmp_path / f"m{i}", 10, seed=20 + i)), f"m{i}", version="v1.0.0")
    env = {**os.environ, **GIT_ENV, "UNIFLOW_TEST_KILL_AFTER_UPLOADS": "5"}
    code = (  # packs of ten 64 KiB chunks, so that the push is killed after the first of four
        "import uniflow.sharing.remotepacks as rp; rp.REMOTE_PACK_TARGET = 600 << 10; "
        "from uniflow import ModelRegistry; ModelRegistry('.').push()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=a, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == -9, proc.stderr
    present = remote_chunks(blobs)
    assert len(present) == 10 and len(list((blobs / "packs").glob("*.pack"))) == 1
    assert "models/m0" not in git(bare, "for-each-ref")  # bytes first: no ref was pushed
    res = ra.push()
    assert (res.chunks.present, res.chunks.transferred) == (10, 30)
    assert len(remote_chunks(blobs)) == 40 and not list((blobs / "tmp").iterdir())


def test_a_corrupted_local_chunk_is_never_published_in_a_pack(tmp_path: Path) -> None:
    from tests.helpers import flip_stored_byte, stored_chunks

    _, a, ra = _pushed(tmp_path)
    blobs = tmp_path / "blobs"
    before = sorted(p.name for p in (blobs / "packs").iterdir())
    ra.register(str(model_dir(tmp_path / "src2", 2, seed=11)), "m", version="v1.1.0")
    new = [c for c in stored_chunks(ra.store) if c.digest not in remote_chunks(blobs)]
    flip_stored_byte(new[0], 7)
    with pytest.raises(IntegrityError, match="corrupted"):
        ra.push()
    assert sorted(p.name for p in (blobs / "packs").iterdir()) == before


def test_fsspec_filesystem_without_atomic_put_gets_packs_through_temporary_names(tmp_path: Path) -> None:
    import fsspec

    from uniflow.sharing.blobs import download_chunks, upload_chunks
    from uniflow.sharing.blobstore import FsspecRemote

    _, a = shared_setup(tmp_path)
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / "src", 3, seed=4)), "m", version="v1.0.0")
    ra.store.packs.refresh()
    digests = [e.name for i in ra.store.packs.indexes().values() for e in i.entries()]
    remote = FsspecRemote("fs", "fs://test", fsspec.filesystem("file"), str(tmp_path / "fsremote"))
    assert remote.atomic_put is False
    assert upload_chunks(ra.store, remote, digests).transferred == 3
    assert list((tmp_path / "fsremote" / "tmp").iterdir()) == []
    assert len(remote_chunks(tmp_path / "fsremote")) == 3
    assert upload_chunks(ra.store, remote, digests).transferred == 0
    from uniflow._storage.store import ObjectStore

    other = ObjectStore(tmp_path / "other")
    assert download_chunks(other, remote, digests).transferred == 3
    assert other.missing(digests) == []


# ---------------------------------------------------------------------- get by URL
def test_get_by_url_from_a_packed_directory_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``uniflow get URL`` reads chunks out of the remote's packs (one range read each),
    verified; a pack whose bytes do not match refuses the version and writes nothing."""
    from tests.helpers import cli, publish_registry

    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(tmp_path / "cache"))
    pub = publish_registry(tmp_path)
    assert list((pub["blobs"] / "packs").glob("*.pack")) and not (pub["blobs"] / "objects").exists()
    work = tmp_path / "work"
    work.mkdir()
    url = f"file://{pub['bare']}"
    cli(work, "get", url, "clf", "v1.0.0", "-o", "one")
    assert tree_bytes(work / "one") == tree_bytes(pub["v1"])
    digest = blake3.blake3(sorted(tree_bytes(pub["v2"]).items())[0][1]).hexdigest()
    for idx in (pub["blobs"] / "packs").glob("*.idx"):
        pack = idx.with_suffix(".pack")
        entry = PackIndex.parse(idx.read_bytes(), pack.stat().st_size, idx.stem).lookup(digest)
        if entry is not None:
            raw = bytearray(pack.read_bytes())
            raw[entry.offset] ^= 0xFF
            pack.chmod(0o644)
            pack.write_bytes(bytes(raw))
    r = cli(work, "get", url, "clf", "v1.1.0", "-o", "two", code=5)
    assert "corrupted" in r.stderr and r.stderr.count("\n") == 1
    assert not (work / "two").exists()


# ---------------------------------------------------------------------- local packs sent as they are
def test_a_first_push_sends_the_local_packs_as_they_are(tmp_path: Path) -> None:
    """Every chunk of each local pack wanted and none on the remote: the remote receives the
    local packs byte for byte (80 MiB packs: 13 per GiB), each with its index."""
    _, a = shared_setup(tmp_path)
    ra = open_registry(a)
    big = tmp_path / "big"
    big.mkdir()
    (big / "w.bin").write_bytes(os.urandom(100 << 20))
    ra.register(str(big), "big", version="v1.0.0")
    res = ra.push()
    assert res.chunks.bytes == 100 << 20
    local = {p.name: p.read_bytes() for p in (a / ".git" / "uniflow" / "packs").iterdir()}
    remote = {p.name: p.read_bytes() for p in (tmp_path / "blobs" / "packs").iterdir()}
    assert len(remote) == 4 and remote == local


def test_a_local_pack_corrupted_after_it_was_written_is_never_published(tmp_path: Path) -> None:
    """A local pack sent as it is whose last chunk was damaged after the register: the copy is
    checked before it is named, so neither the pack nor its index appears on the remote, no
    temporary file stays, and no ref is pushed."""
    from tests.helpers import flip_stored_byte, stored_chunks

    bare, a = shared_setup(tmp_path)
    blobs = tmp_path / "blobs"
    ra = open_registry(a)
    big = tmp_path / "big"
    big.mkdir()
    (big / "w.bin").write_bytes(os.urandom(48 << 20))  # one pack, large enough to go as it is
    ra.register(str(big), "m", version="v1.0.0")
    flip_stored_byte(stored_chunks(ra.store)[-1], 3)
    with pytest.raises(IntegrityError, match="in local pack .* is corrupted"):
        ra.push()
    assert not list((blobs / "packs").iterdir()) and not list((blobs / "tmp").iterdir())
    assert "models/m" not in git(bare, "for-each-ref")


# ---------------------------------------------------------------------- get by URL: ranges, reuse
def _count_ranges(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the length of every range read from a directory remote's packs (the real read,
    into a new buffer or the caller's)."""
    from uniflow.sharing.blobstore import LocalRemote

    lengths: list[int] = []
    real = LocalRemote.read_range

    def counting(self: LocalRemote, rel: str, start: int, end: int) -> bytes:
        data = real(self, rel, start, end)
        if rel.endswith(".pack"):
            lengths.append(len(data))
        return data

    real_into = LocalRemote.read_range_into

    def counting_into(self: LocalRemote, rel: str, start: int, view: memoryview) -> int:
        got = real_into(self, rel, start, view)
        if rel.endswith(".pack"):
            lengths.append(got)
        return got

    monkeypatch.setattr(LocalRemote, "read_range", counting)
    monkeypatch.setattr(LocalRemote, "read_range_into", counting_into)
    return lengths


def _two_versions(tmp_path: Path) -> tuple[Path, bytes, bytes]:
    """A bare repository whose packed blob remote holds m v1 (a 24 MiB file) and v2 (the same
    file with 512 KiB in its middle changed): returns (bare, v1's bytes, v2's bytes)."""
    bare, a = shared_setup(tmp_path, blob_url=str(tmp_path / "srv" / "blobs"))
    ra = open_registry(a)
    one = os.urandom(24 << 20)
    two = one[: 12 << 20] + os.urandom(512 << 10) + one[(12 << 20) + (512 << 10) :]
    for version, data in (("v1.0.0", one), ("v2.0.0", two)):
        src = tmp_path / f"src-{version}"
        src.mkdir()
        (src / "model.bin").write_bytes(data)
        ra.register(str(src), "m", version=version)
    ra.push()
    return bare, one, two


def test_get_by_url_reads_coalesced_ranges_and_a_second_version_only_its_new_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A get of a large file from a packed remote reads a few long ranges (not one per
    chunk), stores no chunk files, and a get of v2 sharing most chunks with v1 reads only
    the chunks v1's kept copy lacks."""
    from uniflow import ModelRegistry

    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(tmp_path / "cache"))
    bare, one, two = _two_versions(tmp_path)
    lengths = _count_ranges(monkeypatch)
    reg = ModelRegistry(f"file://{bare}")
    reg.export("m", tmp_path / "one", version="v1.0.0")
    assert (tmp_path / "one" / "model.bin").read_bytes() == one
    assert sum(lengths) == 24 << 20 and len(lengths) <= 3  # 16 MiB ranges, not ~24 chunks
    objects = tmp_path / "cache" / "store" / ".uniflow" / "objects"
    assert not [p for p in objects.rglob("*") if p.is_file()]  # no chunk files: written once
    lengths.clear()
    reg.export("m", tmp_path / "two", version="v2.0.0")
    assert (tmp_path / "two" / "model.bin").read_bytes() == two
    assert 0 < sum(lengths) <= 6 << 20 and len(lengths) <= 2  # the changed chunks only
    reg.close()


def test_get_by_url_refuses_a_corrupted_chunk_inside_a_coalesced_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One byte flipped in a chunk in the middle of a range: the get fails with one line
    naming the corruption, and neither the output nor a kept copy is left behind."""
    from tests.helpers import cli

    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(tmp_path / "cache"))
    bare, one, _ = _two_versions(tmp_path)
    packs = sorted((tmp_path / "srv" / "blobs" / "packs").glob("*.pack"))
    digest = None
    for idx in (tmp_path / "srv" / "blobs" / "packs").glob("*.idx"):
        pack = idx.with_suffix(".pack")
        entries = sorted(
            PackIndex.parse(idx.read_bytes(), pack.stat().st_size, idx.stem).entries(), key=lambda e: e.offset
        )
        if len(entries) >= 5:
            entry = entries[len(entries) // 2]
            raw = bytearray(pack.read_bytes())
            raw[entry.offset + entry.length // 2] ^= 0xFF
            pack.chmod(0o644)
            pack.write_bytes(bytes(raw))
            digest = entry.name
            break
    assert packs and digest is not None
    r = cli(tmp_path, "get", f"file://{bare}", "m", "v1.0.0", "-o", "out", code=5)
    assert "corrupted" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging left
    files = tmp_path / "cache" / "store" / ".uniflow" / "cache"
    assert not list(files.glob("??/*"))  # no kept copy (cache/ab/<file digest>) of a half-written file


def test_a_directory_remote_reads_no_more_than_the_file_holds(tmp_path: Path) -> None:
    """A small file read with a large bound (a pack index: bound by its pack's size) takes
    memory for its own bytes only; a range into the caller's buffer stops at the end of the
    file; a symlink is refused unread either way."""
    import tracemalloc

    from uniflow.sharing.blobstore import LocalRemote

    (tmp_path / "packs").mkdir()
    body = os.urandom(3000)
    (tmp_path / "packs" / "x.idx").write_bytes(body)
    (tmp_path / "packs" / "y.idx").symlink_to(tmp_path / "packs" / "x.idx")
    remote = LocalRemote("dir", str(tmp_path), tmp_path)
    tracemalloc.start()
    try:
        assert remote.read_small("packs/x.idx", 80 << 20) == body
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak
    assert remote.read_range("packs/x.idx", 2990, 80 << 20) == body[2990:]
    assert remote.read_range("packs/x.idx", 5000, 6000) == b""
    buf = bytearray(100)
    assert remote.read_range_into("packs/x.idx", 2950, memoryview(buf)) == 50
    assert bytes(buf[:50]) == body[2950:]
    with pytest.raises(IntegrityError, match="not a regular file"):
        remote.read_range_into("packs/y.idx", 0, memoryview(buf))
    with pytest.raises(IntegrityError, match="not a regular file"):
        remote.read_range("packs/y.idx", 0, 10)


def test_a_range_yields_each_chunk_only_once_verified_and_stops_where_it_is_cut(tmp_path: Path) -> None:
    """``verified_chunks`` hands out a chunk of a range only after it matched its name:
    from a pack cut short after its index was read, the chunks before the cut come out
    whole and verified, and the first one past it is a CorruptChunkError (nothing of it
    is handed out); a flipped byte likewise stops the range at its chunk. Both for a
    directory (read into a reused buffer) and an fsspec filesystem (read as bytes)."""
    import fsspec

    from uniflow._storage.store import ObjectStore
    from uniflow.sharing.blobs import retry_transient_on
    from uniflow.sharing.blobstore import FsspecRemote, LocalRemote

    _two_versions(tmp_path)
    blobs = tmp_path / "srv" / "blobs"
    store_dir = tmp_path / "reader" / ".uniflow"
    store_dir.mkdir(parents=True)
    store = ObjectStore(store_dir, durable=False)
    local = LocalRemote("dir", str(blobs), blobs)  # reads into the thread's buffer
    fs = FsspecRemote("fs", "fs://blobs", fsspec.filesystem("file"), str(blobs))  # returns bytes
    for remote in (local, fs):
        packs = remotepacks.open_packs(remote, store, retry_transient_on(remote))
        assert packs is not None
        _check_verified_chunks(packs, blobs)


def _check_verified_chunks(packs: remotepacks.RemotePacks, blobs: Path) -> None:
    """The checks of the test above on the longest range of ``packs``; the pack is put back."""
    from uniflow import CorruptChunkError
    from uniflow._storage.parallel import ThreadBuffers

    span = max(packs.plan(packs.names())[0], key=lambda s: len(s.chunks))
    assert len(span.chunks) >= 3
    pack = blobs / "packs" / f"{span.pack}.pack"
    raw = pack.read_bytes()
    buffers = ThreadBuffers()
    whole = [(d, bytes(piece)) for d, piece in packs.verified_chunks(span, buffers)]
    assert [d for d, _ in whole] == [d for d, _, _ in span.chunks]
    assert all(blake3.blake3(b).hexdigest() == d for d, b in whole)

    d2, off2, len2 = span.chunks[2]
    pack.chmod(0o644)
    pack.write_bytes(raw[: off2 + len2 // 2])  # cut inside the third chunk
    got: list[str] = []
    with pytest.raises(CorruptChunkError, match="corrupted"):
        for d, _piece in packs.verified_chunks(span, buffers):
            got.append(d)
    assert got == [d for d, _, _ in span.chunks[:2]]

    flipped = bytearray(raw)
    flipped[off2 + len2 // 2] ^= 0xFF
    pack.write_bytes(bytes(flipped))
    got.clear()
    with pytest.raises(CorruptChunkError, match=d2[:16]):
        for d, _piece in packs.verified_chunks(span, buffers):
            got.append(d)
    assert got == [d for d, _, _ in span.chunks[:2]]
    pack.write_bytes(raw)
