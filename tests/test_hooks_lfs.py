"""uniflow next to Git LFS, with the real binaries: hooks that chain (both pre-pushes run on one
``git push``), ``hooks uninstall`` putting back what was there, Git LFS pointer files refused
or warned about at register, and the fetch refspecs that let a plain ``git fetch`` bring the
registry refs into a fresh clone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from tests.helpers import GIT_ENV, cli, clone, git, model_dir, open_registry, remote_chunks, shared_setup

needs_lfs = pytest.mark.skipif(
    shutil.which("git-lfs") is None, reason="git-lfs is not installed: these tests need the real binary"
)

LFS_SPEC = "version https://git-lfs.github.com/spec/v1\n"
LIFECYCLE_SPEC = "refs/uniflow/models/*:refs/uniflow/models/*"
TAGS_SPEC = "refs/tags/models/*:refs/tags/models/*"


def _hooks(repo: Path) -> Path:
    out = Path(git(repo, "rev-parse", "--git-path", "hooks").strip())
    return out if out.is_absolute() else repo / out


def _snapshot(hooks: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of the hooks directory: its bytes and its permission bits."""
    return {p.name: (p.read_bytes(), p.stat().st_mode & 0o7777) for p in hooks.iterdir() if p.is_file()}


def _lfs_clone(tmp_path: Path) -> tuple[Path, Path, str]:
    """``shared_setup`` plus Git LFS in clone ``a``: ``*.bin`` tracked, one LFS file committed
    (not pushed yet); returns ``(bare, a, oid of the LFS file)``."""
    bare, a = shared_setup(tmp_path)
    git(a, "lfs", "install", "--local")
    git(a, "lfs", "track", "*.bin")
    (a / "weights.bin").write_bytes(os.urandom(5000))
    git(a, "add", ".gitattributes", "weights.bin")
    git(a, "commit", "-q", "-m", "an LFS file")
    pointer = git(a, "cat-file", "blob", "HEAD:weights.bin")
    assert pointer.startswith(LFS_SPEC)
    oid = next(ln for ln in pointer.splitlines() if ln.startswith("oid sha256:")).split(":")[1]
    return bare, a, oid


def _push(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "push", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **GIT_ENV, **(env or {})},
        check=False,
    )


def _chunks(blobs: Path) -> set[str]:
    return remote_chunks(blobs) if blobs.exists() else set()


# ---------------------------------------------------------------------- hooks that chain
@needs_lfs
def test_hooks_chain_git_lfs_and_one_git_push_sends_lfs_objects_and_model_chunks(tmp_path: Path) -> None:
    bare, a, oid = _lfs_clone(tmp_path)
    hooks = _hooks(a)
    before = _snapshot(hooks)
    lfs_pre_push = before["pre-push"][0]
    assert b"git lfs pre-push" in lfs_pre_push

    r = cli(a, "hooks", "install")  # no --force: LFS's hooks are kept and chained
    assert "chained" in r.stdout, r.stdout
    assert "uniflow-hook: pre-push" in (hooks / "pre-push").read_text()
    assert (hooks / "pre-push.uniflow-chained").read_bytes() == lfs_pre_push
    for lfs_only in ("post-checkout", "post-commit"):
        assert (hooks / lfs_only).read_bytes() == before[lfs_only][0]

    src = model_dir(tmp_path / "src", 3, seed=11)
    open_registry(a).register(str(src), "m", version="v1.0.0")
    r = _push(a, "origin", "main", "--tags")  # one plain git push: LFS's hook and uniflow's
    assert r.returncode == 0, r.stderr
    assert (bare / "lfs" / "objects" / oid[:2] / oid[2:4] / oid).is_file(), "the LFS object was not pushed"
    assert len(_chunks(tmp_path / "blobs")) == 3, "the model's chunks were not uploaded"
    assert "refs/tags/models/m/v1.0.0" in git(bare, "for-each-ref", "--format=%(refname)")
    open_registry(a).promote("m", "v1.0.0", "production")
    cli(a, "push")  # `uniflow push` runs git push: LFS's hook runs, uniflow's part steps aside
    assert "refs/uniflow/models/m" in git(bare, "for-each-ref", "--format=%(refname)")

    assert "unchanged" in cli(a, "hooks", "install").stdout  # idempotent
    listed = json.loads(cli(a, "hooks", "install", "--json").stdout)
    assert [(h["hook"], h["status"]) for h in listed] == [
        ("pre-push", "unchanged"),
        ("post-merge", "unchanged"),
    ]
    assert listed[0]["chained"] == str(hooks / "pre-push.uniflow-chained")
    r = cli(a, "hooks", "uninstall")
    assert "restored" in r.stdout, r.stdout
    assert _snapshot(hooks) == before, "uninstall did not put back exactly what was there"


