"""The pull boundary: refs fetched from a Git remote are hostile (issue 9, item 6).

Stage names such as ``x.lock`` or ``a..b`` in a remote's lifecycle crashed ``uniflow pull``
with "unexpected RefFormatError" (exit 1), stopped the integration of the models after it,
and made a later local promote exit 1. Now each model's incoming lifecycle commits are
validated before its ref moves: a bad model is reported (IntegrityError naming it and the
commit), the others are integrated, and pull ends non-zero with a one-line summary. Ref
names that are no valid model or version are skipped and reported.

The hostile remote is a bare repository; the bad commits are made with plain Git plumbing
in a clone and pushed with ``git push``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.adversarial._forge_git import event_of, forge_event, one_line_error, state_of
from tests.helpers import cli, clone, git, open_registry, shared_setup
from uniflow import IntegrityError


def _register(repo: Path, name: str, version: str) -> None:
    reg = open_registry(repo)
    f = repo.parent / f"{name}-{version}.bin"
    f.write_bytes(f"{name} {version}".encode() * 500)
    reg.register(str(f), name, version=version)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``a`` registered ``bad`` and ``good`` v1.0.0 and pushed; ``b`` pulled them."""
    bare, a = shared_setup(tmp_path)
    _register(a, "bad", "v1.0.0")
    _register(a, "good", "v1.0.0")
    cli(a, "push")
    b = clone(bare, tmp_path / "b")
    cli(b, "pull")
    return bare, a, b


def _forge_remote(a: Path, forgery: str) -> str:
    """A hostile lifecycle commit for ``bad`` on top of its head, pushed with plain git."""
    seq = open_registry(a).repository.lifecycle.state("bad").seq + 1
    if forgery in ("x.lock", "a..b"):
        state, event = state_of("bad", seq, {"v1.0.0": forgery}), event_of("v1.0.0", forgery, seq)
    elif forgery == "untagged version":
        state, event = state_of("bad", seq, {"v9.9.9": "production"}), event_of("v9.9.9", "production", seq)
    elif forgery == "two holders":
        state = state_of("bad", seq, {"v1.0.0": "production", "v0.9.0": "production"})
        event = event_of("v1.0.0", "production", seq)
    else:  # garbage event
        state, event = state_of("bad", seq, {"v1.0.0": "staging"}), b"\x00garbage"
    commit = forge_event(a, "bad", state, event)
    git(a, "push", "-q", "origin", "refs/uniflow/models/bad:refs/uniflow/models/bad")
    return commit


@pytest.mark.parametrize("forgery", ["x.lock", "a..b", "untagged version", "two holders", "garbage event"])
def test_a_hostile_lifecycle_is_reported_and_the_other_models_are_integrated(
    setup: tuple[Path, Path, Path], forgery: str
) -> None:
    _bare, a, b = setup
    cli(a, "models", "promote", "good", "v1.0.0", "--to", "staging")
    cli(a, "push")
    commit = _forge_remote(a, forgery)
    bad_before = git(b, "rev-parse", "refs/uniflow/models/bad").strip()

    line = one_line_error(cli(b, "pull", code=5).stderr)
    assert "'bad'" in line and commit[:12] in line and "the other models were integrated" in line
    reg = open_registry(b)
    assert reg.get("good").stage == "staging"  # integrated although 'bad' comes first
    assert git(b, "rev-parse", "refs/uniflow/models/bad").strip() == bad_before
    assert git(b, "for-each-ref", "--format=%(refname)", "refs/uniflow/stages/bad").strip() == ""
    # the local lifecycle of 'bad' still works
    cli(b, "models", "promote", "bad", "v1.0.0", "--to", "staging")
    assert open_registry(b).get("bad").stage == "staging"


def test_the_library_reports_rejected_models_in_the_result(setup: tuple[Path, Path, Path]) -> None:
    _bare, a, b = setup
    commit = _forge_remote(a, "x.lock")
    with pytest.raises(IntegrityError) as err:
        open_registry(b).pull()
    result = err.value.result
    assert result is not None and not result.ok
    assert set(result.to_dict()) >= {"remote", "models", "versions", "chunks", "rejected"}
    assert list(result.rejected) == ["bad"] and commit[:12] in result.rejected["bad"]
    assert result.models == {"bad": "rejected", "good": "unchanged"}


def test_ref_names_that_are_no_model_or_version_are_skipped_and_reported(
    setup: tuple[Path, Path, Path],
) -> None:
    bare, a, b = setup
    lifecycle = git(bare, "rev-parse", "refs/uniflow/models/good").strip()
    tag = git(bare, "rev-parse", "refs/tags/models/good/v1.0.0").strip()
    git(bare, "update-ref", "refs/uniflow/models/Evil", lifecycle)
    git(bare, "update-ref", "refs/tags/models/good/not-a-version", tag)
    git(bare, "update-ref", "refs/tags/models/UPPER/v1.0.0", tag)

    line = one_line_error(cli(b, "pull", code=5).stderr)
    assert "Evil" in line and "not-a-version" in line and "UPPER" in line
    reg = open_registry(b)
    assert [s.name for s in reg.list_models()] == ["bad", "good"]
    assert reg.repository.index.version_names("good") == ["v1.0.0"]
    assert git(b, "for-each-ref", "refs/uniflow/models/Evil").strip() == ""
    cli(b, "models", "list")
    cli(b, "pull")  # reported once; what is already here and ignored does not fail later pulls


def test_pull_json_prints_what_was_integrated_before_failing(setup: tuple[Path, Path, Path]) -> None:
    _bare, a, b = setup
    _forge_remote(a, "x.lock")
    r = cli(b, "pull", "--json", code=5)
    result = json.loads(r.stdout)
    assert list(result["rejected"]) == ["bad"] and result["models"]["bad"] == "rejected"
    one_line_error(r.stderr)
