"""Each model's lifecycle: a chain of commits on ``refs/uniflow/models/<model>``.

One commit per event (register, promote, archive, rollback). Its tree holds
``state.json`` (the model's whole stage state after the event) and ``event.json`` (what
happened); its message reads as a changelog line, so ``git log`` on the ref is the audit
trail. An event is applied by reading the head, computing the new state, writing a
commit whose parent is the head, and moving the ref with compare-and-swap; a lost race
re-reads and re-applies (bounded), so no update is ever lost.

Stage pointers ``refs/uniflow/stages/<model>/<stage>`` are derived from the state after
each event; reads trust the lifecycle.

Reading is a validation gate (``LifecycleState.from_json``, :func:`parse_event`): a state
or event that is not well formed is an :class:`IntegrityError` naming the model and the
commit, whether it came from Git or from the derived cache. A valid state has an ``int``
``seq >= 0``, names only valid version strings, only valid stage names that are declared
(built-ins plus config's custom stages), at most one holder of each single-holder stage,
and ``past`` lists of at most PAST_LIMIT versions. A state may name a version that has no
tag (a tag deleted by hand): local reads ignore such versions
(:meth:`LifecycleState.restricted_to`), :func:`untagged_versions` lists them for
``verify``, and ``pull`` refuses a remote lifecycle that names one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import msgpack

from .. import _testhooks
from .._bounded import load_json
from .._errors import ConcurrencyError, IntegrityError, RepositoryError, UsageError
from .._naming import parse_version
from .._stages import SHARED_STAGES, SINGLE_HOLDER_DEFAULT, ModelStage, valid_stage_name
from .._types import HistoryEvent
from .git import GitRepo, Identity
from .objcache import DerivedCache
from .refs import lifecycle_ref, stage_ref, stages_prefix, tag_ref

if TYPE_CHECKING:
    from .._authority.signing import Signer

__all__ = [
    "LifecycleState",
    "LifecycleEvent",
    "Lifecycle",
    "parse_event",
    "walk_first_parents",
    "git_read_errors",
    "commit_context",
    "move_transition",
    "approve_transition",
    "untagged_versions",
    "PAST_LIMIT",
    "EVENT_ACTIONS",
    "event_lines",
    "message_event",
    "event_in_tree",
    "MISMATCH",
]

PAST_LIMIT = 100
CAS_ATTEMPTS = 400
#: the largest state.json / event.json read (bytes), checked before decoding
MAX_STATE_BYTES = 32 << 20
MAX_EVENT_BYTES = 4 << 20
#: derived-cache kind of a whole history: ``(commit, subject, event.json)`` per event from
#: the keyed head back to the first event (a commit sha fixes its whole first-parent chain)
HISTORY_KIND = "history"
_HISTORY_FORMAT = 1
_ALL = 1_000_000
#: actions an event.json may record
EVENT_ACTIONS = ("register", "promote", "archive", "rollback", "approve")
#: what a ``tag`` field holds: the version tag's object id when the event was written
_TAG_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
#: the last two lines of a lifecycle commit's message (commits written since issue 24): the
#: ``state.json`` blob id, then the exact ``event.json`` bytes folded (:func:`event_lines`)
STATE_LINE = b"Uniflow-State: "
EVENT_LINE = b"Uniflow-Event: "
_EVENT_AT = b"\n" + EVENT_LINE
#: the largest lifecycle commit read raw (its message carries its event.json, at most
#: MESSAGE_EVENT_BYTES of it)
MAX_COMMIT_BYTES = 1 << 20
#: why a commit fails whose message carries an event that is not its tree's
MISMATCH = "the event in its message is not the event.json of its tree"
#: the largest event.json a commit message carries too (a larger one is only in the tree,
#: so a lifecycle commit stays small)
MESSAGE_EVENT_BYTES = 64 << 10
_HEX = re.compile(rb"[0-9a-f]{40}|[0-9a-f]{64}")


def _load_json(data: object, limit: int, what: str) -> Any:
    """Decode JSON bytes read from Git; any failure is an IntegrityError naming ``what``.
    Its length and its decoding cost are bounded before it is decoded (``_bounded``)."""
    if not isinstance(data, (bytes, bytearray)):
        raise IntegrityError(f"{what} is not a byte string")
    return load_json(bytes(data), what, limit=limit)


def _valid_version(value: object) -> bool:
    # parse_version refuses a version over 128 characters: only short ones are kept
    return isinstance(value, str) and len(value) <= 128 and _valid_version_text(value)


@functools.lru_cache(maxsize=1024)
def _valid_version_text(value: str) -> bool:
    """Whether ``value`` parses as a version (a lifecycle names a few versions many times)."""
    try:
        parse_version(value)
    except UsageError:
        return False
    return True


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class LifecycleState:
    """Where every version stands. Versions absent from ``stage_of`` are in development."""

    model: str
    seq: int = 0
    stage_of: dict[str, str] = field(default_factory=dict)
    past: dict[str, list[str]] = field(default_factory=dict)  # stage -> earlier holders, oldest first

    def stage(self, version: str) -> str:
        return self.stage_of.get(version, ModelStage.DEVELOPMENT.value)

    def holders(self, stage: str) -> list[str]:
        return sorted(v for v, s in self.stage_of.items() if s == stage)

    def versions(self) -> set[str]:
        """Every version the state names: holders and past holders."""
        return set(self.stage_of) | {v for past in self.past.values() for v in past}

    def restricted_to(self, existing: Collection[str]) -> LifecycleState:
        """A copy without the versions not in ``existing`` (versions whose tag is gone)."""
        keep = set(existing)
        return LifecycleState(
            self.model,
            self.seq,
            {v: s for v, s in self.stage_of.items() if v in keep},
            {s: [v for v in past if v in keep] for s, past in self.past.items()},
        )

    def to_json(self) -> bytes:
        body = {
            "format": 1,
            "model": self.model,
            "seq": self.seq,
            "stage_of": self.stage_of,
            "past": self.past,
        }
        return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(
        cls, data: bytes, model: str, *, stages: Mapping[str, bool] | None = None, context: str = ""
    ) -> LifecycleState:
        """Decode and validate a ``state.json``; raise :class:`IntegrityError` naming ``context``.

        ``stages`` is the stage table (stage -> single holder); when given, every stage a
        version holds must be declared in it. Without it any well-formed stage name is
        accepted and a custom one counts as single-holder.
        """
        where = context or f"lifecycle state of model {model!r}"
        d = _load_json(data, MAX_STATE_BYTES, f"{where}: state.json")

        def bad(what: str) -> NoReturn:
            raise IntegrityError(f"{where}: invalid state.json: {what}")

        if not isinstance(d, dict):
            bad("not an object")
        if "format" in d and (d["format"] != 1 or not _is_int(d["format"])):
            bad(f"unsupported format {d['format']!r}")
        if "model" in d and d["model"] != model:
            bad(f"it is the state of model {d['model']!r}")
        seq, stage_of, past = d.get("seq"), d.get("stage_of"), d.get("past", {})
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            bad(f"seq {seq!r} is not a non-negative integer")
        if not isinstance(stage_of, dict):
            bad("stage_of is not an object")
        if not isinstance(past, dict):
            bad("past is not an object")
        table = dict(SINGLE_HOLDER_DEFAULT) if stages is None else dict(stages)
        _check_holders(stage_of, table, declared=stages is not None, bad=bad)
        _check_past(past, bad=bad)
        return cls(model=model, seq=seq, stage_of=dict(stage_of), past={k: list(v) for k, v in past.items()})


def _check_holders(
    stage_of: dict[Any, Any], table: dict[str, bool], *, declared: bool, bad: Callable[[str], NoReturn]
) -> None:
    """Every ``version -> stage`` of a state names a version and a (declared) stage, and a
    single-holder stage holds one version."""
    held: dict[str, str] = {}
    for version, stage in stage_of.items():
        if not _valid_version(version):
            bad(f"{version!r} is not a version")
        if not valid_stage_name(stage):
            bad(f"{stage!r} is not a stage name")
        if declared and stage not in table:
            bad(f"stage {stage!r} is not declared (add [stages.{stage}] to .uniflow/config.toml)")
        if stage not in SHARED_STAGES and table.get(stage, True):
            if stage in held:
                bad(f"stage {stage!r} holds one version but lists {held[stage]!r} and {version!r}")
            held[stage] = version


def _check_past(past: dict[Any, Any], *, bad: Callable[[str], NoReturn]) -> None:
    """Every ``stage -> [versions]`` of a state's past holders is bounded and well formed."""
    for stage, versions in past.items():
        if not valid_stage_name(stage):
            bad(f"{stage!r} is not a stage name")
        if not isinstance(versions, list) or len(versions) > PAST_LIMIT:
            bad(f"past holders of {stage!r} are not a list of at most {PAST_LIMIT} versions")
        if not all(_valid_version(v) for v in versions):
            bad(f"past holders of {stage!r} name something that is not a version")


