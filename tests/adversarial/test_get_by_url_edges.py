"""``uniflow get`` by URL at its edges: one mirror per repository (never one for two), a
killed get's staging directory healed by the next one (and nothing else removed), and a
many-file model written with a bounded number of descriptors."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.adversarial._inflight import Held, kill_at, run_cli
from tests.helpers import GIT_ENV, ROOT, cli, git, open_registry, publish_registry, shared_setup, tree_bytes
from uniflow import ModelRegistry
from uniflow.sharing.giturl import parse_git_url

KILL_POINT = "get-file-written"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$UNIFLOW_CACHE_DIR`` of this test (the CLI subprocesses inherit it)."""
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(cache))
    return cache


def _key(url: str) -> str:
    parsed = parse_git_url(url)
    assert parsed is not None, url
    return parsed.key


# ---------------------------------------------------------------------- the cache key
DIFFERENT_REPOSITORIES = [
    ("host:srv/x.git", "host:/srv/x.git"),  # relative to the account's home vs absolute
    ("git@host:srv/x.git", "ssh://git@host/srv/x.git"),
    ("git@host:x.git", "alice@host:x.git"),  # another account: another home directory
    ("ssh://git@host/x.git", "ssh://alice@host/x.git"),
    ("ssh://host/x.git", "ssh://host:2222/x.git"),
    ("ssh://host/x.git", "ssh://host:22/x.git"),  # ~/.ssh/config may give the host another Port
    ("ssh://host/~user/x.git", "ssh://host/user/x.git"),
    ("ssh://host/~user/x.git", "ssh://host/~other/x.git"),
    ("https://host/team/X.git", "https://host/team/x.git"),  # path case
    ("https://host/team/x", "https://host/team/x.git"),  # two repositories on a plain server
    ("http://host/x.git", "https://host/x.git"),
    ("https://host/x.git", "https://host:8443/x.git"),
    ("git://host/x.git", "ssh://host/x.git"),
    ("https://host/x.git", "https://other/x.git"),
]

SAME_REPOSITORY = [
    ("https://bot:token-one@host.example/team/m.git", "https://bot:token-two@host.example/team/m.git"),
    ("https://bot:token-one@host.example/team/m.git", "https://host.example/team/m.git"),
    ("https://ghp_secrettoken@host.example/team/m.git", "https://host.example/team/m.git"),
    ("https://host.example/team/m.git?private_token=s3cret", "https://host.example/team/m.git"),
    ("https://Host.Example/team/m.git", "https://host.example/team/m.git"),
    ("https://host.example:443/team/m.git", "https://host.example/team/m.git"),
    ("http://host.example:80/m.git", "http://host.example/m.git"),
    ("git://host:9418/m.git", "git://host/m.git"),
    ("host:/srv/x.git", "ssh://host/srv/x.git"),
    ("git@host:/srv/x.git", "git+ssh://git@host/srv/x.git"),
    ("https://host/team/m.git/", "https://host/team/m.git"),
]


@pytest.mark.parametrize(("a", "b"), DIFFERENT_REPOSITORIES)
def test_urls_naming_different_repositories_have_different_keys(a: str, b: str) -> None:
    assert _key(a) != _key(b)


@pytest.mark.parametrize(("a", "b"), SAME_REPOSITORY)
def test_urls_naming_one_repository_share_a_key_and_no_secret_is_in_it(a: str, b: str) -> None:
    assert _key(a) == _key(b)
    for url in (a, b):
        parsed = parse_git_url(url)
        assert parsed is not None
        for secret in ("token-one", "token-two", "ghp_secrettoken", "s3cret"):
            assert secret not in parsed.key and secret not in parsed.normalized
            assert secret not in parsed.display


def test_a_password_in_an_ssh_url_is_refused() -> None:
    from uniflow import UsageError

    with pytest.raises(UsageError, match="password"):
        parse_git_url("ssh://git:s3cret@host/x.git")


