"""Lifecycle states and events read from Git are validated before use (issue 9, item 6).

A ``state.json`` with two production holders, a version that does not exist and an
undeclared stage was shown as is; a garbage ``event.json`` made ``models history`` fail
with an unexpected error. The commits here are written with plain Git plumbing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adversarial._forge_git import event_of, forge_event, one_line_error, state_of
from tests.helpers import cli, git, write_config
from uniflow import IntegrityError, ModelRegistry, StageEmptyError, UniflowWarning


@pytest.fixture
def two(registry: ModelRegistry, tmp_path: Path) -> ModelRegistry:
    """Model ``m`` with v1.0.0 in production and v1.1.0 in development."""
    for i, v in enumerate(("v1.0.0", "v1.1.0")):
        f = tmp_path / f"w{i}.bin"
        f.write_bytes(bytes([i]) * 1000)
        registry.register(str(f), "m", version=v)
    registry.promote("m", "v1.0.0", "production")
    return registry


def _head(reg: ModelRegistry) -> str:
    return git(reg.root, "rev-parse", "refs/uniflow/models/m").strip()


@pytest.mark.parametrize(
    "stage_of, why",
    [
        ({"v1.0.0": "production", "v1.1.0": "production"}, r"stage 'production' holds one version but lists"),
        ({"v1.0.0": "production", "v1.1.0": "canary"}, r"stage 'canary' is not declared"),
        ({"v1.0.0": "production", "v1.1.0": "x.lock"}, r"'x.lock' is not a stage name"),
        ({"v1.0.0": "production", "v1.1.0\n": "staging"}, r"is not a version"),
    ],
    ids=["two production holders", "undeclared stage", "stage x.lock", "version with newline"],
)
def test_forged_state_is_an_integrity_error_naming_the_commit(
    two: ModelRegistry, stage_of: dict[str, str], why: str
) -> None:
    seq = two.repository.lifecycle.state("m").seq + 1
    commit = forge_event(two.root, "m", state_of("m", seq, stage_of), event_of("v1.1.0", "production", seq))
    fresh = ModelRegistry(two.root)
    # reads skip the bad state (issue 10: one bad record spoils only itself) and say so
    for read in (fresh.list_models, lambda: fresh.get("m"), lambda: fresh.list_versions("m")):
        with pytest.warns(UniflowWarning, match=why) as caught:
            read()
        text = str(caught[0].message)
        assert commit[:12] in text and "'m'" in text
    assert fresh.list_models()[0].stages == {}  # the forged holders are not shown
    warning = cli(two.root, "models", "list").stderr.strip()
    assert warning.startswith("warning: ") and commit[:12] in warning and "\n" not in warning
    line = one_line_error(cli(two.root, "models", "promote", "m", "v1.1.0", "--to", "staging", code=5).stderr)
    assert commit[:12] in line


def test_an_undeclared_stage_is_refused_until_declared(two: ModelRegistry) -> None:
    """The gate is not stricter than the registry: once ``[stages.shadow]`` is declared
    (``single = false``: several holders), the same state reads fine."""
    seq = two.repository.lifecycle.state("m").seq + 1
    forge_event(
        two.root,
        "m",
        state_of("m", seq, {"v1.0.0": "shadow", "v1.1.0": "shadow"}),
        event_of("v1.1.0", "shadow", seq),
    )
    with pytest.warns(UniflowWarning, match=r"stage 'shadow' is not declared \(add \[stages.shadow\]"):
        ModelRegistry(two.root).list_versions("m")
    write_config(two.root, "[stages.shadow]\nsingle = false\n")
    fresh = ModelRegistry(two.root)
    assert [v.version for v in fresh.list_versions("m", stage="shadow")] == ["v1.0.0", "v1.1.0"]


def test_a_state_naming_a_version_without_a_tag_is_ignored_locally(two: ModelRegistry) -> None:
    """A version the state names but no tag backs holds nothing on local reads (verify can
    list it with ``untagged_versions``; pull refuses such a remote lifecycle)."""
    seq = two.repository.lifecycle.state("m").seq + 1
    forge_event(
        two.root,
        "m",
        state_of("m", seq, {"v1.0.0": "archived", "v9.9.9": "production"}),
        event_of("v1.0.0", "archived", seq, action="archive", frm="production"),
    )
    fresh = ModelRegistry(two.root)
    assert fresh.list_models()[0].stages == {}
    with pytest.raises(StageEmptyError):
        fresh.get("m", stage="production")
    from uniflow._records.lifecycle import untagged_versions

    state = fresh.repository.lifecycle.state("m")
    assert untagged_versions(state, fresh.repository.index.version_names("m")) == ["v9.9.9"]


@pytest.mark.parametrize(
    "event",
    [
        b"\xff\xfe not json",
        b"[1, 2, 3]",
        b'{"action": "promote"}',
        b'{"seq": NaN}',
        b"[" * 50_000,
        b'{"action": "promote", "version": "v1.1.0", "seq": 3, "to": "production", "at": "yesterday"}',
    ],
    ids=["bytes", "list", "missing fields", "NaN", "deep", "bad time"],
)
def test_garbage_event_json_makes_history_an_integrity_error(two: ModelRegistry, event: bytes) -> None:
    seq = two.repository.lifecycle.state("m").seq + 1
    commit = forge_event(two.root, "m", state_of("m", seq, {"v1.0.0": "production"}), event)
    with pytest.raises(IntegrityError, match=r"event.json") as err:
        ModelRegistry(two.root).history("m")
    assert commit[:12] in str(err.value)
    line = one_line_error(cli(two.root, "models", "history", "m", code=5).stderr)
    assert commit[:12] in line and "event.json" in line
    shown = cli(two.root, "models", "show", "m", "v1.0.0")  # the card, without its events (issue 10)
    assert "v1.0.0" in shown.stdout and commit[:12] in shown.stderr and "event.json" in shown.stderr


def test_a_lifecycle_ref_pointing_at_a_blob_is_an_integrity_error(two: ModelRegistry) -> None:
    from tests.adversarial._forge_git import blob

    sha = blob(two.root, b"not a commit")
    git(two.root, "update-ref", "refs/uniflow/models/m", sha)
    with pytest.raises(IntegrityError, match=r"not a commit"):
        ModelRegistry(two.root).history("m")
    listed = cli(two.root, "models", "list")  # skipped and reported (issue 10)
    assert "m " in listed.stdout and "not a commit" in listed.stderr