@dataclass(frozen=True)
class LifecycleEvent:
    """One lifecycle event: what an ``event.json`` records, validated by :func:`parse_event`.

    Frozen: a field cannot be reassigned (``extra`` is the decoded JSON object, as read).
    ``from_stage``/``to_stage`` are the JSON's ``from``/``to``; ``at`` is the time the event
    records (an importer's original time, or when it was written).

    An ``approve`` event changes no stage (``from`` and ``to`` are both the version's stage,
    so a reader that replays moves sees none); ``for_stage`` (the JSON's ``for``) is the stage
    the version is approved for. ``tag`` is the version tag's object id when the event was
    written (events written before signing existed have none): it binds the event to the bytes.
    """

    action: str  #: one of EVENT_ACTIONS
    version: str
    seq: int
    at: datetime
    to_stage: str
    from_stage: str | None = None
    displaced: str | None = None  #: the version this event moved to ``archived``
    actor: str | None = None  #: ``"Name <email>"``
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    for_stage: str | None = None  #: ``approve``: the stage approved for
    tag: str | None = None  #: the version tag's object id when the event was written

    def to_dict(self) -> dict[str, Any]:
        """The ``event.json`` object: ``from`` always (null for a register), ``displaced``,
        ``reason`` and ``extra`` only when set, as :meth:`Lifecycle.apply` writes them."""
        d: dict[str, Any] = {"action": self.action, "version": self.version, "from": self.from_stage}
        d["to"] = self.to_stage
        fields = (
            ("displaced", self.displaced),
            ("reason", self.reason),
            ("extra", self.extra),
            ("for", self.for_stage),
            ("tag", self.tag),
        )
        for key, value in fields:
            if value:
                d[key] = value
        d.update(seq=self.seq, actor=self.actor, at=self.at.isoformat())
        return d

    def to_json(self) -> bytes:
        """The ``event.json`` bytes (the bytes :meth:`Lifecycle.apply` wrote for this event)."""
        return _dumps(self.to_dict())


