"""Hostile manifests read from Git are refused by the one gate, ``_records.manifest.unpack``.

Issue 9, items 1 (a forged ``content_digest`` made load_path overwrite a file outside the
repository) and 9 (a file larger than its chunks was served zero-padded, duplicate paths
were accepted, ``a`` with ``a/b`` gave an unexpected error, 10^6 chunk entries took 73 s).
Every manifest here is written with plain Git plumbing and msgpack (``_forge_git``), as a
hostile remote or clone would hold it: a tag ``refs/tags/models/m/v2.0.0`` pointing at a
commit whose tree has ``.uniflow/card/manifest.msgpack``.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial._forge_git import forge_version, one_line_error
from tests.helpers import cli, write_config
from uniflow import IntegrityError, ModelRegistry
from uniflow._records.manifest import content_digest


@pytest.fixture
def base(registry: ModelRegistry, tmp_path: Path) -> dict[str, Any]:
    """A real two-file version ``m v1.0.0`` (its chunks are in the store); its manifest."""
    d = tmp_path / "model-src"
    d.mkdir()
    (d / "weights.bin").write_bytes(os.urandom(1 << 20))
    (d / "config.json").write_text('{"layers": 2}')
    registry.register(str(d), "m", version="v1.0.0")
    return copy.deepcopy(registry.repository.index.manifest("m", "v1.0.0")[1].to_dict())


def _v2(m: dict[str, Any], *, redigest: bool = True) -> dict[str, Any]:
    m = copy.deepcopy(m)
    m["version"] = "v2.0.0"
    if redigest:
        m["content_digest"] = content_digest(m["files"])
    return m


def _victim(tmp_path: Path) -> Path:
    home = tmp_path / "victim"
    home.mkdir()
    for name in ("weights.bin", "config.json"):
        (home / name).write_bytes(b"precious " + name.encode())
    return home


@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_forged_content_digest_is_refused_and_nothing_outside_is_touched(
    registry: ModelRegistry, base: dict[str, Any], tmp_path: Path, kind: str
) -> None:
    """Item 1: content_digest ``/abs/victim`` or ``../../..`` made load_path replace the
    victim's files with model bytes. Now: IntegrityError naming the version, nothing written."""
    home = _victim(tmp_path)
    before = {p.name: p.read_bytes() for p in home.iterdir()}
    m = _v2(base)
    # .git/uniflow/cache/versions/<digest>: five levels up from there is tmp_path
    m["content_digest"] = str(home) if kind == "absolute" else "../../../../../victim"
    tag = forge_version(registry.root, "m", "v2.0.0", m)
    fresh = ModelRegistry(registry.root)
    with pytest.raises(IntegrityError, match=r"content digest") as err:
        fresh.load_path("m", "v2.0.0")
    assert "'m'" in str(err.value) and "v2.0.0" in str(err.value) and tag[:12] in str(err.value)
    assert {p.name: p.read_bytes() for p in home.iterdir()} == before
    line = one_line_error(cli(registry.root, "models", "show", "m", "v2.0.0", code=5).stderr)
    assert "v2.0.0" in line and "content digest" in line


def test_setuid_world_writable_mode_is_refused(registry: ModelRegistry, base: dict[str, Any]) -> None:
    """Item 3/9: a forged mode 0o6777 was accepted (and applied by export)."""
    m = _v2(base, redigest=False)
    m["files"][0]["mode"] = 0o6777
    m["content_digest"] = content_digest(m["files"])
    forge_version(registry.root, "m", "v2.0.0", m)
    with pytest.raises(IntegrityError, match=r"mode 0o6777"):
        ModelRegistry(registry.root).get("m", "v2.0.0")


def test_a_file_larger_than_its_chunks_is_never_served_padded(
    registry: ModelRegistry, base: dict[str, Any], tmp_path: Path
) -> None:
    """Item 9: a declared size beyond the chunks was served padded with zero bytes and
    verify said OK. Now reading it is an IntegrityError, and verify reports the version."""
    m = _v2(base)
    big = next(f for f in m["files"] if f["path"] == "weights.bin")
    big["size"] += 4096
    forge_version(registry.root, "m", "v2.0.0", m)
    fresh = ModelRegistry(registry.root)
    with pytest.raises(IntegrityError, match=r"weights.bin.*claims \d+ bytes but its chunks hold"):
        fresh.load_path("m", "v2.0.0")
    with pytest.raises(IntegrityError):
        fresh.export("m", tmp_path / "out", "v2.0.0")
    assert not (tmp_path / "out" / "weights.bin").exists()
    problems = fresh.verify("m").problems
    assert problems and {p.version for p in problems} == {"v2.0.0"}


