"""A clone may carry `.uniflow/tmp`, `.uniflow/objects`, `.uniflow/cache` (or a fan-out directory
below them) as committed symlinks: `.gitignore` does not stop tracked files. The store never
writes, links or deletes through such a link; it refuses with one line naming the path."""

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


@pytest.mark.parametrize("link", ["tmp", "objects", "cache", "cache/files", "cache/versions", "cache/git"])
def test_symlinked_store_directory_is_refused(tmp_path: Path, repo: Path, link: str) -> None:
    victim = _victim(tmp_path)
    before = _snapshot(victim)
    clone = _clone_with_link(tmp_path, repo, link, victim)
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
    assert _snapshot(victim) == before
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]


def test_symlinked_fanout_directory_is_never_written_through(tmp_path: Path, repo: Path) -> None:
    """Every fan-out directory a chunk goes to is checked, whatever its name."""
    from uniflow import ModelRegistry, RepositoryError

    victim = _victim(tmp_path)
    before = _snapshot(victim)
    reg = ModelRegistry(repo)
    data = os.urandom(100 << 10)  # below the minimum chunk size: one chunk named by its digest
    import blake3

    digest = blake3.blake3(data).hexdigest()
    fan = repo / ".uniflow" / "objects" / digest[:2]
    fan.parent.mkdir(parents=True, exist_ok=True)
    fan.symlink_to(victim, target_is_directory=True)
    (tmp_path / "w.bin").write_bytes(data)
    with pytest.raises(RepositoryError, match="symlink"):
        reg.register(str(tmp_path / "w.bin"), name="m")
    reg.gc(dry_run=False, grace_seconds=0)
    assert _snapshot(victim) == before
