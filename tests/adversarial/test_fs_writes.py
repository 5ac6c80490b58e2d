"""Every path uniflow writes stays under its root (issue 9, items 1 and 3).

Materializing a version writes ``.git/uniflow/cache/versions/<content digest>/<path>``; exporting
writes ``DEST/<path>``. Hostile manifests (a forged content digest or file path, setuid
modes) and symlink traps already on disk must never make either write, chmod or unlink a
file anywhere else.

The manifest forgeries below are injected *after* the manifest validation gate (by
replacing ``ModelRegistry._manifest``), so the write sites' own defence is tested on its
own: the gate rejects such manifests first when they come from Git.
"""

from __future__ import annotations

import copy
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli, tree_bytes
from uniflow import IntegrityError, InvalidPathError, ModelRegistry
from uniflow._records.manifest import Manifest


def _snapshot(root: Path) -> dict[str, tuple[bytes | str, int, int]]:
    """Every entry under ``root`` (itself included): contents or link target, inode, mode."""
    out: dict[str, tuple[bytes | str, int, int]] = {}
    for p in [root, *sorted(root.rglob("*"))]:
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            body: bytes | str = os.readlink(p)
        elif stat.S_ISREG(st.st_mode):
            body = p.read_bytes()
        else:
            body = "dir"
        out[p.relative_to(root).as_posix()] = (body, st.st_ino, st.st_mode)
    return out


def _forge(
    monkeypatch: pytest.MonkeyPatch, reg: ModelRegistry, change: Callable[[dict[str, Any]], None]
) -> None:
    """Serve a modified manifest to ``reg`` past the validation gate (see module docstring)."""
    real = reg.repository.manifest

    def forged(name: str, version: str) -> Manifest:
        m = copy.deepcopy(real(name, version).to_dict())
        change(m)
        return Manifest.from_dict(m)  # built unchecked: past the gate

    monkeypatch.setattr(reg.repository, "manifest", forged)


def _bundle(registry: ModelRegistry, tmp_path: Path, name: str = "bundle") -> Path:
    d = tmp_path / f"{name}-src"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text('{"a": 1}')
    (d / "sub" / "weights.bin").write_bytes(os.urandom(20_000))
    (d / "run.sh").write_text("#!/bin/sh\necho run\n")
    (d / "run.sh").chmod(0o755)
    registry.register(str(d), name, version="v1.0.0")
    return d


def _victim(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "sub").mkdir(parents=True)
    for rel in ("weights.bin", "config.json", "run.sh", "sub/weights.bin", ".bashrc"):
        (home / rel).write_bytes(b"precious " + rel.encode())
        (home / rel).chmod(0o600)
    return home


# ----------------------------------------------------------------------------- materialize


@pytest.mark.parametrize("op", ["load_path", "load", "export"])
@pytest.mark.parametrize("forgery", ["absolute digest", "relative digest", "file path"])
def test_forged_manifest_never_writes_or_unlinks_outside_uniflow(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op: str, forgery: str
) -> None:
    """Item 1: a forged ``content_digest`` (absolute, or ``../..``) or file path made
    ``load_path`` replace a file in the victim's home; the write site refuses it itself."""
    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(5000))
    registry.register(str(src), "m", version="v1.0.0")
    home = _victim(tmp_path)
    before = _snapshot(home)

    def change(m: dict[str, Any]) -> None:
        if forgery == "absolute digest":
            m["content_digest"] = str(home)
        elif forgery == "relative digest":  # from .git/uniflow/cache/versions up to tmp_path
            m["content_digest"] = "../../../../../home"
        else:  # from .git/uniflow/cache/versions/<digest> up to tmp_path
            m["files"][0]["path"] = "../../../../../../home/weights.bin"

    _forge(monkeypatch, registry, change)
    with pytest.raises(IntegrityError, match="content digest|file path"):
        if op == "export":
            registry.export("m", tmp_path / "out")
        else:
            getattr(registry, op)("m")
    assert _snapshot(home) == before


@pytest.mark.parametrize(
    "where", ["cache/versions", "cache/versions/<digest>", "cache/versions/<digest>/sub"]
)
def test_symlink_planted_in_the_version_cache_is_replaced_never_followed(
    registry: ModelRegistry, tmp_path: Path, where: str
) -> None:
    """Item 1: a symlink inside ``.git/uniflow/cache/versions`` (a forged cache entry) is removed
    and rebuilt from verified chunks; its target is never written, chmod-ed or unlinked."""
    src = _bundle(registry, tmp_path)
    digest = registry.get("bundle").digest
    home = _victim(tmp_path)
    (home / digest / "sub").mkdir(parents=True)  # what the link would expose
    for rel in ("config.json", "run.sh", "sub/weights.bin"):
        (home / digest / rel).write_bytes(b"precious")
    before = _snapshot(home)
    link = registry.store.root / where.replace("<digest>", digest)
    link.parent.mkdir(parents=True, exist_ok=True)
    target = {
        "cache/versions": home,
        "cache/versions/<digest>": home / digest,
        "cache/versions/<digest>/sub": home / "sub",
    }[where]
    link.symlink_to(target, target_is_directory=True)

    loaded = registry.load_path("bundle")
    assert tree_bytes(loaded) == tree_bytes(src)
    assert not link.is_symlink() and link.is_dir()
    assert _snapshot(home) == before