def test_duplicate_paths_are_refused(registry: ModelRegistry, base: dict[str, Any]) -> None:
    """Item 9: the same path twice was accepted (the last one won)."""
    m = _v2(base, redigest=False)
    twin = copy.deepcopy(m["files"][0])
    m["files"].append(twin)
    m["content_digest"] = content_digest(m["files"])
    forge_version(registry.root, "m", "v2.0.0", m)
    with pytest.raises(IntegrityError, match=r"listed twice"):
        ModelRegistry(registry.root).load_path("m", "v2.0.0")


def test_a_path_that_is_also_a_directory_is_refused(registry: ModelRegistry, base: dict[str, Any]) -> None:
    """Item 9: ``a`` and ``a/b`` together gave an unexpected error; now an IntegrityError,
    and the CLI prints one line (exit 5)."""
    m = _v2(base, redigest=False)
    first, second = m["files"][0], m["files"][1]
    first["path"], second["path"] = "a", "a/b"
    m["content_digest"] = content_digest(m["files"])
    forge_version(registry.root, "m", "v2.0.0", m)
    with pytest.raises(IntegrityError, match=r"'a' is both a file and the directory of 'a/b'"):
        ModelRegistry(registry.root).load_path("m", "v2.0.0")
    one_line_error(cli(registry.root, "models", "export", "m", "v2.0.0", "out", code=5).stderr)


@pytest.mark.parametrize(
    "path", [".git/hooks/post-checkout", "sub/.uniflow/config.toml", "a\x1b[2Jb", "new\nline"]
)
def test_paths_naming_git_dirs_or_holding_control_characters_are_refused(
    registry: ModelRegistry, base: dict[str, Any], path: str
) -> None:
    """Item 9: a manifest path is relative, normalised and plain: no ``.git``/``.uniflow``
    part (an export into a work tree would plant a hook), no control characters."""
    m = _v2(base, redigest=False)
    m["files"][0]["path"] = path
    m["content_digest"] = content_digest(m["files"])
    forge_version(registry.root, "m", "v2.0.0", m)
    with pytest.raises(IntegrityError, match=r"invalid file path"):
        ModelRegistry(registry.root).get("m", "v2.0.0")


def test_a_million_tiny_chunks_are_refused_fast(registry: ModelRegistry, base: dict[str, Any]) -> None:
    """Item 9: 10^6 chunk entries of 64 bytes took 73 s and 2.4 GB to export. A chunk
    other than a file's last is at least 64 KiB, so the claimed size bounds the count:
    refused from the headers, well under a second, before the entries are decoded."""
    m = _v2(base, redigest=False)
    digest = base["files"][0]["chunks"][0][0]
    n = 1_000_000
    m["files"] = [
        {"path": "big.bin", "size": 64 * n, "mode": 0o644, "digest": "0" * 64, "chunks": [[digest, 64]] * n}
    ]
    m["content_digest"] = content_digest(m["files"])
    forge_version(registry.root, "m", "v2.0.0", m)
    fresh = ModelRegistry(registry.root)
    start = time.perf_counter()
    with pytest.raises(IntegrityError, match=r"'big.bin' of 64000000 bytes cannot have 1000000 chunks"):
        fresh.get("m", "v2.0.0")
    assert time.perf_counter() - start < 0.8  # ~0.13 s here, most of it reading the 36 MB blob


def test_limits_come_from_config(registry: ModelRegistry, base: dict[str, Any]) -> None:
    """``[limits]`` in .uniflow/config.toml bounds what a manifest may claim; a bad value
    there is a configuration error, not a crash."""
    write_config(registry.root, "[limits]\nmax_version_bytes = 1000\n")
    with pytest.raises(IntegrityError, match=r"max_version_bytes \(1000\)"):
        ModelRegistry(registry.root).get("m", "v1.0.0")
    write_config(registry.root, "[limits]\nmax_manifest_bytes = 100\n")
    with pytest.raises(IntegrityError, match=r"more than max_manifest_bytes \(100"):
        ModelRegistry(registry.root).get("m", "v1.0.0")
    write_config(registry.root, "[limits]\nmax_chunks = 1\n")
    with pytest.raises(IntegrityError, match=r"max_chunks \(1\)"):
        ModelRegistry(registry.root).get("m", "v1.0.0")
    write_config(registry.root, '[limits]\nmax_chunks = "many"\n')
    one_line_error(cli(registry.root, "models", "show", "m", code=8).stderr)
    write_config(registry.root, "")
    assert ModelRegistry(registry.root).get("m", "v1.0.0").version == "v1.0.0"


def test_metric_keys_read_from_git_are_one_printable_line(
    registry: ModelRegistry, base: dict[str, Any]
) -> None:
    """Keys end up in tables and cards: a forged one with a terminal escape or a newline
    is refused on read, like on register."""
    m = _v2(base)
    m["metrics"] = {"acc\x1b]0;pwned\x07": 1.0}
    forge_version(registry.root, "m", "v2.0.0", m)
    with pytest.raises(IntegrityError, match=r"invalid metric key"):
        ModelRegistry(registry.root).get("m", "v2.0.0")
