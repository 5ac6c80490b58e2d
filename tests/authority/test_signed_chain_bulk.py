"""A long lifecycle chain is read in bulk (``git rev-list`` + ``git cat-file --batch``, its
signatures verified on worker threads) and must read exactly as the one-by-one walk reads it:
the same commits, events, keys and signature lines, loose or packed, with unsigned commits
and a bad signature among them; without a git binary the walk still works, and a missing
object is still an error naming its commit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import make_repo
from uniflow._authority.signing import load_signer
from uniflow._errors import IntegrityError
from uniflow._records import signedchain
from uniflow._records.git import GitRepo
from uniflow._records.signedchain import SignedCommit, read_signed_chain

from .conftest import Key, git, make_key

#: longer than the commits read one by one before the bulk read starts (64)
LENGTH = 150
UNSIGNED = {5, 70, 120}
BAD = 100  # a signed commit whose message was changed after signing


def _forge_bad(repo: GitRepo, signed: str) -> str:
    """The raw bytes of commit ``signed`` with its message changed, written as a new object:
    its signature no longer matches."""
    raw = repo.read_raw(signed, "commit", 1 << 20).replace(b"event 100", b"event 1OO")
    return git(repo.workdir, "hash-object", "-t", "commit", "-w", "--stdin", data=raw).stdout.decode().strip()


def _chain(path: Path, key: Key) -> tuple[GitRepo, str, list[str]]:
    """A chain of ``LENGTH`` lifecycle commits (``event.json`` and ``state.json`` each), signed
    but for ``UNSIGNED``, commit ``BAD`` with a broken signature; its head and every id."""
    repo = GitRepo(make_repo(path))
    signer = load_signer(str(key.path))
    head: str | None = None
    ids = []
    for i in range(LENGTH):
        tree = repo.write_tree(
            {
                "event.json": (0o100644, repo.write_blob(b'{"n": %d}' % i)),
                "state.json": (0o100644, repo.write_blob(b'{"seq": %d}' % i)),
            }
        )
        message = f"event {i}\n"
        head = repo.write_commit(
            tree,
            [head] if head else [],
            message,
            ("CI", "ci@example.com"),
            signer=None if i in UNSIGNED else signer,
        )
        if i == BAD:
            head = _forge_bad(repo, head)
        ids.append(head)
    assert head is not None
    git(repo.workdir, "update-ref", "refs/uniflow/models/clf", head)
    return repo, head, ids


def _one_by_one(repo: GitRepo, head: str, monkeypatch: pytest.MonkeyPatch) -> list[SignedCommit]:
    """The chain as the one-by-one walk reads it (the bulk read never starts)."""
    with monkeypatch.context() as m:
        m.setattr(signedchain, "_ONE_BY_ONE", 10**9)
        return read_signed_chain(GitRepo(repo.workdir), head, "clf")


def _without_git(repo: GitRepo, head: str, monkeypatch: pytest.MonkeyPatch) -> list[SignedCommit]:
    """The chain read with no git binary on ``PATH`` (as in a slim container)."""
    with monkeypatch.context() as m:
        m.setenv("PATH", str(repo.workdir / "no-such-dir"))
        return read_signed_chain(GitRepo(repo.workdir), head, "clf")


@pytest.fixture
def key(tmp_path: Path) -> Key:
    return make_key(tmp_path / "keys", "ci")


@pytest.fixture
def chain(tmp_path: Path, key: Key) -> tuple[GitRepo, str, list[str]]:
    return _chain(tmp_path / "repo", key)


def _check(found: list[SignedCommit], ids: list[str], key: Key) -> None:
    assert [c.sha for c in found] == ids
    for i, c in enumerate(found):
        if i in UNSIGNED:
            assert (c.key, c.signature) == (None, "unsigned")
        elif i == BAD:
            assert c.key is None and c.signature.startswith("bad signature"), c.signature
        else:
            assert c.key == key.public.blob.hex() and c.signature == f"signature by {key.public.fingerprint}"
        assert c.event == b'{"n": %d}' % i


def test_a_long_chain_reads_in_bulk_as_it_reads_one_by_one(
    chain: tuple[GitRepo, str, list[str]], key: Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, head, ids = chain
    bulk = read_signed_chain(repo, head, "clf")
    _check(bulk, ids, key)
    assert _one_by_one(repo, head, monkeypatch) == bulk
    assert _without_git(repo, head, monkeypatch) == bulk


def test_a_packed_chain_reads_the_same(
    chain: tuple[GitRepo, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, head, ids = chain
    loose = read_signed_chain(repo, head, "clf")
    git(repo.workdir, "repack", "-adq")
    git(repo.workdir, "prune-packed")
    assert not [x for x in ids if (repo.git_dir / "objects" / x[:2] / x[2:]).exists()]  # all packed
    assert read_signed_chain(GitRepo(repo.workdir), head, "clf") == loose
    assert _one_by_one(repo, head, monkeypatch) == loose
    assert _without_git(repo, head, monkeypatch) == loose


def test_loose_commits_over_packed_ones_read_the_same(
    chain: tuple[GitRepo, str, list[str]], key: Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New commits stored loose on top of packed ones (a clone that promoted since)."""
    repo, head, ids = chain
    git(repo.workdir, "repack", "-adq")
    git(repo.workdir, "prune-packed")
    signer = load_signer(str(key.path))
    for i in range(100):
        tree = repo.write_tree({"event.json": (0o100644, repo.write_blob(b'{"more": %d}' % i))})
        head = repo.write_commit(tree, [head], f"more {i}\n", ("CI", "ci@example.com"), signer=signer)
    found = read_signed_chain(GitRepo(repo.workdir), head, "clf")
    assert [c.sha for c in found[:LENGTH]] == ids and len(found) == LENGTH + 100
    assert all(c.key == key.public.blob.hex() for c in found[LENGTH:])
    assert found == _one_by_one(repo, head, monkeypatch) == _without_git(repo, head, monkeypatch)


