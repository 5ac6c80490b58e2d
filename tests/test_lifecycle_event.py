"""Lifecycle events are typed (issue 23): ``parse_event`` builds a frozen ``LifecycleEvent``,
``promote``/``archive``/``rollback`` return the event they recorded, the bytes in Git are
the bytes uniflow always wrote, and one first-parent walk reads every lifecycle chain."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.adversarial._forge_git import event_of, forge_event, state_of
from tests.helpers import git
from uniflow import IntegrityError, ModelRegistry, ModelStage, UsageError
from uniflow._records.lifecycle import LifecycleEvent, _dumps, parse_event, walk_first_parents
from uniflow._stages import BUILTIN_STAGES, SHARED_STAGES, SINGLE_HOLDER_DEFAULT, stage_sort_key


@pytest.fixture
def three(registry: ModelRegistry, tmp_path: Path) -> ModelRegistry:
    """Model ``m`` with v1.0.0, v1.1.0, v1.2.0, all in development."""
    for i, v in enumerate(("v1.0.0", "v1.1.0", "v1.2.0")):
        f = tmp_path / f"w{i}.bin"
        f.write_bytes(bytes([i]) * 1000)
        registry.register(str(f), "m", version=v)
    return registry


def _same(event: LifecycleEvent, shown: object) -> None:
    """``event`` is what ``history`` shows (every field the two have in common)."""
    assert (
        event.seq,
        event.action,
        event.version,
        event.from_stage,
        event.to_stage,
        event.actor,
        event.at,
        event.displaced,
        event.reason,
        event.extra,
    ) == (
        shown.seq,  # type: ignore[attr-defined]
        shown.action,  # type: ignore[attr-defined]
        shown.version,  # type: ignore[attr-defined]
        shown.from_stage,  # type: ignore[attr-defined]
        shown.to_stage,  # type: ignore[attr-defined]
        shown.actor,  # type: ignore[attr-defined]
        shown.at,  # type: ignore[attr-defined]
        shown.displaced,  # type: ignore[attr-defined]
        shown.reason,  # type: ignore[attr-defined]
        shown.extra,  # type: ignore[attr-defined]
    )


def test_promote_archive_rollback_return_the_event_history_shows(three: ModelRegistry) -> None:
    reg = three
    first = reg.promote("m", "v1.0.0", ModelStage.PRODUCTION, reason="first")
    assert isinstance(first, LifecycleEvent)
    assert (first.action, first.version, first.from_stage, first.to_stage) == (
        "promote",
        "v1.0.0",
        "development",
        "production",
    )
    _same(first, reg.history("m")[-1])

    second = reg.promote("m", "v1.1.0", "Production")
    assert second.displaced == "v1.0.0" and second.seq == first.seq + 1
    _same(second, reg.history("m")[-1])

    back = reg.rollback("m", "production", reason="bad metrics")
    assert (back.action, back.version, back.displaced, back.reason) == (
        "rollback",
        "v1.0.0",
        "v1.1.0",
        "bad metrics",
    )
    _same(back, reg.history("m")[-1])
    assert reg.get("m", stage="production").version == back.version

    gone = reg.archive("m", "v1.2.0")
    assert (gone.action, gone.to_stage) == ("archive", "archived")
    _same(gone, reg.history("m")[-1])
    assert reg.get("m", "v1.2.0").stage == ModelStage.ARCHIVED

    # Repository (what sharing and importers receive) returns the same events
    ev = reg.repository.promote("m", "v1.2.0", "staging", extra={"ticket": 7})
    assert ev.extra == {"ticket": 7}
    _same(ev, reg.history("m")[-1])


def test_the_typed_event_is_frozen(three: ModelRegistry) -> None:
    ev = three.promote("m", "v1.0.0", "staging")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.version = "v1.1.0"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.to_stage = "production"  # type: ignore[misc]
    assert three.get("m", stage="staging").version == "v1.0.0"


def test_typed_events_serialise_to_the_exact_bytes_in_git(three: ModelRegistry) -> None:
    """Register, promote (with a displaced holder, a reason, extra), archive and rollback: the
    typed event of every ``event.json`` gives back its bytes."""
    reg = three
    reg.promote("m", "v1.0.0", "production")
    reg.promote("m", "v1.1.0", "production", reason="better", extra={"run": {"id": "r1", "n": [1, 2]}})
    reg.rollback("m", "production")
    reg.archive("m", "v1.2.0", reason="retired")
    lifecycle = reg.repository.lifecycle
    chain = lifecycle.chain(lifecycle.head("m"), "m")
    assert len(chain) == 7  # three registers, two promotes, a rollback, an archive
    actions = set()
    for sha in chain:
        raw = git(reg.root, "cat-file", "blob", f"{sha}:event.json").encode()
        typed = parse_event(raw, f"commit {sha}")
        assert typed.to_json() == raw
        assert lifecycle.event("m", sha) == typed
        actions.add(typed.action)
    assert actions == {"register", "promote", "rollback", "archive"}


def test_an_imported_event_time_round_trips(three: ModelRegistry) -> None:
    """An importer's original time (not now) is the ``at`` recorded; the bytes round-trip."""
    from uniflow._records.lifecycle import promote_transition

    when = datetime(2023, 5, 4, 3, 2, 1, tzinfo=UTC)
    lifecycle = three.repository.lifecycle
    _state, ev = lifecycle.apply(
        "m", promote_transition("v1.0.0", "staging", True), ("Bo", "bo@x.org"), at=when
    )
    assert ev.at == when and ev.actor == "Bo <bo@x.org>"
    raw = git(three.root, "cat-file", "blob", f"{lifecycle.head('m')}:event.json").encode()
    assert ev.to_json() == raw == _dumps(json.loads(raw))


