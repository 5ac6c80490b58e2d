"""``uniflow get URL`` syncs the mirror on a thread while the registry's modules load
(``sharing.mirror.begin_sync``): the registry takes that sync's result (one sync, not two),
and a sync that fails still fails the get with its own one-line error, leaving nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli, tree_bytes
from uniflow._errors import RemoteError
from uniflow.sharing import mirror as mirror_mod
from uniflow.sharing.giturl import parse_git_url
from uniflow.sharing.mirror import Mirror, begin_sync, sync_state


def _mirror(url: str, cache_dir: Path) -> Mirror:
    parsed = parse_git_url(url)
    assert parsed is not None
    return Mirror(parsed, cache_dir)


def test_a_get_lists_the_remote_once(published: dict[str, Any], empty_dir: Path, tmp_path: Path) -> None:
    """The sync begun early is the one the registry uses: one ls-remote per get."""
    counts = tmp_path / "counts"
    counts.mkdir()
    url = f"file://{published['bare']}"
    env = {"UNIFLOW_TEST_COUNT_DIR": str(counts)}
    cli(empty_dir, "get", url, "clf", "--stage", "production", "-o", "out", env=env)
    assert tree_bytes(empty_dir / "out") == tree_bytes(published["v1"])
    points = (counts / "points").read_text().split()
    assert points.count("mirror-sync-listed") == 1


def test_a_begun_sync_is_taken_once(
    published: dict[str, Any], cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sync_state waits for the sync begin_sync started and returns its state; the next
    sync_state of the same mirror syncs again (a refresh sees the remote as it is then)."""
    calls: list[bool] = []
    real = Mirror.sync

    def counted(self: Mirror, *, offline: bool = False, history: bool = False) -> mirror_mod.MirrorState:
        calls.append(offline)
        return real(self, offline=offline, history=history)

    monkeypatch.setattr(Mirror, "sync", counted)
    m = _mirror(f"file://{published['bare']}", cache_dir)
    begin_sync(m)
    begin_sync(m)  # one under way already: not a second
    state = sync_state(m)
    assert state.fetched and state.refs and calls == [False]
    again = sync_state(m)
    assert calls == [False, False] and again.refs == state.refs and not again.fetched


def test_a_failed_early_sync_is_raised_where_the_registry_opens(tmp_path: Path, cache_dir: Path) -> None:
    """The error of a sync run on the thread is the sync's own, raised to the caller."""
    m = _mirror(f"file://{tmp_path / 'nothing-here.git'}", cache_dir)
    begin_sync(m)
    with pytest.raises(RemoteError, match="cannot read the Git repository"):
        sync_state(m)
    with pytest.raises(RemoteError, match="cannot read the Git repository"):
        sync_state(m)  # taken once: this one is a sync of its own, failing the same way


def test_a_get_whose_sync_fails_leaves_nothing_and_says_why(empty_dir: Path, tmp_path: Path) -> None:
    """A get whose mirror cannot be synced fails with one line and leaves no DIR, nothing
    staged beside it; --offline with a mirror never fetched says to go online."""
    deploy = empty_dir / "deploy"
    deploy.mkdir()
    url = f"file://{tmp_path / 'nothing-here.git'}"
    r = cli(empty_dir, "get", url, "clf", "-o", str(deploy / "clf"), code=None)
    assert r.returncode != 0 and "cannot read the Git repository" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = cli(empty_dir, "get", url, "clf", "-o", str(deploy / "clf"), "--offline", code=None)
    assert r.returncode != 0 and "never fetched" in r.stderr and r.stderr.count("\n") == 1
    assert list(deploy.iterdir()) == []


def _packs(mirror: Mirror) -> int:
    return len(list((mirror.dir / "objects" / "pack").glob("*.pack")))


def test_a_mirror_synced_again_and_again_keeps_a_bounded_number_of_packs(
    published: dict[str, Any], empty_dir: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every sync that fetches adds packs to the mirror (git's own auto gc is off there), and
    a read looks an object up pack by pack: a deploy job's cache synced after every promotion
    would slow down for ever. Past ``MIRROR_PACK_LIMIT`` packs a sync repacks them into one,
    under its lock; reads after it get the same verified bytes."""
    from tests.helpers import model_dir, open_registry

    monkeypatch.setattr(mirror_mod, "MIRROR_PACK_LIMIT", 4)
    url = f"file://{published['bare']}"
    m = _mirror(url, cache_dir)
    reg = open_registry(published["clone"])
    counts = []
    for i in range(8):
        reg.register(model=str(model_dir(empty_dir.parent / f"new{i}", 1, seed=40 + i)), name="clf")
        reg.promote("clf", ("v1.1.0", "v1.0.0")[i % 2], "staging" if i % 2 == 0 else "production")
        reg.push()
        assert m.sync().fetched
        counts.append(_packs(m))
    newest = reg.get("clf").version
    reg.close()
    assert max(counts) <= 4, counts
    assert counts != sorted(counts), counts  # consolidated on the way, not merely slow to grow
    cli(empty_dir, "get", url, "clf", "--stage", "production", "-o", "out", "--offline")
    assert tree_bytes(empty_dir / "out") == tree_bytes(published["v1"])
    cli(empty_dir, "get", url, "clf", newest, "-o", "out2")
    assert tree_bytes(empty_dir / "out2") == tree_bytes(empty_dir.parent / "new7")
