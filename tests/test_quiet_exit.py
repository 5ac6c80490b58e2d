"""A script that reads or writes a registry and exits without ``close()`` prints nothing at
exit: the Git object store (its pack files) is closed by a finalizer while the interpreter
is still whole, not by dulwich's ``__del__`` during shutdown ("Exception ignored in ...
ImportError: sys.meta_path is None"). Each case runs a plain script in a fresh interpreter
against a packed repository (after ``git gc``) or a registry read by Git URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import GIT_ENV, ROOT, cli, git, make_repo, publish_registry


def _run_script(code: str, cwd: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``code`` as a script file run by a fresh interpreter, as a user runs one."""
    script = cwd / "script.py"
    script.write_text(code)
    env = {**os.environ, **GIT_ENV, "PYTHONPATH": str(ROOT), "UNIFLOW_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _assert_quiet(r: subprocess.CompletedProcess[str]) -> None:
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr


@pytest.fixture
def packed(tmp_path: Path) -> Path:
    """A repository with two versions and a promotion, packed by ``git gc`` (no loose
    object or ref left), its derived caches removed so reads go to the packs."""
    repo = make_repo(tmp_path / "repo")
    w = tmp_path / "w.bin"
    for i, v in enumerate(("v1.0.0", "v1.1.0")):
        w.write_bytes(bytes([i]) * 5000 + os.urandom(5000))
        cli(repo, "models", "register", str(w), "--name", "clf", "--version", v)
    cli(repo, "models", "promote", "clf", "v1.0.0", "--to", "production")
    git(repo, "gc", "--prune=now", "--quiet")
    assert list((repo / ".git" / "objects" / "pack").glob("*.pack"))
    for p in sorted((repo / ".git" / "uniflow" / "cache").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    return repo


_READ_LOCAL = """
import sys
from uniflow import ModelRegistry

r = ModelRegistry(sys.argv[1])
assert r.get("clf", stage="production").version == "v1.0.0"
assert [e.action for e in r.history("clf")] == ["register", "register", "promote"]
assert [v.version for v in r.list_versions("clf")] == ["v1.0.0", "v1.1.0"]
assert r.load_path("clf", "v1.1.0").is_dir()
print("ok")
"""


def test_a_script_reading_a_packed_repository_exits_quietly(packed: Path, tmp_path: Path) -> None:
    r = _run_script(_READ_LOCAL, tmp_path, tmp_path / "cache", str(packed))
    _assert_quiet(r)
    assert r.stdout == "ok\n"


_GLOBAL_WRITER = """
import os, sys
from uniflow import ModelRegistry

REGISTRY = ModelRegistry(sys.argv[1])  # referenced from a global until the very end


def main() -> None:
    weights = os.path.join(sys.argv[2], "w3.bin")
    with open(weights, "wb") as fh:
        fh.write(os.urandom(20000))
    REGISTRY.register(weights, "clf", version="v1.2.0")
    REGISTRY.promote("clf", "v1.2.0", "staging")
    assert REGISTRY.get("clf", stage="production").version == "v1.0.0"
    assert REGISTRY.load("clf", "v1.2.0").is_file()


main()
print("ok")
"""


def test_a_script_keeping_the_registry_in_a_global_exits_quietly(packed: Path, tmp_path: Path) -> None:
    r = _run_script(_GLOBAL_WRITER, tmp_path, tmp_path / "cache", str(packed), str(tmp_path))
    _assert_quiet(r)
    assert git(packed, "tag", "--list", "models/clf/*").split() == [
        "models/clf/v1.0.0",
        "models/clf/v1.1.0",
        "models/clf/v1.2.0",
    ]


_DROPPED = """
import gc, sys, warnings
warnings.simplefilter("error", ResourceWarning)  # an unclosed pack would be reported
from uniflow import ModelRegistry

r = ModelRegistry(sys.argv[1])
assert r.get("clf", stage="production").version == "v1.0.0"
r.history("clf")
del r
gc.collect()  # the finalizer closed the packs: dulwich's __del__ finds nothing to warn about
print("ok")
"""


def test_a_dropped_registry_closes_its_packs_when_collected(packed: Path, tmp_path: Path) -> None:
    r = _run_script(_DROPPED, tmp_path, tmp_path / "cache", str(packed))
    _assert_quiet(r)
    assert r.stdout == "ok\n"


_READ_URL = """
import sys
from uniflow import ModelRegistry

for url in sys.argv[1:]:
    r = ModelRegistry(url)
    assert r.get("clf", stage="production").version == "v1.0.0"
    assert [e.action for e in r.history("clf")] == ["register", "register", "promote"]
    assert r.load("arr", stage="production").shape == (3, 4)
    assert r.load_path("clf", "v1.1.0").is_dir()
print("ok")
"""


def test_a_script_reading_a_registry_by_url_exits_quietly(tmp_path: Path) -> None:
    published: dict[str, Any] = publish_registry(tmp_path)
    bare = published["bare"]
    work = tmp_path / "empty"
    work.mkdir()
    r = _run_script(_READ_URL, work, tmp_path / "cache", f"file://{bare}", str(bare))
    _assert_quiet(r)
    assert r.stdout == "ok\n"


def test_a_script_reading_by_url_with_an_s3_blob_remote_exits_quietly(tmp_path: Path, s3: str) -> None:
    """The chunks come from S3 (moto on 127.0.0.1) through fsspec: its clients close quietly too."""
    published: dict[str, Any] = publish_registry(tmp_path, blob_url="s3://models/team")
    work = tmp_path / "empty"
    work.mkdir()
    r = _run_script(_READ_URL, work, tmp_path / "cache", f"file://{published['bare']}")
    _assert_quiet(r)
    assert r.stdout == "ok\n"
