"""Work trees of one repository share one chunk store, kept under the common Git directory.

Refs are shared by every work tree (``git worktree add``), so the bytes must be too: a version
registered in a linked work tree is complete in the main one, survives ``git worktree remove``
and is pushed from there. A store of the old layout (``<work tree>/.uniflow/objects``) is
moved on first use without losing a chunk, also when the move is killed or run twice at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import GIT_ENV, ROOT, cli, git, make_repo, shared_setup, stored_chunk_bytes


def _common_store(repo: Path) -> Path:
    return Path(git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir").strip()) / "uniflow"


def _chunks(objects: Path) -> dict[str, bytes]:
    return {p.parent.name + p.name: p.read_bytes() for p in objects.glob("*/*") if p.is_file()}


def _export(repo: Path, dest: Path, *args: str) -> bytes:
    cli(repo, "models", "export", "m", str(dest), *args)
    return (dest / "w.bin").read_bytes()


def _worktree(repo: Path, tmp_path: Path) -> Path:
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "side", str(wt))
    return wt


# ---------------------------------------------------------------------- work trees share the store
def test_version_registered_in_a_worktree_is_complete_in_the_main_one(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    wt = _worktree(repo, tmp_path)
    data = os.urandom(3 << 20)
    (tmp_path / "w.bin").write_bytes(data)
    cli(wt, "models", "register", str(tmp_path / "w.bin"), "--name", "m")
    cli(repo, "verify")  # exited 5 (chunks missing) while the store lived in each work tree
    assert _export(repo, tmp_path / "out1") == data
    git(repo, "worktree", "remove", "--force", str(wt))
    assert not wt.exists()
    assert _export(repo, tmp_path / "out2") == data  # nothing went with the work tree
    cli(repo, "verify")
    assert not (wt / ".uniflow" / "objects").exists() and not (repo / ".uniflow" / "objects").exists()
    assert stored_chunk_bytes(_common_store(repo))


def test_push_from_the_main_worktree_sends_the_bytes_registered_in_another(tmp_path: Path) -> None:
    _bare, a = shared_setup(tmp_path)
    wt = _worktree(a, tmp_path)
    (tmp_path / "w.bin").write_bytes(os.urandom(2 << 20))
    cli(wt, "models", "register", str(tmp_path / "w.bin"), "--name", "m")
    cli(a, "push")  # exited 5: the chunks were only in the other work tree's .uniflow/objects
    sent = stored_chunk_bytes(tmp_path / "blobs")  # a directory remote: chunk files and packs
    assert sent == stored_chunk_bytes(_common_store(a)) and sent


def test_a_symlink_at_the_store_is_never_written_through(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    victim = tmp_path / "victim"
    victim.mkdir()
    _common_store(repo).symlink_to(victim, target_is_directory=True)
    (tmp_path / "w.bin").write_bytes(os.urandom(1 << 20))
    r = cli(repo, "models", "register", str(tmp_path / "w.bin"), "--name", "m", code=8)
    assert "symlink" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert list(victim.iterdir()) == []


# ---------------------------------------------------------------------- moving the old layout
def _old_layout(tmp_path: Path, versions: int = 3) -> tuple[Path, dict[str, bytes]]:
    """A repository whose chunks lie where uniflow 0.2 kept them, ``.uniflow/objects``, with a
    gc's set-aside chunk in ``.uniflow/tmp/gc.*`` and a materialized-file cache."""
    repo = make_repo(tmp_path / "repo")
    for i in range(versions):
        (tmp_path / "w.bin").write_bytes(os.urandom(3 << 20))
        cli(repo, "models", "register", str(tmp_path / "w.bin"), "--name", "m", "--version", f"v1.0.{i}")
    store = _common_store(repo)
    chunks = stored_chunk_bytes(store)  # in packs: the old layout had chunk files only
    legacy = repo / ".uniflow"
    shutil.rmtree(store)
    for digest, data in chunks.items():
        path = legacy / "objects" / digest[:2] / digest[2:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o444)
    # one chunk was set aside by a gc that died before it could restore it
    aside_digest = sorted(chunks)[0]
    aside = legacy / "tmp" / "gc.host_1_1.0123abcd"
    aside.mkdir(parents=True)
    os.rename(legacy / "objects" / aside_digest[:2] / aside_digest[2:], aside / aside_digest)
    (legacy / "tmp" / "pins").mkdir()
    (legacy / "cache" / "files" / "ab").mkdir(parents=True)
    (legacy / "cache" / "files" / "ab" / ("ab" + "0" * 62)).write_bytes(b"stale cache")
    return repo, chunks


def _assert_moved(repo: Path, chunks: dict[str, bytes]) -> None:
    assert _chunks(_common_store(repo) / "objects") == chunks
    for name in ("objects", "tmp", "cache"):
        assert not (repo / ".uniflow" / name).exists(), name
    assert (repo / ".uniflow" / "config.toml").is_file()  # the committed part stays


def test_old_layout_is_moved_on_first_use(tmp_path: Path) -> None:
    repo, chunks = _old_layout(tmp_path)
    cli(repo, "verify")
    _assert_moved(repo, chunks)
    cli(repo, "models", "export", "m", "v1.0.0", str(tmp_path / "out"))


