"""Event tags: one annotated tag per stage move, so CI can trigger on a promotion.

With ``[events] tags = true`` in ``.uniflow/config.toml``, every promote, archive and
rollback also writes the annotated tag ``refs/tags/uniflow/<model>/<stage>/<seq>``:

* ``<stage>`` is the stage the event moved the version into (``archived`` for an archive),
  ``<seq>`` the event's lifecycle sequence number, so each name is written once;
* it points at the version commit (the commit the version tag points at), so
  ``git checkout uniflow/clf/production/7`` checks out what was registered;
* its message is the event as one JSON object (:class:`EventRecord`, ``format`` 1), the
  same object ``uniflow events show`` prints; its tagger and time are the event's.

Order (docs/design.md, "Moving a stage"): the lifecycle commit (CAS), the stage pointers,
then the tag, created with ``add_if_new``. The tag is derived, like a stage pointer: a
reader takes the state from the lifecycle. A process killed between the lifecycle move and
the tag leaves the newest event untagged; ``uniflow push`` re-creates the tag of the newest
event of each lifecycle it pushes (:func:`pushed_event_tags`), so the trigger is never lost
on the way to the remote. A tag a replayed event left behind (the same name, another
event) is replaced, compare-and-swap on the sha seen.

The tags live outside ``refs/tags/models/``: no version listing reads them, and a
``uniflow/...`` tag is never taken for a version (``refs.parse_ref`` does not know them).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .._bounded import load_json
from .._errors import IntegrityError, RepositoryError, UniflowError, UniflowWarning, UsageError
from .._naming import validate_model_name
from .._stages import valid_stage_name
from .config import Config
from .git import GitRepo
from .lifecycle import Lifecycle, LifecycleEvent, parse_event, walk_first_parents
from .refs import event_tag_ref, parse_event_tag_ref, tag_ref

__all__ = [
    "EVENT_FORMAT",
    "TAGGED_ACTIONS",
    "EventRecord",
    "EventTags",
    "event_tag_specs",
    "event_tag_version",
    "parse_event_ref",
    "pushed_event_tags",
    "tag_event",
]

EVENT_FORMAT = 1
#: the lifecycle actions that get an event tag (a register is no stage move)
TAGGED_ACTIONS = ("promote", "archive", "rollback")
#: the largest event-tag message read (bytes), checked before decoding
MAX_MESSAGE_BYTES = 1 << 20
#: the longest stretch of a lifecycle ``pushed_event_tags`` walks back from a pushed head
_PUSH_WALK = 10_000


@dataclass(frozen=True)
class EventRecord:
    """One stage move as an event tag and ``uniflow events`` show it."""

    model: str
    version: str
    stage: str  #: the stage the version moved into
    seq: int  #: the lifecycle event's sequence number
    action: str  #: promote, archive or rollback
    actor: str | None
    time: datetime
    from_stage: str | None = None
    displaced: str | None = None
    reason: str | None = None

    @classmethod
    def of(cls, model: str, event: LifecycleEvent) -> EventRecord:
        """The record of lifecycle ``event`` of ``model``."""
        return cls(
            model=model,
            version=event.version,
            stage=event.to_stage,
            seq=event.seq,
            action=event.action,
            actor=event.actor,
            time=event.at,
            from_stage=event.from_stage,
            displaced=event.displaced,
            reason=event.reason,
        )

    @property
    def ref(self) -> str:
        """``refs/tags/uniflow/<model>/<stage>/<seq>``."""
        return event_tag_ref(self.model, self.stage, self.seq)

    @property
    def tag(self) -> str:
        """The tag's short name, ``uniflow/<model>/<stage>/<seq>`` (what ``git tag`` lists)."""
        return self.ref[len("refs/tags/") :]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the tag message and of ``uniflow events show --json``."""
        return {
            "format": EVENT_FORMAT,
            "model": self.model,
            "version": self.version,
            "stage": self.stage,
            "seq": self.seq,
            "action": self.action,
            "actor": self.actor,
            "time": self.time.isoformat(),
            "from": self.from_stage,
            "displaced": self.displaced,
            "reason": self.reason,
            "tag": self.tag,
        }

    def message(self) -> str:
        """The tag message: :meth:`to_dict` as indented JSON with sorted keys."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def parse(cls, data: bytes, context: str) -> EventRecord:
        """Decode and validate a tag message; :class:`IntegrityError` naming ``context``."""
        d = load_json(data, f"{context}: message", limit=MAX_MESSAGE_BYTES)
        if not isinstance(d, dict) or d.get("format") != EVENT_FORMAT:
            raise IntegrityError(f"{context}: not a uniflow event (format {EVENT_FORMAT} JSON object)")
        if d.get("action") not in TAGGED_ACTIONS:
            raise IntegrityError(f"{context}: unknown action {d.get('action')!r}")
        # the lifecycle's own gate checks version, seq, stages, actor, reason and time
        fields = {k: d.get(k) for k in ("action", "version", "seq", "from", "displaced", "actor", "reason")}
        event = parse_event(
            json.dumps({**fields, "to": d.get("stage"), "at": d.get("time")}).encode(), context
        )
        try:
            model = validate_model_name(d.get("model"))
        except UniflowError as exc:
            raise IntegrityError(f"{context}: {exc}") from exc
        record = cls.of(model, event)
        if d.get("tag") != record.tag:
            raise IntegrityError(f"{context}: its tag field {d.get('tag')!r} is not {record.tag!r}")
        return record