def test_a_forged_event_is_refused_with_the_same_error(three: ModelRegistry) -> None:
    """The gate's message is unchanged: the commit, the model and what is wrong."""
    reg = three
    seq = reg.repository.lifecycle.state("m").seq + 1
    forged = event_of("v1.0.0", "production", seq, action="hack")
    commit = forge_event(reg.root, "m", state_of("m", seq, {"v1.0.0": "production"}), forged)
    with pytest.raises(IntegrityError) as info:
        ModelRegistry(reg.root).history("m")
    assert str(info.value) == (
        f"lifecycle commit {commit[:12]} of model 'm': invalid event.json: unknown action 'hack'"
    )
    with pytest.raises(IntegrityError, match=r"^lifecycle commit [0-9a-f]{12}: invalid event.json: "):
        parse_event(
            json.dumps({**forged, "action": "promote", "at": "noon"}).encode(),
            f"lifecycle commit {commit[:12]}",
        )
    # verify and the register check read the chain leniently: the forged event reads as None
    assert next(iter(reg.repository.lifecycle.events("m"))) is None


def test_an_event_the_gate_would_refuse_is_never_written(three: ModelRegistry) -> None:
    """An ``extra`` over the event size limit is refused before the write, not recorded as an
    event that no reader could read."""
    lifecycle = three.repository.lifecycle
    head = lifecycle.head("m")
    with pytest.raises(UsageError, match=r"^cannot record: .*event.json"):
        three.promote("m", "v1.0.0", "staging", extra={"blob": "x" * (5 << 20)})
    assert lifecycle.head("m") == head
    assert three.get("m", "v1.0.0").stage == "development"


def test_the_walk_names_a_missing_commit(three: ModelRegistry) -> None:
    """A lifecycle commit whose parent object is absent: every reader of the chain gets one
    IntegrityError naming the missing commit and the model."""
    reg = three
    seq = reg.repository.lifecycle.state("m").seq + 1
    state, event = state_of("m", seq, {"v1.0.0": "staging"}), event_of("v1.0.0", "staging", seq)
    missing = forge_event(reg.root, "m", state, event, update=False)
    forge_event(
        reg.root, "m", state_of("m", seq + 1, {"v1.0.0": "staging"}), {**event, "seq": seq + 1}, missing
    )
    (reg.root / ".git" / "objects" / missing[:2] / missing[2:]).unlink()  # the parent's object is gone
    fresh = ModelRegistry(reg.root)
    lifecycle = fresh.repository.lifecycle
    expected = f"lifecycle commit {missing[:12]} of model 'm': git objects are missing"
    for read in (
        lambda: fresh.history("m"),
        lambda: lifecycle.chain(lifecycle.head("m"), "m"),
        lambda: list(lifecycle.events("m")),
        lambda: list(walk_first_parents(fresh.git, lifecycle.head("m"), "m")),
    ):
        with pytest.raises(IntegrityError) as info:
            read()
        assert str(info.value) == expected
    assert len(fresh.history("m", last=1)) == 1  # the newest event is read without its parent


def test_rollback_of_a_shared_stage_is_refused(three: ModelRegistry) -> None:
    for stage in ("development", ModelStage.ARCHIVED):
        with pytest.raises(UsageError, match="only single-holder stages have a previous holder"):
            three.rollback("m", stage)


def test_the_stage_names_have_one_home() -> None:
    assert tuple(m.value for m in ModelStage) == BUILTIN_STAGES
    assert {"development", "archived"} == SHARED_STAGES
    assert SINGLE_HOLDER_DEFAULT == {
        "staging": True,
        "production": True,
        "development": False,
        "archived": False,
    }
    assert list(SINGLE_HOLDER_DEFAULT) == ["staging", "production", "development", "archived"]
    assert sorted(["archived", "canary", "development", "production", "staging"], key=stage_sort_key) == [
        "production",
        "staging",
        "canary",
        "development",
        "archived",
    ]