# ----------------------------------------------------------------------------- export


def _one_line_error(r: Any) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_export_refuses_a_symlinked_file_in_dest_and_force_replaces_only_the_link(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """Item 3: a symlink in DEST named like a model file was overwritten through and chmod-ed."""
    src = _bundle(registry, tmp_path)
    home = _victim(tmp_path)
    before = _snapshot(home)
    dest = tmp_path / "out"
    dest.mkdir()
    trap = dest / "config.json"
    trap.symlink_to(home / ".bashrc")

    with pytest.raises(InvalidPathError, match="symlink") as exc:
        registry.export("bundle", dest)
    assert str(trap) in str(exc.value)
    line = _one_line_error(cli(registry.root, "models", "export", "bundle", str(dest), code=2))
    assert str(trap) in line and "--force" in line
    assert _snapshot(home) == before and trap.is_symlink()

    registry.export("bundle", dest, force=True)
    assert not trap.is_symlink() and tree_bytes(dest) == tree_bytes(src)
    trap.unlink()
    trap.symlink_to(home / ".bashrc")
    cli(registry.root, "models", "export", "bundle", str(dest), "--force")
    assert not trap.is_symlink() and tree_bytes(dest) == tree_bytes(src)
    assert _snapshot(home) == before


def test_export_refuses_a_symlinked_directory_inside_dest_but_follows_dest_itself(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """Item 3: a symlinked subdirectory of DEST received files. DEST itself is what the user
    named, so a symlink there is followed; links below it are refused (or replaced with force)."""
    src = _bundle(registry, tmp_path)
    home = _victim(tmp_path)
    before = _snapshot(home)
    real = tmp_path / "real-dest"
    real.mkdir()
    named = tmp_path / "dest-link"
    named.symlink_to(real, target_is_directory=True)
    (real / "sub").symlink_to(home / "sub", target_is_directory=True)

    with pytest.raises(InvalidPathError, match="symlink"):
        registry.export("bundle", named)
    line = _one_line_error(cli(registry.root, "models", "export", "bundle", str(named), code=2))
    assert "sub" in line
    assert _snapshot(home) == before

    registry.export("bundle", named, force=True)
    assert named.is_symlink() and not (real / "sub").is_symlink()
    assert tree_bytes(real) == tree_bytes(src)
    assert _snapshot(home) == before


def test_export_replaces_a_hard_linked_file_instead_of_writing_into_it(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """Item 3: an existing DEST file is replaced by rename, so another name of the same inode
    (a hard link to a file elsewhere) keeps its bytes and mode."""
    src = _bundle(registry, tmp_path)
    home = _victim(tmp_path)
    before = _snapshot(home)
    dest = tmp_path / "out"
    dest.mkdir()
    os.link(home / "config.json", dest / "config.json")

    registry.export("bundle", dest)
    assert tree_bytes(dest) == tree_bytes(src)
    assert _snapshot(home) == before


def test_export_never_applies_a_manifest_mode_verbatim(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 3: a forged mode 0o6777 produced setuid/setgid, world-writable files. Exported
    files are 0o755 (any execute bit) or 0o644, minus the umask - here 0, the worst case."""
    _bundle(registry, tmp_path)

    def change(m: dict[str, Any]) -> None:
        for f in m["files"]:
            f["mode"] = {"run.sh": 0o6777, "config.json": 0o4666}.get(f["path"], 0o1777)

    _forge(monkeypatch, registry, change)
    old = os.umask(0)
    try:
        out = registry.export("bundle", tmp_path / "out")
    finally:
        os.umask(old)
    modes = {
        p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()
    }
    assert modes == {"run.sh": 0o755, "config.json": 0o644, "sub/weights.bin": 0o755}


def test_export_killed_mid_file_leaves_the_old_file_whole(registry: ModelRegistry, tmp_path: Path) -> None:
    """Item 3: each file is written to a temporary name in its directory and renamed into
    place, so a crash (SIGKILL injected after the first block, ``UNIFLOW_TEST_KILL_AT``)
    never leaves a torn file under the final name."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    registry.register(str(big), "big", version="v1.0.0")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "big.bin").write_bytes(b"old bytes, still whole")

    r = cli(
        registry.root,
        "models",
        "export",
        "big",
        str(dest),
        code=None,
        env={"UNIFLOW_TEST_KILL_AT": "export-write"},
    )
    assert r.returncode == -9, (r.returncode, r.stderr)
    assert (dest / "big.bin").read_bytes() == b"old bytes, still whole"

    cli(registry.root, "models", "export", "big", str(dest))
    assert (dest / "big.bin").read_bytes() == big.read_bytes()