def parse_event_ref(ref: str) -> tuple[str, str, int]:
    """``(model, stage, seq)`` of an event tag named as ``refs/tags/uniflow/<m>/<s>/<n>``
    (``$GITHUB_REF``, ``$CI_COMMIT_REF_NAME`` with the prefix) or ``uniflow/<m>/<s>/<n>``;
    anything else is a one-line :class:`UsageError`."""
    full = ref if ref.startswith("refs/") else f"refs/tags/{ref}"
    parsed = parse_event_tag_ref(full)
    if parsed is None or not valid_stage_name(parsed[1]):
        raise UsageError(
            f"{ref!r} is not an event tag (expected refs/tags/uniflow/<model>/<stage>/<seq> "
            "or uniflow/<model>/<stage>/<seq>)"
        )
    validate_model_name(parsed[0])
    return parsed


class EventTags:
    """Reads and writes the event tags of one repository."""

    def __init__(self, git: GitRepo) -> None:
        self.git = git

    def version_commit(self, model: str, version: str) -> str | None:
        """The commit the version tag of ``model`` ``version`` points at, or None."""
        sha = self.git.ref(tag_ref(model, version))
        if sha is None:
            return None
        try:
            return self.git.read_tag(sha).object[1].decode()
        except (KeyError, RepositoryError):
            return None

    def read(self, model: str, stage: str, seq: int) -> EventRecord | None:
        """The validated record of tag ``uniflow/<model>/<stage>/<seq>``, or None when this
        repository has no such tag. A tag that is no event of that name (a lightweight tag,
        another message, a record naming another tag) is an :class:`IntegrityError`."""
        ref = event_tag_ref(model, stage, seq)
        sha = self.git.ref(ref)
        if sha is None:
            return None
        context = f"event tag {ref[len('refs/tags/') :]}"
        try:
            tag = self.git.read_tag(sha)
        except (KeyError, RepositoryError) as exc:
            raise IntegrityError(f"{context} is not an annotated tag uniflow wrote ({exc})") from exc
        record = EventRecord.parse(tag.message, context)
        if record.ref != ref or tag.name.decode(errors="replace") != record.tag:
            raise IntegrityError(f"{context} records another event ({record.tag})")
        return record

    def ensure(self, record: EventRecord) -> str | None:
        """Create (or correct) the tag of ``record``; its sha, or None when the version has
        no tag. An existing tag with exactly this message and target is kept; another one
        (left by an event a pull replayed under a new seq) is replaced by compare-and-swap."""
        target = self.version_commit(record.model, record.version)
        if target is None:
            return None
        for _ in range(5):
            old = self.git.ref(record.ref)
            if old is not None and self.matches(old, record, target):
                return old
            when = int(record.time.timestamp())
            tagger = _identity(record.actor)
            sha = self.git.write_tag(record.tag, target, record.message(), tagger, when)
            if self.git.cas_ref(record.ref, old, sha, message=f"uniflow: event {record.tag}"):
                return sha
        return self.git.ref(record.ref)

    def matches(self, sha: str, record: EventRecord, target: str) -> bool:
        """Whether tag object ``sha`` is ``record``'s tag, pointing at commit ``target``."""
        try:
            tag = self.git.read_tag(sha)
            return tag.object[1].decode() == target and EventRecord.parse(tag.message, record.tag) == record
        except (KeyError, UniflowError):
            return False