def parse_event(data: bytes, context: str) -> LifecycleEvent:
    """Decode and validate an ``event.json``; raise :class:`IntegrityError` naming ``context``.

    Required: ``action`` (one of EVENT_ACTIONS), ``version`` (a version string), ``seq``
    (int >= 0), ``at`` (an ISO-8601 time) and ``to`` (a stage name); ``from`` is a stage
    name or null, ``displaced`` a version or null, ``actor``/``reason`` strings,
    ``extra`` an object, ``tag`` an object id; an ``approve`` also needs ``for`` (a stage name).
    """
    ev = _load_json(data, MAX_EVENT_BYTES, f"{context}: event.json")

    def bad(what: str) -> NoReturn:
        raise IntegrityError(f"{context}: invalid event.json: {what}")

    if not isinstance(ev, dict):
        bad("not an object")
    if ev.get("action") not in EVENT_ACTIONS:
        bad(f"unknown action {ev.get('action')!r}")
    if not _valid_version(ev.get("version")):
        bad(f"{ev.get('version')!r} is not a version")
    if not _is_int(ev.get("seq")) or ev["seq"] < 0:
        bad(f"seq {ev.get('seq')!r} is not a non-negative integer")
    if not valid_stage_name(ev.get("to")):
        bad(f"{ev.get('to')!r} is not a stage name")
    _check_event_optionals(ev, bad)
    at = ev.get("at")
    try:
        if not isinstance(at, str):
            raise ValueError(at)
        when = datetime.fromisoformat(at)
    except ValueError:
        bad(f"at {at!r} is not an ISO-8601 time")
    return LifecycleEvent(
        action=ev["action"],
        version=ev["version"],
        seq=ev["seq"],
        at=when,
        to_stage=ev["to"],
        from_stage=ev.get("from"),
        displaced=ev.get("displaced"),
        actor=ev.get("actor"),
        reason=ev.get("reason"),
        extra=ev.get("extra") or {},
        for_stage=ev.get("for") if ev["action"] == "approve" else None,
        tag=ev.get("tag"),
    )