def test_a_failing_chained_hook_refuses_the_push_and_both_hooks_see_the_same_input(tmp_path: Path) -> None:
    bare, a = shared_setup(tmp_path)
    hooks = _hooks(a)
    hooks.mkdir(parents=True, exist_ok=True)
    seen = tmp_path / "seen"
    old = f'#!/bin/sh\ncat > "{seen}.stdin"\necho "$@" > "{seen}.args"\nexit "${{OLD_HOOK_STATUS:-0}}"\n'
    (hooks / "pre-push").write_text(old)
    (hooks / "pre-push").chmod(0o750)
    cli(a, "hooks", "install")
    open_registry(a).register(str(model_dir(tmp_path / "src", 2, seed=12)), "m", version="v1.0.0")

    r = _push(a, "origin", "--tags", env={"OLD_HOOK_STATUS": "7"})
    assert r.returncode != 0, "the old hook failed: the push must be refused"
    assert "models/m" not in git(bare, "for-each-ref")
    assert not (tmp_path / "blobs").exists() or not _chunks(tmp_path / "blobs")
    assert "refs/tags/models/m/v1.0.0" in seen.with_suffix(".stdin").read_text()

    r = _push(a, "origin", "--tags")
    assert r.returncode == 0, r.stderr
    stdin = seen.with_suffix(".stdin").read_text()
    assert stdin.endswith("\n") and len(stdin.splitlines()) == 1 and "refs/tags/models/m/v1.0.0" in stdin
    assert seen.with_suffix(".args").read_text().split() == ["origin", str(bare)]
    assert len(_chunks(tmp_path / "blobs")) == 2  # uniflow's hook read the same lines
    cli(a, "hooks", "uninstall")
    assert (hooks / "pre-push").read_text() == old and (hooks / "pre-push").stat().st_mode & 0o777 == 0o750
    assert not (hooks / "post-merge").exists()


@needs_lfs
def test_git_lfs_install_after_uniflow_then_hooks_install_chains_it(tmp_path: Path) -> None:
    bare, a = shared_setup(tmp_path)
    hooks = tmp_path / "shared-hooks"  # core.hooksPath is honoured
    git(a, "config", "core.hooksPath", str(hooks))
    cli(a, "hooks", "install")
    assert (hooks / "pre-push").is_file()
    r = subprocess.run(
        ["git", "lfs", "install", "--local"], cwd=a, capture_output=True, text=True, check=False
    )
    assert r.returncode != 0 and "Hook already exists: pre-push" in r.stdout + r.stderr  # git-lfs refuses
    git(a, "lfs", "update", "--force")  # what docs/sharing.md says to do: LFS's hooks over ours...
    assert "git lfs pre-push" in (hooks / "pre-push").read_text()
    r = cli(a, "hooks", "install")  # ...then uniflow chains them again
    assert "chained" in r.stdout
    git(a, "lfs", "track", "*.bin")
    (a / "w.bin").write_bytes(os.urandom(3000))
    git(a, "add", ".gitattributes", "w.bin")
    git(a, "commit", "-q", "-m", "lfs")
    open_registry(a).register(str(model_dir(tmp_path / "src", 1, seed=13)), "m", version="v1.0.0")
    r = _push(a, "origin", "main", "--tags")
    assert r.returncode == 0, r.stderr
    assert list((bare / "lfs" / "objects").rglob("*")) and len(_chunks(tmp_path / "blobs")) == 1


