"""gc never deletes a chunk a register in flight needs (issue 9, item 4).

Each register below is held at ``register-before-tag`` (its chunks stored, its tag not yet
created) while a real ``uniflow gc --yes`` runs in another process; then it is released and
the version it created must be whole.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.adversarial._inflight import Held, age, files_under, kill_at, run_cli, start_cli
from tests.helpers import cli, git, model_dir, stored_chunks, tree_bytes
from uniflow import ModelRegistry
from uniflow._storage.store import ObjectStore


def _store(repo: Path) -> ObjectStore:
    return ObjectStore(repo / ".git" / "uniflow")


def _chunks(repo: Path) -> set[str]:
    """The chunks stored, in packs or chunk files."""
    return {c.digest for c in stored_chunks(_store(repo))}


def _files(repo: Path) -> list[Path]:
    """The files holding chunks: packs, their indexes, chunk files."""
    store = repo / ".git" / "uniflow"
    return sorted([*(store / "packs").glob("*"), *(store / "objects").glob("*/*")])


def _gc_held_then_killed(repo: Path, gate: Path) -> Held:
    """``uniflow gc --yes`` held once its new packs are durable (``gc-repacked``), and killed
    right after it moves its candidates aside when released."""
    held = Held.__new__(Held)
    gate.mkdir(parents=True)
    held.gate = gate
    pause = {"UNIFLOW_TEST_PAUSE_AT": "gc-repacked", "UNIFLOW_TEST_PAUSE_DIR": str(gate)}
    held.proc = start_cli(repo, "gc", "--yes", extra={**pause, **kill_at("gc-after-set-aside")})
    return held


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
    assert len(_chunks(repo)) == 80
    age(_files(repo), 2 * 3600)  # older than the default grace period (1 h)

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
    dead = _chunks(repo)
    assert len(dead) == 5
    src = model_dir(tmp_path / "src", 40, seed=3)

    held = Held(repo, tmp_path / "gate", "register-before-tag", *_register_args(src, "v1.0.0"))
    held.wait_paused()
    report = json.loads(cli(repo, "gc", "--yes", "--grace", "0s", "--json").stdout)
    done = held.release()
    assert done.returncode == 0, done.stderr
    _assert_whole(repo, src, "v1.0.0")
    # gc still collected what nobody needs
    assert not dead & _chunks(repo)
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
    assert _chunks(repo) == set() and _files(repo) == []  # garbage once its owner died
    cli(repo, *_register_args(src, "v1.0.0"))
    _assert_whole(repo, src, "v1.0.0")


def test_a_gc_killed_after_moving_chunks_aside_loses_none_of_them(repo: Path, tmp_path: Path) -> None:
    """The pin protocol per pack: gc plans to remove a pack of garbage, a register then pins
    its chunks and finds them in that pack, gc moves the pack aside and dies. The register's
    version is whole (a reader puts the pack back from the dead gc's set), and so after the
    next gc."""
    src = model_dir(tmp_path / "src", 30, seed=5)
    cli(repo, *_register_args(src, "v0.1.0"))
    git(repo, "update-ref", "-d", "refs/tags/models/m/v0.1.0")  # its pack is garbage now
    age(_files(repo), 2 * 3600)
    gc = _gc_held_then_killed(repo, tmp_path / "gc-gate")
    gc.wait_paused()  # it chose to remove the pack (no pin named a chunk of it)
    held = Held(repo, tmp_path / "gate", "register-before-tag", *_register_args(src, "v1.0.0"))
    held.wait_paused()  # pinned all 30 chunks and found them in that pack: wrote nothing
    assert len(_files(repo)) == 2
    r = gc.release()
    assert r.returncode == -9, r.stderr
    store = repo / ".git" / "uniflow"
    assert len(list((store / "tmp").glob("gc.*/*.pack"))) == 1  # moved aside, gc died
    assert list((store / "packs").glob("*.pack")) == []
    done = held.release()
    assert done.returncode == 0, done.stderr
    _assert_whole(repo, src, "v1.0.0")  # a reader links the set-aside pack back
    cli(repo, "gc", "--yes", "--grace", "0s")  # restores the dead gc's set, deletes nothing live
    assert not list((store / "tmp").glob("gc.*"))
    _assert_whole(repo, src, "v1.0.0")


def test_gc_puts_back_a_pack_a_register_pinned_after_gc_chose_it(repo: Path, tmp_path: Path) -> None:
    """gc chose a pack of garbage; a register pins its chunks and relies on it before gc
    moves it aside: gc reads the pins after the move and puts the pack back."""
    src = model_dir(tmp_path / "src", 20, seed=6)
    cli(repo, *_register_args(src, "v0.1.0"))
    git(repo, "update-ref", "-d", "refs/tags/models/m/v0.1.0")
    age(_files(repo), 2 * 3600)
    before = _files(repo)
    gate = tmp_path / "gc-gate"
    gate.mkdir()
    pause = {"UNIFLOW_TEST_PAUSE_AT": "gc-repacked", "UNIFLOW_TEST_PAUSE_DIR": str(gate)}
    gc = Held.__new__(Held)
    gc.gate, gc.proc = gate, start_cli(repo, "gc", "--yes", "--json", extra=pause)
    gc.wait_paused()
    held = Held(repo, tmp_path / "gate", "register-before-tag", *_register_args(src, "v1.0.0"))
    held.wait_paused()
    r = gc.release()
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["packs_removed"] == 0 and report["deleted_chunks"] == 0
    assert _files(repo) == before  # the same pack, put back
    done = held.release()
    assert done.returncode == 0, done.stderr
    _assert_whole(repo, src, "v1.0.0")