def _check_event_optionals(ev: dict[str, Any], bad: Callable[[str], NoReturn]) -> None:
    """The optional fields of an event: ``from``, ``displaced``, ``actor``, ``reason``,
    ``extra``, an approval's ``for`` and ``tag``."""
    if ev.get("from") is not None and not valid_stage_name(ev["from"]):
        bad(f"{ev['from']!r} is not a stage name")
    if ev.get("displaced") is not None and not _valid_version(ev["displaced"]):
        bad(f"displaced {ev['displaced']!r} is not a version")
    for key in ("actor", "reason"):
        if ev.get(key) is not None and not isinstance(ev[key], str):
            bad(f"{key} is not a string")
    if ev.get("extra") is not None and not isinstance(ev["extra"], dict):
        bad("extra is not an object")
    if ev["action"] == "approve" and not valid_stage_name(ev.get("for")):
        bad(f"an approval for {ev.get('for')!r}, which is not a stage name")
    if ev.get("tag") is not None and not (isinstance(ev["tag"], str) and _TAG_RE.fullmatch(ev["tag"])):
        bad(f"tag {ev['tag']!r} is not an object id")


@contextmanager
def git_read_errors(context: str) -> Iterator[None]:
    """Reads of lifecycle objects: a missing object or one of the wrong kind (the chain
    reaches something that is not a commit) is an :class:`IntegrityError` naming ``context``."""
    try:
        yield
    except KeyError as exc:
        raise IntegrityError(f"{context}: git objects are missing") from exc
    except RepositoryError as exc:
        raise IntegrityError(f"{context}: {exc}") from exc


def commit_context(sha: str, model: str) -> str:
    """How errors name lifecycle commit ``sha`` (of ``model``, when given)."""
    return f"lifecycle commit {sha[:12]}" + (f" of model {model!r}" if model else "")


def event_lines(data: bytes, state_id: str) -> str:
    """The lines that end a lifecycle commit's message: ``Uniflow-State: <state.json blob
    id>`` and ``Uniflow-Event: <event.json>``, the event's bytes folded as a trailer is
    (each line after the first indented by one more space), so :func:`message_event` gives
    back exactly ``data`` (which ends with a newline, as :func:`_dumps` writes it)."""
    if not data.endswith(b"\n"):
        raise ValueError("an event.json ends with a newline")
    folded = data[:-1].replace(b"\n", b"\n ").decode("utf-8")
    return f"{STATE_LINE.decode()}{state_id}\n{EVENT_LINE.decode()}{folded}\n"


