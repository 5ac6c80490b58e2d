"""The per-user mirrors of registries read by Git URL run no command and serve no ref that
someone else put there, keep no credential on disk, and survive a sync killed half-way.

* A mirror planted in the cache (another user's directory, or a restored cache of ours with a
  hostile ``config``: ``remote.origin.uploadpack``, ``core.fsmonitor``, ``core.sshCommand``)
  never runs its commands: another owner's or a group/world-writable mirror is moved aside
  (renamed, never deleted) and rebuilt; our own mirror's config is rewritten before git runs.
* A cache root owned by someone else, or writable by others, is refused with one line.
* Refs the remote does not advertise are never served (online: compared with ``ls-remote``;
  offline: with the state uniflow recorded).
* The URL's token is never written under the cache; a rotated token works at once.
* A sync killed while git held its lock files leaves a mirror the next get repairs.

Everything is real: the ``git`` binary, ``git http-backend`` behind Basic auth on 127.0.0.1,
another owner by ``chown`` to ``nobody`` (the tests run as root; skipped otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gitserver import TokenGitHTTP, serve_git_http
from tests.helpers import cli, git, publish_registry, tree_bytes
from uniflow.sharing.giturl import parse_git_url

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory another owner")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return publish_registry(tmp_path_factory.mktemp("pub"))


@pytest.fixture
def work(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


def _url(published: dict[str, Any]) -> str:
    return f"file://{published['bare']}"


def _mirror(cache: Path, url: str) -> Path:
    parsed = parse_git_url(url)
    assert parsed is not None
    return cache / "mirrors" / f"{parsed.key}.git"


def _evil_script(tmp_path: Path) -> tuple[Path, Path]:
    """A command that leaves a marker when run, then behaves like git's upload-pack."""
    marker = tmp_path / "PWNED"
    script = tmp_path / "evil.sh"
    script.write_text(f'#!/bin/sh\necho "$0 $*" >> {marker}\nexec git upload-pack "$@"\n')
    script.chmod(0o755)
    return script, marker


def _plant(mirror: Path, url: str, script: Path) -> None:
    """A mirror as an attacker would leave it: hostile config, a hook, everything executable."""
    mirror.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    git(mirror.parent, "init", "-q", "--bare", str(mirror))
    for key, value in [
        ("remote.origin.url", url),
        ("remote.origin.uploadpack", str(script)),
        ("core.fsmonitor", str(script)),
        ("core.sshCommand", str(script)),
        ("remote.origin.promisor", "true"),
        ("remote.origin.partialclonefilter", "blob:none"),
    ]:
        git(mirror, "config", key, value)
    hook = mirror / "hooks" / "reference-transaction"
    hook.write_text(script.read_text())
    hook.chmod(0o755)


def _chown_tree(path: Path, uid: int) -> None:
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), uid, uid)
    os.lchown(path, uid, uid)


def _quarantined(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "mirrors").iterdir() if "quarantine" in p.name)


# ---------------------------------------------------------------------- planted mirrors
@as_root
def test_a_mirror_of_another_user_is_moved_aside_and_its_commands_never_run(
    tmp_path: Path, published: dict[str, Any], work: Path, cache_dir: Path
) -> None:
    url = _url(published)
    script, marker = _evil_script(tmp_path)
    mirror = _mirror(cache_dir, url)
    _plant(mirror, url, script)
    _chown_tree(mirror, NOBODY)
    r = cli(work, "get", url, "clf", "--stage", "production")
    assert "v1.0.0" in r.stdout
    assert not marker.exists(), marker.read_text()
    assert tree_bytes(work / "clf") == tree_bytes(published["v1"])
    aside = _quarantined(cache_dir)
    assert len(aside) == 1 and aside[0].stat().st_uid == NOBODY  # kept, not deleted
    assert (aside[0] / "hooks" / "reference-transaction").is_file()
    assert mirror.stat().st_uid == os.geteuid() and mirror.stat().st_mode & 0o077 == 0


def test_our_own_mirror_with_a_hostile_config_runs_nothing(
    tmp_path: Path, published: dict[str, Any], work: Path, cache_dir: Path
) -> None:
    """A restored CI cache is ours, but its content is not: the config is rewritten."""
    url = _url(published)
    script, marker = _evil_script(tmp_path)
    mirror = _mirror(cache_dir, url)
    _plant(mirror, url, script)
    os.chmod(mirror, 0o700)
    r = cli(work, "get", url, "clf", "v1.1.0")
    assert "v1.1.0" in r.stdout
    assert not marker.exists(), marker.read_text()
    config = (mirror / "config").read_text()
    assert str(script) not in config and "url" not in config


