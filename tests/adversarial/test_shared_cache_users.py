"""Two real local users and one shared cache directory.

A second account is created for the test (``useradd``; removed afterwards). It plants a
cache of uniflow's layout in a world-writable, sticky directory (as a team cache under
``/tmp`` would be), with a mirror whose config and hook name a command. The victim (the
user running the tests) points ``UNIFLOW_CACHE_DIR`` there and reads a registry by URL:
the command never runs, the cache is refused with one line naming the variable to set,
and a cache of the victim's own in the same shared directory works.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli, publish_registry, tree_bytes
from uniflow.sharing.giturl import parse_git_url

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="creating a second local user needs root and useradd",
)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory every user can reach and write, sticky like /tmp (pytest's own tmp_path
    is private to the user running the tests)."""
    d = Path(tempfile.mkdtemp(prefix="uniflow-shared-"))
    os.chmod(d, 0o1777)  # anyone may create, only owners may remove
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def attacker(shared: Path) -> Iterator[pwd.struct_passwd]:
    """A throwaway local account, deleted with its home at the end."""
    name = f"ufa{uuid.uuid4().hex[:8]}"
    home = shared / "attacker-home"
    subprocess.run(["useradd", "--home-dir", str(home), "--create-home", name], check=True, timeout=60)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "--force", "--remove", name], check=False, timeout=60)


def _as(user: pwd.struct_passwd, *cmd: str, cwd: Path) -> None:
    """Run ``cmd`` as ``user`` (its own uid, gid and HOME), as that user would."""
    env = {"HOME": user.pw_dir, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    def drop() -> None:
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    subprocess.run(list(cmd), cwd=cwd, env=env, preexec_fn=drop, check=True, timeout=120)


def _plant_cache(user: pwd.struct_passwd, cache: Path, url: str, script: Path) -> Path:
    """The attacker's cache: ``mirrors/<key>.git`` with commands in its config and a hook."""
    parsed = parse_git_url(url)
    assert parsed is not None
    mirror = cache / "mirrors" / f"{parsed.key}.git"
    _as(user, "mkdir", "-p", str(mirror.parent), cwd=cache.parent)
    _as(user, "git", "init", "-q", "--bare", str(mirror), cwd=cache.parent)
    for key in ("remote.origin.uploadpack", "core.fsmonitor", "core.sshCommand"):
        _as(user, "git", "--git-dir", str(mirror), "config", key, str(script), cwd=cache.parent)
    _as(user, "git", "--git-dir", str(mirror), "config", "remote.origin.url", url, cwd=cache.parent)
    _as(user, "cp", str(script), str(mirror / "hooks" / "reference-transaction"), cwd=cache.parent)
    _as(user, "chmod", "-R", "a+rwX", str(cache), cwd=cache.parent)  # "share" it with the team
    return mirror


def test_a_cache_planted_by_another_user_runs_nothing_and_is_refused(
    tmp_path: Path, shared: Path, attacker: pwd.struct_passwd
) -> None:
    published: dict[str, Any] = publish_registry(tmp_path / "pub")
    url = f"file://{published['bare']}"
    marker = tmp_path / "PWNED"
    script = shared / "evil.sh"
    script.write_text(f'#!/bin/sh\necho "ran as $(id -u): $0 $*" >> {marker}\nexec git upload-pack "$@"\n')
    script.chmod(0o755)
    cache = shared / "team-cache"
    mirror = _plant_cache(attacker, cache, url, script)
    assert mirror.stat().st_uid == attacker.pw_uid

    work = tmp_path / "work"
    work.mkdir()
    env = {"UNIFLOW_CACHE_DIR": str(cache)}
    r = cli(work, "get", url, "clf", "--stage", "production", code=None, env=env)
    assert not marker.exists(), marker.read_text()
    assert r.returncode == 8, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "UNIFLOW_CACHE_DIR" in lines[0], r.stderr
    assert not (work / "clf").exists()
    assert mirror.stat().st_uid == attacker.pw_uid  # the other user's files are left as they were

    # A cache of the victim's own beside it, in the same sticky directory, just works.
    mine = shared / "my-cache"
    r = cli(work, "get", url, "clf", "--stage", "production", env={"UNIFLOW_CACHE_DIR": str(mine)})
    assert "v1.0.0" in r.stdout and not marker.exists()
    assert tree_bytes(work / "clf") == tree_bytes(published["v1"])
    assert mine.stat().st_uid == os.geteuid() and mine.stat().st_mode & 0o077 == 0
