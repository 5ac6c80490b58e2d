"""Sharing over the network, all on 127.0.0.1: ``git daemon`` for refs, moto's S3 server for bytes.

Both servers are started and stopped by the fixtures, bound to loopback only; every wait is
a bounded loop.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    cli,
    clone,
    git,
    log_subjects,
    model_dir,
    open_registry,
    serve_git_daemon,
    shared_setup,
    tree_bytes,
)
from uniflow import IntegrityError, PushRejectedError

pytestmark = (
    pytest.mark.slow
)  # git daemon and an S3 server on loopback: skipped by the fast run (pytest -m 'not slow')


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """``(base path, git://127.0.0.1:<port>)``: a push-enabled git daemon serving ``base``."""
    base = tmp_path / "srv"
    base.mkdir()
    for url in serve_git_daemon(base, receive_pack=True):
        yield base, url


def _s3_keys(endpoint: str, prefix: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    keys: list[str] = []
    token = None
    for _ in range(1000):  # bounded pagination
        kw = {"Bucket": "models", "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
        page = client.list_objects_v2(**kw)
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            break
        token = page["NextContinuationToken"]
    return keys


def test_git_daemon_and_s3_two_clones(tmp_path: Path, git_daemon: tuple[Path, str], s3: str) -> None:
    base, url = git_daemon
    bare_url = f"{url}/remote.git"
    # shared_setup creates srv/remote.git, which the daemon serves; clone over git://
    (base / "remote.git").mkdir()
    git(base / "remote.git", "init", "-q", "--bare", "-b", "main")
    bare, a = _setup_over(tmp_path, bare_url)
    assert bare == base / "remote.git"
    ra = open_registry(a)
    src1 = model_dir(tmp_path / "s1", 5, seed=21)
    ra.register(str(src1), "clf", version="v1.0.0", metrics={"accuracy": 0.9})
    ra.register(str(model_dir(tmp_path / "s2", 2, seed=22)), "clf", version="v1.1.0")
    ra.promote("clf", "v1.0.0", "production")
    res = ra.push()
    assert res.chunks.transferred == 7
    assert _s3_keys(s3, "registry/objects/") == []  # not 7 objects: one pack and its index
    assert len(_s3_keys(s3, "registry/packs/")) == 2
    assert "refs/uniflow/models/clf" in git(bare, "for-each-ref")

    b = clone(bare_url, tmp_path / "b")
    cli(b, "pull", "--stage", "production")  # fetches the production bytes now, from S3
    rb = open_registry(b)
    assert len(list(rb.store.iter_objects())) == 5
    assert tree_bytes(Path(rb.load("clf", stage="production"))) == tree_bytes(src1)
    rb.promote("clf", "v1.1.0", "staging")
    cli(b, "push")

    ra.register(str(model_dir(tmp_path / "s3", 1, seed=23)), "clf", version="v1.2.0")
    ra.promote("clf", "v1.2.0", "production")
    with pytest.raises(PushRejectedError, match="uniflow pull"):
        ra.push()
    cli(a, "pull")
    subjects = log_subjects(a, "refs/uniflow/models/clf")
    assert any("v1.1.0: development -> staging" in s for s in subjects)
    assert any("v1.2.0: development -> production" in s for s in subjects)
    ra.push()
    cli(b, "pull")
    rb = open_registry(b)
    assert rb.get("clf", stage="production").version == "v1.2.0"
    assert rb.get("clf", stage="staging").version == "v1.1.0"
    rb.load("clf", "v1.2.0")  # on demand from S3

    # a chunk corrupted in the bucket is refused on download
    import boto3

    from uniflow._storage.packs import PackIndex

    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1")
    key = min(k for k in _s3_keys(s3, "registry/packs/") if k.endswith(".pack"))
    body = bytearray(client.get_object(Bucket="models", Key=key)["Body"].read())
    name = key.rsplit("/", 1)[-1][:64]
    raw_index = client.get_object(Bucket="models", Key=key[: -len(".pack")] + ".idx")["Body"].read()
    first = min(PackIndex.parse(raw_index, len(body), name).entries(), key=lambda e: e.offset)
    body[first.offset] ^= 0xFF
    client.put_object(Bucket="models", Key=key, Body=bytes(body))
    c = clone(bare_url, tmp_path / "c")
    r = cli(c, "pull", "--all", code=5)
    assert "corrupted" in r.stderr
    digest = first.name
    rc = open_registry(c)
    assert not rc.store.has(digest)
    with pytest.raises(IntegrityError):
        rc.store.read_chunk(digest)


def _setup_over(tmp_path: Path, bare_url: str) -> tuple[Path, Path]:
    """Like shared_setup, but the bare repository already exists and A clones it over git://."""
    a = tmp_path / "a"
    git(tmp_path, "clone", "-q", bare_url, str(a))
    (a / "train.py").write_text("print('train')\n")
    (a / ".uniflow").mkdir()
    (a / ".uniflow" / "config.toml").write_text('[remotes.origin]\nurl = "s3://models/registry"\n')
    git(a, "add", "train.py", ".uniflow/config.toml")
    git(a, "commit", "-q", "-m", "initial code")
    git(a, "push", "-q", "origin", "main")
    return tmp_path / "srv" / "remote.git", a


def test_s3_interrupted_push_resumes(tmp_path: Path, s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loose chunks (as uniflow pushed them before packs): resumed chunk by chunk."""
    import os
    import sys

    from tests.helpers import GIT_ENV

    monkeypatch.setenv("UNIFLOW_BLOB_LAYOUT", "loose")

    bare, a = shared_setup(tmp_path, blob_url="s3://models/resume")
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / "big", 30, size=32 << 10, seed=9)), "big", version="v1.0.0")
    env = {**os.environ, **GIT_ENV, "UNIFLOW_TEST_KILL_AFTER_UPLOADS": "4"}
    proc = subprocess.run(
        [sys.executable, "-c", "from uniflow import ModelRegistry; ModelRegistry('.').push(jobs=2)"],
        cwd=a,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    present = len(_s3_keys(s3, "resume/objects/"))
    assert 4 <= present < 30
    assert "models/big" not in git(bare, "for-each-ref")
    res = ra.push()
    assert res.chunks.present == present and res.chunks.transferred == 30 - present
    assert len(_s3_keys(s3, "resume/objects/")) == 30
    assert _s3_keys(s3, "resume/tmp/") == []  # object stores take the final key in one PUT


def test_s3_pull_is_one_get_per_chunk(tmp_path: Path, s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pull from S3 costs at most one GET per missing chunk (and the listing), no HEAD before
    each GET: requests are what an object store bills and what makes a pull slow. Chunks in a
    pack cost less: the marker, the index, and one range read for adjacent chunks."""
    import s3fs

    calls: list[str] = []
    original = s3fs.S3FileSystem._call_s3

    async def counting(self: object, method: str, *args: object, **kwargs: object) -> object:
        calls.append(method)
        return await original(self, method, *args, **kwargs)

    bare, a = shared_setup(tmp_path, blob_url="s3://models/count")
    ra = open_registry(a)
    src = model_dir(tmp_path / "m", 6, seed=31)
    ra.register(str(src), "clf", version="v1.0.0")
    ra.push()
    b = clone(bare, tmp_path / "b")
    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counting)
    rb = open_registry(b)
    report = rb.pull(names=["clf"])
    assert report.chunks.transferred == 6
    assert calls.count("get_object") <= 3  # marker, index, one range of 6 adjacent chunks
    assert "head_object" not in calls
    assert tree_bytes(Path(rb.load_path("clf", "v1.0.0"))) == tree_bytes(src)