def test_post_merge_runs_the_chained_hook_and_uniflows_and_keeps_the_chained_status(tmp_path: Path) -> None:
    bare, a = shared_setup(tmp_path)
    b = clone(bare, tmp_path / "b")
    hooks = _hooks(b)
    hooks.mkdir(parents=True, exist_ok=True)
    marker = tmp_path / "old-post-merge"
    (hooks / "post-merge").write_text(f'#!/bin/sh\necho "$@" > "{marker}"\nexit 5\n')
    (hooks / "post-merge").chmod(0o755)
    cli(b, "hooks", "install")
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / "src", 1, seed=15)), "m", version="v1.0.0")
    ra.promote("m", "v1.0.0", "production")
    ra.push()
    (a / "train.py").write_text("print('v2')\n")
    git(a, "commit", "-qam", "more code")
    git(a, "push", "-q", "origin", "main")

    git(b, "pull", "-q", "origin", "main")  # git ignores post-merge's status; the merge is done
    assert marker.read_text() == "0\n"  # the old hook ran, with git's argument (not a squash)
    # uniflow's part ran too: stage pointers are derived by its pull, never fetched by git
    assert "refs/uniflow/stages/m/production" in git(b, "for-each-ref", "--format=%(refname)")
    r = subprocess.run([str(hooks / "post-merge"), "0"], cwd=b, capture_output=True, text=True, check=False)
    assert r.returncode == 5  # the chained hook's failure is the hook's status


HUSKY_H = (  # the essence of Husky 9's .husky/_/h: the hook's own name picks the user's script
    "#!/usr/bin/env sh\n"
    'n=$(basename "$0")\n'
    's=$(dirname "$(dirname "$0")")/$n\n'
    '[ ! -f "$s" ] && exit 0\n'
    'sh -e "$s" "$@"\n'
    "c=$?\n"
    '[ $c != 0 ] && echo "husky - $n script failed (code $c)"\n'
    "exit $c\n"
)


def test_a_chained_husky_hook_still_finds_the_script_named_after_it(tmp_path: Path) -> None:
    # Husky 9: core.hooksPath=.husky/_, whose stubs source .husky/_/h, which runs .husky/<hook>
    _bare, a = shared_setup(tmp_path)
    stubs = a / ".husky" / "_"
    stubs.mkdir(parents=True)
    (stubs / "h").write_text(HUSKY_H)
    (stubs / "pre-push").write_text('#!/usr/bin/env sh\n. "$(dirname "$0")/h"\n')
    (stubs / "pre-push").chmod(0o755)
    (a / ".husky" / "pre-push").write_text(f'cat > "{tmp_path}/husky-stdin"\nexit "${{HUSKY_STATUS:-0}}"\n')
    git(a, "config", "core.hooksPath", ".husky/_")
    assert "chained" in cli(a, "hooks", "install").stdout
    open_registry(a).register(str(model_dir(tmp_path / "src", 1, seed=14)), "m", version="v1.0.0")

    r = _push(a, "origin", "--tags", env={"HUSKY_STATUS": "4"})
    assert r.returncode != 0, "the user's .husky/pre-push failed: the push must be refused"
    assert "husky - pre-push script failed (code 4)" in r.stdout + r.stderr
    r = _push(a, "origin", "--tags")
    assert r.returncode == 0, r.stderr
    assert "refs/tags/models/m/v1.0.0" in (tmp_path / "husky-stdin").read_text()
    assert len(_chunks(tmp_path / "blobs")) == 1


def test_hooks_install_chains_the_hook_an_earlier_force_set_aside(tmp_path: Path) -> None:
    # uniflow 0.2's `hooks install --force` replaced LFS's hook and kept it as .uniflow-backup
    _bare, a = shared_setup(tmp_path)
    hooks = _hooks(a)
    hooks.mkdir(parents=True, exist_ok=True)
    lfs = '#!/bin/sh\ngit lfs pre-push "$@"\n'
    (hooks / "pre-push.uniflow-backup").write_text(lfs)
    (hooks / "pre-push").write_text("#!/bin/sh\n# uniflow-hook: pre-push\nexec uniflow hooks run pre-push\n")
    r = cli(a, "hooks", "install")
    assert "chained" in r.stdout
    assert (hooks / "pre-push.uniflow-chained").read_text() == lfs
    assert not (hooks / "pre-push.uniflow-backup").exists()
    cli(a, "hooks", "uninstall")
    assert (hooks / "pre-push").read_text() == lfs  # what was there before uniflow


