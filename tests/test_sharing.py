"""Push and pull through a bare Git repository and a directory blob remote (real git, real processes)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import blake3
import pytest

from tests.helpers import (
    GIT_ENV,
    cli,
    clone,
    flip_stored_byte,
    git,
    log_subjects,
    model_dir,
    open_registry,
    remote_chunks,
    shared_setup,
    stored_chunks,
    tree_bytes,
)
from uniflow import IntegrityError, LifecycleConflictError, PullReport, PushRejectedError, RemoteError


def _objects(blobs: Path) -> list[Path]:
    return sorted(p for p in (blobs / "objects").rglob("*") if p.is_file())


@pytest.fixture
def loose(monkeypatch: pytest.MonkeyPatch) -> None:
    """Push loose chunk files, as uniflow did before packs on remotes (``objects/ab/…``):
    what these tests check is how such chunks are read, written and refused."""
    monkeypatch.setenv("UNIFLOW_BLOB_LAYOUT", "loose")


def _pushed_chunk(tmp_path: Path, seed: int) -> tuple[Path, Path]:
    """Model ``m`` v1.0.0 (two one-chunk files) registered in clone ``a`` and pushed; the bare
    repository and the first chunk file on the directory blob remote."""
    bare, a = shared_setup(tmp_path)
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / "src", 2, seed=seed)), "m", version="v1.0.0")
    ra.push()
    return bare, _objects(tmp_path / "blobs")[0]


def test_two_clones_push_pull_and_refused_stale_promotion(tmp_path: Path) -> None:
    bare, a = shared_setup(tmp_path)
    blobs = tmp_path / "blobs"
    ra = open_registry(a)
    src1 = model_dir(tmp_path / "m1", 6, seed=1)
    src2 = model_dir(tmp_path / "m2", 6, seed=2)
    ra.register(str(src1), "clf", version="v1.0.0", metrics={"accuracy": 0.91})
    ra.register(str(src2), "clf", version="v1.1.0", metrics={"accuracy": 0.93})
    ra.promote("clf", "v1.0.0", "production")
    res = ra.push()
    assert res.versions == ("clf/v1.0.0", "clf/v1.1.0") and res.lifecycle == ("clf",)
    assert res.chunks.transferred == 12 and len(remote_chunks(blobs)) == 12
    remote_refs = git(bare, "for-each-ref", "--format=%(refname)")
    assert "refs/uniflow/models/clf" in remote_refs and "refs/uniflow/stages/clf/production" in remote_refs
    assert ra.push().up_to_date is True  # nothing new: nothing sent

    # B clones, pulls (CLI) and loads by stage: bytes come from the blob remote on demand, verified
    b = clone(bare, tmp_path / "b")
    out = cli(b, "pull").stdout
    assert "clf: new" in out
    rb = open_registry(b)
    assert rb.get("clf", stage="production").version == "v1.0.0"
    assert (
        git(b, "rev-parse", "refs/uniflow/stages/clf/production").strip()
        == git(b, "rev-parse", "refs/tags/models/clf/v1.0.0").strip()
    )
    loaded = rb.load("clf", stage="production")
    assert tree_bytes(Path(loaded)) == tree_bytes(src1)

    # B promotes and pushes (CLI)
    rb.promote("clf", "v1.1.0", "staging")
    cli(b, "push")

    # A promotes without pulling: its push is refused, cleanly, before any byte is sent
    src3 = model_dir(tmp_path / "m3", 3, seed=3)
    ra.register(str(src3), "clf", version="v1.2.0", metrics={"accuracy": 0.95})
    ra.promote("clf", "v1.2.0", "production")
    before = len(_objects(blobs))
    with pytest.raises(PushRejectedError) as info:
        ra.push()
    assert "uniflow pull" in str(info.value) and "\n" not in str(info.value)
    assert len(_objects(blobs)) == before
    r = cli(a, "push", code=9)
    assert (
        r.stderr.startswith("error: push rejected")
        and "uniflow pull" in r.stderr
        and len(r.stderr.splitlines()) == 1
    )
    assert "refs/tags/models/clf/v1.2.0" not in git(bare, "for-each-ref")

    # after pull, A sees B's promotion and the lifecycle log holds both
    cli(a, "pull")
    assert ra.get("clf", stage="staging").version == "v1.1.0"
    assert ra.get("clf", stage="production").version == "v1.2.0"
    subjects = log_subjects(a, "refs/uniflow/models/clf")
    assert any("promote clf v1.1.0: development -> staging" in s for s in subjects)
    assert any("promote clf v1.2.0: development -> production" in s for s in subjects)
    replayed = [e for e in ra.history("clf") if e.extra.get("replayed_from")]
    assert [e.version for e in replayed] == ["v1.2.0", "v1.2.0"]  # its register and promote events

    # now A's push fast-forwards, and B sees everything
    res = ra.push()
    assert res.lifecycle == ("clf",) and res.chunks.transferred == 3
    remote_log = log_subjects(bare, "refs/uniflow/models/clf")
    assert any("v1.1.0: development -> staging" in s for s in remote_log)
    assert any("v1.2.0: development -> production" in s for s in remote_log)
    cli(b, "pull", "--stage", "production")
    rb = open_registry(b)
    assert rb.get("clf", stage="production").version == "v1.2.0"
    assert rb.get("clf", "v1.0.0").stage == "archived"
    assert tree_bytes(Path(rb.load("clf", stage="production"))) == tree_bytes(src3)


def test_conflicting_promotions_need_ours_or_theirs(tmp_path: Path) -> None:
    bare, a = shared_setup(tmp_path)
    ra = open_registry(a)
    for i, v in enumerate(("v1.0.0", "v1.1.0", "v1.2.0")):
        ra.register(str(model_dir(tmp_path / f"s{i}", 1, seed=10 + i)), "m", version=v)
    ra.push()
    b = clone(bare, tmp_path / "b")
    cli(b, "pull")
    rb = open_registry(b)
    rb.promote("m", "v1.1.0", "production")
    rb.push()
    ra.promote("m", "v1.2.0", "production")
    with pytest.raises(PushRejectedError):
        ra.push()
    r = cli(a, "pull", code=9)
    assert "model 'm'" in r.stderr and "--ours m" in r.stderr and "--theirs m" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    with pytest.raises(LifecycleConflictError) as conflict:  # the library: the same, with a typed result
        ra.pull()
    assert conflict.value.models == ["m"] and "\n" not in str(conflict.value)
    assert isinstance(conflict.value.result, PullReport) and conflict.value.result.models["m"] == "diverged"
    assert not conflict.value.result.ok
    r = cli(a, "pull", "--json", code=9)  # --json prints what was integrated, then the error
    assert json.loads(r.stdout) == conflict.value.result.to_dict()
    assert json.loads(r.stdout)["models"] == {"m": "diverged"}
    assert ra.get("m", stage="production").version == "v1.2.0"  # nothing changed locally
    cli(a, "pull", "--ours")
    assert ra.get("m", stage="production").version == "v1.2.0"
    assert ra.get("m", "v1.1.0").stage == "archived"
    ra.push()
    rb.promote("m", "v1.0.0", "staging")  # B is now behind and diverged: theirs wins
    cli(b, "pull", "--theirs")
    assert rb.get("m", stage="production").version == "v1.2.0"
    assert rb.get("m", "v1.0.0").stage == "development"
    assert open_registry(b).push().up_to_date is True


def test_interrupted_push_resumes_sending_only_what_is_missing(tmp_path: Path, loose: None) -> None:
    bare, a = shared_setup(tmp_path)
    blobs = tmp_path / "blobs"
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / "big", 40, seed=7)), "big", version="v1.0.0")
    env = {**os.environ, **GIT_ENV, "UNIFLOW_TEST_KILL_AFTER_UPLOADS": "5"}
    code = "from uniflow import ModelRegistry; ModelRegistry('.').push(jobs=2)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=a, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == -9, proc.stderr
    present = _objects(blobs)
    assert 5 <= len(present) < 40
    assert "models/big" not in git(bare, "for-each-ref")  # bytes first: no ref was pushed
    import blake3

    for p in present:  # nothing partial under a final name
        assert blake3.blake3(p.read_bytes()).hexdigest() == p.parent.name + p.name
    res = ra.push()
    assert res.chunks.to_dict() == {
        "wanted": 40,
        "present": len(present),
        "transferred": 40 - len(present),
        "bytes": (40 - len(present)) * (64 << 10),
    }
    assert len(_objects(blobs)) == 40
    assert "refs/tags/models/big/v1.0.0" in git(bare, "for-each-ref")


def test_corrupted_remote_chunk_is_refused(tmp_path: Path, loose: None) -> None:
    bare, victim = _pushed_chunk(tmp_path, seed=3)
    victim.chmod(stat.S_IWUSR | stat.S_IRUSR)
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    b = clone(bare, tmp_path / "b")
    cli(b, "pull")
    rb = open_registry(b)
    with pytest.raises(IntegrityError, match="corrupted"):
        rb.load("m", "v1.0.0")
    assert not rb.store.has(victim.parent.name + victim.name)
    r = cli(b, "pull", "--all", code=5)
    assert "corrupted" in r.stderr


def test_push_copies_exact_chunks_and_never_publishes_a_corrupted_one(tmp_path: Path, loose: None) -> None:
    """A directory remote gets its chunks copied in the kernel from the descriptor each was
    verified through: every object there hashes to its name, and a chunk corrupted in the
    local store stops the push (exit 5) without reaching the remote."""
    bare, a = shared_setup(tmp_path)
    blobs = tmp_path / "blobs"
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / "src", 3, size=3 << 20, seed=4)), "m", version="v1.0.0")
    ra.push()
    sent = _objects(blobs)
    assert len(sent) >= 3
    for obj in sent:
        assert blake3.blake3(obj.read_bytes()).hexdigest() == obj.parent.name + obj.name
    ra.register(str(model_dir(tmp_path / "src2", 1, size=1 << 20, seed=5)), "m", version="v1.1.0")
    new = [c for c in stored_chunks(ra.store) if c.digest not in {o.parent.name + o.name for o in sent}]
    assert new
    digest = new[0].digest
    flip_stored_byte(new[0], 7)  # in its pack
    r = cli(a, "push", code=5)
    assert "corrupted" in r.stderr
    assert not (blobs / "objects" / digest[:2] / digest[2:]).exists()


def test_push_without_blob_remote_is_refused_before_refs(tmp_path: Path) -> None:
    bare, a = shared_setup(tmp_path)
    ra = open_registry(a)
    cli(a, "remote", "remove", "origin")
    ra.reload_config()
    ra.register(str(model_dir(tmp_path / "s", 1)), "m", version="v1.0.0")
    with pytest.raises(RemoteError, match="no blob remote"):
        ra.push()
    assert "models/m" not in git(bare, "for-each-ref")


def test_remote_commands(tmp_path: Path) -> None:
    _bare, a = shared_setup(tmp_path)
    cli(a, "remote", "add", "backup", "s3://bucket/prefix", "--endpoint-url", "http://127.0.0.1:9")
    r = cli(a, "remote", "add", "backup", "/elsewhere", code=2)
    assert "already exists" in r.stderr
    listed = cli(a, "remote", "list").stdout
    assert "backup" in listed and "s3://bucket/prefix" in listed and "origin" in listed
    import json

    data = json.loads(cli(a, "remote", "list", "--json").stdout)
    assert {d["name"] for d in data} == {"backup", "origin"}
    assert next(d for d in data if d["name"] == "backup")["endpoint_url"] == "http://127.0.0.1:9"
    cli(a, "remote", "remove", "backup")
    cli(a, "remote", "remove", "backup", code=3)
    cli(a, "remote", "add", "bad/name", "/x", code=2)
    code = (
        "import uniflow, uniflow.sharing.push, uniflow.sharing.pull, uniflow.sharing.ci, "
        "uniflow.sharing.hooks, uniflow.cli._share, sys; print('fsspec' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert r.stdout.strip() == "False"


def test_hooks_git_push_tags_alone_publishes_loadable_versions(tmp_path: Path) -> None:
    bare, a = shared_setup(tmp_path)
    b = clone(bare, tmp_path / "b")
    out = cli(a, "hooks", "install").stdout
    assert "installed" in out
    hook = Path(git(a, "rev-parse", "--git-path", "hooks").strip())
    hook = hook if hook.is_absolute() else a / hook
    assert os.access(hook / "pre-push", os.X_OK) and os.access(hook / "post-merge", os.X_OK)
    assert "unchanged" in cli(a, "hooks", "install").stdout
    cli(b, "hooks", "install")

    ra = open_registry(a)
    src = model_dir(tmp_path / "src", 4, seed=5)
    ra.register(str(src), "m", version="v1.0.0")
    git(a, "push", "-q", "origin", "--tags")  # plain git: the pre-push hook uploads the bytes
    assert len(remote_chunks(tmp_path / "blobs")) == 4
    cli(b, "pull")
    rb = open_registry(b)
    assert tree_bytes(Path(rb.load("m", "v1.0.0"))) == tree_bytes(src)

    # post-merge: after `git pull`, B holds A's lifecycle without running uniflow itself
    ra.promote("m", "v1.0.0", "production")
    cli(a, "push")
    (a / "train.py").write_text("print('train v2')\n")
    git(a, "commit", "-qam", "more code")
    git(a, "push", "-q", "origin", "main")
    git(b, "pull", "-q", "origin", "main")
    assert open_registry(b).get("m", stage="production").version == "v1.0.0"


def test_pre_push_hook_refuses_when_bytes_cannot_be_uploaded(tmp_path: Path) -> None:
    bare, a = shared_setup(tmp_path)
    cli(a, "hooks", "install")
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / "src", 1)), "m", version="v1.0.0")
    (tmp_path / "blobs").write_text("not a directory: every upload fails")
    r = subprocess.run(
        ["git", "push", "origin", "--tags"],
        cwd=a,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **GIT_ENV},
        check=False,
    )
    assert r.returncode != 0 and "error:" in r.stderr
    assert "models/m" not in git(bare, "for-each-ref")


def test_hooks_install_chains_a_foreign_hook(tmp_path: Path) -> None:
    # the hook that was there is kept (byte for byte) and runs first; --force is not needed
    _bare, a = shared_setup(tmp_path)
    hooks = a / ".git" / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "pre-push").write_text("#!/bin/sh\necho mine\n")
    r = cli(a, "hooks", "install")
    assert "chained" in r.stdout
    assert "uniflow-hook: pre-push" in (hooks / "pre-push").read_text()
    assert (hooks / "pre-push.uniflow-chained").read_text() == "#!/bin/sh\necho mine\n"
    assert "uniflow-hook: post-merge" in (hooks / "post-merge").read_text()


def test_hook_files_match_what_install_writes() -> None:
    from uniflow.sharing.hooks import HOOK_NAMES, hook_script

    root = Path(__file__).resolve().parent.parent
    for name in HOOK_NAMES:
        path = root / "hooks" / name
        assert path.read_text() == hook_script(name), (
            f"hooks/{name} is stale: regenerate it from hook_script()"
        )
        assert os.access(path, os.X_OK)


def test_same_version_registered_twice_is_refused_both_ways(tmp_path: Path) -> None:
    bare, a = shared_setup(tmp_path)
    b = clone(bare, tmp_path / "b")
    ra, rb = open_registry(a), open_registry(b)
    ra.register(str(model_dir(tmp_path / "x", 1, seed=1)), "m", version="v1.0.0")
    rb.register(str(model_dir(tmp_path / "y", 1, seed=2)), "m", version="v1.0.0")
    ra.push()
    with pytest.raises(PushRejectedError, match="m v1.0.0 exists on 'origin' with different content"):
        rb.push()
    r = cli(b, "pull", code=9)
    assert "models/m/v1.0.0" in r.stderr and "registered twice" in r.stderr
    assert rb.get("m", "v1.0.0").digest != ra.get("m", "v1.0.0").digest  # B's version untouched


def test_fsspec_backend_round_trip_with_temporary_names(tmp_path: Path, loose: None) -> None:
    """A non-object-store fsspec filesystem: upload to tmp/, then rename; listing and download verified."""
    import fsspec

    from uniflow.sharing.blobs import download_chunks, upload_chunks
    from uniflow.sharing.blobstore import FsspecRemote

    _bare, a = shared_setup(tmp_path)
    ra = open_registry(a)
    mv = ra.register(str(model_dir(tmp_path / "src", 3, seed=4)), "m", version="v1.0.0")
    digests = [c for f in mv.files for c in _chunk_digests(ra, "m", "v1.0.0", f.path)]
    remote = FsspecRemote("fs", "fs://test", fsspec.filesystem("file"), str(tmp_path / "fsremote"))
    assert remote.atomic_put is False
    stats = upload_chunks(ra.store, remote, digests)
    assert stats.transferred == 3 and remote.list_digests() == set(digests)
    assert list((tmp_path / "fsremote" / "tmp").iterdir()) == []
    assert upload_chunks(ra.store, remote, digests).transferred == 0
    b = clone(_bare, tmp_path / "b")
    rb = open_registry(b)
    assert download_chunks(rb.store, remote, digests).transferred == 3
    assert rb.store.missing(digests) == []


def _chunk_digests(reg: object, model: str, version: str, path: str) -> list[str]:
    from uniflow._records.manifest import file_records

    _, m = reg.repository.index.manifest(model, version)  # type: ignore[attr-defined]
    return [c.digest for rel, rec, _ in file_records(m) if rel == path for c in rec.chunks]


def test_remote_and_model_arguments(tmp_path: Path) -> None:
    bare, a = shared_setup(tmp_path)
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / "x", 1, seed=1)), "one", version="v1.0.0")
    ra.register(str(model_dir(tmp_path / "y", 1, seed=2)), "two", version="v1.0.0")
    assert "not found" in cli(a, "push", "nosuch", code=3).stderr
    res = json_out(cli(a, "push", "origin", "one", "--json"))
    assert res["versions"] == ["one/v1.0.0"] and res["models"] == ["one"]
    assert "models/two" not in git(bare, "for-each-ref")
    res = json_out(cli(a, "push", "two", "--json"))  # no remote word: origin
    assert res["remote"] == "origin" and res["versions"] == ["two/v1.0.0"]
    b = clone(bare, tmp_path / "b")
    res = json_out(cli(b, "pull", "origin", "two", "--json"))  # names: their bytes come too
    assert res["versions"] == ["two/v1.0.0"] and res["chunks"]["transferred"] == 1
    assert "not found" in cli(b, "pull", "three", code=3).stderr


def json_out(r: subprocess.CompletedProcess[str]) -> dict:  # type: ignore[type-arg]
    import json

    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_a_local_chunk_written_while_it_is_pushed_is_not_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loose: None
) -> None:
    """Push copies each verified chunk from its descriptor in the kernel; a local object
    written in between is caught after the copy and the remote's new copy removed."""
    from uniflow import CorruptChunkError

    bare, a = shared_setup(tmp_path)
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / "src", 1, size=2 << 20, seed=6)), "m", version="v1.0.0")
    victims = _rewrite_the_first_source_copied(monkeypatch, a / ".git" / "uniflow" / "packs")
    with pytest.raises(CorruptChunkError, match="changed in the local store while it was sent"):
        ra.push()
    (digest,) = victims
    assert not (tmp_path / "blobs" / "objects" / digest[:2] / digest[2:]).exists()