def message_event(raw: bytes) -> tuple[bytes, bytes] | None:
    """``(event.json bytes, state.json blob id)`` that the raw commit ``raw`` carries in its
    message's last lines (:func:`event_lines`), or None when it carries none (a commit
    written before them: its event is only in its tree). What it carries counts only once
    :func:`event_in_tree` agrees: the tree is what every client reads."""
    at = raw.rfind(_EVENT_AT)
    if at < 0 or not raw.endswith(b"\n"):
        return None
    start = raw.rfind(b"\n", 0, at) + 1
    body = raw.find(b"\n\n")
    if body < 0 or start <= body or not raw.startswith(STATE_LINE, start):
        return None  # in the headers, or not after its state line
    state = raw[start + len(STATE_LINE) : at]
    if not _HEX.fullmatch(state):
        return None
    folded = raw[at + len(_EVENT_AT) : -1]
    return folded.replace(b"\n ", b"\n") + b"\n", state


def event_in_tree(tree: str, event: bytes, state: bytes) -> bool:
    """Whether tree ``tree`` (its id) is exactly ``event.json`` = ``event`` and
    ``state.json`` = blob ``state`` (hex), as :meth:`Lifecycle.apply` writes it: the tree's
    id is recomputed from the two, so nothing is read, and a tree that holds anything else
    (another event.json) has another id."""
    width = len(tree)
    if width not in (40, 64) or len(state) != width:
        return False
    digest = hashlib.sha256 if width == 64 else hashlib.sha1
    blob = digest(b"blob %d\0" % len(event) + event).digest()
    entries = b"100644 event.json\0" + blob + b"100644 state.json\0" + bytes.fromhex(state.decode("ascii"))
    return digest(b"tree %d\0" % len(entries) + entries).hexdigest() == tree


def walk_first_parents(
    git: GitRepo,
    head: str | None,
    model: str = "",
    limit: int = 1_000_000,
    *,
    stop: Callable[[str], bool] | None = None,
) -> Iterator[tuple[str, Any]]:
    """``(sha, commit)`` along the first-parent chain from ``head`` back to the first event
    (newest first), at most ``limit`` commits: the one walk of a lifecycle chain.

    ``stop(sha)``, asked before each commit is read, ends the walk there when true. A
    missing object or one that is not a commit is an :class:`IntegrityError` naming it
    (:func:`git_read_errors`).
    """
    sha = head
    for _ in range(limit):
        if not sha or (stop is not None and stop(sha)):
            return
        with git_read_errors(commit_context(sha, model)):
            commit = git.read_commit(sha)
        yield sha, commit
        sha = commit.parents[0].decode("ascii", "replace") if commit.parents else None


def untagged_versions(state: LifecycleState, existing: Collection[str]) -> list[str]:
    """Versions ``state`` names (as holders or past holders) that are not in ``existing``."""
    return sorted(state.versions() - set(existing), key=str)


Transition = Callable[[LifecycleState], "tuple[dict[str, Any], str]"]


