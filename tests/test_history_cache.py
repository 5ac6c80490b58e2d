"""``history`` keeps a model's whole history in the derived cache under its head commit: the
answer is always what ``git log`` of the lifecycle ref says, whatever is in that cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import blake3
import msgpack
import pytest

from tests.helpers import cli, git
from uniflow import ModelRegistry
from uniflow._records.lifecycle import HISTORY_KIND

REF = "refs/uniflow/models/m"


def _from_git(repo: Path) -> list[tuple[str, str, str, str, str]]:
    """``(commit, subject, action, version, to)`` of every event, oldest first, by git itself."""
    out = []
    for line in git(repo, "log", "--first-parent", "--format=%H%x00%s", REF).splitlines():
        sha, subject = line.split("\x00")
        ev = json.loads(git(repo, "show", f"{sha}:event.json"))
        out.append((sha, subject, ev["action"], ev["version"], ev["to"]))
    return out[::-1]


def _listed(repo: Path) -> list[tuple[str, str, str, str, str]]:
    return [
        (e.commit, e.message, e.action, e.version, e.to_stage or "") for e in ModelRegistry(repo).history("m")
    ]


def _entries(repo: Path) -> list[Path]:
    d = repo / ".git" / "uniflow" / "cache" / "git" / HISTORY_KIND
    return sorted(p for p in d.rglob("*") if p.is_file()) if d.is_dir() else []


@pytest.fixture
def versions(repo: Path, tmp_path: Path) -> Path:
    reg = ModelRegistry(repo)
    for i in range(3):
        src = tmp_path / f"w{i}.bin"
        src.write_bytes(f"weights {i} ".encode() * 40)
        reg.register(str(src), "m", version=f"v1.{i}.0")
    return repo


def test_history_follows_the_lifecycle_ref_and_keeps_one_entry(versions: Path) -> None:
    assert _listed(versions) == _from_git(versions)
    head = git(versions, "rev-parse", REF).strip()
    assert [p.name for p in _entries(versions)] == [head]
    assert _listed(versions) == _from_git(versions)  # from the entry
    cli(versions, "models", "promote", "m", "v1.1.0", "--to", "production")
    cli(versions, "models", "promote", "m", "v1.2.0", "--to", "production")
    assert _listed(versions) == _from_git(versions)
    assert [p.name for p in _entries(versions)] == [git(versions, "rev-parse", REF).strip()]
    assert [e.action for e in ModelRegistry(versions).history("m", last=2)] == ["promote", "promote"]
    # the ref moved back by plain git: the entry of the old head is simply not consulted
    git(versions, "update-ref", REF, head)
    assert _listed(versions) == _from_git(versions)
    assert len(_listed(versions)) == 3


@pytest.mark.parametrize("forge", ["unkeyed digest", "entry naming another model", "garbage"])
def test_a_forged_history_entry_is_ignored(versions: Path, tmp_path: Path, forge: str) -> None:
    _listed(versions)
    (path,) = _entries(versions)
    genuine = path.read_bytes()
    d = msgpack.unpackb(genuine[32:], raw=False)
    d[2][0][1] = "Forged subject"
    lie = msgpack.packb(d, use_bin_type=True)
    if forge == "unkeyed digest":
        path.write_bytes(blake3.blake3(lie).digest() + lie)
    elif forge == "entry naming another model":  # MAC-ed with the key, but for model "n"
        d[1] = "n"
        from uniflow._records.objcache import DerivedCache

        DerivedCache(path.parents[2]).put(HISTORY_KIND, path.name, msgpack.packb(d, use_bin_type=True))
    else:
        path.write_bytes(os.urandom(len(genuine)))
    assert _listed(versions) == _from_git(versions)
    assert "Forged" not in cli(versions, "models", "history", "m").stdout
