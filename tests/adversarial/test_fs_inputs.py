"""What uniflow reads and cleans on disk: model paths and a directory blob remote's tmp/.

Issue 9, items 10 (a push cleaned every old file in ``<url>/tmp``, whoever put it there) and
11 (symlinks and FIFOs inside a directory model were dropped without a word; a FIFO or a
device given as the model path was reported as "holds no files").
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import cli, model_dir, open_registry, remote_chunks, shared_setup
from uniflow import InvalidPathError, ModelNotFoundError, ModelRegistry


def _one_line(r: object) -> str:
    lines = r.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr  # type: ignore[attr-defined]
    return lines[0]


# ----------------------------------------------------------------------------- model paths


def test_a_fifo_or_a_device_given_as_the_model_path_is_named(registry: ModelRegistry, tmp_path: Path) -> None:
    """Item 11: say what the path is instead of "holds no files"; never open it."""
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    with pytest.raises(InvalidPathError, match=r"is a FIFO"):
        registry.register(str(fifo), "m", version="v1.0.0")
    with pytest.raises(InvalidPathError, match=r"is a (character )?device"):
        registry.register("/dev/null", "m", version="v1.0.0")
    line = _one_line(cli(registry.root, "models", "register", str(fifo), "--name", "m", code=2))
    assert str(fifo) in line and "FIFO" in line
    with pytest.raises(ModelNotFoundError):
        registry.get("m")


def _make_entry(path: Path, kind: str, outside: Path) -> None:
    if kind == "symlink to a file":
        path.symlink_to(outside / "secret.txt")
    elif kind == "symlink to a directory":
        path.symlink_to(outside, target_is_directory=True)
    elif kind == "FIFO":
        os.mkfifo(path)
    else:
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(str(path))
        except OSError as exc:  # AF_UNIX paths are limited to ~107 bytes
            pytest.skip(f"cannot bind a unix socket at {path}: {exc}")
        finally:
            sock.close()


@pytest.mark.parametrize("kind", ["symlink to a file", "symlink to a directory", "FIFO", "socket"])
def test_special_entries_inside_a_directory_model_are_refused_by_name(
    registry: ModelRegistry, tmp_path: Path, kind: str
) -> None:
    """Item 11: a symlink (never read through), FIFO or socket inside a directory model is an
    InvalidPathError naming the entry and what it is, not a silently smaller version."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not part of the model")
    d = tmp_path / "m"
    (d / "sub").mkdir(parents=True)
    (d / "weights.bin").write_bytes(os.urandom(1000))
    entry = d / "sub" / "x"
    _make_entry(entry, kind, outside)
    word = "socket" if kind == "socket" else kind.split()[0]

    with pytest.raises(InvalidPathError, match=word) as exc:
        registry.register(str(d), "m", version="v1.0.0")
    assert str(entry) in str(exc.value)
    line = _one_line(cli(registry.root, "models", "register", str(d), "--name", "m", code=2))
    assert str(entry) in line and word in line
    with pytest.raises(ModelNotFoundError):
        registry.get("m")

    # a symlink the user names as the model path itself is what they chose: it still works
    (d / "sub" / "x").unlink()
    real = tmp_path / "weights-v7.bin"
    real.write_bytes(os.urandom(500))
    named = tmp_path / "latest.bin"
    named.symlink_to(real)
    mv = registry.register(str(named), "m", version="v1.0.0")
    assert [f.path for f in mv.files] == ["latest.bin"]
    assert Path(registry.load("m")).read_bytes() == real.read_bytes()


# ----------------------------------------------------------------------------- blob remote tmp/


def test_push_to_a_directory_blob_remote_leaves_foreign_tmp_files_alone(tmp_path: Path) -> None:
    """Item 10: uniflow's uploads in flight are named ``.uniflow-up-<16 hex>.<32 hex>``; a push
    removes only such regular files older than an hour from ``<url>/tmp``. Everything else
    there (files, directories, symlinks - even one named like an upload - and what they point
    to) stays, however old."""
    _bare, a = shared_setup(tmp_path)
    tmp = tmp_path / "blobs" / "tmp"
    (tmp / "dir").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's file")
    foreign = {
        "notes.txt": "mine",
        "backup.tar": "old backup",
        "dir/inner.txt": "inner",
        f"{'ef' * 8}.{uuid.uuid4().hex}": "named like an upload of uniflow 0.1.0",
        f".uniflow-up-{'12' * 8}.{uuid.uuid4().hex}.bak": "almost our name",
    }
    for rel, text in foreign.items():
        (tmp / rel).write_text(text)
    links = [tmp / "link", tmp / f".uniflow-up-{'01' * 8}.{uuid.uuid4().hex}"]
    for link in links:
        link.symlink_to(victim)
    abandoned = tmp / f".uniflow-up-{'ab' * 8}.{uuid.uuid4().hex}"
    in_flight = tmp / f".uniflow-up-{'cd' * 8}.{uuid.uuid4().hex}"
    abandoned.write_bytes(b"abandoned upload")
    in_flight.write_bytes(b"upload in flight")
    two_hours_ago = time.time() - 7200
    for p in [*(tmp / rel for rel in foreign), tmp / "dir", victim, abandoned]:
        os.utime(p, (two_hours_ago, two_hours_ago))
    for link in links:
        os.utime(link, (two_hours_ago, two_hours_ago), follow_symlinks=False)

    open_registry(a).register(str(model_dir(tmp_path / "src", 3)), "m", version="v1.0.0")
    cli(a, "push")

    assert {rel: (tmp / rel).read_text() for rel in foreign} == foreign
    assert all(link.is_symlink() for link in links) and victim.read_text() == "someone's file"
    assert not abandoned.exists() and in_flight.exists()
    assert len(remote_chunks(tmp_path / "blobs")) == 3