_DEFAULT_PORT = {"https": 443, "http": 80, "git": 9418}


def _identity(scheme: str, user: str | None, host: str, port: int | None, path: str) -> tuple[Any, ...]:
    """Which repository a URL names, written down independently of the code under test:
    HTTP(S) by scheme, host, port (default filled in) and path (user-info is credentials
    only); SSH by account, host, port as written (ssh_config may change the default) and the
    path git sends to the remote; a trailing slash never matters."""
    path = path.rstrip("/") or "/"
    if scheme in ("https", "http", "git"):
        return (scheme, host.lower(), port or _DEFAULT_PORT[scheme], path)
    return ("ssh", user, host.lower(), port, path)


def _url_of(scheme: str, user: str | None, host: str, port: int | None, path: str) -> str:
    if scheme == "git":
        user = None  # the git protocol has no account
    if scheme == "scp":  # user@host:path (no port), the path verbatim
        return f"{user + '@' if user else ''}{host}:{path}"
    netloc = f"{user + '@' if user else ''}{host}{':' + str(port) if port else ''}"
    return f"{scheme}://{netloc}{path if path.startswith('/') else '/' + path}"


_COMPONENTS = st.tuples(
    st.sampled_from(["https", "http", "git", "ssh", "scp"]),
    st.sampled_from([None, "git", "alice"]),
    st.sampled_from(["host", "HOST", "other.example"]),
    st.sampled_from([None, 22, 443, 80, 9418, 2222]),
    st.sampled_from(["/srv/x.git", "srv/x.git", "/srv/x", "/srv/X.git", "/srv/x.git/", "/~alice/x.git"]),
)


def _normal(c: tuple[Any, ...]) -> tuple[Any, ...]:
    scheme, user, host, port, path = c
    if scheme == "scp":
        return ("ssh", user, host, None, path)  # scp-like has no port; its path is verbatim
    if scheme in ("https", "http", "git"):
        user = None if scheme == "git" else user
    return (scheme, user, host, port, path if path.startswith("/") else "/" + path)


