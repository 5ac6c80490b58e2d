"""``uniflow push`` to Git servers with and without atomic pushes, over ``git daemon`` and
``git http-backend`` on 127.0.0.1: whether the server takes ``--atomic`` is read from the
capabilities it advertises, never from git's wording (the same in every locale)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gitserver import serve_git_http
from tests.helpers import git, model_dir, open_registry, serve_git_daemon, shared_setup
from uniflow import RemoteError
from uniflow._records.refs import lifecycle_ref, stage_ref, tag_ref
from uniflow.sharing.push import _receive_capabilities

pytestmark = pytest.mark.slow  # servers on loopback


@contextlib.contextmanager
def _daemon(base: Path) -> Iterator[str]:
    """A push-enabled ``git daemon`` serving ``base``: its ``remote.git`` URL."""
    for url in serve_git_daemon(base, receive_pack=True):
        yield f"{url}/remote.git"


@contextlib.contextmanager
def _http(base: Path) -> Iterator[str]:
    """``git http-backend`` behind a token serving ``base``: its ``remote.git`` URL."""
    with serve_git_http(base, "ci", "tok-1") as (url, _handler):
        yield url.replace("http://", "http://ci:tok-1@") + "/remote.git"


SERVERS = {"git-daemon": _daemon, "http-backend": _http}


@pytest.mark.parametrize("server", sorted(SERVERS))
@pytest.mark.parametrize("atomic", [True, False])
def test_push_lands_every_ref_with_or_without_atomic_support(
    tmp_path: Path, server: str, atomic: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANGUAGE", "de")  # git's messages may be translated: nothing depends on them
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    (tmp_path / "srv").mkdir()
    with SERVERS[server](tmp_path / "srv") as url:
        bare, a = shared_setup(tmp_path, remote_url=url)
        git(bare, "config", "receive.advertiseAtomic", "true" if atomic else "false")
        ra = open_registry(a)
        capabilities = _receive_capabilities(ra.repository, "origin", [])
        assert capabilities is not None and ("atomic" in capabilities) is atomic
        assert "report-status" in capabilities
        ra.register(str(model_dir(tmp_path / "src", 2, seed=3)), "m", version="v1.0.0")
        ra.promote("m", "v1.0.0", "production")
        report = ra.push()
        assert report.versions == ("m/v1.0.0",) and report.refs == 3
    refs = git(bare, "for-each-ref", "--format=%(refname)").split()
    assert {tag_ref("m", "v1.0.0"), lifecycle_ref("m"), stage_ref("m", "production")} <= set(refs)


def test_an_unreachable_server_is_one_remote_error_not_a_fallback(tmp_path: Path) -> None:
    """A push that fails before any ref is sent because the server is gone is reported as
    such: no capability could be read, so no non-atomic retry is made."""
    (tmp_path / "srv").mkdir()
    with _daemon(tmp_path / "srv") as url:
        _bare, a = shared_setup(tmp_path, remote_url=url)
    ra = open_registry(a)  # the daemon is stopped now
    ra.register(str(model_dir(tmp_path / "src", 1, seed=4)), "m", version="v1.0.0")
    assert _receive_capabilities(ra.repository, "origin", []) is None
    with pytest.raises(RemoteError) as info:
        ra.push()
    assert "\n" not in str(info.value)
