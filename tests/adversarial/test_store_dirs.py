"""The store (`.git/uniflow`: objects, tmp, cache) is never written, linked or deleted through a
symlink found in place of one of its directories (or a fan-out directory below them); it
refuses with one line naming the path. A clone may carry `.uniflow/tmp`, `.uniflow/objects`,
`.uniflow/cache` (where the store lived before it moved into the Git directory) as committed
symlinks: `.gitignore` does not stop tracked files. Those are not the store and are never followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import cli, git


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    os.utime(victim / "keep.txt", (1, 1))  # old: any clean-up by age would take it
    return victim


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _clone_with_link(tmp_path: Path, repo: Path, link: str, target: Path) -> Path:
    """Commit ``.uniflow/<link>`` as a symlink to ``target`` upstream, then clone it."""
    path = repo / ".uniflow" / link
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target, target_is_directory=True)
    git(repo, "add", "-f", f".uniflow/{link}")
    git(repo, "commit", "-q", "-m", "innocent")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    assert (clone / ".uniflow" / link).is_symlink()
    return clone


LINKS = ["tmp", "objects", "packs", "cache", "cache/files", "cache/versions", "cache/git"]


def _register_and_gc(clone: Path, link: str) -> None:
    model = clone / "weights.bin"
    model.write_bytes(os.urandom(3 << 20))
    r = cli(clone, "models", "register", str(model), "--name", "m", code=None)
    if link == "cache/git":
        # the derived cache is only an accelerator: it switches itself off instead
        assert r.returncode == 0, r.stderr
        cli(clone, "models", "list")
        cli(clone, "models", "show", "m")
    else:
        assert r.returncode == 8, (r.stdout, r.stderr)
        assert "symlink" in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    cli(clone, "gc", "--yes", "--grace", "0", code=None)


@pytest.mark.parametrize("link", LINKS)
def test_symlinked_store_directory_is_refused(tmp_path: Path, repo: Path, link: str) -> None:
    victim = _victim(tmp_path)
    before = _snapshot(victim)
    path = repo / ".git" / "uniflow" / link
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(victim, target_is_directory=True)
    _register_and_gc(repo, link)
    assert _snapshot(victim) == before
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("link", LINKS)
def test_committed_symlink_at_the_old_store_is_never_followed(tmp_path: Path, repo: Path, link: str) -> None:
    victim = _victim(tmp_path)
    before = _snapshot(victim)
    clone = _clone_with_link(tmp_path, repo, link, victim)
    model = clone / "weights.bin"
    model.write_bytes(os.urandom(3 << 20))
    cli(clone, "models", "register", str(model), "--name", "m")  # the store is in .git/uniflow
    cli(clone, "models", "export", "m", str(tmp_path / "out"))
    cli(clone, "gc", "--yes", "--grace", "0")
    assert _snapshot(victim) == before
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert (clone / ".uniflow" / link).is_symlink()


def test_symlinked_fanout_directory_is_never_written_through(tmp_path: Path, repo: Path) -> None:
    """Every fan-out directory a chunk goes to is checked, whatever its name."""
    from uniflow import ModelRegistry, RepositoryError

    victim = _victim(tmp_path)
    before = _snapshot(victim)
    reg = ModelRegistry(repo)
    data = os.urandom(100 << 10)  # below the minimum chunk size: one chunk named by its digest
    import blake3

    digest = blake3.blake3(data).hexdigest()
    fan = repo / ".git" / "uniflow" / "objects" / digest[:2]
    fan.parent.mkdir(parents=True, exist_ok=True)
    fan.symlink_to(victim, target_is_directory=True)
    (tmp_path / "w.bin").write_bytes(data)
    reg.register(str(tmp_path / "w.bin"), name="m")  # its chunk goes to a pack: no fan-out
    with pytest.raises(RepositoryError, match="symlink"):
        reg.store.add_verified(digest, data)  # a chunk fetched from a blob remote is a file
    reg.gc(dry_run=False, grace_seconds=0, repack=True)
    assert _snapshot(victim) == before
    assert reg.verify().ok
