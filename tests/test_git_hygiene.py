"""Git's own maintenance runs silently on a registry: uniflow keeps a reflog only where git
would (``core.logAllRefUpdates``), never for a version tag or a stage pointer (both hold an
annotated tag; ``git gc`` reports "not a commit" / "is a commit, not a tag" for every line
of such a reflog), and removes the ones older versions wrote."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers import GIT_ENV, cli, git


def _git_stderr(repo: Path, *args: str) -> str:
    """Run git; assert exit 0 and return what it printed on stderr."""
    env = {**os.environ, **GIT_ENV}
    r = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (args, r.stderr)
    return r.stderr


def _reflogs(repo: Path, under: str = "") -> list[str]:
    base = repo / ".git" / "logs"
    return sorted(p.relative_to(base).as_posix() for p in (base / under).rglob("*") if p.is_file())


def _registry(repo: Path, tmp_path: Path) -> Path:
    """Model ``clf``: three versions, v1.0.0 then v1.1.0 in production (v1.0.0 archived),
    v1.2.0 in staging; model ``arr``: one version in production."""
    w = tmp_path / "w.bin"
    for i, (name, v) in enumerate(
        (("clf", "v1.0.0"), ("clf", "v1.1.0"), ("clf", "v1.2.0"), ("arr", "v0.1.0"))
    ):
        w.write_bytes(bytes([i]) * 4000 + os.urandom(4000))
        cli(repo, "models", "register", str(w), "--name", name, "--version", v)
    for name, v, stage in (
        ("clf", "v1.0.0", "production"),
        ("clf", "v1.1.0", "production"),
        ("clf", "v1.2.0", "staging"),
        ("arr", "v0.1.0", "production"),
    ):
        cli(repo, "models", "promote", name, v, "--to", stage)
    return repo


def _plant_old_reflogs(repo: Path) -> list[str]:
    """The reflogs the old code wrote for a version tag and a stage pointer (dulwich's line
    format: old new ident time zone TAB message)."""
    planted = []
    for ref, msg in (
        ("refs/tags/models/clf/v1.0.0", "uniflow: register clf v1.0.0"),
        ("refs/uniflow/stages/clf/production", "uniflow: stage pointer"),
    ):
        sha = git(repo, "rev-parse", ref).strip()
        log = repo / ".git" / "logs" / ref
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"{'0' * 40} {sha} Test User <test@example.com> 1700000000 +0000\t{msg}\n")
        planted.append(ref)
    return planted


def _git_maintenance(repo: Path) -> None:
    """gc, repack, pack-refs and a strict fsck: each exits 0 and prints no error or warning."""
    for args in (
        ("gc", "--aggressive", "--prune=now"),
        ("repack", "-adf"),
        ("pack-refs", "--all"),
        ("fsck", "--strict"),
    ):
        err = _git_stderr(repo, *args)
        assert err == "", (args, err)


def _assert_everything_loads(repo: Path, out: Path, production: str) -> None:
    """Every version exports (its files verified), production is ``production``, verify is clean."""
    r = cli(repo, "models", "show", "clf", "--stage", "production", "--json")
    assert f'"{production}"' in r.stdout
    for v in ("v1.0.0", "v1.1.0", "v1.2.0"):
        cli(repo, "models", "export", "clf", v, str(out / v))
        assert (out / v / "w.bin").is_file()
    cli(repo, "verify")


def test_a_registry_writes_no_reflog_git_would_not(repo: Path, tmp_path: Path) -> None:
    _registry(repo, tmp_path)
    # git's default in a work tree (core.logAllRefUpdates=true): branches, remotes, notes, HEAD
    assert _reflogs(repo, "refs/tags") == []
    assert _reflogs(repo, "refs/uniflow") == []
    assert _reflogs(repo) == ["HEAD", "refs/heads/main"]


def test_log_all_ref_updates_always_logs_lifecycles_but_never_a_tag(repo: Path, tmp_path: Path) -> None:
    git(repo, "config", "core.logAllRefUpdates", "always")
    _registry(repo, tmp_path)
    assert _reflogs(repo, "refs/tags") == []
    assert _reflogs(repo, "refs/uniflow") == ["refs/uniflow/models/arr", "refs/uniflow/models/clf"]
    subjects = [
        ln.split("\t", 1)[1] for ln in (repo / ".git/logs/refs/uniflow/models/clf").read_text().splitlines()
    ]
    assert len(subjects) == 6 and all(s.startswith("uniflow: ") for s in subjects)
    _git_maintenance(repo)
    _assert_everything_loads(repo, tmp_path / "out", "v1.1.0")


def test_git_maintenance_is_silent_after_the_next_write_removes_old_reflogs(
    repo: Path, tmp_path: Path
) -> None:
    _registry(repo, tmp_path)
    planted = _plant_old_reflogs(repo)
    assert _reflogs(repo, "refs/tags") and _reflogs(repo, "refs/uniflow/stages")
    # what git said about such a registry before: one error per reflog line
    probe = tmp_path / "probe"
    git(tmp_path, "clone", "-q", "--mirror", str(repo), str(probe))
    for ref in planted:
        (probe / "logs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (probe / "logs" / ref).write_bytes((repo / ".git" / "logs" / ref).read_bytes())
    assert "not a commit" in _git_stderr(probe, "gc", "--prune=now")

    cli(repo, "models", "promote", "clf", "v1.2.0", "--to", "production")  # the next write
    assert _reflogs(repo, "refs/tags") == []
    assert _reflogs(repo, "refs/uniflow") == []
    _git_maintenance(repo)
    _assert_everything_loads(repo, tmp_path / "out", "v1.2.0")
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/uniflow/stages/clf").split() == [
        "refs/uniflow/stages/clf/production"
    ]


def test_deleting_a_stage_pointer_removes_its_reflog(repo: Path, tmp_path: Path) -> None:
    git(repo, "config", "core.logAllRefUpdates", "always")
    _registry(repo, tmp_path)
    _plant_old_reflogs(repo)
    cli(repo, "models", "archive", "clf", "v1.2.0")  # staging is left empty: its pointer goes
    assert "refs/uniflow/stages/clf/staging" not in git(repo, "for-each-ref")
    assert _reflogs(repo, "refs/uniflow/stages") == []
    assert _reflogs(repo, "refs/tags") == []
    _git_maintenance(repo)


def test_verify_repair_removes_old_tag_reflogs(repo: Path, tmp_path: Path) -> None:
    _registry(repo, tmp_path)
    _plant_old_reflogs(repo)
    r = cli(repo, "verify", "--repair")
    assert "removed the reflog of refs/tags/models/clf/v1.0.0" in r.stdout
    assert "removed the reflog of refs/uniflow/stages/clf/production" in r.stdout
    assert _reflogs(repo, "refs/tags") == [] and _reflogs(repo, "refs/uniflow") == []
    _git_maintenance(repo)
    _assert_everything_loads(repo, tmp_path / "out", "v1.1.0")
    r = cli(repo, "verify", "--repair", "--json")  # nothing left to repair
    assert '"repaired": []' in r.stdout
