"""``uniflow pull`` integrates the valid prefix of a model's incoming lifecycle: the remote
commits before the first one that breaks the policy come in, that one and every later one
(they depend on it) are refused, each named with its short id, its event and why, and the
pull exits non-zero; what came in stays. Real repositories, keys from ``ssh-keygen``,
forgeries made with plain git (``git commit-tree``, ``git update-ref``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli
from uniflow import IntegrityError, ModelRegistry, PullReport

from . import test_signed_lifecycle as signed
from .conftest import Key, git
from .test_consume_push import cloned, forge, head_of
from .test_signed_lifecycle import ALICE, BOB, CI, as_user, register

keys = signed.keys  # the fixtures: five keys, and a repository whose policy alice signed
governed = signed.governed

LIFECYCLE = "refs/uniflow/models/clf"


def _registered_and_cloned(tmp_path: Path, governed: Path, keys: dict[str, Key]) -> tuple[str, Path]:
    """v registered by alice in ``governed``; a clone that pulled it."""
    v = register(governed, keys[ALICE])
    return v, cloned(governed, tmp_path / "clone")


def _valid_then_forged(governed: Path, keys: dict[str, Key], v: str) -> dict[str, str]:
    """On top of what the clone has: a valid promotion to staging (ci) and a valid approval
    (bob), then a promotion to production made with raw git (unsigned), then a register
    signed by alice (valid on its own, but after the forged commit)."""
    as_user(governed, keys[CI]).promote("clf", v, "staging")
    as_user(governed, keys[BOB]).approve("clf", v, for_stage="production")
    good = head_of(governed)
    assert good is not None
    forged = forge(governed, v, "production")
    v2 = register(governed, keys[ALICE], tag=1)
    after = head_of(governed)
    assert after is not None
    return {"good": good, "forged": forged, "after": after, "v2": v2}


def _stage_holders(repo: Path, stage: str) -> list[str]:
    return list(ModelRegistry(repo).repository.versions_in("clf", stage))


def test_pull_integrates_the_valid_prefix_and_names_each_refused_commit(
    tmp_path: Path, governed: Path, keys: dict[str, Key]
) -> None:
    v, clone = _registered_and_cloned(tmp_path, governed, keys)
    c = _valid_then_forged(governed, keys, v)

    out = cli(clone, "pull", code=5)
    assert head_of(clone) == c["good"]  # staging + approval came in
    assert _stage_holders(clone, "staging") == [v]  # the stage pointers follow the prefix
    assert _stage_holders(clone, "production") == []
    assert "clf: updated" in out.stdout  # what came in is said, not only what was refused
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("clf: rejected: ")]
    assert len(lines) == 2, out.stderr
    assert lines[0].startswith(f"clf: rejected: promote {v} (lifecycle commit {c['forged'][:12]}")
    assert "not signed by an allowed signer" in lines[0] and "production requires signed events" in lines[0]
    assert lines[1].startswith(f"clf: rejected: register {c['v2']} (lifecycle commit {c['after'][:12]}")
    assert f"comes after the refused lifecycle commit {c['forged'][:12]}" in lines[1]
    error = out.stderr.strip().splitlines()[-1]
    assert error.startswith("error: pull from 'origin' rejected model 'clf' (breaks the policy: ")
    assert f"integrated up to {c['good'][:12]}" in error

    again = json.loads(cli(clone, "pull", "--json", code=5).stdout)  # nothing silent, nothing undone
    assert again["models"]["clf"] == "rejected"  # nothing new may come in: the model stays
    assert [r[:40] for r in again["refused"]["clf"]] == [r[len("clf: rejected: ") :][:40] for r in lines]
    assert head_of(clone) == c["good"]


def test_pull_report_in_python_says_what_came_in_and_what_did_not(
    tmp_path: Path, governed: Path, keys: dict[str, Key]
) -> None:
    v, clone = _registered_and_cloned(tmp_path, governed, keys)
    c = _valid_then_forged(governed, keys, v)
    with pytest.raises(IntegrityError) as info:
        ModelRegistry(clone).pull()
    report = info.value.result
    assert isinstance(report, PullReport) and not report.ok
    assert report.models["clf"] == "fast-forward"
    assert len(report.refused["clf"]) == 2 and c["forged"][:12] in report.refused["clf"][0]
    assert "integrated up to" in report.rejected["clf"]


def test_a_prefix_then_the_remote_fixed_pulls_cleanly(
    tmp_path: Path, governed: Path, keys: dict[str, Key]
) -> None:
    v, clone = _registered_and_cloned(tmp_path, governed, keys)
    c = _valid_then_forged(governed, keys, v)
    cli(clone, "pull", code=5)
    assert head_of(clone) == c["good"]

    git(governed, "update-ref", LIFECYCLE, c["good"])  # an admin removes the forgery upstream
    as_user(governed, keys[CI]).promote("clf", v, "production")  # signed, approved by bob
    out = cli(clone, "pull")
    assert "clf: updated" in out.stdout and "rejected" not in out.stderr
    assert head_of(clone) == head_of(governed)
    assert _stage_holders(clone, "production") == [v]


def test_local_unpushed_events_are_replayed_on_the_integrated_prefix(
    tmp_path: Path, governed: Path, keys: dict[str, Key]
) -> None:
    v, clone = _registered_and_cloned(tmp_path, governed, keys)
    c = _valid_then_forged(governed, keys, v)
    model = clone.parent / "local.bin"
    model.write_bytes(b"l" * 4096)
    mine = as_user(clone, keys[ALICE]).register(str(model), "clf", version="v9.0.0").version  # not pushed

    with pytest.raises(IntegrityError) as info:
        ModelRegistry(clone).pull()
    report = info.value.result
    assert isinstance(report, PullReport) and report.models["clf"] == "replayed"
    chain = git(clone, "rev-list", "--first-parent", LIFECYCLE).stdout.decode().split()
    assert c["good"] in chain and c["forged"] not in chain  # the prefix, then my event on top
    top = json.loads(git(clone, "show", f"{LIFECYCLE}:event.json").stdout)
    assert (top["action"], top["version"]) == ("register", mine)
    assert _stage_holders(clone, "staging") == [v]


def test_a_first_commit_that_breaks_the_policy_leaves_the_model_as_it_was(
    tmp_path: Path, governed: Path, keys: dict[str, Key]
) -> None:
    v, clone = _registered_and_cloned(tmp_path, governed, keys)
    before = head_of(clone)
    forged = forge(governed, v, "staging")  # unsigned, first of the new commits
    as_user(governed, keys[BOB]).approve("clf", v, for_stage="production")  # valid, but after it
    out = cli(clone, "pull", "--json", code=5)
    report = json.loads(out.stdout)
    assert report["models"]["clf"] == "rejected" and head_of(clone) == before
    assert len(report["refused"]["clf"]) == 2 and forged[:12] in report["refused"]["clf"][0]
    assert "integrated" not in report["rejected"]["clf"]