def _identity(actor: str | None) -> tuple[str, str]:
    """``(name, email)`` of an event's ``"Name <email>"`` actor."""
    name, _, rest = (actor or "uniflow <uniflow@localhost>").partition(" <")
    return name or "uniflow", rest.rstrip(">") or "uniflow@localhost"


def tag_event(git: GitRepo, enabled: bool, model: str, event: LifecycleEvent) -> LifecycleEvent:
    """After a stage move (lifecycle CAS and stage pointers done): write its event tag when
    ``enabled`` (``[events] tags = true``). Returns ``event``, so a writer can hand it on."""
    if enabled and event.action in TAGGED_ACTIONS:
        record = EventRecord.of(model, event)
        try:
            EventTags(git).ensure(record)
        except UniflowError as exc:  # the event is recorded: say so rather than fail the call
            warnings.warn(
                f"{event.action} of {model} {event.version} recorded, but its event tag {record.tag} "
                f"was not written ({exc}); 'uniflow push' writes it while it is the newest stage move",
                UniflowWarning,
                stacklevel=2,
            )
    return event


def pushed_event_tags(
    git: GitRepo, lifecycle: Lifecycle, model: str, head: str, base: str | None
) -> dict[str, str]:
    """``{event tag ref: sha}`` to push with lifecycle ``head`` of ``model`` when the remote
    has ``base``: the tags of the events after ``base`` that exist here and match their
    event, the newest event's created first when missing (a crash between the lifecycle
    move and the tag). Tags that match no event of the chain pushed are never sent."""
    out: dict[str, str] = {}
    tags = EventTags(git)
    newest = True
    for sha, _commit in walk_first_parents(git, head, model, _PUSH_WALK):
        if sha == base:
            break
        event = lifecycle.event(model, sha)
        if event.action not in TAGGED_ACTIONS:
            continue
        record = EventRecord.of(model, event)
        if newest:
            tags.ensure(record)
            newest = False
        target = tags.version_commit(model, record.version)
        tag = git.ref(record.ref)
        if tag is not None and target is not None and tags.matches(tag, record, target):
            out[record.ref] = tag
    return out


class _HasEvents(Protocol):
    """What :func:`event_tag_specs` needs of a ``Repository``."""

    @property
    def config(self) -> Config: ...

    git: GitRepo
    lifecycle: Lifecycle


def event_tag_specs(repo: _HasEvents, model: str, head: str, base: str | None) -> list[str]:
    """The refspecs of the event tags ``uniflow push`` sends with lifecycle ``head`` (none
    unless ``[events] tags = true``): :func:`pushed_event_tags`, never forced."""
    if not repo.config.event_tags:
        return []
    return [f"{r}:{r}" for r in sorted(pushed_event_tags(repo.git, repo.lifecycle, model, head, base))]


def event_tag_version(tag: Any) -> tuple[str, str] | None:
    """``(model, version)`` an event tag object (a dulwich ``Tag``) names, or None when its
    message is no valid event record (the pre-push hook uploads that version's chunks)."""
    try:
        record = EventRecord.parse(bytes(tag.message), "event tag")
    except UniflowError:
        return None
    return (record.model, record.version) if tag.name.decode(errors="replace") == record.tag else None