class Lifecycle:
    """Reads and writes one repository's lifecycle refs."""

    def __init__(
        self,
        git: GitRepo,
        single_holder: Callable[[str], bool],
        cache: DerivedCache | None = None,
        *,
        stages: Callable[[], Mapping[str, bool]] | None = None,
    ) -> None:
        """``stages`` returns the stage table (config's); with it, states must use declared stages."""
        self.git = git
        self.single_holder = single_holder
        self.cache = cache
        self.stages = stages

    # ------------------------------------------------------------------ read
    def head(self, model: str) -> str | None:
        return self.git.ref(lifecycle_ref(model))

    def events(self, model: str, since: int | None = None) -> Iterator[LifecycleEvent | None]:
        """The events of ``model``'s lifecycle, newest first, back to commit time ``since``.

        An ``event.json`` that is absent or fails :func:`parse_event` is yielded as None (the
        walk goes on); a missing commit is an :class:`IntegrityError` naming it.
        """
        for sha, commit in walk_first_parents(self.git, self.head(model), model, 10_000_000):
            if since is not None and commit.commit_time < since:
                return
            context = commit_context(sha, model)
            with git_read_errors(context):
                raw = self.git.read_path(sha, "event.json", MAX_EVENT_BYTES)
            try:
                yield parse_event(raw, context) if raw is not None else None
            except IntegrityError:
                yield None

    def mismatched_events(self, model: str) -> list[str]:
        """The commits of ``model``'s lifecycle (newest first) whose message carries an event
        (:func:`message_event`) that is not their tree's ``event.json``: a reader of the
        message and a reader of the tree would see different events."""
        out = []
        for sha, commit in walk_first_parents(self.git, self.head(model), model, _ALL):
            with git_read_errors(commit_context(sha, model)):
                carried = message_event(self.git.read_raw(sha, "commit", MAX_COMMIT_BYTES))
            if carried is not None and not event_in_tree(commit.tree.decode("ascii", "replace"), *carried):
                out.append(sha)
        return out

    def chain(self, head: str | None, model: str = "", limit: int = 1_000_000) -> list[str]:
        """First-parent chain from ``head`` back to the first event (newest first)."""
        return [sha for sha, _commit in walk_first_parents(self.git, head, model, limit)]

    def state(self, model: str, head: str | None = None, *, from_git: bool = False) -> LifecycleState:
        return self.state_at(model, head, from_git=from_git)[0]

    def state_at(
        self, model: str, head: str | None = None, *, from_git: bool = False
    ) -> tuple[LifecycleState, int | None]:
        """The validated state after the event ``head`` (default: the current head) and its
        commit time. ``from_git=True`` reads the Git objects, bypassing the derived cache."""
        head = head if head is not None else self.head(model)
        if head is None:
            return LifecycleState(model), None
        context = f"lifecycle commit {head[:12]} of model {model!r}"
        table = self.stages() if self.stages is not None else None
        cached = self.cache.get("state", head) if self.cache and not from_git else None
        if cached is not None:
            when_raw, _, state_json = cached.partition(b"\n")
            if when_raw.isdigit():
                return LifecycleState.from_json(state_json, model, stages=table, context=context), int(
                    when_raw
                )
        data, when = self._read_state(head, context)
        state = LifecycleState.from_json(data, model, stages=table, context=context)
        if self.cache and not from_git:
            self.cache.put("state", head, str(when).encode() + b"\n" + data)
        return state, when

    def _read_state(self, head: str, context: str) -> tuple[bytes, int]:
        with git_read_errors(context):
            data = self.git.read_path(head, "state.json", MAX_STATE_BYTES)
            when = int(self.git.read_commit(head).commit_time)
        if data is None:
            raise IntegrityError(f"{context} has no state.json")
        return data, when

    def event(self, model: str, sha: str) -> LifecycleEvent:
        """The validated ``event.json`` of lifecycle commit ``sha``."""
        return parse_event(self._event_bytes(model, sha), commit_context(sha, model))

    def history(self, model: str, limit: int = _ALL) -> list[HistoryEvent]:
        """The newest ``limit`` events of ``model``, oldest first.

        The whole history is kept in the derived cache under its head commit; a later read
        walks Git from the head only down to the newest commit that has such an entry (the
        entry it reached is then replaced by the head's). Every ``event.json``, cached or
        not, passes :func:`parse_event`."""
        head = self.head(model)
        cache = self.cache if limit >= _ALL else None
        items: list[tuple[str, str, bytes]] = []  # (commit, subject, event.json), newest first
        reached: str | None = None  # the commit whose kept history ended the walk
        complete = True  # back to the first event

        def stop(sha: str) -> bool:  # at ``limit`` events, or at a commit whose history is kept
            nonlocal reached, complete
            if len(items) >= limit:
                complete = False
                return True
            rest = self._cached_history(model, sha) if cache is not None else None
            if rest is not None:
                items.extend(rest)
                reached = sha
            return rest is not None

        for sha, commit in walk_first_parents(self.git, head, model, _ALL, stop=stop):
            lines = commit.message.decode(errors="replace").splitlines()
            items.append((sha, lines[0] if lines else "", self._event_bytes(model, sha)))
        if cache is not None and head and items and complete and reached != head:
            cache.put(HISTORY_KIND, head, msgpack.packb([_HISTORY_FORMAT, model, items], use_bin_type=True))
            if reached is not None:
                cache.delete(HISTORY_KIND, reached)  # superseded: one entry per model, not per event
        events = [
            _history_event(model, sha, subject, parse_event(raw, commit_context(sha, model)))
            for sha, subject, raw in items[:limit]
        ]
        events.reverse()
        return events

    def _event_bytes(self, model: str, sha: str) -> bytes:
        """The ``event.json`` of lifecycle commit ``sha`` (validated by the caller)."""
        context = commit_context(sha, model)
        with git_read_errors(context):
            raw = self.git.read_path(sha, "event.json", MAX_EVENT_BYTES)
        if raw is None:
            raise IntegrityError(f"{context} has no event.json")
        return raw

    def _cached_history(self, model: str, sha: str) -> list[tuple[str, str, bytes]] | None:
        """The history kept under commit ``sha``, or None (absent, forged, another model's)."""
        if self.cache is None:
            return None
        d = self.cache.get_record(HISTORY_KIND, sha, _HISTORY_FORMAT, model, 3)
        if d is None:
            return None
        items = d[2]
        if not (
            isinstance(items, list)
            and items
            and all(
                isinstance(i, list)
                and len(i) == 3
                and isinstance(i[0], str)
                and isinstance(i[1], str)
                and isinstance(i[2], bytes)
                for i in items
            )
            and items[0][0] == sha
        ):
            return None
        return [(i[0], i[1], i[2]) for i in items]

    # ------------------------------------------------------------------ write
    def apply(
        self,
        model: str,
        transition: Transition,
        actor: Identity,
        *,
        at: datetime | None = None,
        signer: Signer | None = None,
    ) -> tuple[LifecycleState, LifecycleEvent]:
        """Apply ``transition`` to the current state and CAS the lifecycle ref forward; return
        the new state and the event recorded (as :func:`parse_event` reads it back).

        ``transition`` mutates the state it is given and returns ``(event fields, summary
        line)``; it may raise a UsageError, which aborts without writing. An event the read
        gate would refuse (an ``extra`` over MAX_EVENT_BYTES) is a UsageError, never written.
        On a lost race the transition is re-run on the new state (bounded). ``at`` is the
        time the event records (default: now); importers pass the time the original registry
        gave. The commit itself is always dated now, so commit times along the chain stay in
        write order. With ``signer`` the commit is signed as ``git commit -S`` signs it.
        """
        if at is not None and at.tzinfo is None:
            raise UsageError("an event time must carry a time zone")
        ref = lifecycle_ref(model)
        for attempt in range(CAS_ATTEMPTS):
            head = self.head(model)
            state = self.state(model, head)
            event, summary = transition(state)
            state.seq += 1
            now = datetime.now(UTC)
            when = at.astimezone(UTC) if at is not None else now
            event = {**event, "seq": state.seq, "actor": f"{actor[0]} <{actor[1]}>", "at": when.isoformat()}
            data = _dumps(event)
            try:
                recorded = parse_event(data, f"lifecycle event of model {model!r}")
            except IntegrityError as exc:
                raise UsageError(f"cannot record: {exc}") from exc
            state_id = self.git.write_blob(state.to_json())
            tree = self.git.write_tree(
                {"event.json": (0o100644, self.git.write_blob(data)), "state.json": (0o100644, state_id)}
            )
            message = f"{summary}\n\n" + "".join(
                f"Uniflow-{k.capitalize()}: {event[k]}\n"
                for k in ("action", "version", "from", "to", "for", "displaced")
                if event.get(k)
            )
            if len(data) <= MESSAGE_EVENT_BYTES:
                message += event_lines(data, state_id)
            commit = self.git.write_commit(
                tree, [head] if head else [], message, actor, int(now.timestamp()), signer=signer
            )
            if self.git.cas_ref(ref, head, commit, message=f"uniflow: {summary}"):
                _testhooks.point("after-lifecycle-cas")  # test-only crash point (uniflow/_testhooks.py)
                self.sync_pointers(model)
                return state, recorded
            time.sleep(min(0.002 * (attempt + 1), 0.05) * random.random())
        raise ConcurrencyError(
            f"could not update the lifecycle of model {model!r}: too many concurrent writers"
        )

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
            current = self.git.refs(stages_prefix(model))
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


