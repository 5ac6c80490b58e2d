"""Every byte is verified before use; a flipped byte is an IntegrityError, never silent."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from tests.helpers import StoredChunk, flip_stored_byte, run_py, stored_chunks
from uniflow import IntegrityError, ModelRegistry


def _flip(path: Path, offset: int) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def _objects(reg: ModelRegistry) -> list[StoredChunk]:
    """Every stored chunk, where it lives (in a pack, for a store of format 3)."""
    return stored_chunks(reg.store)


def _files(reg: ModelRegistry) -> list[Path]:
    """The files holding the chunks: packs and their indexes, and chunk files."""
    packs = reg.store.root / "packs"
    return sorted({c.path for c in _objects(reg)} | set(packs.glob("*.idx")))


@pytest.fixture
def big_model(registry: ModelRegistry, tmp_path: Path) -> ModelRegistry:
    src = tmp_path / "weights.bin"
    src.write_bytes(random.Random(7).randbytes(9 * 1024 * 1024))  # > 2 x max chunk: >= 3 chunks
    registry.register(model=src, name="clf", version="v1.0.0")
    return registry


@pytest.mark.parametrize("which", [0, 1, -1])
def test_flipped_chunk_byte_fails_load_from_fresh_process(big_model: ModelRegistry, which: int) -> None:
    objs = _objects(big_model)
    assert len(objs) >= 3 and all(c.path.suffix == ".pack" for c in objs)
    target = objs[which]
    flip_stored_byte(target, target.length // 2)
    r = run_py(
        "from uniflow import ModelRegistry, IntegrityError\n"
        "try:\n"
        "    ModelRegistry().load('clf', version='v1.0.0')\n"
        "except IntegrityError as e:\n"
        "    print('INTEGRITY', e)\n",
        cwd=big_model.root,
    )
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith("INTEGRITY")
    assert "'clf'" in line and "'v1.0.0'" in line and "'weights.bin'" in line
    assert target.digest[:16] in line  # names the chunk


def test_truncated_and_missing_chunks_are_errors(big_model: ModelRegistry) -> None:
    last = _objects(big_model)[-1]  # the pack's last chunk: truncating the pack cuts it
    os.chmod(last.path, 0o644)
    with open(last.path, "r+b") as f:
        f.truncate(last.offset + last.length - 1)
    with pytest.raises(IntegrityError, match="corrupted"):
        big_model.load_path("clf")  # the pack open already: the chunk is short
    with pytest.raises(IntegrityError, match=f"is corrupted: its pack {last.path.stem[:16]} is damaged"):
        ModelRegistry(big_model.root).load_path("clf")  # the pack refused: damaged, not missing
    last.path.unlink()
    last.path.with_suffix(".idx").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        ModelRegistry(big_model.root).load_path("clf")


def test_chunk_with_bytes_appended_is_corrupted_and_nothing_is_cached(big_model: ModelRegistry) -> None:
    objs = _objects(big_model)
    os.chmod(objs[-1].path, 0o644)
    with open(objs[-1].path, "ab") as f:  # the right bytes, then more: a reader must not stop at the size
        f.write(b"\x00")
    with pytest.raises(IntegrityError, match="corrupted"):
        ModelRegistry(big_model.root).load_path("clf")
    cached = big_model.store.root / "cache" / "files"
    assert not [p for p in cached.rglob("*") if p.is_file()]


def test_tampered_cache_is_rebuilt_from_verified_chunks(big_model: ModelRegistry, tmp_path: Path) -> None:
    first = big_model.load("clf")
    good = Path(first).read_bytes()
    cached = sorted((big_model.store.root / "cache" / "files").rglob("*"))
    cached = [p for p in cached if p.is_file()]
    assert cached
    _flip(cached[0], 100)
    again = ModelRegistry(big_model.root).load("clf")
    assert Path(again).read_bytes() == good


def test_verify_reports_model_version_file(big_model: ModelRegistry) -> None:
    assert big_model.verify().problems == ()
    target = _objects(big_model)[0]
    flip_stored_byte(target, 7)
    report = big_model.verify()
    assert not report.ok and len(report.problems) == 1
    p = report.problems[0]
    assert (p.model, p.version, p.file, p.problem) == ("clf", "v1.0.0", "weights.bin", "corrupted")
    assert p.chunk == target.digest


def test_flipped_byte_in_the_manifest_git_object_is_an_integrity_error(big_model: ModelRegistry) -> None:
    from tests.helpers import git

    blob = git(
        big_model.root, "rev-parse", "models/clf/v1.0.0^{commit}:.uniflow/card/manifest.msgpack"
    ).strip()
    _flip(big_model.git.git_dir / "objects" / blob[:2] / blob[2:], 40)
    shutil.rmtree(big_model.store.root / "cache")  # no derived copy to fall back on
    r = run_py(
        "from uniflow import ModelRegistry, IntegrityError\n"
        "try:\n    ModelRegistry().load('clf')\nexcept IntegrityError as e:\n    print('INTEGRITY', e)\n",
        cwd=big_model.root,
    )
    assert r.stdout.startswith("INTEGRITY") and "damaged" in r.stdout, r.stdout + r.stderr


def test_objects_are_read_only_and_outside_the_users_file(big_model: ModelRegistry, tmp_path: Path) -> None:
    assert _files(big_model)
    for p in _files(big_model):
        assert p.stat().st_mode & 0o222 == 0
        assert p.stat().st_nlink == 1
    # changing the user's file afterwards does not change the stored version
    (tmp_path / "weights.bin").write_bytes(b"changed")
    assert Path(big_model.load("clf")).stat().st_size == 9 * 1024 * 1024


def test_damaged_derived_cache_is_ignored(big_model: ModelRegistry) -> None:
    big_model.promote("clf", "v1.0.0", "production")
    first = ModelRegistry(big_model.root)
    first.list_models()
    first.get("clf")
    entries = [p for p in (big_model.store.root / "cache" / "git").rglob("*") if p.is_file()]
    assert {p.parent.parent.name for p in entries} == {"manifest", "state", "listing"}
    for p in entries:
        _flip(p, len(p.read_bytes()) - 3)
    again = ModelRegistry(big_model.root)
    assert again.get("clf").stage == "production" and again.list_models()[0].stages == {
        "production": "v1.0.0"
    }
    assert Path(again.load("clf")).stat().st_size == 9 * 1024 * 1024
