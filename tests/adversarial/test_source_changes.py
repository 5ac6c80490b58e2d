"""A file that changes while it is being registered (a training job still writing its
checkpoint, a copy still in progress, a hostile file system) never crashes the process and
never puts anything wrong in the store.

Each register below is held at ``put-file-read`` (the first chunk of the file has been cut
and handed to the writers; the rest is still to be read) while the test truncates or
rewrites the file; then it is released. The register must fail with one clear line, leave no
version behind, and every object in the store must still hold the bytes its name says.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import pytest

from tests.adversarial._inflight import Held
from tests.helpers import cli, git, stored_chunk_bytes
from uniflow._storage.ingest import WINDOW

SIZE = 3 * WINDOW  # about 20 chunks: most of the file is read after the pause


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(SIZE))
    return src


def _register(src: Path) -> tuple[str, ...]:
    return ("models", "register", str(src), "--name", "m", "--version", "v1.0.0")


def _assert_store_sound(repo: Path) -> None:
    """Every object is named by the BLAKE3 digest of its bytes; no version was created."""
    objects = sorted((repo / ".git" / "uniflow" / "objects").glob("*/*"))
    for obj in objects:
        assert blake3.blake3(obj.read_bytes()).hexdigest() == obj.parent.name + obj.name, obj
    for name, data in stored_chunk_bytes(repo / ".git" / "uniflow").items():  # packed ones too
        assert blake3.blake3(data).hexdigest() == name
    assert git(repo, "tag", "--list", "models/*") == ""
    r = cli(repo, "verify", code=None)
    assert r.returncode == 0, r.stdout + r.stderr


def _assert_one_line_error(done: object, words: str) -> None:
    rc, err = done.returncode, done.stderr  # type: ignore[attr-defined]
    assert rc == 2, f"exit {rc}: {err}"  # a usage error; -7 / 135 would be death by SIGBUS
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert words in lines[0], lines[0]


def _register_while(repo: Path, tmp_path: Path, change: Callable[[Path], None]) -> Any:
    """Register a fresh source file, holding the register after its first chunk while
    ``change(path)`` runs; the finished process."""
    src = _source(tmp_path)
    held = Held(repo, tmp_path / "gate", "put-file-read", *_register(src))
    held.wait_paused()
    change(src)
    return held.release()


def test_a_file_truncated_while_it_is_registered_is_refused_cleanly(repo: Path, tmp_path: Path) -> None:
    done = _register_while(repo, tmp_path, lambda src: os.truncate(src, 2 << 20))
    _assert_one_line_error(done, "changed while it was being registered")
    _assert_store_sound(repo)


@pytest.mark.parametrize("where", ["ahead", "behind"])
def test_a_file_rewritten_while_it_is_registered_is_refused(repo: Path, tmp_path: Path, where: str) -> None:
    """Same length, other bytes: ahead of the reader (what would be read next) or behind it
    (the first window, read already). Either way the version would hold bytes that never
    were the file; the register refuses it."""

    def rewrite(src: Path) -> None:
        with open(src, "r+b") as f:
            for offset in range(0, SIZE, 1 << 20):
                if (where == "ahead") == (offset >= WINDOW):
                    f.seek(offset)
                    f.write(os.urandom(4096))

    done = _register_while(repo, tmp_path, rewrite)
    _assert_one_line_error(done, "changed while it was being registered")
    _assert_store_sound(repo)


def test_a_file_that_grew_while_it_is_registered_is_refused(repo: Path, tmp_path: Path) -> None:
    def grow(src: Path) -> None:
        with open(src, "ab") as f:
            f.write(os.urandom(1 << 20))

    done = _register_while(repo, tmp_path, grow)
    _assert_one_line_error(done, "changed while it was being registered")
    _assert_store_sound(repo)


def test_an_unchanged_file_registers_after_the_same_pause(repo: Path, tmp_path: Path) -> None:
    done = _register_while(repo, tmp_path, lambda src: None)
    assert done.returncode == 0, done.stderr
    r = cli(repo, "verify", code=None)
    assert r.returncode == 0, r.stdout + r.stderr
