"""A lifecycle commit carries its event twice: ``event.json`` in its tree (what every client
has always read) and, since issue 24, the same bytes in its message's last lines, so a
verifier reads one object per event. The message counts only when the commit's tree id is
exactly the tree of that event and the state it names; a commit whose message says one
event and whose tree another is refused in one line, by ``verify --signatures`` and by
``verify``. Old commits (the event only in the tree) read as before, alone or mixed with new
ones, in bulk or one by one, verified in forked children or on threads."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import cli, make_repo
from uniflow import ModelRegistry
from uniflow._authority import gitsign
from uniflow._authority.gitsign import split_commit
from uniflow._authority.signing import load_signer
from uniflow._ops.authority import verify_lifecycle
from uniflow._records import signedchain
from uniflow._records.git import GitRepo
from uniflow._records.lifecycle import (
    MAX_COMMIT_BYTES,
    MESSAGE_EVENT_BYTES,
    MISMATCH,
    event_in_tree,
    event_lines,
    message_event,
    register_transition,
)
from uniflow._records.signedchain import SignedCommit, read_signed_chain

from .conftest import Key, fork_verifiers, git, make_key
from .test_signed_lifecycle import CI, governed, keys, staged  # noqa: F401 (fixtures)

#: longer than the commits read one by one before the bulk read starts (64)
LENGTH = 150
OLD = {0, 3, 64, 65, 99, 140}  # commits written as before issue 24 (event only in the tree)
MISMATCHED = {30, 120}  # message and tree disagree


def _event(i: int) -> bytes:
    return (json.dumps({"n": i, "text": "line\nbreak"}, indent=1, sort_keys=True) + "\n").encode()


def _commit(repo: GitRepo, head: str | None, i: int, key: Key, *, old: bool, mismatched: bool) -> str:
    data, state = _event(i), b'{"seq": %d}\n' % i
    state_id = repo.write_blob(state)
    in_tree = _event(i + 1000) if mismatched else data
    tree = repo.write_tree(
        {"event.json": (0o100644, repo.write_blob(in_tree)), "state.json": (0o100644, state_id)}
    )
    message = f"event {i}\n\nUniflow-Action: promote\n" + ("" if old else event_lines(data, state_id))
    signer = load_signer(str(key.path))
    return repo.write_commit(tree, [head] if head else [], message, ("CI", "ci@example.com"), signer=signer)


@pytest.fixture
def key(tmp_path: Path) -> Key:
    return make_key(tmp_path / "keys", "ci")


@pytest.fixture
def mixed(tmp_path: Path, key: Key) -> tuple[GitRepo, str, list[str]]:
    """A signed chain of old and new commits, two of them with a message that is not their tree."""
    repo = GitRepo(make_repo(tmp_path / "repo"))
    head: str | None = None
    ids = []
    for i in range(LENGTH):
        head = _commit(repo, head, i, key, old=i in OLD, mismatched=i in MISMATCHED)
        ids.append(head)
    assert head is not None
    git(repo.workdir, "update-ref", "refs/uniflow/models/clf", head)
    return repo, head, ids


def _check(found: list[SignedCommit], ids: list[str], key: Key) -> None:
    assert [c.sha for c in found] == ids
    for i, c in enumerate(found):
        assert c.event == (_event(i + 1000) if i in MISMATCHED else _event(i)), i  # the tree's, always
        assert c.problem == (MISMATCH if i in MISMATCHED else None), i
        assert c.key == key.public.blob.hex()


def _one_by_one(repo: GitRepo, head: str, monkeypatch: pytest.MonkeyPatch) -> list[SignedCommit]:
    with monkeypatch.context() as m:
        m.setattr(signedchain, "_ONE_BY_ONE", 10**9)
        return read_signed_chain(GitRepo(repo.workdir), head, "clf")


def test_a_promote_writes_its_event_in_its_message_and_its_tree(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (tmp_path / "m.bin").write_bytes(b"x" * 100)
    registry = ModelRegistry(repo)
    v = registry.register(str(tmp_path / "m.bin"), "clf").version
    registry.promote("clf", v, "staging")
    raw = git(repo, "cat-file", "commit", "refs/uniflow/models/clf").stdout
    tree_event = git(repo, "show", "refs/uniflow/models/clf:event.json").stdout
    state_id = git(repo, "rev-parse", "refs/uniflow/models/clf:state.json").stdout.strip()
    assert message_event(raw) == (tree_event, state_id)
    trailers = git(
        repo, "log", "-1", "--format=%(trailers:key=Uniflow-To,valueonly)", "refs/uniflow/models/clf"
    )
    assert trailers.stdout.strip() == b"staging"  # Git still reads the message's trailers
    tree = git(repo, "rev-parse", "refs/uniflow/models/clf^{tree}").stdout.decode().strip()
    assert event_in_tree(tree, tree_event, state_id)
    assert not event_in_tree(tree, tree_event.replace(b"staging", b"stagin9"), state_id)


def test_an_old_and_new_mixed_chain_reads_the_same_in_bulk_and_one_by_one(
    mixed: tuple[GitRepo, str, list[str]], key: Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, head, ids = mixed
    bulk = read_signed_chain(repo, head, "clf")
    _check(bulk, ids, key)
    assert _one_by_one(repo, head, monkeypatch) == bulk
    git(repo.workdir, "repack", "-adq")
    git(repo.workdir, "prune-packed")
    assert read_signed_chain(GitRepo(repo.workdir), head, "clf") == bulk


def test_verified_on_threads_or_by_a_child_that_fails_the_chain_reads_the_same(
    mixed: tuple[GitRepo, str, list[str]], key: Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With another thread running nothing forks (threads verify); small slices give many
    children; a child that dies, or whose exit status is lost (SIGCHLD ignored), has its
    commits verified by the parent: the same chain each time."""
    repo, head, ids = mixed
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        assert not signedchain._can_fork()
        _check(read_signed_chain(GitRepo(repo.workdir), head, "clf"), ids, key)
    finally:
        stop.set()
        other.join()
    fork_verifiers(monkeypatch)
    with monkeypatch.context() as m:
        m.setattr(signedchain, "_FORK_SLICE", 7)
        _check(read_signed_chain(GitRepo(repo.workdir), head, "clf"), ids, key)
        m.setattr(signedchain, "_child", lambda *args: os._exit(3))
        _check(read_signed_chain(GitRepo(repo.workdir), head, "clf"), ids, key)
    saved = signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped by the kernel
    try:
        _check(read_signed_chain(GitRepo(repo.workdir), head, "clf"), ids, key)
    finally:
        signal.signal(signal.SIGCHLD, saved)