def test_hooks_install_refuses_to_chain_over_an_already_chained_hook(tmp_path: Path) -> None:
    _bare, a = shared_setup(tmp_path)
    hooks = _hooks(a)
    hooks.mkdir(parents=True, exist_ok=True)
    (hooks / "pre-push").write_text("#!/bin/sh\necho first\n")
    cli(a, "hooks", "install")
    (hooks / "pre-push").write_text("#!/bin/sh\necho second\n")  # someone replaced uniflow's hook
    r = cli(a, "hooks", "install", code=2)
    assert "pre-push.uniflow-chained" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (hooks / "pre-push").read_text() == "#!/bin/sh\necho second\n"
    assert (hooks / "pre-push.uniflow-chained").read_text() == "#!/bin/sh\necho first\n"
    cli(a, "hooks", "install", "--force")  # chains the second; the first is kept as a backup
    assert (hooks / "pre-push.uniflow-chained").read_text() == "#!/bin/sh\necho second\n"
    assert (hooks / "pre-push.uniflow-backup").read_text() == "#!/bin/sh\necho first\n"


# ---------------------------------------------------------------------- LFS pointer files
@needs_lfs
def test_registering_a_git_lfs_pointer_warns_and_strict_refuses(tmp_path: Path) -> None:
    bare, a, _oid = _lfs_clone(tmp_path)
    git(a, "push", "-q", "origin", "main")
    c = tmp_path / "c"
    subprocess.run(
        ["git", "clone", "-q", str(bare), str(c)],
        env={**os.environ, **GIT_ENV, "GIT_LFS_SKIP_SMUDGE": "1"},
        check=True,
        timeout=120,
    )
    assert (c / "weights.bin").read_text().startswith(LFS_SPEC)

    r = cli(c, "models", "register", "weights.bin", "--name", "m")
    warned = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 1 and "Git LFS pointer" in warned[0] and "weights.bin" in warned[0], r.stderr
    r = cli(c, "models", "register", "weights.bin", "--name", "strict", "--strict", code=2)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Git LFS pointer" in lines[0], r.stderr
    assert "strict" not in git(c, "for-each-ref", "--format=%(refname)")

    d = tmp_path / "model-dir"  # inside a registered directory too
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text("{}\n")
    shutil.copy(c / "weights.bin", d / "sub" / "weights.bin")
    r = cli(c, "models", "register", str(d), "--name", "dir")
    assert "warning:" in r.stderr and "sub/weights.bin" in r.stderr, r.stderr
    cli(c, "models", "register", str(d), "--name", "dirstrict", "--strict", code=2)

    r = cli(c, "models", "register", str(model_dir(tmp_path / "real", 1)), "--name", "real", "--strict")
    assert "warning" not in r.stderr  # real bytes: no warning

    import uniflow

    reg = open_registry(c)
    with pytest.warns(uniflow.LfsPointerWarning, match="Git LFS pointer"):
        reg.register(str(c / "weights.bin"), "api")
    with pytest.raises(uniflow.LfsPointerError):
        reg.register(str(d), "apistrict", strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model object is never checked, and warns about nothing
        reg.register(str(model_dir(tmp_path / "real2", 1, seed=3)), "quiet", strict=True)


def test_lfs_pointer_recogniser_follows_the_spec() -> None:
    from uniflow._storage.lfs import lfs_pointer

    oid = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"
    good = f"{LFS_SPEC}oid sha256:{oid}\nsize 12345\n".encode()
    assert lfs_pointer(good) == (oid, 12345)
    ext = f"{LFS_SPEC}ext-0-foo sha256:{oid}\noid sha256:{oid}\nsize 1\n".encode()
    assert lfs_pointer(ext) == (oid, 1)
    assert lfs_pointer(good.replace(b"spec/v1", b"spec/v2")) is None
    assert lfs_pointer(good[:-1] + b"x\n") is None  # size not a number
    assert lfs_pointer(good.replace(b"sha256:4d", b"sha256:zz")) is None
    assert lfs_pointer(b"hello\n" + good) is None
    assert lfs_pointer(good + b"\x00" * 2000) is None  # pointers are small text files


# ---------------------------------------------------------------------- fetch refspecs
def test_plain_git_fetch_brings_the_registry_into_a_fresh_clone_and_never_rewinds_it(
    tmp_path: Path,
) -> None:
    bare, a = shared_setup(tmp_path)
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / "v1", 1, seed=1)), "m", version="v1.0.0")
    ra.promote("m", "v1.0.0", "production")
    ra.push()
    before_v2 = git(bare, "rev-parse", "refs/uniflow/models/m").strip()

    lonely = tmp_path / "no-remote"
    lonely.mkdir()
    assert "no Git remote origin yet" in cli(lonely, "init").stdout  # nothing to configure yet

    c = clone(bare, tmp_path / "c")
    r = cli(c, "init")
    assert "git fetch" in r.stdout, r.stdout
    cli(c, "init")
    cli(c, "hooks", "install")  # idempotent: each refspec is in the config once
    specs = git(c, "config", "--get-all", "remote.origin.fetch").split()
    assert specs.count(LIFECYCLE_SPEC) == 1 and TAGS_SPEC not in specs, specs
    assert git(c, "config", "remote.origin.tagOpt").strip() == "--tags"
    git(c, "fetch", "-q")  # plain git
    assert git(c, "rev-parse", "refs/uniflow/models/m").strip() == before_v2
    assert "v1.0.0" in cli(c, "models", "show", "m", "--stage", "production").stdout

    # a new version promoted elsewhere: a plain fetch brings its tag and the lifecycle
    ra.register(str(model_dir(tmp_path / "v2", 1, seed=2)), "m", version="v1.1.0")
    ra.promote("m", "v1.1.0", "production")
    ra.push()
    git(c, "pull", "-q")
    assert "v1.1.0" in cli(c, "models", "show", "m", "--stage", "production").stdout

    # a remote that rewinds the lifecycle (force-pushed) cannot roll the clone's stages back
    git(a, "push", "-q", "--force", "origin", f"{before_v2}:refs/uniflow/models/m")
    r = subprocess.run(["git", "fetch"], cwd=c, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode != 0 and "non-fast-forward" in r.stderr, r.stderr
    assert "v1.1.0" in cli(c, "models", "show", "m", "--stage", "production").stdout


def test_fetch_configuration_never_lets_a_pruning_fetch_delete_what_was_not_pushed(tmp_path: Path) -> None:
    bare, a = shared_setup(tmp_path)
    cli(a, "init")
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / "v1", 1, seed=21)), "mine", version="v1.0.0")  # not pushed
    git(a, "fetch", "-q", "--prune")
    # version tags come by tagOpt --tags, which git never prunes (a refs/tags/models/* refspec would)
    assert "refs/tags/models/mine/v1.0.0" in git(a, "for-each-ref", "--format=%(refname)")

    c = clone(bare, tmp_path / "c")
    git(c, "config", "fetch.prune", "true")  # every fetch prunes: no lifecycle refspec then
    r = cli(c, "init")
    assert "prune" in r.stdout, r.stdout
    assert LIFECYCLE_SPEC not in git(c, "config", "--get-all", "remote.origin.fetch").split()
    rc = open_registry(c)
    rc.register(str(model_dir(tmp_path / "v2", 1, seed=22)), "local", version="v1.0.0")
    rc.promote("local", "v1.0.0", "production")
    git(c, "fetch", "-q")
    refs = git(c, "for-each-ref", "--format=%(refname)")
    assert "refs/tags/models/local/v1.0.0" in refs and "refs/uniflow/models/local" in refs
    assert "v1.0.0" in cli(c, "models", "show", "local", "--stage", "production").stdout