def test_a_remote_chunk_written_while_it_is_pulled_is_not_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loose: None
) -> None:
    """Pull copies each chunk of a directory remote in the kernel from the file it verified;
    a remote file written in between is caught after the copy and the local copy removed."""

    bare, a = shared_setup(tmp_path)
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / "src", 1, size=2 << 20, seed=7)), "m", version="v1.0.0")
    ra.push()
    b = clone(bare, tmp_path / "b")
    victims = _rewrite_the_first_source_copied(monkeypatch, tmp_path / "blobs")
    rb = open_registry(b)
    with pytest.raises(IntegrityError, match="changed on blob remote"):
        rb.pull(all_versions=True)
    (digest,) = victims
    assert not rb.store.has(digest)


def _rewrite_the_first_source_copied(monkeypatch: pytest.MonkeyPatch, under: Path) -> list[str]:
    """Make the first kernel copy out of a chunk file under ``under`` rewrite that file first
    (the window between verifying a chunk and copying it from its descriptor); the digests
    of the files rewritten."""
    import uniflow._storage.fsio as fsio

    real = os.copy_file_range
    victims: list[str] = []
    first = threading.Lock()  # the transfer runs on several threads: one of them rewrites

    def copy(
        src: int, dst: int, count: int, offset_src: int | None = None, offset_dst: int | None = None
    ) -> int:  # noqa: E501
        path = Path(os.readlink(f"/proc/self/fd/{src}"))
        if str(path).startswith(str(under)) and first.acquire(blocking=False):
            if path.suffix == ".pack":  # the chunk lies at offset_src of its pack
                victims.append(blake3.blake3(os.pread(src, count, offset_src or 0)).hexdigest())
            else:
                victims.append(path.parent.name + path.name)
            path.chmod(0o644)
            with open(path, "r+b") as f:
                f.seek(offset_src or 0)
                f.write(b"\0" * 16)
        return real(src, dst, count, offset_src, offset_dst)

    monkeypatch.setattr(fsio.os, "copy_file_range", copy)
    return victims


