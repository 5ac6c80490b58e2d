"""`verify` reads the Git objects themselves, never the derived caches, and checks lifecycles."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from tests.helpers import cli, git


def _register(repo: Path, version: str, seed: int) -> None:
    f = repo / f"w{seed}.bin"
    f.write_bytes(bytes([seed]) * (100 << 10))
    cli(repo, "models", "register", str(f), "--name", "m", "--version", version)


def test_verify_with_a_warm_cache_still_sees_a_damaged_manifest_object(repo: Path) -> None:
    _register(repo, "v1.0.0", 1)
    cli(repo, "models", "show", "m", "v1.0.0")  # warms .uniflow/cache/git
    cli(repo, "models", "list", "m")
    blob = git(repo, "rev-parse", "models/m/v1.0.0^{commit}:.uniflow/card/manifest.msgpack").strip()
    path = repo / ".git" / "objects" / blob[:2] / blob[2:]
    raw = zlib.decompress(path.read_bytes())
    damaged = raw[:-3] + bytes([raw[-3] ^ 0xFF]) + raw[-2:]
    os.chmod(path, 0o644)
    path.write_bytes(zlib.compress(damaged))
    assert "mismatch" in _fsck_err(repo) or "corrupt" in _fsck_err(repo)
    r = cli(repo, "verify", code=None)
    assert r.returncode != 0, r.stdout
    assert "v1.0.0" in r.stdout + r.stderr


def _fsck_err(repo: Path) -> str:
    import subprocess

    return subprocess.run(["git", "fsck", "--full"], cwd=repo, capture_output=True, text=True).stderr


def test_verify_reports_a_lifecycle_naming_a_version_without_a_tag(repo: Path) -> None:
    _register(repo, "v1.0.0", 1)
    _register(repo, "v1.1.0", 2)
    cli(repo, "models", "promote", "m", "v1.1.0", "--to", "production")
    git(repo, "update-ref", "-d", "refs/tags/models/m/v1.1.0")
    r = cli(repo, "verify", "--json", code=None)
    assert r.returncode != 0
    assert "v1.1.0" in r.stdout and "tag is missing" in r.stdout
    # reads ignore the dangling holder instead of failing
    shown = cli(repo, "models", "list")
    assert "v1.1.0" not in shown.stdout


def test_verify_reports_refs_with_invalid_names(repo: Path) -> None:
    _register(repo, "v1.0.0", 1)
    sha = git(repo, "rev-parse", "refs/tags/models/m/v1.0.0").strip()
    git(repo, "update-ref", "refs/tags/models/m/not-a-version", sha)
    r = cli(repo, "verify", code=None)
    assert r.returncode != 0
    assert "refs/tags/models/m/not-a-version" in r.stdout + r.stderr
