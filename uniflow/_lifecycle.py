"""Each model's lifecycle: a chain of commits on ``refs/uniflow/models/<model>``.

One commit per event (register, promote, archive, rollback). Its tree holds
``state.json`` (the model's whole stage state after the event) and ``event.json`` (what
happened); its message reads as a changelog line, so ``git log`` on the ref is the audit
trail. An event is applied by reading the head, computing the new state, writing a
commit whose parent is the head, and moving the ref with compare-and-swap; a lost race
re-reads and re-applies (bounded), so no update is ever lost.

Stage pointers ``refs/uniflow/stages/<model>/<stage>`` are derived from the state after
each event; reads trust the lifecycle.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ._errors import ConcurrencyError, IntegrityError, UsageError
from ._git import GitRepo, Identity
from ._objcache import DerivedCache
from ._types import HistoryEvent
from . import _testhooks

__all__ = ["LifecycleState", "Lifecycle", "lifecycle_ref", "stage_ref", "tag_ref", "PAST_LIMIT"]

PAST_LIMIT = 100
CAS_ATTEMPTS = 400


def lifecycle_ref(model: str) -> str:
    return f"refs/uniflow/models/{model}"


def stage_ref(model: str, stage: str) -> str:
    return f"refs/uniflow/stages/{model}/{stage}"


def tag_ref(model: str, version: str) -> str:
    return f"refs/tags/models/{model}/{version}"


@dataclass
class LifecycleState:
    """Where every version stands. Versions absent from ``stage_of`` are in development."""

    model: str
    seq: int = 0
    stage_of: dict[str, str] = field(default_factory=dict)
    past: dict[str, list[str]] = field(default_factory=dict)  # stage -> earlier holders, oldest first

    def stage(self, version: str) -> str:
        return self.stage_of.get(version, "development")

    def holders(self, stage: str) -> list[str]:
        return sorted(v for v, s in self.stage_of.items() if s == stage)

    def to_json(self) -> bytes:
        body = {"format": 1, "model": self.model, "seq": self.seq, "stage_of": self.stage_of, "past": self.past}
        return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, model: str) -> "LifecycleState":
        try:
            d = json.loads(data)
            return cls(model=model, seq=int(d["seq"]), stage_of=dict(d["stage_of"]), past=dict(d.get("past", {})))
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"lifecycle state of model {model!r} is unreadable") from exc


Transition = Callable[[LifecycleState], "tuple[dict[str, Any], str]"]


class Lifecycle:
    """Reads and writes one repository's lifecycle refs."""

    def __init__(
        self, git: GitRepo, single_holder: Callable[[str], bool], cache: DerivedCache | None = None
    ) -> None:
        self.git = git
        self.single_holder = single_holder
        self.cache = cache

    # ------------------------------------------------------------------ read
    def head(self, model: str) -> str | None:
        return self.git.ref(lifecycle_ref(model))

    def state(self, model: str, head: str | None = None) -> LifecycleState:
        return self.state_at(model, head)[0]

    def state_at(self, model: str, head: str | None = None) -> tuple[LifecycleState, int | None]:
        """The state after the event ``head`` (default: the current head) and its commit time."""
        head = head if head is not None else self.head(model)
        if head is None:
            return LifecycleState(model), None
        cached = self.cache.get("state", head) if self.cache else None
        if cached is not None:
            when, _, state_json = cached.partition(b"\n")
            return LifecycleState.from_json(state_json, model), int(when)
        data = self.git.read_path(head, "state.json")
        if data is None:
            raise IntegrityError(f"lifecycle commit {head[:12]} of model {model!r} has no state.json")
        when = self.git.read_commit(head).commit_time
        if self.cache:
            self.cache.put("state", head, str(when).encode() + b"\n" + data)
        return LifecycleState.from_json(data, model), when

    def history(self, model: str, limit: int = 1_000_000) -> list[HistoryEvent]:
        events: list[HistoryEvent] = []
        sha = self.head(model)
        while sha and len(events) < limit:
            commit = self.git.read_commit(sha)
            raw = self.git.read_path(sha, "event.json")
            if raw is None:
                raise IntegrityError(f"lifecycle commit {sha[:12]} of model {model!r} has no event.json")
            ev = json.loads(raw)
            events.append(
                HistoryEvent(
                    seq=int(ev["seq"]),
                    action=ev["action"],
                    name=model,
                    version=ev["version"],
                    from_stage=ev.get("from"),
                    to_stage=ev.get("to"),
                    actor=ev.get("actor", ""),
                    at=datetime.fromisoformat(ev["at"]),
                    commit=sha,
                    message=commit.message.decode(errors="replace").splitlines()[0],
                    displaced=ev.get("displaced"),
                    reason=ev.get("reason"),
                    extra=ev.get("extra", {}),
                )
            )
            sha = commit.parents[0].decode() if commit.parents else None
        events.reverse()
        return events

    # ------------------------------------------------------------------ write
    def apply(self, model: str, transition: Transition, actor: Identity) -> tuple[LifecycleState, dict[str, Any]]:
        """Apply ``transition`` to the current state and CAS the lifecycle ref forward.

        ``transition`` mutates the state it is given and returns ``(event, summary line)``;
        it may raise a UsageError, which aborts without writing. On a lost race it is
        re-run on the new state (bounded).
        """
        ref = lifecycle_ref(model)
        for attempt in range(CAS_ATTEMPTS):
            head = self.head(model)
            state = self.state(model, head)
            event, summary = transition(state)
            state.seq += 1
            now = datetime.now(timezone.utc)
            event = {**event, "seq": state.seq, "actor": f"{actor[0]} <{actor[1]}>", "at": now.isoformat()}
            tree = self.git.write_tree(
                {
                    "event.json": (0o100644, self.git.write_blob(_dumps(event))),
                    "state.json": (0o100644, self.git.write_blob(state.to_json())),
                }
            )
            message = f"{summary}\n\n" + "".join(
                f"Uniflow-{k.capitalize()}: {event[k]}\n" for k in ("action", "version", "from", "to", "displaced")
                if event.get(k)
            )
            commit = self.git.write_commit(tree, [head] if head else [], message, actor, int(now.timestamp()))
            if self.git.cas_ref(ref, head, commit, message=f"uniflow: {summary}"):
                _testhooks.point("after-lifecycle-cas")  # test-only crash point (uniflow/_testhooks.py)
                self.sync_pointers(model)
                return state, event
            time.sleep(min(0.002 * (attempt + 1), 0.05) * random.random())
        raise ConcurrencyError(f"could not update the lifecycle of model {model!r}: too many concurrent writers")

    def sync_pointers(self, model: str, tags: dict[str, str] | None = None) -> None:
        """Point ``refs/uniflow/stages/<model>/<stage>`` at each single-holder stage's holder.

        Converges under concurrency: after writing, the lifecycle head is re-read and the
        pointers redone if it moved (bounded).
        """
        for _ in range(20):
            head = self.head(model)
            state = self.state(model, head)
            wanted: dict[str, str] = {}
            for version, stage in state.stage_of.items():
                if self.single_holder(stage):
                    tag = (tags or {}).get(version) or self.git.ref(tag_ref(model, version))
                    if tag:
                        wanted[stage] = tag
            current = self.git.refs(f"refs/uniflow/stages/{model}")
            for stage, sha in wanted.items():
                old = current.get(stage)
                if old != sha:
                    self.git.cas_ref(stage_ref(model, stage), old, sha, message="uniflow: stage pointer")
            for stage, sha in current.items():
                if stage not in wanted:
                    self.git.delete_ref(stage_ref(model, stage), sha)
            if self.head(model) == head:
                return


