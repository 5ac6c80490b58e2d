"""The in-memory blob remote (``memory://NAME``, :class:`MemoryRemote`): push, pull, load and
get by URL work through it as through any blob remote, every chunk verified, with no disk
and no network behind the remote; and the protocol's optional local-file capability."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import clone, model_dir, open_registry, shared_setup, tree_bytes
from uniflow import IntegrityError, ModelRegistry, RemoteError
from uniflow._records.config import RemoteSpec
from uniflow.sharing.blobstore import LocalRemote, MemoryRemote, open_remote


@pytest.fixture
def memory_url() -> Iterator[str]:
    """A fresh ``memory://`` blob remote, forgotten after the test."""
    url = f"memory://test-{uuid.uuid4().hex}"
    yield url
    MemoryRemote.forget(url)


def _published(tmp_path: Path, url: str) -> tuple[Path, Path, Path]:
    """``(bare, clone a, source dir)``: model ``m`` v1.0.0 registered in ``a`` and pushed."""
    bare, a = shared_setup(tmp_path, blob_url=url)
    src = model_dir(tmp_path / "src", 3, seed=7)
    ra = open_registry(a)
    ra.register(str(src), "m", version="v1.0.0")
    ra.promote("m", "v1.0.0", "production")
    report = ra.push()
    assert report.blob_remote == "origin" and report.chunks.transferred == 3
    ra.close()
    return bare, a, src


def test_open_remote_gives_a_shared_memory_store_without_local_files(tmp_path: Path, memory_url: str) -> None:
    one = open_remote(RemoteSpec("mem", memory_url), tmp_path)
    two = open_remote(RemoteSpec("other", memory_url), tmp_path)
    assert isinstance(one, MemoryRemote) and one.local_files() is None
    digest = "ab" * 32
    assert one.put(digest, b"bytes") is True and one.put(digest, b"bytes") is False
    assert two.get(digest) == b"bytes" and two.list_digests() == {digest}  # one store per name
    MemoryRemote.forget(memory_url)
    assert open_remote(RemoteSpec("mem", memory_url), tmp_path).list_digests() == set()
    local = open_remote(RemoteSpec("dir", str(tmp_path / "blobs")), tmp_path)
    assert isinstance(local, LocalRemote) and local.local_files() is local


def test_a_memory_url_without_a_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="memory://NAME"):
        open_remote(RemoteSpec("mem", "memory://"), tmp_path)


def test_push_then_pull_and_load_in_another_clone(tmp_path: Path, memory_url: str) -> None:
    bare, _a, src = _published(tmp_path, memory_url)
    assert len(MemoryRemote(memory_url, memory_url).chunks) == 3
    b = clone(bare, tmp_path / "b")
    rb = open_registry(b)
    report = rb.pull(all_versions=True)
    assert report.chunks.transferred == 3
    assert tree_bytes(Path(rb.load_path("m", stage="production"))) == tree_bytes(src)

    c = clone(bare, tmp_path / "c")  # no pull of chunks: load fetches them on demand
    rc = open_registry(c)
    rc.pull()
    assert tree_bytes(Path(rc.load_path("m", "v1.0.0"))) == tree_bytes(src)


def test_get_by_url_streams_from_memory(
    tmp_path: Path, memory_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare, _a, src = _published(tmp_path, memory_url)
    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(tmp_path / "cache"))
    with ModelRegistry(f"file://{bare}", blob=memory_url) as reg:
        out = reg.export("m", tmp_path / "out", stage="production")
    assert tree_bytes(out) == tree_bytes(src)


def test_a_corrupted_chunk_in_memory_is_refused_on_pull_and_not_stored(
    tmp_path: Path, memory_url: str
) -> None:
    bare, _a, _src = _published(tmp_path, memory_url)
    chunks = MemoryRemote(memory_url, memory_url).chunks
    victim = min(chunks)
    chunks[victim] = b"\xff" + chunks[victim][1:]
    b = clone(bare, tmp_path / "b")
    rb = open_registry(b)
    with pytest.raises(IntegrityError, match="corrupted"):
        rb.pull(all_versions=True)
    assert not rb.store.has(victim)


def test_a_corrupted_chunk_in_memory_is_refused_by_get_by_url(
    tmp_path: Path, memory_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare, _a, _src = _published(tmp_path, memory_url)
    chunks = MemoryRemote(memory_url, memory_url).chunks
    victim = min(chunks)
    chunks[victim] = chunks[victim] + b"x"
    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(tmp_path / "cache"))
    with ModelRegistry(f"file://{bare}", blob=memory_url) as reg:
        with pytest.raises(IntegrityError, match="corrupted"):
            reg.export("m", tmp_path / "out", "v1.0.0")
    assert not (tmp_path / "out").exists()  # nothing partial stays


def test_a_chunk_missing_from_memory_is_one_remote_error(tmp_path: Path, memory_url: str) -> None:
    bare, _a, _src = _published(tmp_path, memory_url)
    chunks = MemoryRemote(memory_url, memory_url).chunks
    del chunks[min(chunks)]
    b = clone(bare, tmp_path / "b")
    with pytest.raises(RemoteError, match="lacks 1 chunk"):
        open_registry(b).pull(all_versions=True)