def test_a_group_or_world_writable_mirror_is_rebuilt(
    published: dict[str, Any], work: Path, cache_dir: Path
) -> None:
    url = _url(published)
    cli(work, "get", url, "clf", "--stage", "production")
    mirror = _mirror(cache_dir, url)
    os.chmod(mirror, 0o777)
    cli(work, "get", url, "clf", "v1.1.0", "-o", "second")
    assert len(_quarantined(cache_dir)) == 1
    assert mirror.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("how", ["world-writable", "other-owner"])
def test_a_cache_root_someone_else_can_write_is_refused(
    how: str, published: dict[str, Any], work: Path, cache_dir: Path
) -> None:
    if how == "other-owner" and os.geteuid() != 0:
        pytest.skip("needs root")
    (cache_dir / "mirrors").mkdir(parents=True, mode=0o700)
    target = cache_dir / "mirrors"
    if how == "world-writable":
        os.chmod(target, 0o777)
    else:
        os.chown(target, NOBODY, NOBODY)
    r = cli(work, "get", _url(published), "clf", "--stage", "production", code=8)
    assert str(target) in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert sorted(p.name for p in target.iterdir()) == []  # nothing created or run in there
    assert not (work / "clf").exists()


# ---------------------------------------------------------------------- refs the remote never sent
@pytest.fixture(scope="module")
def forged(published: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An attacker's copy of the registry with one more version, ``clf v9.9.9``, whose chunks
    sit in the same blob remote: its tag passes every read gate."""
    from tests.helpers import model_dir, open_registry

    base = tmp_path_factory.mktemp("attacker")
    bare = base / "evil.git"
    git(base, "clone", "-q", "--bare", str(published["bare"]), str(bare))
    work = base / "wt"
    git(base, "clone", "-q", str(bare), str(work))
    reg = open_registry(work)
    reg.register(model=str(model_dir(base / "m", 1, seed=9)), name="clf", version="v9.9.9")
    reg.push()
    reg.close()
    return bare


def _add_forged_version(mirror: Path, forged: Path) -> str:
    ref = "refs/tags/models/clf/v9.9.9"
    env = {**os.environ, "GIT_DIR": str(mirror)}
    # the mirror is a partial clone: the promisor remote's URL lets git check connectivity
    fetch = [
        "git",
        "-c",
        f"remote.origin.url={forged}",
        "fetch",
        "-q",
        "--no-tags",
        str(forged),
        f"{ref}:{ref}",
    ]
    subprocess.run(fetch, env=env, check=True, timeout=60)
    return ref


def test_refs_the_remote_does_not_advertise_are_not_served(
    published: dict[str, Any], forged: Path, work: Path, cache_dir: Path
) -> None:
    url = _url(published)
    cli(work, "get", url, "clf", "--stage", "production")
    mirror = _mirror(cache_dir, url)
    ref = _add_forged_version(mirror, forged)
    # the state uniflow recorded is left as it was: online, nothing changed upstream
    r = cli(work, "get", url, "clf", "v9.9.9", "-o", "x", code=3)
    assert "v9.9.9" in r.stderr and not (work / "x").exists()
    assert git(mirror, "for-each-ref", ref).strip() == ""  # dropped from the mirror
    # offline: only what the recorded state names is trusted
    _add_forged_version(mirror, forged)
    r = cli(work, "get", url, "clf", "v9.9.9", "-o", "y", "--offline", code=9)
    assert r.stderr.count("\n") == 1 and "without --offline" in r.stderr
    assert not (work / "y").exists()


def test_a_forged_state_does_not_make_refs_trusted(
    published: dict[str, Any], forged: Path, work: Path, cache_dir: Path
) -> None:
    url = _url(published)
    cli(work, "get", url, "clf", "--stage", "production")
    mirror = _mirror(cache_dir, url)
    ref = _add_forged_version(mirror, forged)
    state_path = mirror / "uniflow-mirror.json"
    state = json.loads(state_path.read_text())
    state["refs"][ref] = git(mirror, "rev-parse", ref).strip()
    state_path.write_text(json.dumps(state))
    r = cli(work, "--repo", url, "models", "show", "clf", "--json")
    assert "v9.9.9" not in r.stdout
    assert git(mirror, "for-each-ref", ref).strip() == ""


# ---------------------------------------------------------------------- credentials
@contextlib.contextmanager
def _git_http(root: Path) -> Iterator[tuple[str, type[TokenGitHTTP]]]:
    """``host:port`` of a server of the repositories below ``root`` demanding user ``ci``'s token."""
    with serve_git_http(root, "ci", "tok-one-SECRET") as (url, handler):
        yield url.removeprefix("http://"), handler


def _grep(root: Path, needle: bytes) -> list[str]:
    return [
        str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()
    ]


def test_the_token_of_a_url_never_reaches_the_disk_and_a_rotated_one_works(
    published: dict[str, Any], work: Path, cache_dir: Path
) -> None:
    blobs = str(published["blobs"])
    with _git_http(published["bare"].parent) as (host, handler):
        first = handler.token
        url = f"http://ci:{first}@{host}/remote.git"
        r = cli(work, "get", url, "clf", "--stage", "production", "--blob", blobs, "--json")
        assert json.loads(r.stdout)["version"] == "v1.0.0"
        assert _grep(cache_dir, first.encode()) == []
        handler.token = "tok-two-ROTATED"  # the old token is revoked
        url = f"http://ci:{handler.token}@{host}/remote.git"
        r = cli(work, "get", url, "clf", "v1.1.0", "-o", "second", "--blob", blobs, "--json")
        assert json.loads(r.stdout)["version"] == "v1.1.0"
        assert _grep(cache_dir, b"tok-") == []
        assert "tok-" not in r.stderr


# ---------------------------------------------------------------------- a sync killed half-way
def _die_holding_a_ref_lock(mirror: Path, ref: str, sha: str) -> None:
    """A real git killed (SIGKILL) in the middle of a ref transaction: it leaves ``<ref>.lock``."""
    proc = subprocess.Popen(
        ["git", "update-ref", "--stdin"], env={**os.environ, "GIT_DIR": str(mirror)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"start\nupdate {ref} {sha}\nprepare\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "start: ok"
    assert proc.stdout.readline().strip() == "prepare: ok"  # the lock is held now
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def test_a_sync_killed_half_way_leaving_git_locks_is_repaired_by_the_next_get(
    published: dict[str, Any], work: Path, cache_dir: Path
) -> None:
    url = _url(published)
    r = cli(work, "get", url, "clf", "-s", "production", code=None,
            env={"UNIFLOW_TEST_KILL_AT": "mirror-sync-fetched-tags"})  # fmt: skip
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    mirror = _mirror(cache_dir, url)
    assert not (mirror / "uniflow-mirror.json").exists()  # the first sync never completed
    sha = git(mirror, "rev-parse", "refs/tags/models/clf/v1.0.0").strip()
    _die_holding_a_ref_lock(mirror, "refs/uniflow/models/clf", sha)
    (mirror / "shallow.lock").write_text(sha + "\n")  # what a fetch --depth killed mid-way leaves
    locks = sorted(str(p.relative_to(mirror)) for p in mirror.rglob("*.lock"))
    assert "refs/uniflow/models/clf.lock" in locks and "shallow.lock" in locks, locks
    r = cli(work, "get", url, "clf", "-s", "production")
    assert tree_bytes(work / "clf") == tree_bytes(published["v1"])
    assert sorted(mirror.rglob("*.lock")) == []


def test_a_server_that_moves_between_ls_remote_and_fetch_is_read_again(tmp_path: Path, work: Path) -> None:
    """The refs are checked against what ``ls-remote`` said: a push in between is not an
    attack, and the sync simply lists and fetches once more."""
    from tests.helpers import open_registry

    pub = publish_registry(tmp_path)
    url = _url(pub)
    pause = tmp_path / "pause"
    pause.mkdir()
    env = {"UNIFLOW_TEST_PAUSE_AT": "mirror-sync-listed", "UNIFLOW_TEST_PAUSE_DIR": str(pause)}
    cmd = [sys.executable, "-m", "uniflow", "get", url, "clf", "-s", "production", "--json"]
    proc = subprocess.Popen(cmd, cwd=work, env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (pause / "paused").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # bounded by the deadline
    assert (pause / "paused").exists(), proc.poll()
    reg = open_registry(pub["clone"])
    reg.promote("clf", "v1.1.0", "production")  # pushed while the get sits between ls-remote and fetch
    reg.push()
    reg.close()
    (pause / "go").write_text("")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert json.loads(out)["version"] == "v1.1.0"
