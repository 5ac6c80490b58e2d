"""gc never deletes a chunk a register in flight needs (issue 9, item 4).

Each register below is held at ``register-before-tag`` (its chunks stored, its tag not yet
created) while a real ``uniflow gc --yes`` runs in another process; then it is released and
the version it created must be whole.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.adversarial._inflight import Held, age, files_under, kill_at, run_cli
from tests.helpers import cli, git, model_dir, tree_bytes
from uniflow import ModelRegistry


def _objects(repo: Path) -> list[Path]:
    return sorted((repo / ".git" / "uniflow" / "objects").glob("*/*"))


def _register_args(src: Path, version: str) -> tuple[str, ...]:
    return ("models", "register", str(src), "--name", "m", "--version", version)


def _assert_whole(repo: Path, src: Path, version: str) -> None:
    r = cli(repo, "verify", code=None)
    assert r.returncode == 0, f"the version registered during gc is broken:\n{r.stdout}{r.stderr}"
    assert tree_bytes(ModelRegistry(repo).load_path("m", version)) == tree_bytes(src)


def test_gc_spares_old_chunks_that_a_register_in_flight_reuses(repo: Path, tmp_path: Path) -> None:
    src = model_dir(tmp_path / "src", 80, seed=1)
    cli(repo, *_register_args(src, "v1.0.0"))
    git(repo, "update-ref", "-d", "refs/tags/models/m/v1.0.0")  # that version is gone: its chunks are garbage
    chunks = _objects(repo)
    assert len(chunks) == 80
    age(chunks, 2 * 3600)  # older than the default grace period (1 h)

    held = Held(repo, tmp_path / "gate", "register-before-tag", *_register_args(src, "v2.0.0"))
    held.wait_paused()  # the register found all 80 chunks present and relies on them
    cli(repo, "gc", "--yes")
    pins = repo / ".git" / "uniflow" / "tmp" / "pins"
    pinned_during_gc = list(pins.iterdir()) if pins.is_dir() else []
    done = held.release()
    assert done.returncode == 0, done.stderr
    _assert_whole(repo, src, "v2.0.0")
    assert pinned_during_gc, "gc removed the pin of a live register"
    assert list(pins.iterdir()) == []  # released once the tag existed


def test_gc_with_no_grace_spares_fresh_chunks_of_a_register_in_flight(repo: Path, tmp_path: Path) -> None:
    garbage = model_dir(tmp_path / "garbage", 5, seed=2)
    cli(repo, *_register_args(garbage, "v0.1.0"))
    git(repo, "update-ref", "-d", "refs/tags/models/m/v0.1.0")
    dead = set(_objects(repo))
    src = model_dir(tmp_path / "src", 40, seed=3)

    held = Held(repo, tmp_path / "gate", "register-before-tag", *_register_args(src, "v1.0.0"))
    held.wait_paused()
    report = json.loads(cli(repo, "gc", "--yes", "--grace", "0s", "--json").stdout)
    done = held.release()
    assert done.returncode == 0, done.stderr
    _assert_whole(repo, src, "v1.0.0")
    # gc still collected what nobody needs
    assert not dead & set(_objects(repo))
    assert report["deleted_chunks"] == 5
    assert report["spared_in_flight"] == 40


def test_gc_removes_the_pin_and_temp_files_of_a_killed_register(repo: Path, tmp_path: Path) -> None:
    src = model_dir(tmp_path / "src", 10, seed=4)
    r = run_cli(repo, *_register_args(src, "v1.0.0"), extra=kill_at("register-before-tag"))
    assert r.returncode == -9, r.stderr
    pins = repo / ".git" / "uniflow" / "tmp" / "pins"
    assert len(list(pins.iterdir())) == 1  # the dead register's pin
    cli(repo, "gc", "--yes", "--grace", "0s")
    assert files_under(repo / ".git" / "uniflow" / "tmp") == []
    assert _objects(repo) == []  # its chunks were garbage once its owner died
    cli(repo, *_register_args(src, "v1.0.0"))
    _assert_whole(repo, src, "v1.0.0")


def test_a_gc_killed_after_moving_chunks_aside_loses_none_of_them(repo: Path, tmp_path: Path) -> None:
    src = model_dir(tmp_path / "src", 30, seed=5)
    held = Held(repo, tmp_path / "gate", "register-before-tag", *_register_args(src, "v1.0.0"))
    held.wait_paused()
    r = run_cli(repo, "gc", "--yes", "--grace", "0s", extra=kill_at("gc-after-set-aside"))
    assert r.returncode == -9, r.stderr
    assert len(list((repo / ".git" / "uniflow" / "tmp").glob("gc.*/*"))) == 30  # moved aside, gc died
    done = held.release()
    assert done.returncode == 0, done.stderr
    _assert_whole(repo, src, "v1.0.0")  # a reader links set-aside chunks back
    cli(repo, "gc", "--yes", "--grace", "0s")  # restores the dead gc's set, deletes nothing live
    assert not list((repo / ".git" / "uniflow" / "tmp").glob("gc.*"))
    _assert_whole(repo, src, "v1.0.0")
