"""A first verification checks the events of a long lifecycle as their signatures' verdicts
come in (oldest slices first, while newer ones still verify). An event's verdict depends
only on the events before it and the policy in force at its time, so checking slice by slice
must decide exactly as checking the whole chain at once: on a randomized mix of promotions,
approvals and rollbacks, signed by allowed signers, by a stranger, unsigned or with a broken
signature, under every way the signatures verify (slices of any size, children run ahead or
all at once, threads) and when verdicts kept for an older head are resumed from."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from uniflow import ModelRegistry
from uniflow._authority.signing import load_signer
from uniflow._ops import authority
from uniflow._ops.authority import LifecycleVerdicts, verify_lifecycle
from uniflow._records import signedchain
from uniflow._records.lifecycle import LifecycleState, event_lines
from uniflow._records.refs import lifecycle_ref
from uniflow._records.signedchain import read_signed_chain

from .conftest import Key, fork_verifiers, git
from .test_signed_lifecycle import ALICE, BOB, CAROL, CI, MALLORY, governed, keys, register  # noqa: F401

EVENTS = 180  # more than the 64 commits read one by one: the rest is read in bulk


def _write(repo: Path, by: dict[str, Key], seed: int, events: int = EVENTS) -> str:
    """``events`` random lifecycle commits of model clf on top of two registered versions,
    written as a promote writes them (event in the tree and the message); the new head."""
    rng = random.Random(seed)
    versions = [register(repo, by[ALICE]), register(repo, by[BOB], tag=1)]
    registry = ModelRegistry(repo)
    g = registry.repository.git
    head = registry.repository.lifecycle.head("clf")
    state = registry.repository.lifecycle.state("clf")
    tags = {v: registry.repository.index.tag_sha("clf", v) for v in versions}
    signers = {who: load_signer(str(by[who].path)) for who in (ALICE, BOB, CAROL, CI, MALLORY)}
    stage_of = dict(state.stage_of)
    for seq in range(state.seq + 1, state.seq + 1 + events):
        version, to = rng.choice(versions), rng.choice(["staging", "production", "production"])
        action = rng.choice(["promote", "promote", "approve", "rollback", "archive"])
        if seq > state.seq + events - 70:  # the newest (read one by one) move nothing: where
            action = "approve"  # each version was placed is decided by the events checked early
        before = stage_of.get(version, "development")
        event: dict[str, Any] = {"action": action, "version": version, "from": before, "to": to}
        if action == "approve":
            event.update(to=before, **{"for": to})
        elif action == "archive":
            event["to"] = "archived"
        if event["to"] != before and action != "approve":
            if event["to"] == "production":
                stage_of = {v: ("archived" if s == "production" else s) for v, s in stage_of.items()}
            stage_of[version] = event["to"]
        at = datetime.now(UTC).isoformat()
        event.update(seq=seq, actor="Someone <s@example.com>", at=at, tag=tags[version])
        data = json.dumps(event, indent=1, sort_keys=True).encode() + b"\n"
        state_id = g.write_blob(LifecycleState("clf", seq, dict(stage_of), {}).to_json())
        tree = g.write_tree(
            {"event.json": (0o100644, g.write_blob(data)), "state.json": (0o100644, state_id)}
        )
        message = f"{action} clf {version}\n\n" + event_lines(data, state_id)
        who = rng.choice([ALICE, BOB, CAROL, CI, CI, MALLORY, None])
        signer = signers[who] if who else None
        head = g.write_commit(tree, [head] if head else [], message, ("CI", "ci@example.com"), signer=signer)
        if who and rng.random() < 0.05:  # the signature no longer matches the bytes
            raw = g.read_raw(head, "commit", 1 << 20).replace(b"\n\n", b"\n\n\n", 1)
            head = git(repo, "hash-object", "-t", "commit", "-w", "--stdin", data=raw).stdout.decode().strip()
    g.cas_ref(lifecycle_ref("clf"), registry.repository.lifecycle.head("clf"), head)
    return head


def _verify(
    repo: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, early: list[int | None] | None = None
) -> LifecycleVerdicts:
    """``verify_lifecycle`` with the derived cache ``cache``; ``early`` gets how many events
    were checked as their verdicts came (None: none, the chain was checked once read)."""
    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(cache))
    if early is not None:
        resumable = authority._Early.resumable
        monkeypatch.setattr(
            authority._Early, "resumable", lambda self, c: early.append(resumable(self, c)) or early[-1]
        )
    return verify_lifecycle(ModelRegistry(repo).repository, "clf")


def _whole(repo: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> LifecycleVerdicts:
    """The verdicts as the whole chain is checked at once, once read."""
    with monkeypatch.context() as m:
        m.setattr(authority._Early, "__call__", lambda self, commits: None)
        return _verify(repo, cache, m)


def _same(a: LifecycleVerdicts, b: LifecycleVerdicts) -> None:
    assert a.to_dict() == b.to_dict()
    assert a.holders == b.holders and a.placed == b.placed


@contextmanager
def _thread() -> Iterator[None]:
    """Another thread runs: the signatures verify on threads, not in forked children."""
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_checking_as_verdicts_come_decides_as_checking_the_whole_chain(
    governed: Path,  # noqa: F811 (a fixture)
    keys: dict[str, Key],  # noqa: F811 (a fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
) -> None:
    _write(governed, keys, seed)
    whole = _whole(governed, tmp_path / "whole", monkeypatch)
    assert not whole.ok and any(e.ok for e in whole.events) and len(whole.events) > EVENTS
    reasons = {e.reason.split(":")[0] for e in whole.events}
    assert len(reasons) > 3, reasons  # a mix of verdicts, not one
    for n, (slice_, ahead) in enumerate([(7, 1), (13, 2), (50, signedchain._LIMIT), (1024, 3)]):
        early: list[int | None] = []
        with monkeypatch.context() as m:
            fork_verifiers(m)
            m.setattr(signedchain, "_VERIFY_BATCH", min(slice_, 128))
            m.setattr(signedchain, "_FORK_SLICE", slice_)
            m.setattr(signedchain, "_ahead", lambda ahead=ahead: ahead)
            _same(_verify(governed, tmp_path / f"c{n}", m, early), whole)
        assert early == [len(whole.events) - signedchain._ONE_BY_ONE]  # all but the newest
    with _thread():
        _same(_verify(governed, tmp_path / "threads", monkeypatch), whole)


def test_verdicts_kept_for_an_older_head_are_resumed_from(
    governed: Path,  # noqa: F811 (a fixture)
    keys: dict[str, Key],  # noqa: F811 (a fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A chain verified once, then grown: the second run resumes from the kept verdicts
    (checking none early) and decides as a fresh whole check of the grown chain."""
    _write(governed, keys, 7)
    cache = tmp_path / "kept"
    monkeypatch.setattr(signedchain, "_VERIFY_BATCH", 16)
    monkeypatch.setattr(signedchain, "_FORK_SLICE", 16)
    _verify(governed, cache, monkeypatch)
    _write(governed, keys, 8, events=90)
    early: list[int | None] = []
    _same(_verify(governed, cache, monkeypatch, early), _whole(governed, tmp_path / "fresh", monkeypatch))
    assert early[0] is None  # resumed from the kept verdicts, nothing checked early


def test_the_chain_is_handed_over_oldest_first_as_its_start(
    governed: Path,  # noqa: F811 (a fixture)
    keys: dict[str, Key],  # noqa: F811 (a fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    head = _write(governed, keys, 4)
    g = ModelRegistry(governed).repository.git
    fork_verifiers(monkeypatch)
    monkeypatch.setattr(signedchain, "_VERIFY_BATCH", 16)
    monkeypatch.setattr(signedchain, "_FORK_SLICE", 16)
    handed: list[list[signedchain.SignedCommit]] = []
    found = read_signed_chain(g, head, "clf", verified=handed.append)
    flat = [c for part in handed for c in part]
    assert len(handed) > 3 and flat == found[: len(flat)]
    assert len(flat) == len(found) - signedchain._ONE_BY_ONE  # all but those read one by one
