"""Caches can only cost time, never correctness (issue 9, item 5).

``.uniflow/cache/git/`` entries were protected by an unkeyed BLAKE3 digest anyone can
recompute: a forged manifest entry made load_path serve attacker bytes while verify said
OK, and a forged state entry listed two production holders. Entries now carry a MAC under
a per-user key kept outside the repository; forged entries are ignored and rebuilt from Git.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import blake3
import msgpack
import pytest

from tests.helpers import git
from uniflow import IntegrityError, ModelRegistry


def _old_style_entry(path: Path, payload: bytes) -> None:
    """What an attacker who can write the repository can produce: digest + payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blake3.blake3(payload).digest() + payload)


def _entry(reg: ModelRegistry, kind: str, sha: str) -> Path:
    return reg.store.root / "cache" / "git" / kind / sha[:2] / sha


@pytest.fixture
def two(registry: ModelRegistry, tmp_path: Path) -> ModelRegistry:
    """``m`` v1.0.0 (production) and ``evil`` v1.0.0: different bytes in ``w.bin``."""
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "w.bin").write_bytes(b"good weights " * 100)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "w.bin").write_bytes(b"attacker bytes " * 100)
    registry.register(str(tmp_path / "good" / "w.bin"), "m", version="v1.0.0")
    registry.register(str(tmp_path / "bad" / "w.bin"), "evil", version="v1.0.0")
    registry.promote("m", "v1.0.0", "production")
    ModelRegistry(registry.root).get("m")  # warm the derived cache
    return registry


def test_forged_manifest_entry_is_ignored_and_git_is_believed(two: ModelRegistry) -> None:
    tag = two.repository.index.tag_sha("m", "v1.0.0")
    assert tag and _entry(two, "manifest", tag).exists()
    commit, evil = two.repository.index.manifest("evil", "v1.0.0")
    forged = dict(evil.to_dict(), name="m")  # the attacker's files under m's name
    _old_style_entry(_entry(two, "manifest", tag), commit.encode() + msgpack.packb(forged, use_bin_type=True))
    fresh = ModelRegistry(two.root)
    assert (fresh.load_path("m") / "w.bin").read_bytes() == b"good weights " * 100
    assert fresh.verify().problems == ()


def test_forged_state_entry_is_ignored(two: ModelRegistry) -> None:
    head = git(two.root, "rev-parse", "refs/uniflow/models/m").strip()
    assert _entry(two, "state", head).exists()
    state = {
        "format": 1,
        "model": "m",
        "seq": 9,
        "stage_of": {"v1.0.0": "production", "v2.0.0": "production"},
        "past": {},
    }
    _old_style_entry(_entry(two, "state", head), b"1700000000\n" + json.dumps(state).encode())
    fresh = ModelRegistry(two.root)
    assert [v.version for v in fresh.list_versions("m", stage="production")] == ["v1.0.0"]
    assert {s.name: s.stages for s in fresh.list_models()}["m"] == {"production": "v1.0.0"}


def test_an_entry_moved_to_another_sha_is_ignored(two: ModelRegistry) -> None:
    """A genuine entry copied under another tag's name is not that tag's manifest."""
    good_tag, evil_tag = (
        two.repository.index.tag_sha("m", "v1.0.0"),
        two.repository.index.tag_sha("evil", "v1.0.0"),
    )
    assert good_tag and evil_tag
    ModelRegistry(two.root).get("evil")
    _entry(two, "manifest", good_tag).write_bytes(_entry(two, "manifest", evil_tag).read_bytes())
    assert ModelRegistry(two.root).get("m").name == "m"


def test_the_key_lives_outside_the_repository_and_is_private(two: ModelRegistry, tmp_path: Path) -> None:
    from uniflow._records.objcache import KEY_FILE, cache_home

    home = cache_home()
    assert home is not None and two.root not in home.parents
    key = home / KEY_FILE
    st = key.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 32
    assert not [p for p in two.root.rglob("*") if KEY_FILE in p.name]


def test_without_a_usable_key_the_cache_is_off_and_everything_works(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "not-a-dir").write_text("x")
    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(tmp_path / "not-a-dir" / "uniflow"))
    (tmp_path / "w.bin").write_bytes(os.urandom(5000))
    registry.register(str(tmp_path / "w.bin"), "m", version="v1.0.0")
    fresh = ModelRegistry(registry.root)
    assert fresh.get("m").version == "v1.0.0" and fresh.list_models()[0].name == "m"
    cache = registry.store.root / "cache" / "git"
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_from_git_bypasses_the_caches(two: ModelRegistry) -> None:
    """verify reads the Git objects themselves: with a warm cache, a damaged manifest
    object is still found (``from_git=True``), while ordinary reads keep the fast path."""
    blob = git(two.root, "rev-parse", "models/m/v1.0.0^{commit}:.uniflow/card/manifest.msgpack").strip()
    obj = two.git.git_dir / "objects" / blob[:2] / blob[2:]
    obj.chmod(0o644)
    obj.write_bytes(b"\x78\x9c garbage")
    fresh = ModelRegistry(two.root)
    assert fresh.repository.index.manifest("m", "v1.0.0")[1].name == "m"  # the (verified) cache entry
    with pytest.raises(IntegrityError):
        fresh.repository.index.manifest("m", "v1.0.0", from_git=True)
    state, _when = fresh.repository.lifecycle.state_at("m", from_git=True)
    assert state.stage("v1.0.0") == "production"
