"""The rollback-protection record (``<git common dir>/uniflow/lifecycle-seen.json``) carries a
keyed MAC under the per-user key of the derived cache: a consumer never reads an edited or
erased record as "nothing seen". Under ``require`` an untrusted record is one error line
naming the file; ``warn`` warns, serves, and leaves the record for someone to look at. A
deleted record is a first use again (the documented limit). Real repositories, a real
``file://`` URL read through the mirror, forgeries made with plain git."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli
from uniflow import IntegrityError, ModelRegistry, UniflowWarning

from . import test_consume as consume
from .conftest import Key, git
from .test_consume import LIFECYCLE, MODEL, get, one_error
from .test_signed_lifecycle import BOB, CI, as_user

keys = consume.keys
served = consume.served
cache_dir = consume.cache_dir  # autouse: a private UNIFLOW_CACHE_DIR per test
out_dir = consume.out_dir

ROOT = Path(__file__).resolve().parents[2]


def _newer_production(served: dict[str, Any], keys: dict[str, Key]) -> str:
    """v2 approved and promoted to production in the clone, pushed; returns the older head
    (v1 in production), the one an attacker resets the ref to."""
    bare, clone, v2 = served["bare"], served["clone"], served["v2"]
    older = git(bare, "rev-parse", LIFECYCLE).stdout.decode().strip()
    as_user(clone, keys[BOB]).approve(MODEL, v2, for_stage="production")
    as_user(clone, keys[CI]).promote(MODEL, v2, "production")
    ModelRegistry(clone).push()
    return older


def _record(cache_dir: Path) -> Path:
    found = list(cache_dir.rglob("lifecycle-seen.json"))
    assert len(found) == 1, found
    return found[0]


def _saw_v2_then_rolled_back(served: dict[str, Any], keys: dict[str, Key], out_dir: Path) -> None:
    older = _newer_production(served, keys)
    r = get(out_dir, served["url"], "-s", "production", "--require-signed", "-o", "seen-v2")
    assert served["v2"] in r.stdout
    git(served["bare"], "update-ref", LIFECYCLE, older)  # the attack: an older, validly signed head


def test_an_erased_record_does_not_let_a_rollback_through(
    served: dict[str, Any], keys: dict[str, Key], out_dir: Path, cache_dir: Path
) -> None:
    _saw_v2_then_rolled_back(served, keys, out_dir)
    record = _record(cache_dir)
    record.write_text("{}\n")  # what a local user who can write the cache tries first
    r = get(out_dir, served["url"], "-s", "production", "--require-signed", "-o", "back", code=5)
    line = one_error(r)
    assert str(record) in line and "cannot be trusted" in line and not (out_dir / "back").exists()


def test_an_edited_record_fails_its_mac(
    served: dict[str, Any], keys: dict[str, Key], out_dir: Path, cache_dir: Path
) -> None:
    _saw_v2_then_rolled_back(served, keys, out_dir)
    record = _record(cache_dir)
    doc = json.loads(record.read_text())
    assert doc["format"] == 2 and len(doc["mac"]) == 64 and MODEL in doc["heads"]
    doc["heads"] = {}  # erase the seen head, keep the old MAC
    record.write_text(json.dumps(doc))
    r = get(out_dir, served["url"], "-s", "production", "--require-signed", "-o", "back", code=5)
    assert "MAC does not verify" in one_error(r) and str(record) in one_error(r)
    with pytest.raises(IntegrityError, match="cannot be trusted"):
        ModelRegistry(served["url"], signatures="require").get(MODEL, stage="production")


def test_warn_warns_about_an_untrusted_record_and_leaves_it(
    served: dict[str, Any], keys: dict[str, Key], out_dir: Path, cache_dir: Path
) -> None:
    _saw_v2_then_rolled_back(served, keys, out_dir)
    record = _record(cache_dir)
    record.write_text("{}\n")
    with pytest.warns(UniflowWarning, match="rollback protection is off") as caught:
        mv = ModelRegistry(served["url"], signatures="warn").get(MODEL, stage="production")
    assert mv.version == served["v1"]  # warn serves, but said why it could not tell
    assert any(str(record) in str(w.message) for w in caught)
    assert record.read_text() == "{}\n"  # not laundered into a trusted record
    r = cli(out_dir, "get", served["url"], MODEL, "-s", "production", "-o", "w")  # default: warn
    assert "warning:" in r.stderr and "cannot be trusted" in r.stderr


def test_a_deleted_record_is_a_first_use_again(
    served: dict[str, Any], keys: dict[str, Key], out_dir: Path, cache_dir: Path
) -> None:
    """The documented limit: without the record nothing was seen, so the older, validly
    signed head is served, and recorded (with its MAC) from then on."""
    _saw_v2_then_rolled_back(served, keys, out_dir)
    record = _record(cache_dir)
    record.unlink()
    r = get(out_dir, served["url"], "-s", "production", "--require-signed", "-o", "first")
    assert served["v1"] in r.stdout
    doc = json.loads(record.read_text())
    older = git(served["bare"], "rev-parse", LIFECYCLE).stdout.decode().strip()
    assert doc["format"] == 2 and doc["heads"][MODEL] == older


def test_a_clone_without_its_key_refuses_under_require(served: dict[str, Any], cache_dir: Path) -> None:
    clone = served["clone"]
    assert ModelRegistry(clone, signatures="require").get(MODEL, stage="production").version == served["v1"]
    record = clone / ".git" / "uniflow" / "lifecycle-seen.json"
    assert json.loads(record.read_text())["format"] == 2
    key = cache_dir / "derived-cache.key"
    key.chmod(0o644)  # readable by others: not a secret, so no key
    with pytest.raises(IntegrityError, match="cannot be read or created") as info:
        ModelRegistry(clone, signatures="require").get(MODEL, stage="production")
    assert str(record) in str(info.value) and "UNIFLOW_CACHE_DIR" in str(info.value)
    with pytest.warns(UniflowWarning, match="rollback protection is off"):
        ModelRegistry(clone, signatures="warn").get(MODEL, stage="production")


_RECORDER = """
import sys
from pathlib import Path
from uniflow._ops.consume import _record_seen
from uniflow._records.git import GitRepo
git = GitRepo(Path(sys.argv[1]))
for i in range(int(sys.argv[3])):
    _record_seen(git, f"{sys.argv[2]}-{i}", f"{i:040x}")
"""


def test_two_processes_recording_at_once_both_keep_their_heads(
    served: dict[str, Any], cache_dir: Path
) -> None:
    clone = served["clone"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "UNIFLOW_CACHE_DIR": str(cache_dir)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _RECORDER, str(clone), who, "40"], env=env)
        for who in ("a", "b")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    from uniflow._ops.consume import _read_seen

    heads = _read_seen(ModelRegistry(clone).repository.git)  # and its MAC verifies
    assert {f"{who}-{i}" for who in "ab" for i in range(40)} <= set(heads)
