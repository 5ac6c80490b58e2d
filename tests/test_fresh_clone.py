"""A fresh ``git clone`` brings the version tags but not ``refs/uniflow/*``: reads say to run
``uniflow pull`` instead of reporting every version in development, and ``uniflow push``
fetches the lifecycles the clone lacks and builds on them instead of calling it a conflict.
Real git throughout: a bare origin, two clones, then a fresh clone of the origin."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import cli, clone, git, log_subjects, model_dir, open_registry, shared_setup
from uniflow import PushRejectedError, StageEmptyError


@pytest.fixture
def origin(tmp_path: Path) -> tuple[Path, Path]:
    """Clone ``a`` registers clf v1.0.0 and v1.1.0 and puts v1.0.0 in production; clone ``b``
    pulls, puts v1.1.0 in production; both push. Returns ``(bare origin, b)``."""
    bare, a = shared_setup(tmp_path)
    ra = open_registry(a)
    for i, v in enumerate(("v1.0.0", "v1.1.0")):
        ra.register(str(model_dir(tmp_path / f"src{i}", 2, seed=40 + i)), "clf", version=v)
    ra.promote("clf", "v1.0.0", "production")
    ra.push()
    b = clone(bare, tmp_path / "b")
    cli(b, "pull")
    cli(b, "models", "promote", "clf", "v1.1.0", "--to", "production")
    cli(b, "push")
    return bare, b


def test_reads_in_a_fresh_clone_say_to_run_uniflow_pull(origin: tuple[Path, Path], tmp_path: Path) -> None:
    bare, _b = origin
    c = clone(bare, tmp_path / "c")
    assert "refs/tags/models/clf/v1.1.0" in git(c, "for-each-ref")
    assert "refs/uniflow/" not in git(c, "for-each-ref")

    r = cli(c, "models", "show", "clf", "--stage", "production", code=None)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "uniflow pull" in r.stderr, r.stderr
    r = cli(c, "models", "list", "clf")
    assert "uniflow pull" in r.stderr, r.stderr
    assert "v1.1.0" in r.stdout  # the versions are still listed
    r = cli(c, "models", "list")
    assert "uniflow pull" in r.stderr, r.stderr
    with pytest.raises(StageEmptyError) as info:  # the Python API says it too
        open_registry(c).get("clf", stage="production")
    assert "uniflow pull" in str(info.value) and "\n" not in str(info.value)

    cli(c, "pull")  # after a pull: no hint, the right holder
    r = cli(c, "models", "show", "clf", "--stage", "production")
    assert "v1.1.0" in r.stdout and "uniflow pull" not in r.stderr
    r = cli(c, "models", "list")
    assert "uniflow pull" not in r.stderr


def test_no_hint_without_a_git_remote(tmp_path: Path, repo: Path) -> None:
    w = tmp_path / "w.bin"
    w.write_bytes(b"x" * 1000)
    cli(repo, "models", "register", str(w), "--name", "clf", "--version", "v1.0.0")
    r = cli(repo, "models", "show", "clf", "--stage", "production", code=3)
    assert "uniflow pull" not in r.stderr


def test_push_from_a_fresh_clone_builds_on_the_remote_lifecycle(
    origin: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, b = origin
    remote_head = git(bare, "rev-parse", "refs/uniflow/models/clf").strip()
    remote_log = log_subjects(bare, "refs/uniflow/models/clf")
    c = clone(bare, tmp_path / "c")
    src = model_dir(tmp_path / "src-c", 2, seed=77)
    cli(c, "models", "register", str(src), "--name", "clf", "--version", "v2.0.0")
    cli(c, "models", "promote", "clf", "v2.0.0", "--to", "production")

    cli(c, "push")  # no --ours, no pull first

    new_head = git(bare, "rev-parse", "refs/uniflow/models/clf").strip()
    assert new_head != remote_head
    git(bare, "merge-base", "--is-ancestor", remote_head, new_head)  # the remote's history is kept
    pushed_log = log_subjects(bare, "refs/uniflow/models/clf")
    assert pushed_log[-len(remote_log) :] == remote_log
    assert any("promote clf v2.0.0" in s and "(v1.1.0 -> archived)" in s for s in pushed_log)
    assert (
        git(bare, "rev-parse", "refs/uniflow/stages/clf/production").strip()
        == git(bare, "rev-parse", "refs/tags/models/clf/v2.0.0").strip()
    )
    # the clone itself now holds the same lifecycle, and the other clone pulls it cleanly
    assert git(c, "rev-parse", "refs/uniflow/models/clf").strip() == new_head
    rc = open_registry(c)
    assert rc.get("clf", stage="production").version == "v2.0.0"
    assert rc.get("clf", "v1.1.0").stage == "archived"
    cli(b, "pull")
    rb = open_registry(b)
    assert rb.get("clf", stage="production").version == "v2.0.0"
    assert [e.version for e in rb.history("clf")][:4] == ["v1.0.0", "v1.1.0", "v1.0.0", "v1.1.0"]


def test_push_from_a_fresh_clone_adopts_a_lifecycle_it_lacks(
    origin: tuple[Path, Path], tmp_path: Path
) -> None:
    """A clone that registers another model only: clf's lifecycle is fetched on the way."""
    bare, _b = origin
    remote_head = git(bare, "rev-parse", "refs/uniflow/models/clf").strip()
    c = clone(bare, tmp_path / "c")
    cli(c, "models", "register", str(model_dir(tmp_path / "src-o", 1, seed=5)), "--name", "other")
    cli(c, "push")
    assert git(bare, "rev-parse", "refs/uniflow/models/clf").strip() == remote_head
    assert git(c, "rev-parse", "refs/uniflow/models/clf").strip() == remote_head
    assert open_registry(c).get("clf", stage="production").version == "v1.1.0"
    assert "refs/uniflow/models/other" in git(bare, "for-each-ref")


def test_diverged_lifecycles_are_still_a_conflict(origin: tuple[Path, Path], tmp_path: Path) -> None:
    """Both sides built on the same lifecycle and changed the same stage: push refuses."""
    bare, b = origin
    c = clone(bare, tmp_path / "c")
    cli(c, "pull")
    cli(b, "models", "promote", "clf", "v1.0.0", "--to", "production")
    cli(b, "push")
    cli(c, "models", "promote", "clf", "v1.0.0", "--to", "staging")
    with pytest.raises(PushRejectedError) as info:
        open_registry(c).push()
    assert "uniflow pull" in str(info.value)


def test_a_version_registered_again_in_a_fresh_clone_keeps_its_stage(
    origin: tuple[Path, Path], tmp_path: Path
) -> None:
    """An idempotent register (same files, same version, e.g. a CI job) in a fresh clone
    records a register event there; pushed, it does not send the version back to development."""
    bare, _b = origin
    c = clone(bare, tmp_path / "c")
    cli(c, "models", "register", str(tmp_path / "src1"), "--name", "clf", "--version", "v1.1.0")
    cli(c, "models", "register", str(model_dir(tmp_path / "src-c", 1, seed=9)), "--name", "clf")
    cli(c, "models", "promote", "clf", "v1.1.1", "--to", "staging")
    cli(c, "push")
    rc = open_registry(c)
    assert rc.get("clf", stage="production").version == "v1.1.0"
    assert rc.get("clf", stage="staging").version == "v1.1.1"
    assert (
        git(bare, "rev-parse", "refs/uniflow/stages/clf/production").strip()
        == git(bare, "rev-parse", "refs/tags/models/clf/v1.1.0").strip()
    )
