"""Which strings are Git URLs, how they are named in the cache, and which blob remotes a
remote's (hostile) config may name."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import git
from uniflow import RemoteError, UsageError
from uniflow._records.config import parse_config
from uniflow.sharing.giturl import is_git_url, parse_git_url, redact
from uniflow.sharing.remote import blob_remote_for


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/team/models.git",
        "http://host/x",
        "ssh://git@host:2222/x.git",
        "git://127.0.0.1:9/r.git",
        "file:///srv/models.git",
        "git@github.com:team/models.git",
        "git+ssh://host/x",
    ],
)
def test_git_urls(url: str) -> None:
    assert is_git_url(url)


def test_work_trees_and_plain_paths_are_not_urls(repo: Path, tmp_path: Path) -> None:
    assert not is_git_url(str(repo))
    assert not is_git_url(str(repo / ".git"))  # the .git of a work tree is not a bare repository
    assert not is_git_url(str(tmp_path / "does-not-exist"))
    assert not is_git_url("./relative/dir")
    bare = tmp_path / "b.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    assert is_git_url(str(bare)) and is_git_url(bare)


def test_same_repository_same_mirror_and_no_password_shown(tmp_path: Path) -> None:
    bare = tmp_path / "b.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    a, b = parse_git_url(str(bare)), parse_git_url(f"file://{bare}/")
    assert a is not None and b is not None and a.key == b.key
    c = parse_git_url("https://bot:s3cret@Host.example/team/m.git")
    d = parse_git_url("https://bot:other@host.example/team/m.git/")
    assert c is not None and d is not None and c.key == d.key
    assert "s3cret" not in c.display and "s3cret" not in c.key
    assert redact("https://bot:s3cret@host/x") == "https://bot:***@host/x"


def test_malformed_urls_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        parse_git_url("ftp://host/x")
    with pytest.raises(UsageError):
        parse_git_url("https://host/x\nEvil: 1")


def _remotes(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


def test_blob_remotes_a_remote_config_may_name(tmp_path: Path) -> None:
    bare = tmp_path / "srv" / "r.git"
    bare.parent.mkdir()
    git(bare.parent, "init", "-q", "--bare", str(bare))
    local, net = parse_git_url(str(bare)), parse_git_url("https://host/r.git")
    assert local is not None and net is not None

    def specs(url, toml: str, blob: str | None = None):
        return blob_remote_for(url, parse_config(_remotes(toml)), blob)

    # object stores: options dropped; an endpoint for S3 only
    s = specs(
        net,
        '[remotes.origin]\nurl = "s3://b/p"\nendpoint_url = "http://minio:9000"\noptions = { anon = true }\n',
    )
    assert s[0].url == "s3://b/p" and s[0].endpoint_url == "http://minio:9000" and s[0].options == {}
    with pytest.raises(RemoteError, match="S3 only"):
        specs(net, '[remotes.origin]\nurl = "gcs://b/p"\nendpoint_url = "https://evil.example"\n')
    with pytest.raises(RemoteError, match="chained"):
        specs(net, '[remotes.origin]\nurl = "simplecache::s3://b/p"\n')
    with pytest.raises(RemoteError, match="not an object store"):
        specs(net, '[remotes.origin]\nurl = "sftp://host/p"\n')
    # directories: never from a repository on another machine
    with pytest.raises(RemoteError, match="local directory"):
        specs(net, '[remotes.origin]\nurl = "/srv/blobs"\n')
    # from a local repository: only inside the directory holding it
    s = specs(local, '[remotes.origin]\nurl = "../blobs"\n')
    assert s[0].url == str((tmp_path / "srv" / "blobs").resolve())
    with pytest.raises(RemoteError, match="outside"):
        specs(local, '[remotes.origin]\nurl = "../../../etc"\n')
    with pytest.raises(RemoteError, match="outside"):
        specs(local, '[remotes.origin]\nurl = "/etc"\n')
    with pytest.raises(RemoteError, match="~"):
        specs(local, '[remotes.origin]\nurl = "~/blobs"\n')
    (tmp_path / "srv" / "link").symlink_to("/etc")
    with pytest.raises(RemoteError, match="outside"):
        specs(local, '[remotes.origin]\nurl = "../link"\n')
    # the first refused, the second fine: the fine one is used
    s = specs(net, '[remotes.origin]\nurl = "/srv/blobs"\n[remotes.cloud]\nurl = "s3://b/p"\n')
    assert [x.name for x in s] == ["cloud"]
    # --blob is the caller's choice: taken as given
    assert specs(net, "", blob="/mnt/blobs")[0].url == "/mnt/blobs"
    with pytest.raises(RemoteError, match="no blob remote known"):
        specs(net, "")


def test_what_is_shown_of_a_url_holds_no_secret() -> None:
    """Errors and ``--json`` show ``display``: no password, no HTTP(S) user name (forges
    accept a token there) and no HTTP(S) query (it may carry a token)."""
    assert redact("https://ghp_t0ken@github.com/team/m.git") == "https://***@github.com/team/m.git"
    assert redact("https://h.example/m.git?private_token=t0ken") == "https://h.example/m.git?***"
    assert redact("ssh://git@host/x.git") == "ssh://git@host/x.git"  # an ssh account is no secret
    assert redact("file:///srv/r.git?b") == "file:///srv/r.git?b"  # part of a file name
    parsed = parse_git_url("https://oauth2:t0ken@gitlab.example/team/m.git?x=t0ken")
    assert parsed is not None and "t0ken" not in parsed.display + parsed.key + parsed.normalized
    with pytest.raises(UsageError, match="password"):
        parse_git_url("ssh://git:t0ken@host/x.git")