def _run(repo: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    full = {**os.environ, **GIT_ENV, "PYTHONPATH": str(ROOT), **env}
    return subprocess.Popen(
        [sys.executable, "-m", "uniflow", *args],
        cwd=repo,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    "point", ["store-migrate-linked", "store-migrate-unlinked", "store-migrate-chunks-moved"]
)
def test_move_killed_midway_loses_nothing_and_completes(tmp_path: Path, point: str) -> None:
    repo, chunks = _old_layout(tmp_path)
    p = _run(repo, "verify", env={"UNIFLOW_TEST_KILL_AT": point})
    _out, err = p.communicate(timeout=120)
    assert p.returncode == -9, err  # killed at that point, no clean-up of any kind
    on_disk = _chunks(_common_store(repo) / "objects") | _chunks(repo / ".uniflow" / "objects")
    on_disk |= {p.name: p.read_bytes() for p in (repo / ".uniflow" / "tmp").glob("gc.*/*")}
    assert on_disk == chunks  # every chunk is in one place or the other at every step
    cli(repo, "verify")
    _assert_moved(repo, chunks)


def test_two_processes_moving_at_once_lose_nothing(tmp_path: Path) -> None:
    repo, chunks = _old_layout(tmp_path)
    pause = tmp_path / "pause"
    pause.mkdir()
    held = _run(
        repo,
        "verify",
        env={"UNIFLOW_TEST_PAUSE_AT": "store-migrate-linked", "UNIFLOW_TEST_PAUSE_DIR": str(pause)},
    )
    deadline = time.monotonic() + 60
    while not (pause / "paused").exists() and time.monotonic() < deadline:  # bounded wait
        time.sleep(0.02)
    assert (pause / "paused").exists(), held.communicate(timeout=60)
    cli(repo, "verify")  # the second process moves everything while the first holds
    _assert_moved(repo, chunks)
    (pause / "go").touch()
    _out, err = held.communicate(timeout=120)
    assert held.returncode == 0, err
    _assert_moved(repo, chunks)


def test_processes_started_together_all_see_every_chunk(tmp_path: Path) -> None:
    repo, chunks = _old_layout(tmp_path)
    procs = [_run(repo, "verify", env={}) for _ in range(3)]
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    _assert_moved(repo, chunks)


def test_a_symlink_at_the_old_location_is_never_followed(tmp_path: Path) -> None:
    """A clone may carry ``.uniflow/objects`` as a committed symlink: it is not the store, and
    nothing is moved, linked or deleted through it."""
    repo = make_repo(tmp_path / "repo")
    victim = tmp_path / "victim"
    (victim / "ab").mkdir(parents=True)
    (victim / "ab" / ("c" * 62)).write_bytes(b"precious")
    (repo / ".uniflow").mkdir()
    (repo / ".uniflow" / "objects").symlink_to(victim, target_is_directory=True)
    (tmp_path / "w.bin").write_bytes(os.urandom(1 << 20))
    cli(repo, "models", "register", str(tmp_path / "w.bin"), "--name", "m")
    cli(repo, "verify")
    cli(repo, "gc", "--yes", "--grace", "0")
    assert (victim / "ab" / ("c" * 62)).read_bytes() == b"precious"
    assert sorted(p.name for p in victim.iterdir()) == ["ab"]
    assert (repo / ".uniflow" / "objects").is_symlink()


def test_old_store_on_another_filesystem_is_copied(tmp_path: Path) -> None:
    """A linked work tree on another filesystem than the Git directory: its old store cannot be
    hard-linked into the common one, so each chunk is copied (fsynced) before its old name goes."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's directory")
    import tempfile

    repo, chunks = _old_layout(tmp_path)
    with tempfile.TemporaryDirectory(dir=shm, prefix="uniflow-test-wt-") as other:
        wt = Path(other) / "wt"
        git(repo, "worktree", "add", "-q", "-b", "side", str(wt))
        shutil.copytree(repo / ".uniflow" / "objects", wt / ".uniflow" / "objects")
        shutil.rmtree(repo / ".uniflow" / "objects")
        cli(wt, "verify")
        assert _chunks(_common_store(repo) / "objects") == chunks
        assert not (wt / ".uniflow" / "objects").exists()
        git(repo, "worktree", "remove", "--force", str(wt))
    cli(repo, "verify")
    _assert_moved(repo, chunks)


@pytest.mark.parametrize("relative", [False, True])
def test_old_stores_of_every_worktree_are_moved_by_any_of_them(tmp_path: Path, relative: bool) -> None:
    """Versions registered by the old layout in a linked work tree are complete in the main one
    after the first command there: every work tree Git lists is swept (its ``gitdir`` file
    absolute, or relative as ``worktree.useRelativePaths`` writes it since Git 2.48)."""
    repo, chunks = _old_layout(tmp_path)
    wt = _worktree(repo, tmp_path)
    shutil.move(repo / ".uniflow" / "objects", wt / ".uniflow" / "objects")
    if relative:
        (admin,) = (repo / ".git" / "worktrees").iterdir()
        (admin / "gitdir").write_text(os.path.relpath(wt / ".git", admin) + "\n")
    cli(repo, "verify")
    _assert_moved(repo, chunks)
    assert not (wt / ".uniflow" / "objects").exists()


def test_reads_create_no_store_and_git_leaves_it_alone(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    cli(repo, "models", "list")
    assert not _common_store(repo).exists()  # a read creates nothing
    (tmp_path / "w.bin").write_bytes(os.urandom(1 << 20))
    cli(repo, "models", "register", str(tmp_path / "w.bin"), "--name", "m")
    before = stored_chunk_bytes(_common_store(repo))
    assert before
    for args in (["fsck", "--strict"], ["gc", "--prune=now", "-q"], ["count-objects", "-v"]):
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "uniflow" not in out.stderr, (args, out.stderr)
    assert stored_chunk_bytes(_common_store(repo)) == before
    cli(repo, "verify")