def test_a_child_that_hangs_is_killed_and_its_commits_verified_here(
    mixed: tuple[GitRepo, str, list[str]], key: Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forked verifier that never answers (a copy of the process stuck on a lock) does not
    hold the verify: after the bound it is killed, and the parent verifies its slice."""
    fork_verifiers(monkeypatch)
    repo, head, ids = mixed
    monkeypatch.setattr(signedchain, "_FORK_SLICE", 7)
    monkeypatch.setattr(signedchain, "_CHILD_WAIT", 0.5)
    monkeypatch.setattr(signedchain, "_child", lambda *args: (time.sleep(3600), os._exit(0)))
    start = time.monotonic()
    _check(read_signed_chain(GitRepo(repo.workdir), head, "clf"), ids, key)
    assert time.monotonic() - start < 600  # each hung child waited for 0.5 s, not an hour


def test_a_message_whose_event_is_not_its_tree_is_refused_in_one_line(
    governed: Path,  # noqa: F811 (a fixture)
    keys: dict[str, Key],  # noqa: F811 (a fixture)
) -> None:
    """A commit signed by an allowed signer whose message says "staging" while its tree's
    event.json (what older clients act on) says "production": the event fails."""
    v = staged(governed, keys)
    repo = GitRepo(governed)
    head = git(governed, "rev-parse", "refs/uniflow/models/clf").stdout.decode().strip()
    said = message_event(repo.read_raw(head, "commit", MAX_COMMIT_BYTES))
    assert said is not None
    acted = said[0].replace(b'"to": "staging"', b'"to": "production"')
    tree = repo.write_tree(
        {"event.json": (0o100644, repo.write_blob(acted)), "state.json": (0o100644, said[1].decode())}
    )
    message = f"promote clf {v}: staging -> staging\n\n" + event_lines(said[0], said[1].decode())
    forged = repo.write_commit(tree, [head], message, ("CI", CI), signer=load_signer(str(keys[CI].path)))
    git(governed, "update-ref", "refs/uniflow/models/clf", forged, head)

    verdicts = verify_lifecycle(ModelRegistry(governed).repository, "clf")
    last = verdicts.events[-1]
    assert (last.commit, last.ok, last.reason, last.to_stage) == (forged, False, MISMATCH, "production")
    out = cli(governed, "verify", "--signatures", code=5)
    assert f"(lifecycle commit {forged[:12]}): {MISMATCH}" in out.stdout
    full = cli(governed, "verify", code=None)
    assert full.returncode != 0
    assert f"lifecycle commit {forged[:12]}: {MISMATCH}" in full.stdout + full.stderr


def test_hostile_sizes_stay_bounded(tmp_path: Path, key: Key) -> None:
    """A large event is only in the tree (the commit stays small); a message that only looks
    like the event lines, or that is too big to read, carries nothing."""
    repo = make_repo(tmp_path / "repo")
    (tmp_path / "m.bin").write_bytes(b"x" * 100)
    registry = ModelRegistry(repo)
    v = registry.register(str(tmp_path / "m.bin"), "clf").version
    big = {"note": "x" * MESSAGE_EVENT_BYTES}
    registry.repository.lifecycle.apply("clf", register_transition(v, extra=big), ("CI", "ci@example.com"))
    raw = git(repo, "cat-file", "commit", "refs/uniflow/models/clf").stdout
    assert message_event(raw) is None and len(raw) < MESSAGE_EVENT_BYTES
    assert len(git(repo, "show", "refs/uniflow/models/clf:event.json").stdout) > MESSAGE_EVENT_BYTES
    assert verify_lifecycle(ModelRegistry(repo).repository, "clf").events[-1].action == "register"
    assert message_event(b"tree x\n\nUniflow-State: nothex\nUniflow-Event: {}\n") is None
    assert message_event(b"tree x\nUniflow-State: " + b"a" * 40 + b"\nUniflow-Event: {}\n") is None  # headers
    assert message_event(b"tree x\n\nsubject\nUniflow-Event: {}\n") is None  # no state line
    assert not event_in_tree("a" * 40, b"{}\n", b"b" * 64)  # ids of two widths


def test_the_quick_split_of_a_commit_is_the_full_split(
    mixed: tuple[GitRepo, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``split_commit`` finds the signature of a commit as Git writes one with a few searches;
    any commit, however mangled (carriage returns, two signature headers, a header first,
    continuation lines anywhere), splits exactly as the pass over its lines splits it."""
    repo, _head, ids = mixed
    raws = [repo.read_raw(x, "commit", MAX_COMMIT_BYTES) for x in ids[:20]]
    pieces = [b"\n", b"\r", b" ", b"\n\n", b"\ngpgsig x\n", b"gpgsig ", b"\ncommitter ", b"committer a 1 z\n"]
    rng = random.Random(7)
    variants = [b"", b"\n", b"gpgsig a\n\nm", b"tree x\ngpgsig a\n b\ngpgsig c\n\nm", *raws]
    for raw in raws:
        for _ in range(100):
            at = rng.randrange(len(raw) + 1)
            variants.append(raw[:at] + rng.choice(pieces) + raw[at + rng.randrange(2) :])
    quick = [split_commit(v, fmt) for v in variants for fmt in ("sha1", "sha256")]
    monkeypatch.setattr(gitsign, "_split_plain", lambda raw, header: None)
    assert quick == [split_commit(v, fmt) for v in variants for fmt in ("sha1", "sha256")]
    assert all(q.signature for q in quick[8 : 8 + 2 * len(raws) : 2])  # the real ones are signed