@pytest.mark.parametrize("plant", ["fifo", "device", "symlink"])
def test_a_remote_chunk_that_is_no_regular_file_is_refused_at_once(
    tmp_path: Path, plant: str, loose: None
) -> None:
    """A directory remote is hostile input: a chunk's name may hold a FIFO (opening it would
    wait for a writer forever), a link to a device (reading it would never end) or a link to
    some other file. Pull refuses the chunk with one line, in bounded time, stores nothing
    under its name, and never reads through the link."""
    bare, victim = _pushed_chunk(tmp_path, seed=4)
    good = victim.read_bytes()
    victim.unlink()
    if plant == "fifo":
        os.mkfifo(victim)
    elif plant == "device":
        victim.symlink_to("/dev/zero")
    else:  # a link to a file holding exactly the right bytes: still not followed
        (tmp_path / "elsewhere").write_bytes(good)
        victim.symlink_to(tmp_path / "elsewhere")
    b = clone(bare, tmp_path / "b")
    cli(b, "pull")  # refs only; chunks are fetched when a version is used
    r = cli(b, "pull", "--all", code=5, timeout=60)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not a regular file" in lines[0], r.stderr
    assert not open_registry(b).store.has(victim.parent.name + victim.name)


@pytest.mark.parametrize("where", ["fanout", "objects", "tmp", "packs"])
def test_push_never_writes_through_a_link_planted_in_the_directory_remote(
    tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever can write the blob remote's directory can plant a link where uniflow creates
    files (``objects/ab``, ``objects``, ``tmp``, ``packs``). Push refuses with one line and writes
    nothing at the link's target; the remote's root itself may be reached through a symlink.
    (``objects`` is written by a push of loose chunks only.)"""
    if where in ("fanout", "objects"):
        monkeypatch.setenv("UNIFLOW_BLOB_LAYOUT", "loose")
    bare, a = shared_setup(tmp_path, blob_url=str(tmp_path / "blobs-link"))
    real = tmp_path / "blobs-real"
    real.mkdir()
    (tmp_path / "blobs-link").symlink_to(real)  # the root: the user's choice, followed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / "src", 1, seed=8)), "m", version="v1.0.0")
    if where == "fanout":
        (real / "objects").mkdir()
        for i in range(256):
            (real / "objects" / f"{i:02x}").symlink_to(elsewhere)
    elif where == "objects":
        (real / "objects").symlink_to(elsewhere)
    elif where == "packs":
        (real / "packs").symlink_to(elsewhere)
    else:
        (real / "tmp").symlink_to(elsewhere)
    r = cli(a, "push", code=None)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "symlink" in lines[0], r.stderr
    assert list(elsewhere.iterdir()) == []