@settings(max_examples=400, deadline=None)
@given(_COMPONENTS, _COMPONENTS)
@example(("scp", None, "host", None, "srv/x.git"), ("scp", None, "host", None, "/srv/x.git"))
def test_keys_are_equal_exactly_when_the_repository_is(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    na, nb = _normal(a), _normal(b)
    same = _identity(*na) == _identity(*nb)
    assert (_key(_url_of(*a)) == _key(_url_of(*b))) == same, (_url_of(*a), _url_of(*b))


def test_two_local_repositories_whose_file_urls_differ_after_the_path_get_two_mirrors(
    tmp_path: Path,
) -> None:
    """``file:///srv/remote.git?b`` is the directory ``remote.git?b`` for git: the query
    and the fragment of a file URL are part of its path. They used to be dropped from the
    key, so the second URL was answered from the first repository's mirror."""
    published = publish_registry(tmp_path)
    bare = published["bare"]
    for suffix in ("?b", "#b"):
        other = bare.parent / f"{bare.name}{suffix}"
        git(tmp_path, "clone", "-q", "--bare", str(bare), str(other))
        for ref in git(other, "for-each-ref", "--format=%(refname)").split():
            if "/arr" in ref:  # the copy has no model 'arr'
                git(other, "update-ref", "-d", ref)
        with ModelRegistry(f"file://{bare}") as first:
            assert [m.name for m in first.list_models()] == ["arr", "clf"]
        with ModelRegistry(f"file://{other}") as second:
            assert [m.name for m in second.list_models()] == ["clf"]
        assert _key(f"file://{bare}") != _key(f"file://{other}")
    # one repository, two spellings: one mirror
    assert _key(str(bare)) == _key(f"file://{bare}/") == _key(f"file://{str(bare).replace('.git', '%2Egit')}")


# ---------------------------------------------------------------------- killed gets
def _staging(parent: Path) -> list[Path]:
    return sorted(p for p in parent.iterdir() if ".uniflow-get-" in p.name)


def test_a_killed_get_leaves_its_staging_directory_and_the_next_get_removes_it(
    tmp_path: Path, cache_dir: Path
) -> None:
    published = publish_registry(tmp_path)
    url = f"file://{published['bare']}"
    work = tmp_path / "work"
    work.mkdir()
    r = run_cli(work, "get", url, "clf", "v1.0.0", "-o", "out", extra=kill_at(KILL_POINT))
    assert r.returncode == -9, (r.returncode, r.stdout, r.stderr)
    left = _staging(work)
    assert len(left) == 1 and not (work / "out").exists()
    # a look-alike uniflow did not write (no marker), and a symlink named like one
    suffix = left[0].name.rsplit(".uniflow-get-", 1)[1]
    lookalike = work / f".x.uniflow-get-{suffix}"
    lookalike.mkdir()
    (lookalike / "keep.txt").write_text("mine")
    target = tmp_path / "elsewhere"
    target.mkdir()
    for entry in left[0].iterdir():
        if entry.is_file():
            (target / entry.name).write_bytes(entry.read_bytes())  # the marker, copied
    (target / "keep.txt").write_text("mine too")
    link = work / f".y.uniflow-get-{suffix}"
    link.symlink_to(target)
    time.sleep(0.05)

    cli(work, "get", url, "clf", "v1.0.0", "-o", "out")
    assert tree_bytes(work / "out") == tree_bytes(published["v1"])
    assert not left[0].exists()  # the killed get's partial download is gone
    assert (lookalike / "keep.txt").read_text() == "mine"
    assert link.is_symlink() and (target / "keep.txt").read_text() == "mine too"


def test_a_live_gets_staging_directory_is_left_alone(tmp_path: Path, cache_dir: Path) -> None:
    published = publish_registry(tmp_path)
    url = f"file://{published['bare']}"
    work = tmp_path / "work"
    work.mkdir()
    held = Held(work, tmp_path / "gate", KILL_POINT, "get", url, "clf", "v1.0.0", "-o", "first")
    try:
        held.wait_paused()
        mine = _staging(work)
        assert len(mine) == 1
        before = sorted(p.relative_to(mine[0]) for p in mine[0].rglob("*"))
        cli(work, "get", url, "clf", "v1.1.0", "-o", "second")  # a sleeping get owns `mine`
        assert mine[0].exists()
        assert sorted(p.relative_to(mine[0]) for p in mine[0].rglob("*")) == before
    finally:
        done = held.release()
    assert done.returncode == 0, done.stderr
    assert tree_bytes(work / "first") == tree_bytes(published["v1"])
    assert tree_bytes(work / "second") == tree_bytes(published["v2"])
    assert _staging(work) == []


# ---------------------------------------------------------------------- descriptors
FILES = 1500


@pytest.mark.slow
def test_a_model_of_1500_files_is_fetched_under_ulimit_256(tmp_path: Path, cache_dir: Path) -> None:
    blobs = tmp_path / "srv" / "blobs"
    bare, clone = shared_setup(tmp_path, blob_url=str(blobs))
    git(bare, "config", "uploadpack.allowFilter", "true")
    model = tmp_path / "many"
    for i in range(FILES):
        sub = model / f"d{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:05d}.txt").write_bytes(f"file {i}\n".encode() * (1 + i % 5))
    reg = open_registry(clone)
    reg.register(model=str(model), name="many", version="v1.0.0")
    reg.push()
    reg.close()

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, **GIT_ENV, "PYTHONPATH": str(ROOT), "UNIFLOW_FORCE_TTY": "0"}
    r = subprocess.run(
        [sys.executable, "-m", "uniflow", "get", f"file://{bare}", "many", "v1.0.0", "-o", "out", "--json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert len(report["files"]) == FILES
    assert tree_bytes(work / "out") == tree_bytes(model)
    assert _staging(work) == []
