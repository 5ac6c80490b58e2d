"""Reading a registry by Git URL without a clone, over ``file://`` and bare-repository paths:
``uniflow get``, ``ModelRegistry(url)`` and ``uniflow --repo URL``, from a directory with no
Git repository; the per-user mirror holds no code blob."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import blake3
import pytest

from tests.helpers import cli, git, mirror_objects, tree_bytes, write_config
from uniflow import ModelRegistry, ReadOnlyRegistryError


def _url(published: dict[str, Any]) -> str:
    return f"file://{published['bare']}"


def test_get_by_stage_and_by_version_from_an_empty_directory(
    published: dict[str, Any], empty_dir: Path, cache_dir: Path
) -> None:
    url = _url(published)
    r = cli(empty_dir, "get", url, "clf", "--stage", "production")
    assert "clf v1.0.0" in r.stdout and "production" in r.stdout
    assert tree_bytes(empty_dir / "clf") == tree_bytes(published["v1"])
    assert not (empty_dir / ".git").exists()  # no repository is created to read one

    out = empty_dir / "deploy" / "clf-v1.1.0"
    (empty_dir / "deploy").mkdir()
    r = cli(empty_dir, "get", url, "clf", "v1.1.0", "-o", str(out), "--json")
    report = json.loads(r.stdout)
    assert tree_bytes(out) == tree_bytes(published["v2"])
    assert report["name"] == "clf" and report["version"] == "v1.1.0" and report["stage"] == "development"
    assert report["commit"] == git(published["bare"], "rev-parse", "models/clf/v1.1.0^{commit}").strip()
    with ModelRegistry(url) as reg:  # each file's registered digest (its identity)
        registered = {f.path: f.digest for f in reg.get("clf", "v1.1.0").files}
    assert {f["path"]: f["digest"] for f in report["files"]} == registered
    r = cli(empty_dir, "get", url, "clf", "v1.1.0", "-o", str(empty_dir / "again"), "--json", "--b3sum")
    assert {f["path"]: f["b3sum"] for f in json.loads(r.stdout)["files"]} == {
        p: blake3.blake3(b).hexdigest() for p, b in tree_bytes(published["v2"]).items()
    }
    # nothing but the result beside DIR: the download was renamed into place
    assert sorted(p.name for p in (empty_dir / "deploy").iterdir()) == ["clf-v1.1.0"]


def test_no_code_blob_reaches_the_mirror(published: dict[str, Any], empty_dir: Path, cache_dir: Path) -> None:
    cli(empty_dir, "get", _url(published), "clf", "--stage", "production")
    objects = mirror_objects(cache_dir)
    assert objects, "the mirror holds the registry's objects"
    assert published["big_blob"] not in objects
    train_py = git(published["clone"], "rev-parse", "HEAD:train.py").strip()
    assert train_py not in objects  # no code blob at all, small or large
    size = sum(p.stat().st_size for p in (cache_dir / "mirrors").rglob("*") if p.is_file())
    assert size < 1 << 20, size  # the 5 MiB code file would not fit
    # no branch history either: the code commit before the big file is absent
    first = git(published["clone"], "rev-list", "--max-parents=0", "HEAD").strip()
    assert first not in objects


def test_path_to_a_bare_repository_is_a_url_too(published: dict[str, Any], empty_dir: Path) -> None:
    r = cli(empty_dir, "get", str(published["bare"]), "clf", "v1.0.0", "-o", "here", "--json")
    assert json.loads(r.stdout)["version"] == "v1.0.0"
    assert tree_bytes(empty_dir / "here") == tree_bytes(published["v1"])


def test_model_registry_of_a_url_loads_and_lists(
    published: dict[str, Any], empty_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    monkeypatch.chdir(empty_dir)
    with ModelRegistry(_url(published)) as reg:
        arr = reg.load("arr", stage="production")
        assert np.array_equal(arr, published["array"])
        assert [m.name for m in reg.list_models()] == ["arr", "clf"]
        assert [v.version for v in reg.list_versions("clf")] == ["v1.0.0", "v1.1.0"]
        assert reg.get("clf", stage="production").version == "v1.0.0"
        path = reg.load_path("clf", "v1.1.0")
        assert tree_bytes(path) == tree_bytes(published["v2"])
        assert [e.action for e in reg.history("clf")] == ["register", "register", "promote"]
        cmp = reg.compare_versions("clf", ["v1.0.0", "v1.1.0"])
        assert cmp.versions == ["v1.0.0", "v1.1.0"]
        reg.export("clf", empty_dir / "exported", stage="production")
    assert tree_bytes(empty_dir / "exported") == tree_bytes(published["v1"])
    assert not (empty_dir / ".git").exists()


def test_a_promotion_pushed_afterwards_is_seen_by_the_next_call(
    published: dict[str, Any], empty_dir: Path
) -> None:
    url = _url(published)
    first = json.loads(cli(empty_dir, "get", url, "clf", "-s", "production", "-o", "one", "--json").stdout)
    assert first["version"] == "v1.0.0"
    from tests.helpers import open_registry

    reg = open_registry(published["clone"])
    reg.promote("clf", "v1.1.0", "production")
    reg.push()
    reg.close()
    second = json.loads(cli(empty_dir, "get", url, "clf", "-s", "production", "-o", "two", "--json").stdout)
    assert second["version"] == "v1.1.0"
    assert tree_bytes(empty_dir / "two") == tree_bytes(published["v2"])
    with ModelRegistry(url) as r:
        assert r.list_models()[1].stages == {"production": "v1.1.0"}


def test_offline_answers_from_the_cache_alone(
    published: dict[str, Any], empty_dir: Path, tmp_path: Path
) -> None:
    url = _url(published)
    cli(empty_dir, "get", url, "clf", "-s", "production", "-o", "one")
    gone = tmp_path / "srv-gone"
    published["bare"].parent.rename(gone)  # the server (and the blob remote beside it) disappears
    r = cli(empty_dir, "get", url, "clf", "-s", "production", "-o", "two", code=9)
    assert r.stderr.startswith("error: cannot read the Git repository") and r.stderr.count("\n") == 1
    r = cli(empty_dir, "get", url, "clf", "-s", "production", "-o", "two", "--offline", "--json")
    assert json.loads(r.stdout)["version"] == "v1.0.0"
    assert tree_bytes(empty_dir / "two") == tree_bytes(published["v1"])
    with ModelRegistry(url, offline=True) as reg:
        assert reg.get("clf", stage="production").version == "v1.0.0"
    r = cli(empty_dir, "get", "file:///nowhere/never.git", "clf", "--offline", code=9)
    assert "never fetched" in r.stderr and r.stderr.count("\n") == 1


def test_a_corrupted_chunk_on_the_blob_remote_is_rejected_and_nothing_is_written(
    published: dict[str, Any], empty_dir: Path
) -> None:
    victim = _chunk_of(published, "v1")  # each file of these models is one chunk
    victim.chmod(0o644)
    victim.write_bytes(b"not the bytes this name promises" * 100)
    r = cli(empty_dir, "get", _url(published), "clf", "v1.0.0", "-o", "out", code=5)
    assert "corrupted" in r.stderr and r.stderr.count("\n") == 1
    assert not (empty_dir / "out").exists()
    assert not [p for p in empty_dir.iterdir() if "uniflow-get" in p.name]  # no partial download left
    # the good version still comes through, and the bad chunk was not kept in the cache
    cli(empty_dir, "get", _url(published), "clf", "v1.1.0", "-o", "out")
    r = cli(empty_dir, "get", _url(published), "clf", "v1.0.0", "-o", "again", code=5)
    assert not (empty_dir / "again").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_torn_chunk_in_the_cache_is_fetched_again_not_an_error(
    published: dict[str, Any], empty_dir: Path, cache_dir: Path, damage: str
) -> None:
    """The chunk cache is not fsynced: after a crash a cached chunk may be torn. It is then a
    miss (deleted, fetched again and verified), never an error, and the remote is untouched."""
    url = _url(published)
    cli(empty_dir, "get", url, "clf", "v1.0.0", "-o", "one")
    remote_chunk = _chunk_of(published, "v1")
    good = remote_chunk.read_bytes()
    cached = cache_dir / "store" / ".uniflow" / "objects" / remote_chunk.parent.name / remote_chunk.name
    assert cached.read_bytes() == good
    torn = {"truncated": good[: len(good) // 2], "garbage": os.urandom(len(good)), "empty": b""}[damage]
    cached.unlink()  # what a crash leaves: a new file under the name, its bytes incomplete
    cached.write_bytes(torn)
    r = cli(empty_dir, "get", url, "clf", "v1.0.0", "-o", "two", "--json")
    assert tree_bytes(empty_dir / "two") == tree_bytes(published["v1"])
    assert json.loads(r.stdout)["version"] == "v1.0.0"
    assert cached.read_bytes() == good  # the cache holds the verified chunk again
    assert remote_chunk.read_bytes() == good


def test_chunks_from_a_directory_remote_on_the_same_disk_are_not_copied_into_the_cache(
    published: dict[str, Any], empty_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """The cache keeps a chunk of a directory remote on its own filesystem as a hard link to the
    remote's (verified) file: no second copy of the bytes; it still answers once the remote is gone."""
    url = _url(published)
    cli(empty_dir, "get", url, "clf", "v1.0.0", "-o", "one")
    remote_chunk = _chunk_of(published, "v1")
    cached = cache_dir / "store" / ".uniflow" / "objects" / remote_chunk.parent.name / remote_chunk.name
    assert cached.stat().st_ino == remote_chunk.stat().st_ino
    published["bare"].parent.rename(tmp_path / "srv-gone")  # the server and its blob remote disappear
    cli(empty_dir, "get", url, "clf", "v1.0.0", "-o", "two", "--offline")
    assert tree_bytes(empty_dir / "two") == tree_bytes(published["v1"])