def _dumps(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode()


# ---------------------------------------------------------------------- transitions
def promote_transition(
    version: str, stage: str, single: bool, action: str = "promote", reason: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Transition:
    def run(state: LifecycleState) -> tuple[dict[str, Any], str]:
        before = state.stage(version)
        displaced = None
        if single and stage not in ("development", "archived"):
            for holder in state.holders(stage):
                if holder != version:
                    state.stage_of[holder] = "archived"
                    displaced = holder
                    past = state.past.setdefault(stage, [])
                    if action != "rollback":
                        past.append(holder)
                        del past[:-PAST_LIMIT]
        if stage == "development":
            state.stage_of.pop(version, None)
        else:
            state.stage_of[version] = stage
        event: dict[str, Any] = {"action": action, "version": version, "from": before, "to": stage}
        if displaced:
            event["displaced"] = displaced
        if reason:
            event["reason"] = reason
        if extra:
            event["extra"] = extra
        summary = f"{action} {state.model} {version}: {before} -> {stage}"
        if displaced:
            summary += f" ({displaced} -> archived)"
        return event, summary

    return run


def register_transition(version: str) -> Transition:
    def run(state: LifecycleState) -> tuple[dict[str, Any], str]:
        state.stage_of.pop(version, None)
        return {"action": "register", "version": version, "from": None, "to": "development"}, (
            f"register {state.model} {version}: -> development"
        )

    return run


def rollback_transition(stage: str, exists: Callable[[str], bool], reason: str | None = None) -> Transition:
    def run(state: LifecycleState) -> tuple[dict[str, Any], str]:
        current = state.holders(stage)
        past = state.past.get(stage, [])
        while past and (past[-1] in current or not exists(past[-1])):  # bounded by len(past)
            past.pop()
        if not past:
            raise UsageError(f"model {state.model!r} has no earlier {stage} version to roll back to")
        target = past.pop()
        return promote_transition(target, stage, True, action="rollback", reason=reason)(state)

    return run
