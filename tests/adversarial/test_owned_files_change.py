"""Files uniflow wrote itself and hashes again later (the read-only materialized copy a load
uses, the files ``uniflow get`` has just written) live on the user's file system, where
anything may truncate them while they are hashed. That must never kill the process (a
mapped file cut short raises SIGBUS) nor let a short file through: a damaged cached copy is
rebuilt from the verified chunks, a damaged download is refused and removed.

Each command below is held at ``whole-digest`` (the file is open and about to be hashed)
while the test truncates the file; then it is released.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.adversarial._inflight import Held
from tests.helpers import cli, publish_registry, tree_bytes


def _truncate_files(root: Path) -> list[Path]:
    done = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.stat().st_size > 1:
            os.truncate(p, p.stat().st_size // 2)  # root may; so may the owner after a chmod
            done.append(p)
    return done


def test_a_cached_copy_truncated_while_it_is_checked_is_rebuilt(repo: Path, tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(3 << 20))
    cli(repo, "models", "register", str(src), "--name", "m", "--version", "v1.0.0")
    cli(repo, "models", "export", "m", str(tmp_path / "first"))  # materializes the cached copy
    cache = repo / ".git" / "uniflow" / "cache" / "files"
    assert len([p for p in cache.rglob("*") if p.is_file()]) == 1

    held = Held(repo, tmp_path / "gate", "whole-digest", "models", "export", "m", str(tmp_path / "second"))
    held.wait_paused()
    assert _truncate_files(cache), "the cached copy is being checked"
    done = held.release()

    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"  # -7: death by SIGBUS
    assert "Traceback" not in done.stderr
    assert tree_bytes(tmp_path / "second") == {"model.bin": src.read_bytes()}
    (cached,) = [p for p in cache.rglob("*") if p.is_file()]
    assert cached.read_bytes() == src.read_bytes()  # rebuilt whole


def test_a_download_truncated_while_it_is_checked_is_refused_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(tmp_path / "user-cache"))
    published = publish_registry(tmp_path)
    work = tmp_path / "empty"
    work.mkdir()
    url = f"file://{published['bare']}"

    held = Held(work, tmp_path / "gate", "whole-digest", "get", url, "clf", "v1.1.0", "-o", "out")
    held.wait_paused()
    assert _truncate_files(work), "the files written are being checked"
    done = held.release()

    assert done.returncode == 5, f"exit {done.returncode}: {done.stderr}"  # IntegrityError, not SIGBUS
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "do not match the manifest's file digest" in lines[0], done.stderr
    assert list(work.iterdir()) == []  # nothing half-written is left behind

    cli(work, "get", url, "clf", "v1.1.0", "-o", "out")  # and a second try gets it whole
    assert tree_bytes(work / "out") == tree_bytes(published["v2"])
