"""What a verifying read by URL fetches (docs/remote.md, "How little is fetched"): a registry
opened to verify signatures (``get --require-signed``, ``ModelRegistry(url,
signatures="require")``) brings the default branch's history and the policy files' blobs in
the sync's own fetches, so a first verified get makes no more fetches than an unverified one,
and still no code blob. A real bare repository read by ``file://``; git's own trace counts
the fetches.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli, shared_setup
from uniflow import ModelRegistry

from .conftest import Key, git
from .test_consume import MODEL, _register, cache_dir, served
from .test_signed_lifecycle import ALICE, keys

__all__ = ["cache_dir", "keys", "served"]  # fixtures shared with test_consume


def _fetches(trace: Path) -> list[str]:
    """The ``git fetch`` commands a run started, from ``GIT_TRACE``."""
    lines = trace.read_text().splitlines() if trace.exists() else []
    return [line.split("built-in: ", 1)[1] for line in lines if "trace: built-in: git fetch" in line]


def _mirror(cache: Path) -> Path:
    (mirror,) = (cache / "mirrors").glob("*.git")
    return mirror


@pytest.fixture
def with_code(served: dict[str, Any]) -> dict[str, Any]:
    """``served`` with a code commit after the policy on main: a 1 MiB file no read needs."""
    clone: Path = served["clone"]
    (clone / "data.bin").write_bytes(os.urandom(1 << 20))
    git(clone, "add", "data.bin")
    git(clone, "commit", "-q", "-m", "code")
    git(clone, "push", "-q", "origin", "main")
    served["code_blob"] = git(clone, "rev-parse", "HEAD:data.bin").stdout.decode().strip()
    return served


def test_a_first_verified_get_fetches_no_more_than_an_unverified_one(
    with_code: dict[str, Any], tmp_path: Path, cache_dir: Path
) -> None:
    out, trace = tmp_path / "out", tmp_path / "trace.txt"
    out.mkdir()
    args = ("get", with_code["url"], MODEL, "--stage", "production", "-o", "prod", "--require-signed")
    r = cli(out, *args, env={"GIT_TRACE": str(trace)})
    assert "signatures verified" in r.stdout
    fetches = _fetches(trace)
    assert len(fetches) == 3, fetches  # tags and the default branch, lifecycles, blobs by id
    assert not any("--depth" in f or "--unshallow" in f for f in fetches), fetches
    mirror = _mirror(cache_dir)
    assert not (mirror / "shallow").exists()  # the policy history is all here
    objects = git(mirror, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)").stdout.decode()
    assert with_code["code_blob"] not in objects.split()  # and still no code


def test_a_mirror_left_shallow_by_an_unverified_read_is_unshallowed_by_the_next_sync(
    with_code: dict[str, Any], tmp_path: Path, cache_dir: Path, keys: dict[str, Key]
) -> None:
    url = with_code["url"]
    with ModelRegistry(url, signatures="off") as reg:  # a plain read: depth 1, no history
        assert reg.get(MODEL, stage="production").version == with_code["v1"]
    assert (_mirror(cache_dir) / "shallow").exists()
    clone: Path = with_code["clone"]
    _register(clone, keys[ALICE], 3)  # a new version tag: the sync fetches the tags again
    ModelRegistry(clone).push()
    out, trace = tmp_path / "out", tmp_path / "trace.txt"
    out.mkdir()
    args = ("get", url, MODEL, "--stage", "production", "-o", "prod", "--require-signed")
    r = cli(out, *args, env={"GIT_TRACE": str(trace)})
    assert "signatures verified" in r.stdout
    fetches = _fetches(trace)
    assert "--unshallow" in fetches[0] and len(fetches) == 3, fetches
    assert not (_mirror(cache_dir) / "shallow").exists()


def test_a_plain_get_of_a_governed_remote_brings_the_policy_history_in_its_sync(
    with_code: dict[str, Any], tmp_path: Path, cache_dir: Path
) -> None:
    """Without --require-signed a get verifies and warns once a policy exists: the sync sees
    the policy at the default branch's head and completes its history in one more fetch
    (the policy blobs came with the sync's own), instead of two after it."""
    out, trace = tmp_path / "out", tmp_path / "trace.txt"
    out.mkdir()
    args = ("get", with_code["url"], MODEL, "--stage", "production", "-o", "prod")
    r = cli(out, *args, env={"GIT_TRACE": str(trace)})
    assert "warning" not in r.stderr, r.stderr  # verified (warn mode), and nothing to warn about
    fetches = _fetches(trace)
    assert len(fetches) == 4, fetches  # tags at depth 1, lifecycles, blobs by id, the history
    assert "--depth=1" in fetches[0] and "--unshallow" in fetches[3], fetches
    mirror = _mirror(cache_dir)
    assert not (mirror / "shallow").exists()
    assert (mirror / "uniflow" / "history-complete").is_file()
    objects = git(mirror, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)").stdout.decode()
    assert with_code["code_blob"] not in objects.split()  # and still no code


def test_a_plain_get_of_a_remote_without_a_policy_fetches_no_history(tmp_path: Path, cache_dir: Path) -> None:
    bare, clone = shared_setup(tmp_path, blob_url=str(tmp_path / "srv" / "blobs"))
    model = tmp_path / "model.bin"
    model.write_bytes(os.urandom(4096))
    with ModelRegistry(clone) as reg:
        v = reg.register(str(model), MODEL).version
        reg.promote(MODEL, v, "production")
        reg.push()
    out, trace = tmp_path / "out", tmp_path / "trace.txt"
    out.mkdir()
    r = cli(
        out,
        "get",
        f"file://{bare}",
        MODEL,
        "--stage",
        "production",
        "-o",
        "prod",
        env={"GIT_TRACE": str(trace)},
    )
    assert "warning" not in r.stderr, r.stderr
    fetches = _fetches(trace)
    assert len(fetches) == 3 and not any("--unshallow" in f for f in fetches), fetches
    assert (_mirror(cache_dir) / "shallow").exists()  # the code's history stays on the server