def test_a_cache_on_another_filesystem_keeps_its_own_copy_of_each_chunk(
    published: dict[str, Any], empty_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the chunk cannot be hard-linked (the cache on another filesystem) it is copied:
    the cache's file is its own, with the verified bytes."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or shm.stat().st_dev == empty_dir.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's directory")
    import tempfile

    with tempfile.TemporaryDirectory(dir=shm, prefix="uniflow-test-cache-") as other:
        monkeypatch.setenv("UNIFLOW_CACHE_DIR", other)
        cli(empty_dir, "get", _url(published), "clf", "v1.0.0", "-o", "one")
        assert tree_bytes(empty_dir / "one") == tree_bytes(published["v1"])
        remote_chunk = _chunk_of(published, "v1")
        cached = Path(other) / "store" / ".uniflow" / "objects" / remote_chunk.parent.name / remote_chunk.name
        assert cached.read_bytes() == remote_chunk.read_bytes()
        assert cached.stat().st_dev != remote_chunk.stat().st_dev


def _chunk_of(published: dict[str, Any], which: str) -> Path:
    data = sorted(tree_bytes(published[which]).items())[0][1]
    digest = blake3.blake3(data).hexdigest()
    return published["blobs"] / "objects" / digest[:2] / digest[2:]


def test_errors_are_one_line_with_their_exit_codes(
    published: dict[str, Any], empty_dir: Path, tmp_path: Path
) -> None:
    url = _url(published)

    def err(*args: str, code: int) -> str:
        r = cli(empty_dir, *args, code=code)
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
        return r.stderr

    assert "cannot read the Git repository" in err("get", "file:///no/such/repo.git", "clf", code=9)
    assert "model 'nope' not found" in err("get", url, "nope", code=3)
    assert "has no version 'v9.9.9'" in err("get", url, "clf", "v9.9.9", code=3)
    assert "no version in stage 'staging'" in err("get", url, "clf", "--stage", "staging", code=3)
    assert "unreachable" in err("get", url, "clf", "v1.0.0", "--blob", str(tmp_path / "no-blobs"), code=9)
    _chunk_of(published, "v2").unlink()
    r = cli(empty_dir, "get", url, "clf", "v1.1.0", "-o", "o2", code=9)
    assert "lacks 1 chunk" in r.stderr and r.stderr.count("\n") == 1
    assert not (empty_dir / "o2").exists()
    (empty_dir / "taken").mkdir()
    assert "already exists" in err("get", url, "arr", "-o", "taken", code=2)
    cli(empty_dir, "get", url, "arr", "-o", "taken", "--force")
    assert (empty_dir / "taken" / "array.npy").is_file()
    assert not (empty_dir / ".git").exists()


def test_no_blob_remote_known(tmp_path: Path, empty_dir: Path) -> None:
    from tests.helpers import clone, open_registry

    bare = tmp_path / "srv" / "plain.git"
    bare.parent.mkdir(parents=True)
    git(bare.parent, "init", "-q", "--bare", "-b", "main", str(bare))
    a = clone(bare, tmp_path / "plain")
    (a / "train.py").write_text("print(1)\n")
    git(a, "add", "train.py")
    git(a, "commit", "-q", "-m", "code")
    git(a, "push", "-q", "origin", "main")
    reg = open_registry(a)
    (tmp_path / "w.bin").write_bytes(b"weights" * 1000)
    reg.register(model=str(tmp_path / "w.bin"), name="m", version="v1.0.0")
    git(
        a,
        "push",
        "-q",
        "origin",
        "refs/tags/models/*:refs/tags/models/*",
        "refs/uniflow/models/*:refs/uniflow/models/*",
    )
    reg.close()
    r = cli(empty_dir, "get", f"file://{bare}", "m", code=9)
    assert "no blob remote known" in r.stderr and "--blob" in r.stderr and r.stderr.count("\n") == 1
    # the bytes are in the clone's store: name it as the blob remote
    r = cli(empty_dir, "get", f"file://{bare}", "m", "--blob", str(a / ".git" / "uniflow"), "--json")
    assert json.loads(r.stdout)["version"] == "v1.0.0"
    assert (empty_dir / "m" / "w.bin").read_bytes() == b"weights" * 1000


def test_a_directory_blob_remote_outside_the_repository_s_directory_is_refused(
    tmp_path: Path, empty_dir: Path
) -> None:
    from tests.helpers import publish_registry

    outside = tmp_path / "elsewhere" / "blobs"
    pub = publish_registry(tmp_path, blob_url=str(outside))
    url = f"file://{pub['bare']}"
    r = cli(empty_dir, "get", url, "clf", "v1.0.0", code=9)
    assert "refused" in r.stderr and "outside" in r.stderr and "--blob" in r.stderr
    assert not (empty_dir / "clf").exists()
    cli(empty_dir, "get", url, "clf", "v1.0.0", "--blob", str(outside))
    assert tree_bytes(empty_dir / "clf") == tree_bytes(pub["v1"])
    # a relative one resolves against the repository and must stay beside it
    write_config(pub["clone"], '[remotes.origin]\nurl = "../../../../../../../etc"\n')
    git(pub["clone"], "commit", "-q", "-am", "hostile blob remote")
    git(pub["clone"], "push", "-q", "origin", "main")
    r = cli(empty_dir, "get", url, "clf", "v1.1.0", "-o", "two", code=9)
    assert "outside" in r.stderr


def test_write_methods_refuse_without_touching_the_network(cache_dir: Path) -> None:
    url = "https://git.invalid/team/models.git"
    reg = ModelRegistry(url)
    assert "read-only" in repr(reg)
    for call in (
        lambda: reg.register(model="x", name="m"),
        lambda: reg.promote("m", "v1.0.0", "production"),
        lambda: reg.archive("m", "v1.0.0"),
        lambda: reg.rollback("m", "production"),
        lambda: reg.push(),
        lambda: reg.pull(),
        lambda: reg.gc(dry_run=False),
        lambda: reg.verify(),
        lambda: reg.init(),
    ):
        with pytest.raises(ReadOnlyRegistryError) as info:
            call()
        assert url in str(info.value) and "clone" in str(info.value) and info.value.exit_code == 8
    assert not (cache_dir / "mirrors").exists()  # nothing was fetched to refuse


def test_repo_url_read_commands_work_and_write_commands_refuse(
    published: dict[str, Any], empty_dir: Path
) -> None:
    url = _url(published)
    r = cli(empty_dir, "--repo", url, "models", "list")
    assert "clf" in r.stdout and "arr" in r.stdout
    r = cli(empty_dir, "--repo", url, "models", "list", "clf", "--json")
    assert [v["version"] for v in json.loads(r.stdout)] == ["v1.0.0", "v1.1.0"]
    r = cli(empty_dir, "--repo", url, "models", "show", "clf", "--stage", "production", "--json")
    assert json.loads(r.stdout)["version"] == "v1.0.0"
    r = cli(empty_dir, "--repo", url, "models", "history", "clf")
    assert "promote" in r.stdout
    r = cli(empty_dir, "--repo", url, "models", "compare", "clf", "v1.0.0", "v1.1.0")
    assert "accuracy" in r.stdout
    cli(empty_dir, "--repo", url, "models", "export", "clf", "v1.1.0", "dest")
    assert tree_bytes(empty_dir / "dest") == tree_bytes(published["v2"])
    for args in (
        ("models", "promote", "clf", "v1.1.0", "--to", "staging"),
        ("models", "register", str(published["v1"]), "--name", "clf"),
        ("push",),
        ("pull",),
        ("gc", "--yes"),
        ("verify",),
    ):
        r = cli(empty_dir, "--repo", url, *args, code=8)
        assert "read-only" in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
    assert not (empty_dir / ".git").exists()


def test_init_of_a_bare_repository_refuses(published: dict[str, Any], empty_dir: Path) -> None:
    """``uniflow init BARE``: the registry it opens is read by URL, which has no ``init``: the
    one read-only line (exit 8), not a report of a registry initialised in the chunk cache."""
    r = cli(empty_dir, "init", str(published["bare"]), code=8)
    assert "cannot init" in r.stderr and "read-only" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stdout == ""


def test_ui_serves_a_registry_opened_by_url(published: dict[str, Any], empty_dir: Path) -> None:
    """`uniflow --repo URL ui --export DIR` renders the remote's models (issue 13's URL case)."""
    out = empty_dir / "site"
    cli(empty_dir, "--repo", _url(published), "ui", "--export", str(out))
    index = (out / "index.html").read_text()
    names = [m.name for m in ModelRegistry(_url(published)).list_models()]
    assert "clf" in names and all(n in index for n in names) and "production" in index


def test_a_remote_chunk_that_is_a_fifo_is_refused_without_hanging(
    published: dict[str, Any], empty_dir: Path
) -> None:
    """The directory blob remote is not ours: a FIFO under a chunk's name would make a plain
    open wait for a writer forever. `uniflow get` refuses it with one line, in bounded time,
    and leaves nothing behind."""
    victims = sorted(p for p in (published["blobs"] / "objects").rglob("*") if p.is_file())
    for victim in victims:
        victim.unlink()
        os.mkfifo(victim)
    r = cli(empty_dir, "get", _url(published), "clf", "v1.0.0", "-o", "out", code=5, timeout=60)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "FIFO, not a regular file" in lines[0], r.stderr
    assert list(empty_dir.iterdir()) == []
