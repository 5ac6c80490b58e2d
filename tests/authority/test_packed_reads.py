"""Packed objects read for verification (``GitRepo.read_raw``): the packs are listed once
per object store and kept while the pack directory does not change, so a read must still
find, bound and check objects in packs that appear later (a fetch) and survive packs that
disappear (a ``git repack``/``git gc`` by another process between two reads)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import GIT_ENV, git, make_repo
from uniflow._errors import IntegrityError
from uniflow._records.git import GitRepo


def _pack(work: Path, shas: list[str]) -> set[str]:
    """Pack ``shas`` into one new pack with ``git pack-objects`` and drop their loose files;
    the packs' base names."""
    before = set(os.listdir(work / ".git" / "objects" / "pack"))
    subprocess.run(
        ["git", "pack-objects", "-q", ".git/objects/pack/pack"],
        cwd=work,
        input="\n".join(shas) + "\n",
        text=True,
        check=True,
        env={**os.environ, **GIT_ENV},
        timeout=60,
        capture_output=True,
    )
    git(work, "prune-packed")
    after = set(os.listdir(work / ".git" / "objects" / "pack"))
    return {n[:-5] for n in after - before if n.endswith(".pack")}


def _blobs(repo: GitRepo, tag: str) -> dict[str, bytes]:
    bodies = [f"{tag} {i} ".encode() * 50 for i in range(5)] + [tag.encode() * 100_000]
    return {repo.write_blob(body): body for body in bodies}


def test_reads_follow_packs_that_appear_and_disappear(tmp_path: Path) -> None:
    work = make_repo(tmp_path / "r")
    repo = GitRepo(work)
    first = _blobs(repo, "1")
    old = _pack(work, list(first))
    small = next(iter(first))
    assert repo.read_raw(small, "blob", 1 << 20) == first[small]  # the packs are listed now

    second = _blobs(repo, "2")
    _pack(work, list(second))  # a pack the kept list does not have
    for sha, body in second.items():
        if len(body) > 1000:  # still bounded from its pack header, before it is inflated
            with pytest.raises(IntegrityError, match="more than 1000"):
                repo.read_raw(sha, "blob", 1000)
        assert repo.read_raw(sha, "blob", 1 << 20) == body

    _pack(work, [*first, *second])  # what a repack writes, then the old packs go
    packs = work / ".git" / "objects" / "pack"
    for name in old:
        for ext in (".pack", ".idx"):
            (packs / f"{name}{ext}").unlink()
    for sha, body in {**first, **second}.items():
        if len(body) > 1000:
            with pytest.raises(IntegrityError, match="more than 1000"):
                repo.read_raw(sha, "blob", 1000)
        assert repo.read_raw(sha, "blob", 1 << 20) == body
    with pytest.raises(KeyError):
        repo.read_raw("0" * 40, "blob", 1 << 20)


def test_a_packed_object_is_read_as_its_kind_only(tmp_path: Path) -> None:
    work = make_repo(tmp_path / "r")
    repo = GitRepo(work)
    small = repo.write_blob(b"small")
    _pack(work, [small])
    with pytest.raises(Exception, match="not a tree"):
        repo.read_raw(small, "tree", 1 << 20)