def test_a_missing_event_in_a_long_chain_names_its_commit(chain: tuple[GitRepo, str, list[str]]) -> None:
    repo, head, ids = chain
    victim = ids[10]  # read in bulk: far behind the first 64 from the head
    blob = git(repo.workdir, "rev-parse", f"{victim}:event.json").stdout.decode().strip()
    os.remove(repo.git_dir / "objects" / blob[:2] / blob[2:])
    with pytest.raises(IntegrityError, match=victim[:12]):
        read_signed_chain(GitRepo(repo.workdir), head, "clf")


def test_a_rewritten_parent_link_is_followed_as_the_objects_say(
    chain: tuple[GitRepo, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replace ref makes ``git rev-list`` walk another history; the chain read is still the
    one the commits' own parent headers link (what the signatures cover)."""
    repo, head, ids = chain
    git(repo.workdir, "replace", ids[30], ids[20])
    found = read_signed_chain(GitRepo(repo.workdir), head, "clf")
    assert [c.sha for c in found] == ids
    assert found == _one_by_one(repo, head, monkeypatch)


def test_a_chain_read_and_verified_in_small_slices_reads_the_same(
    chain: tuple[GitRepo, str, list[str]], key: Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loose commits are verified in batches as they are read, packed ones read a slice of
    ``git cat-file`` at a time: with batches and slices that do not divide the chain, loose
    over packed, every commit is read once, in order, its verdict its own."""
    repo, head, ids = chain
    git(repo.workdir, "repack", "-adq")
    git(repo.workdir, "prune-packed")
    signer = load_signer(str(key.path))
    for i in range(40):
        tree = repo.write_tree({"event.json": (0o100644, repo.write_blob(b'{"more": %d}' % i))})
        head = repo.write_commit(tree, [head], f"more {i}\n", ("CI", "ci@example.com"), signer=signer)
    whole = read_signed_chain(GitRepo(repo.workdir), head, "clf")
    with monkeypatch.context() as m:
        m.setattr(signedchain, "_VERIFY_BATCH", 7)
        m.setattr(signedchain, "_PACKED_SLICE", 11)
        sliced = read_signed_chain(GitRepo(repo.workdir), head, "clf")
    _check(sliced[:LENGTH], ids, key)
    assert sliced == whole == _one_by_one(repo, head, monkeypatch)


def test_events_are_handed_over_while_the_signatures_verify(
    chain: tuple[GitRepo, str, list[str]],
) -> None:
    """``meanwhile`` gets the event of every commit read in bulk (those behind the first 64,
    newest first), exactly the bytes the chain returns for it; the result is unchanged."""
    repo, head, ids = chain
    handed: list[tuple[str, bytes | None]] = []
    found = read_signed_chain(repo, head, "clf", meanwhile=handed.extend)
    assert found == read_signed_chain(GitRepo(repo.workdir), head, "clf")
    bulk = ids[: LENGTH - signedchain._ONE_BY_ONE]
    assert [sha for sha, _ in handed] == bulk[::-1]
    events = {c.sha: c.event for c in found}
    assert all(event == events[sha] for sha, event in handed)