def _history_event(model: str, sha: str, subject: str, ev: LifecycleEvent) -> HistoryEvent:
    """What ``history`` shows of event ``ev``, recorded by commit ``sha`` (its ``subject``)."""
    return HistoryEvent(
        seq=ev.seq,
        action=ev.action,
        name=model,
        version=ev.version,
        from_stage=ev.from_stage,
        to_stage=ev.to_stage,
        actor=ev.actor or "",
        at=ev.at,
        commit=sha,
        message=subject,
        displaced=ev.displaced,
        reason=ev.reason,
        extra=ev.extra,
    )


# ---------------------------------------------------------------------- transitions
def promote_transition(
    version: str,
    stage: str,
    single: bool,
    action: str = "promote",
    reason: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Transition:
    def run(state: LifecycleState) -> tuple[dict[str, Any], str]:
        before = state.stage(version)
        displaced = None
        if single and stage not in SHARED_STAGES:
            for holder in state.holders(stage):
                if holder != version:
                    state.stage_of[holder] = ModelStage.ARCHIVED.value
                    displaced = holder
                    past = state.past.setdefault(stage, [])
                    if action != "rollback":
                        past.append(holder)
                        del past[:-PAST_LIMIT]
        if stage == ModelStage.DEVELOPMENT:
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
            summary += f" ({displaced} -> {ModelStage.ARCHIVED})"
        return event, summary

    return run


def move_transition(
    version: str,
    stage: str,
    stages: Mapping[str, bool],
    reason: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Transition:
    """The event that moves ``version`` into ``stage`` (a canonical name): the one place that
    decides a promote from an archive. ``stages`` is the stage table (stage -> single
    holder); a single-holder stage archives its previous holder."""
    action = "archive" if stage == ModelStage.ARCHIVED else "promote"
    return promote_transition(version, stage, stages.get(stage, True), action, reason, extra)


def register_transition(
    version: str, extra: dict[str, Any] | None = None, tag: str | None = None
) -> Transition:
    """The register event of ``version``; ``extra`` (e.g. where an import found it) and the
    version ``tag``'s object id are recorded."""

    def run(state: LifecycleState) -> tuple[dict[str, Any], str]:
        state.stage_of.pop(version, None)
        to = ModelStage.DEVELOPMENT.value
        event: dict[str, Any] = {"action": "register", "version": version, "from": None, "to": to}
        if extra:
            event["extra"] = extra
        if tag:
            event["tag"] = tag
        return event, f"register {state.model} {version}: -> {to}"

    return run


def approve_transition(version: str, stage: str, tag: str, message: str | None = None) -> Transition:
    """The approval of ``version`` (its tag ``tag``) for ``stage``: no stage changes (the
    event's ``from`` and ``to`` are the version's stage), ``for`` names ``stage``."""

    def run(state: LifecycleState) -> tuple[dict[str, Any], str]:
        now = state.stage(version)
        event: dict[str, Any] = {"action": "approve", "version": version, "from": now, "to": now}
        event.update({"for": stage, "tag": tag})
        if message:
            event["reason"] = message
        return event, f"approve {state.model} {version} for {stage}"

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
