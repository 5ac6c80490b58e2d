"""The chunk store of format 3 (issue 25): registers write packs, loads read them, gc
repacks, stores of formats 1 and 2 (chunk files) stay readable and mixed stores work.

SIGKILL at every step of ``gc --repack`` loses nothing: after the kill every version
loads whole (a reader puts back what the dead gc set aside), and the next gc finishes.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.adversarial._inflight import kill_at, run_cli, start_cli
from tests.helpers import cli, git, make_repo, open_pack_files, stored_chunks
from uniflow import ModelRegistry
from uniflow._storage.store import ObjectStore

MIB = 1 << 20


def _store(repo: Path) -> Path:
    return repo / ".git" / "uniflow"


def _chunk_files(repo: Path) -> list[Path]:
    return sorted(p for p in (_store(repo) / "objects").glob("*/*") if p.is_file())


def _packs(repo: Path) -> list[Path]:
    return sorted((_store(repo) / "packs").glob("*.pack"))


def _to_chunk_files(repo: Path) -> None:
    """Turn the store into one of format 1-2: every chunk a file of its own, no pack."""
    store = ObjectStore(_store(repo))
    for c in stored_chunks(store):
        path = store.object_path(c.digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(c.path, "rb") as f:
            f.seek(c.offset)
            path.write_bytes(f.read(c.length))
        path.chmod(0o444)
    for p in (_store(repo) / "packs").iterdir():
        p.unlink()


def _write(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _register(repo: Path, src: Path, version: str, name: str = "m") -> None:
    ModelRegistry(repo).register(model=src, name=name, version=version)


def _assert_loads(repo: Path, expected: dict[str, bytes]) -> None:
    """Each ``name/version`` loads (in a fresh registry) with exactly these bytes."""
    reg = ModelRegistry(repo)
    for key, data in expected.items():
        name, version = key.split("/")
        assert Path(reg.load(name, version)).read_bytes() == data, key


# ---------------------------------------------------------------------- register and load
def test_register_writes_packs_and_no_chunk_file(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    src = _write(tmp_path / "w.bin", 9 * MIB, 1)
    _register(repo, src, "v1.0.0")
    assert _chunk_files(repo) == []
    packs = _packs(repo)
    assert len(packs) == 1 and packs[0].with_suffix(".idx").is_file()
    store = ModelRegistry(repo).store
    chunks = stored_chunks(store)
    assert len(chunks) >= 3 and {c.path for c in chunks} == set(packs)
    assert store.missing([c.digest for c in chunks]) == []  # missing() sees packed chunks
    assert all(store.has(c.digest) for c in chunks)
    assert store.missing(["0" * 64]) == ["0" * 64]
    _assert_loads(repo, {"m/v1.0.0": src.read_bytes()})
    assert ModelRegistry(repo).verify().ok


def test_a_first_version_lies_in_its_pack_in_file_order(tmp_path: Path) -> None:
    """Chunks are hashed and written on many threads but take their places in file order:
    a first load reads the pack front to back."""
    from uniflow._records.manifest import file_records

    repo = make_repo(tmp_path / "repo")
    src = _write(tmp_path / "w.bin", 40 * MIB, 13)
    _register(repo, src, "v1.0.0")
    reg = ModelRegistry(repo)
    ((_rel, rec, _mode),) = file_records(reg.repository.manifest("m", "v1.0.0"))
    in_file = list(dict.fromkeys(c.digest for c in rec.chunks))
    assert len(in_file) > 20
    assert [c.digest for c in stored_chunks(reg.store)] == in_file


def test_a_second_register_of_the_same_bytes_writes_nothing(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    src = _write(tmp_path / "w.bin", 6 * MIB, 2)
    _register(repo, src, "v1.0.0")
    before = sorted(p.name for p in (_store(repo) / "packs").iterdir())
    _register(repo, src, "v2.0.0", name="other")
    assert sorted(p.name for p in (_store(repo) / "packs").iterdir()) == before


def test_a_flipped_byte_in_a_pack_names_the_chunk_on_load(tmp_path: Path) -> None:
    from tests.helpers import flip_stored_byte

    repo = make_repo(tmp_path / "repo")
    src = _write(tmp_path / "w.bin", 9 * MIB, 3)
    _register(repo, src, "v1.0.0")
    victim = stored_chunks(ModelRegistry(repo).store)[1]
    flip_stored_byte(victim, 12345)
    with pytest.raises(
        Exception, match=f"chunk {victim.digest[:16]} is corrupted .* in pack {victim.path.stem[:16]}"
    ) as exc:
        ModelRegistry(repo).load("m", "v1.0.0")
    from uniflow import IntegrityError

    assert isinstance(exc.value, IntegrityError) and "'w.bin'" in str(exc.value)
    assert not [p for p in (_store(repo) / "cache" / "files").rglob("*") if p.is_file()]


def test_mixed_store_of_chunk_files_and_packs_loads_and_verifies(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    old = _write(tmp_path / "old.bin", 5 * MIB, 4)
    _register(repo, old, "v1.0.0")
    _to_chunk_files(repo)  # as a store of format 2 holds it
    assert _chunk_files(repo) and _packs(repo) == []
    new = tmp_path / "new.bin"
    new.write_bytes(old.read_bytes()[: 3 * MIB] + random.Random(5).randbytes(3 * MIB))
    _register(repo, new, "v2.0.0")
    assert len(_packs(repo)) == 1
    packed = {c.digest for c in stored_chunks(ObjectStore(_store(repo))) if c.path.suffix == ".pack"}
    loose = {p.parent.name + p.name for p in _chunk_files(repo)}
    assert packed and not packed & loose  # chunks already stored as files were not written again
    _assert_loads(repo, {"m/v1.0.0": old.read_bytes(), "m/v2.0.0": new.read_bytes()})
    assert ModelRegistry(repo).verify().ok


def test_two_processes_register_into_packs_at_once(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    shared = random.Random(6).randbytes(6 * MIB)
    srcs = []
    for i in range(2):
        p = tmp_path / f"w{i}.bin"
        p.write_bytes(shared + random.Random(10 + i).randbytes(4 * MIB))
        srcs.append(p)
    code = (
        "import sys\nfrom uniflow import ModelRegistry\n"
        "ModelRegistry().register(model=sys.argv[1], name='m', version=sys.argv[2])\n"
    )
    from tests.adversarial._inflight import _env

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(src), f"v1.0.{i}"],
            cwd=repo,
            env=_env({}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, src in enumerate(srcs)
    ]
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert _chunk_files(repo) == [] and _packs(repo)
    _assert_loads(repo, {"m/v1.0.0": srcs[0].read_bytes(), "m/v1.0.1": srcs[1].read_bytes()})
    assert ModelRegistry(repo).verify().ok


# ---------------------------------------------------------------------- gc
def _garbage_and_live(repo: Path, tmp_path: Path) -> dict[str, bytes]:
    """A store of format 2 (chunk files: t v3.0.0, live, and g v0.0.1, garbage) to which a
    pack mostly of garbage was added (v1.0.0's big file, untagged; its small file is kept by
    v2.0.0)."""
    third = _write(tmp_path / "third.bin", 3 * MIB, 9)
    _register(repo, third, "v3.0.0", name="t")
    _register(repo, _write(tmp_path / "g.bin", MIB, 10), "v0.0.1", name="g")
    git(repo, "update-ref", "-d", "refs/tags/models/g/v0.0.1")
    _to_chunk_files(repo)
    src = tmp_path / "src"
    src.mkdir()
    small = _write(src / "small.bin", 2 * MIB, 7)
    _write(src / "big.bin", 8 * MIB, 8)
    ModelRegistry(repo).register(model=src, name="m", version="v1.0.0")
    only = tmp_path / "only"
    only.mkdir()
    (only / "small.bin").write_bytes(small.read_bytes())
    ModelRegistry(repo).register(model=only, name="m", version="v2.0.0")  # finds every chunk
    git(repo, "update-ref", "-d", "refs/tags/models/m/v1.0.0")
    return {"m/v2.0.0": small.read_bytes(), "t/v3.0.0": third.read_bytes()}


def _loads_dir(repo: Path, expected: dict[str, bytes]) -> None:
    """Each ``name/version`` (one file) loads, in a fresh registry, with exactly these bytes."""
    reg = ModelRegistry(repo)
    for key, data in expected.items():
        name, version = key.split("/")
        path = Path(reg.load_path(name, version))
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        assert len(files) == 1 and files[0].read_bytes() == data, key


def test_gc_rewrites_a_pack_of_garbage_and_repack_moves_chunk_files(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    expected = _garbage_and_live(repo, tmp_path)
    # make the chunk files a pack again, old: the mostly-garbage pack to rewrite
    reg = ModelRegistry(repo)
    from uniflow._records.manifest import file_records

    t_chunks = {
        c.digest for _r, rec, _m in file_records(reg.repository.manifest("t", "v3.0.0")) for c in rec.chunks
    }
    live_files = len(t_chunks)
    assert {p.parent.name + p.name for p in _chunk_files(repo)} > t_chunks  # and g's garbage
    dry = reg.gc(dry_run=True, grace_seconds=0, repack=True)
    assert dry.deleted_chunks == 0 and dry.loose_packed == live_files and dry.bytes_freed >= 9 * MIB
    assert dry.packs_removed == 1
    assert {p.parent.name + p.name for p in _chunk_files(repo)} > t_chunks  # the dry run moved nothing
    report = reg.gc(dry_run=False, grace_seconds=0, repack=True)
    assert report.bytes_freed == dry.bytes_freed and report.packs_removed == 1
    assert report.loose_packed == live_files
    assert _chunk_files(repo) == []  # every chunk file moved into a pack
    _loads_dir(repo, expected)
    assert ModelRegistry(repo).verify().ok
    again = ModelRegistry(repo).gc(dry_run=True, grace_seconds=0, repack=True)
    assert again.unreachable_chunks == 0 and again.bytes_freed == 0 and again.packs_removed == 0


def test_gc_rewrites_a_mostly_dead_pack_keeping_its_live_chunks(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    src = tmp_path / "src"
    src.mkdir()
    small = _write(src / "small.bin", 2 * MIB, 11)
    _write(src / "big.bin", 8 * MIB, 12)
    ModelRegistry(repo).register(model=src, name="m", version="v1.0.0")
    only = tmp_path / "only"
    only.mkdir()
    (only / "small.bin").write_bytes(small.read_bytes())
    ModelRegistry(repo).register(model=only, name="m", version="v2.0.0")
    (old,) = _packs(repo)
    git(repo, "update-ref", "-d", "refs/tags/models/m/v1.0.0")
    young = ModelRegistry(repo).gc(dry_run=False)  # the pack is younger than the grace period
    assert young.packs_removed == 0 and _packs(repo) == [old]
    report = ModelRegistry(repo).gc(dry_run=False, grace_seconds=0)
    assert report.packs_removed == 1 and report.packs_written == 1
    (new,) = _packs(repo)
    assert new != old and new.stat().st_size < 3 * MIB
    _loads_dir(repo, {"m/v2.0.0": small.read_bytes()})
    assert ModelRegistry(repo).verify().ok


GC_POINTS = [
    "pack-written",
    "pack-synced",
    "pack-linked",
    "pack-indexed",
    "pack-done",
    "gc-repacked",
    "gc-pack-aside",
    "gc-after-set-aside",
    "gc-pack-dropped",
    "gc-loose-packed",
]


@pytest.mark.slow
@pytest.mark.parametrize("point", GC_POINTS)
def test_gc_repack_killed_at_each_step_loses_nothing(tmp_path: Path, point: str) -> None:
    repo = make_repo(tmp_path / "repo")
    expected = _garbage_and_live(repo, tmp_path)
    r = run_cli(repo, "gc", "--yes", "--repack", "--grace", "0s", extra=kill_at(point))
    assert r.returncode == -9, f"never reached {point}: {r.stdout}{r.stderr}"
    _loads_dir(repo, expected)  # a reader finds every chunk: in a pack, a gc's set, or a file
    r = run_cli(repo, "verify")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(cli(repo, "gc", "--yes", "--repack", "--grace", "0s", "--json").stdout)
    assert report["restored_chunks"] >= 0
    assert _chunk_files(repo) == [] and not list((_store(repo) / "tmp").glob("gc.*"))
    _loads_dir(repo, expected)
    assert ModelRegistry(repo).verify().ok
    final = ModelRegistry(repo).gc(dry_run=True, grace_seconds=0)
    assert final.unreachable_chunks == 0 and final.bytes_freed == 0


@pytest.mark.slow
def test_a_load_while_gc_holds_a_pack_aside_finds_it(tmp_path: Path) -> None:
    """A reader that misses a pack gc has set aside (and not yet decided on) puts it back."""
    repo = make_repo(tmp_path / "repo")
    expected = _garbage_and_live(repo, tmp_path)
    gate = tmp_path / "gate"
    gate.mkdir()
    gc = start_cli(
        repo,
        "gc",
        "--yes",
        "--grace",
        "0s",
        extra={"UNIFLOW_TEST_PAUSE_AT": "gc-after-set-aside", "UNIFLOW_TEST_PAUSE_DIR": str(gate)},
    )
    import time

    deadline = time.monotonic() + 120
    while not (gate / "paused").exists() and gc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # bounded
    assert (gate / "paused").exists(), gc.communicate(timeout=60)
    assert list((_store(repo) / "tmp").glob("gc.*/*.pack"))
    _loads_dir(repo, expected)
    (gate / "go").touch()
    _out, err = gc.communicate(timeout=300)
    assert gc.returncode == 0, err
    _loads_dir(repo, expected)
    assert ModelRegistry(repo).verify().ok


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_registry_dropped_or_closed_holds_no_pack_open(tmp_path: Path) -> None:
    """A notebook or a training loop registers and loads in one long process: a registry it
    drops without close() (or closes) must not keep the packs it read open; else every
    removed repository's space stays taken and the process runs out of descriptors."""
    import gc
    import shutil

    import numpy as np

    src = tmp_path / "model.safetensors"
    from safetensors.numpy import save_file

    save_file({f"w{i}": np.random.default_rng(i).random((256, 256)) for i in range(8)}, str(src))
    for closed in (False, True):
        repo = make_repo(tmp_path / f"repo-{closed}")
        reg = ModelRegistry(repo)
        reg.register(model=str(src), name="m", version="v1.0.0")
        assert reg.load_path("m", "v1.0.0")
        assert open_pack_files(tmp_path), "the load read its chunks from a pack"
        if closed:
            reg.close()
        del reg
        gc.collect()
        assert open_pack_files(tmp_path) == []
        shutil.rmtree(repo)
